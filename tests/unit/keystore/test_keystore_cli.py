"""`smime-proxy ca|keys|contacts`: through `smime_proxy.cli.main` and as a subprocess (exit codes,
one readable stderr line, never a traceback, never a password in argv)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from smime_proxy.cli import main
from smime_proxy.keystore.pkcs import KDF_ITERATIONS
from smime_proxy.keystore.pkcs12_check import LEGACY_INSPECTION_CAP
from unit.keystore.keystore_helpers import (
    THUNDERBIRD_PASSWORD,
    craft_iterations,
    describe_pfx,
    vector,
)

REPO = Path(__file__).resolve().parents[3]
ALICE_P12 = vector("thunderbird", "smime", "Alice.p12")
BOB_P12 = vector("thunderbird", "smime", "Bob.p12")


@dataclass
class Env:
    root: Path
    data: Path

    def secret(self, name: str, value: bytes) -> str:
        path = self.root / name
        path.write_bytes(value + b"\n")
        return str(path)

    def args(self, *argv: str) -> list[str]:
        return ["--data-dir", str(self.data), *argv]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    monkeypatch.delenv("SMIME_PROXY_DATA_DIR", raising=False)
    e = Env(tmp_path, tmp_path / "data")
    e.secret("nss", THUNDERBIRD_PASSWORD)
    e.secret("pw", b"secure mail password")
    e.secret("pw2", b"another password")
    e.secret("exp", b"export password")
    return e


def run(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in err
    assert lines[0].startswith("smime-proxy: ")
    return lines[0]


# --- through main() ---------------------------------------------------------------------------


def test_full_flow(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    pw, pw2, exp = (str(env.root / n) for n in ("pw", "pw2", "exp"))
    code, out, _ = run(capsys, env.args("ca", "init", "--name", "Example Mail CA"))
    assert code == 0 and "CN=Example Mail CA" in out
    code, out, _ = run(capsys, env.args("ca", "show"))
    assert code == 0 and "CN=Example Mail CA,O=smime-proxy" in out and "RSA 3072" in out

    code, out, _ = run(
        capsys, env.args("keys", "generate", "carol", "--email", "Carol@Example.org",
                         "--password-file", pw)
    )
    assert code == 0, out
    code, out, _ = run(capsys, env.args("keys", "show", "carol"))
    assert code == 0
    assert "addresses: carol@example.org" in out
    assert "key: RSA 2048 bits" in out
    assert "issuer: CN=Example Mail CA,O=smime-proxy" in out
    assert "not after: " in out and "PRIVATE" not in out

    out_p12 = env.root / "carol.p12"
    code, out, _ = run(
        capsys,
        env.args("keys", "export", "carol", str(out_p12), "--password-file", pw,
                 "--file-password-file", exp),
    )
    assert code == 0
    assert stat.S_IMODE(out_p12.stat().st_mode) == 0o600
    shape = describe_pfx(out_p12.read_bytes())
    assert shape["key_bags"][0]["parameters"]["key_derivation_func"]["parameters"][
        "iteration_count"
    ] == KDF_ITERATIONS  # the CLI never lowers the KDF cost
    legacy_p12 = env.root / "carol-legacy.p12"
    code, _, _ = run(
        capsys,
        env.args("keys", "export", "carol", str(legacy_p12), "--password-file", pw,
                 "--file-password-file", exp, "--legacy"),
    )
    assert code == 0
    legacy_shape = describe_pfx(legacy_p12.read_bytes())
    assert legacy_shape["mac_digest"] == "sha1"
    assert legacy_shape["key_bags"][0]["parameters"]["iterations"] == LEGACY_INSPECTION_CAP

    code, _, err = run(
        capsys, env.args("keys", "passwd", "carol", "--password-file", pw,
                         "--new-password-file", pw2)
    )
    assert code == 0, err
    code, _, err = run(
        capsys,
        env.args("keys", "export", "carol", str(out_p12), "--password-file", pw,
                 "--file-password-file", exp),
    )
    assert code == 1 and "wrong user name or Secure Mail Password" in one_line(err)

    code, _, err = run(
        capsys, env.args("keys", "remove", "carol", "--p12", str(ALICE_P12),
                         "--file-password-file", str(env.root / "nss"))
    )
    assert code == 1 and "different key" in one_line(err)
    code, out, _ = run(
        capsys, env.args("keys", "remove", "carol", "--p12", str(legacy_p12),
                         "--file-password-file", exp)
    )
    assert code == 0 and "removed" in out
    code, _, err = run(capsys, env.args("keys", "show", "carol"))
    assert code == 1 and "no key" in one_line(err)


def test_import_and_failures(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    nss, pw = str(env.root / "nss"), str(env.root / "pw")
    code, out, err = run(
        capsys, env.args("keys", "import", "alice", str(ALICE_P12), "--file-password-file", nss,
                         "--password-file", pw)
    )
    assert code == 0, err
    assert "addresses: alice@example.com" in out
    # Already there: negative result.
    code, _, err = run(
        capsys, env.args("keys", "import", "alice", str(ALICE_P12), "--file-password-file", nss,
                         "--password-file", pw)
    )
    assert code == 1 and "already has a key" in one_line(err)
    # Wrong file password: negative result, no password echoed.
    code, _, err = run(
        capsys, env.args("keys", "import", "bob", str(BOB_P12), "--file-password-file", pw,
                         "--password-file", pw)
    )
    assert code == 1 and "wrong password" in one_line(err)
    assert "secure mail password" not in err
    # Garbage, missing files, excessive iterations: input errors.
    garbage = env.root / "garbage.p12"
    garbage.write_bytes(os.urandom(3000))
    huge = env.root / "huge.p12"
    huge.write_bytes(craft_iterations(BOB_P12.read_bytes(), key_bag=1_000_000_000))
    for argv, needle in [
        (("keys", "import", "bob", str(garbage), "--file-password-file", nss,
          "--password-file", pw), "not a PKCS#12"),
        (("keys", "import", "bob", str(env.root / "missing.p12"), "--file-password-file", nss,
          "--password-file", pw), "cannot read"),
        (("keys", "import", "bob", str(BOB_P12), "--file-password-file",
          str(env.root / "missing-pw"), "--password-file", pw), "cannot read password file"),
        (("keys", "import", "bob", str(huge), "--file-password-file", nss,
          "--password-file", pw), "1000000000 KDF iterations"),
        (("contacts", "add", "alice", str(garbage)), "not a certificate"),
        (("contacts", "add", "alice", str(env.root / "missing.pem")), "cannot read"),
        (("contacts", "remove", "alice", "not an address"), "e-mail address"),
        (("keys", "generate", "dave", "--email", "dave@example.org", "--password-file",
          str(env.root / "empty")), "cannot read"),
    ]:
        code, _, err = run(capsys, env.args(*argv))
        assert code == 2, (argv, err)
        assert needle in one_line(err), err
    # No CA yet: negative result with the way out.
    code, _, err = run(
        capsys, env.args("keys", "generate", "dave", "--email", "dave@example.org",
                         "--password-file", pw)
    )
    assert code == 1 and "ca init" in one_line(err)
    code, _, err = run(capsys, env.args("ca", "show"))
    assert code == 1 and "ca init" in one_line(err)


def test_empty_new_password_is_refused(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    empty = env.secret("empty", b"")
    code, _, err = run(
        capsys, env.args("keys", "import", "alice", str(ALICE_P12), "--file-password-file",
                         str(env.root / "nss"), "--password-file", empty)
    )
    assert code == 2 and "must not be empty" in one_line(err)


def test_contacts(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    bob = vector("rfc9216", "certs", "bob@smime.example.enc.pem")
    code, out, _ = run(capsys, env.args("contacts", "add", "alice", str(bob)))
    assert code == 0 and "added bob@smime.example" in out
    code, out, _ = run(capsys, env.args("contacts", "list", "alice"))
    assert code == 0
    fields = out.strip().split("\t")
    assert fields[0] == "bob@smime.example" and fields[3] == "RSA 2048"
    code, _, err = run(
        capsys, env.args("contacts", "add", "alice",
                         str(vector("thunderbird", "smime", "TestCA.pem")))
    )
    assert code == 2 and "e-mail address" in one_line(err)
    code, out, _ = run(capsys, env.args("contacts", "remove", "alice", "BOB@smime.example"))
    assert code == 0 and "removed 1" in out
    code, _, err = run(capsys, env.args("contacts", "remove", "alice", "bob@smime.example"))
    assert code == 1 and "no certificate" in one_line(err)
    code, out, _ = run(capsys, env.args("contacts", "list", "alice"))
    assert code == 0 and out == ""


def test_passwords_from_stdin(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"nss\nfrom stdin\n")))
    code, _, err = run(
        capsys, env.args("keys", "import", "alice", str(ALICE_P12), "--file-password-file", "-",
                         "--password-file", "-")
    )
    assert code == 0, err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin\nexp\n")))
    out_p12 = env.root / "a.p12"
    code, _, err = run(
        capsys, env.args("keys", "export", "alice", str(out_p12), "--password-file", "-",
                         "--file-password-file", "-")
    )
    assert code == 0, err
    assert pkcs12.load_pkcs12(out_p12.read_bytes(), b"exp").key is not None


def test_no_password_and_no_terminal(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, _, err = run(
        capsys, env.args("keys", "import", "alice", str(ALICE_P12), "--password-file",
                         str(env.root / "pw"))
    )
    assert code == 2 and "no terminal" in one_line(err)


@pytest.mark.parametrize("option", ["--password", "--file-password", "--pass"])
def test_no_password_option_in_argv(env: Env, option: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(env.args("keys", "import", "alice", str(ALICE_P12), option, "secret"))
    assert info.value.code == 2


def test_data_dir_is_required(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMIME_PROXY_DATA_DIR", raising=False)
    code, _, err = run(capsys, ["keys", "show", "alice"])
    assert code == 2 and "SMIME_PROXY_DATA_DIR" in one_line(err)


def test_data_dir_from_environment(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMIME_PROXY_DATA_DIR", str(env.data))
    code, _, _ = run(capsys, ["contacts", "list", "alice"])
    assert code == 0
    assert (env.data / "smime-proxy.sqlite3").exists()


# --- as a subprocess --------------------------------------------------------------------------


def cli(env: Env, *argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = str(REPO / "src")
    environ.pop("SMIME_PROXY_DATA_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "smime_proxy", *env.args(*argv)],
        input=stdin,
        capture_output=True,
        env=environ,
        timeout=120,
        check=False,
    )


def assert_exit(proc: subprocess.CompletedProcess[bytes], code: int) -> str:
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err
    if code:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, lines
        return lines[0]
    return err


def test_subprocess_exit_codes(env: Env) -> None:
    nss, pw = str(env.root / "nss"), str(env.root / "pw")
    garbage = env.root / "garbage"
    garbage.write_bytes(b"\x30\x80" + os.urandom(500))
    assert_exit(
        cli(env, "keys", "import", "alice", str(ALICE_P12), "--file-password-file", nss,
            "--password-file", pw),
        0,
    )
    assert "wrong password" in assert_exit(
        cli(env, "keys", "import", "bob", str(BOB_P12), "--file-password-file", pw,
            "--password-file", pw),
        1,
    )
    assert "Secure Mail Password" in assert_exit(
        cli(env, "keys", "passwd", "alice", "--password-file", "-", "--new-password-file", nss,
            stdin=b"not it\n"),
        1,
    )
    assert "Secure Mail Password" in assert_exit(
        cli(env, "keys", "passwd", "nobody", "--password-file", pw, "--new-password-file", nss),
        1,
    )
    assert_exit(
        cli(env, "keys", "import", "bob", str(garbage), "--file-password-file", nss,
            "--password-file", pw),
        2,
    )
    assert_exit(cli(env, "contacts", "add", "alice", str(garbage)), 2)
    assert_exit(cli(env, "contacts", "add", "alice", str(env.root / "nope.pem")), 2)
    assert_exit(cli(env, "keys", "show", "nobody"), 1)
    show = cli(env, "keys", "show", "alice")
    assert_exit(show, 0)
    assert b"alice@example.com" in show.stdout and b"PRIVATE" not in show.stdout
    usage = cli(env, "keys", "frobnicate")
    assert usage.returncode == 2 and b"Traceback" not in usage.stderr
