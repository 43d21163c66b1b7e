"""Imports only go down the layer list of ../shared/DESIGN.md, and every module's docstring
says truthfully what it imports.

`LAYERS` below is DESIGN's list, top to bottom, with every module of `smime_proxy/` placed in
it (the longest matching prefix decides). A module may import its own layer and the layers
below it; an arrow that runs up the list fails. Every import counts: inside functions and
`if TYPE_CHECKING:` blocks too (a type-only arrow still couples the layers).

The docstring's `May import:` line (comma-separated; `/`, `.*` and parenthesised remarks are
ignored; `everything below it` allows any lower layer) must cover each project module the
module imports, and must not name a project module of a higher layer.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "smime_proxy"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

# top to bottom (DESIGN.md "Layers"); names relative to smime_proxy
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("entry points", ("__main__", "cli")),
    ("composition root", ("app", "demo")),
    ("I/O shells", ("imap.server", "imap.connection", "imap.streams", "imap.upstream",
                    "imap.opening_threads",
                    "smtp.server", "smtp.relay", "control", "harness", "lmtp.server",
                    "lmtp.upstream", "at_rest.convert", "at_rest.operation",
                    "at_rest.operations", "at_rest.listing", "agent.server", "agent.client",
                    "agent.child")),
    ("protocol logic", ("imap", "imap.session", "imap.events", "imap.inflight",
                        "imap.negotiation", "imap.fetch_rewrite", "imap.fetch_answers",
                        "imap.view_cache", "imap.streaming", "imap.login", "imap.search",
                        "imap.search_text", "imap.search_job", "imap.stored_copies",
                        "smtp", "smtp.session",
                        "smtp.submission", "smtp.data", "smtp.directory", "policy", "lmtp",
                        "policy.decide")),
    ("safe API", ("smime", "smime_forms", "display", "keystore", "policy.model", "services",
                  "at_rest", "revocation")),
    ("hazmat and pure cores", ("crypto", "mime", "imap.wire", "imap.views",
                               "agent.protocol")),
    ("bottom", ("errors", "config", "yamlcheck", "tlsconfig", "memory", "event_loop", "logs",
                "metrics", "throttle", "accounts", "")),
)
EVERYTHING_BELOW = "everything below it"


@dataclass(frozen=True)
class Module:
    name: str  # dotted, relative to the package ("" for smime_proxy/__init__)
    source: str
    is_package: bool = False


def rank(name: str) -> int:
    """0 for the top layer; the longest prefix in LAYERS decides."""
    best, best_len = len(LAYERS) - 1, -1
    for index, (_title, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = name == prefix or (prefix and name.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def project_imports(module: Module, known: set[str]) -> set[str]:
    """The project modules `module` imports (relative names), at any depth of its code."""
    tree = ast.parse(module.source)
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        if target == PACKAGE:
            found.add("")
        elif target.startswith(PACKAGE + "."):
            found.add(target[len(PACKAGE) + 1 :])

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                origin = ".".join([PACKAGE, *base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            if not origin.startswith(PACKAGE):
                continue
            for alias in node.names:
                candidate = f"{origin}.{alias.name}"
                relative = candidate[len(PACKAGE) + 1 :]
                add(candidate if relative in known else origin)
    found.discard(module.name)
    return found


def allowed_names(module: Module, known: set[str]) -> tuple[set[str], bool] | None:
    """The project names on the docstring's `May import:` line, and whether it says
    `everything below it`; None without such a line."""
    doc = ast.get_docstring(ast.parse(module.source)) or ""
    match = re.search(r"May import:(.*?)(?:\n\s*\n|\Z)", doc, re.S)
    if match is None:
        return None
    text = re.sub(r"\([^)]*\)", "", match[1].replace("\n", " "))
    names: set[str] = set()
    below = False
    for token in re.split(r"[,;]", text):
        token = token.strip().rstrip(".").strip().removesuffix(".*").rstrip("/")
        if token == EVERYTHING_BELOW:
            below = True
        elif token in known or any(k.startswith(token + ".") for k in known):
            names.add(token)
    return names, below


def violations(modules: list[Module]) -> list[str]:
    known = {m.name for m in modules}
    problems: list[str] = []
    for module in modules:
        shown = module.name or PACKAGE
        imports = project_imports(module, known)
        for target in sorted(imports):
            if rank(target) < rank(module.name):
                problems.append(f"{shown} imports {target or PACKAGE}: "
                                f"up from {LAYERS[rank(module.name)][0]} "
                                f"to {LAYERS[rank(target)][0]}")
        allowed = allowed_names(module, known)
        if allowed is None:
            if imports:
                problems.append(f"{shown}: no 'May import:' line in its docstring")
            continue
        names, below = allowed
        for target in sorted(imports):
            covered = any(target == n or target.startswith(n + ".") for n in names)
            if not covered and not (below and rank(target) > rank(module.name)):
                problems.append(f"{shown} imports {target} but its docstring does not say so")
        for name in sorted(names):
            if rank(name) < rank(module.name):
                problems.append(f"{shown}: its docstring allows {name}, a higher layer")
    return problems


def package_modules() -> list[Module]:
    """Every module of the package: its Python files, and the native module by its stub
    (`_native.pyi`: built from native/, it imports nothing of the package)."""
    modules = [Module(path.stem, "") for path in sorted(ROOT.glob("_*.pyi"))]
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        parts = list(relative.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules.append(Module(".".join(parts), path.read_text(encoding="utf-8"), is_package))
    return modules


def test_no_import_runs_up_the_layers_and_docstrings_say_what_is_imported() -> None:
    modules = package_modules()
    assert len(modules) > 50
    assert violations(modules) == []


def test_every_module_has_a_layer_named_in_the_list() -> None:
    listed = {p for _title, prefixes in LAYERS for p in prefixes}
    for module in package_modules():
        parts = module.name.split(".")
        assert any(".".join(parts[:i]) in listed for i in range(len(parts), -1, -1)), module.name


# --- the checker itself ----------------------------------------------------------------------


def _doc(may: str, body: str = "") -> str:
    return f'"""A module.\n\nMay import: {may}\n"""\n{body}'


def test_an_upward_import_is_reported() -> None:
    modules = [
        Module("errors", _doc("stdlib.")),
        Module("imap.wire", _doc("errors, stdlib."), is_package=True),
        Module("app", _doc("everything below it.")),
        # the IMAP wire core reaching up to the composition root
        Module("imap.wire.framing", _doc("errors, app.", "from smime_proxy.app import Daemon\n")),
    ]
    found = violations(modules)
    assert "imap.wire.framing imports app: up from hazmat and pure cores to composition root" \
        in found
    assert "imap.wire.framing: its docstring allows app, a higher layer" in found


def test_a_type_checking_or_function_level_import_counts() -> None:
    body = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from smime_proxy.app import DaemonServices\n"
            "def f() -> None:\n    from smime_proxy import app\n")
    modules = [Module("app", _doc("everything below it.")),
               Module("imap.server", _doc("app.", body))]
    assert any(v.startswith("imap.server imports app: up") for v in violations(modules))


def test_relative_imports_resolve_and_an_undeclared_import_is_reported() -> None:
    modules = [
        Module("errors", _doc("stdlib.")),
        Module("imap.wire", _doc("imap.wire."), is_package=True),
        Module("imap.wire.errors", _doc("stdlib.")),
        Module("imap.wire.lexer", _doc("stdlib.", "from .errors import ParseError\n"
                                                  "from ..wire import errors\n"
                                                  "from smime_proxy.errors import InputError\n")),
    ]
    assert violations(modules) == [
        "imap.wire.lexer imports errors but its docstring does not say so",
        "imap.wire.lexer imports imap.wire.errors but its docstring does not say so",
    ]


def test_downward_and_sideways_imports_pass() -> None:
    modules = [
        Module("errors", _doc("stdlib.")),
        Module("mime.tree", _doc("errors, stdlib.", "from smime_proxy.errors import X\n")),
        Module("mime.views", _doc("mime, errors.", "from smime_proxy.mime.tree import parse\n")),
        Module("app", _doc("everything below it.", "from smime_proxy.mime import tree\n")),
    ]
    assert violations(modules) == []


@pytest.mark.parametrize(("name", "layer"), [
    ("imap.wire.framing", "hazmat and pure cores"), ("imap.server", "I/O shells"),
    ("imap.session", "protocol logic"), ("policy.model", "safe API"),
    ("policy.decide", "protocol logic"), ("cli.keys", "entry points"), ("errors", "bottom"),
])
def test_layer_of(name: str, layer: str) -> None:
    assert LAYERS[rank(name)][0] == layer
