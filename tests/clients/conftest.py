"""Fixtures for the real-client tests: the product as a user starts it, and where the clients'
screenshots and logs go.

``demo_proxy`` (module scope): ``python -m smime_proxy.demo`` and ``smime-proxy serve`` in
front of the session's ``upstream`` (tests/conftest.py), exactly as scripts/run.sh does;
support/demo_proxy.py.

``keep_proxy`` (module scope): a second ``smime-proxy serve`` on a copy of ``demo_proxy``'s
config and data directory (same server CA, same keys), with its own listener ports and
``signatures: keep`` (``start_variant``).

``artifacts``: a directory for this test's artifacts, ``$SMIME_PROXY_ARTIFACTS/<test>`` or
``<pytest's base temp>/artifacts/<test>``; a failed test's report names it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from smime_proxy.harness import Upstream
from support.demo_proxy import DemoProxy, start_demo_proxy, start_variant

_ARTIFACTS_KEY = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "clients: drives a real mail client (Thunderbird under its own Xvfb)")


def artifacts_root(factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("SMIME_PROXY_ARTIFACTS")
    return Path(configured) if configured else factory.getbasetemp() / "artifacts"


@pytest.fixture
def artifacts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    path = artifacts_root(tmp_path_factory) / name
    path.mkdir(parents=True, exist_ok=True)
    request.node.stash[_ARTIFACTS_KEY] = path
    return path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    path = item.stash.get(_ARTIFACTS_KEY, None)
    if path is not None and report.failed:
        report.sections.append(("artifacts", f"screenshots and logs: {path}"))
        sys.stderr.write(f"\nartifacts of {item.nodeid}: {path}\n")
    return report


@pytest.fixture(scope="module")
def demo_proxy(upstream: Upstream,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProxy]:
    workdir = tmp_path_factory.mktemp("demo")
    proxy = start_demo_proxy(upstream, workdir,
                             artifacts_root(tmp_path_factory) / "demo-proxy" / "serve.log")
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def keep_proxy(demo_proxy: DemoProxy,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProxy]:
    """A second ``smime-proxy serve`` on a copy of the demo's config and data directory (same
    server CA, same keys), with its own listener ports and ``signatures: keep``."""
    proxy = start_variant(demo_proxy, tmp_path_factory.mktemp("keep"),
                          artifacts_root(tmp_path_factory) / "keep-proxy" / "serve.log",
                          signatures="keep")
    try:
        yield proxy
    finally:
        proxy.stop()
