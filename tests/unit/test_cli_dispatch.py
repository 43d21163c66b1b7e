"""The CLI dispatcher: exit codes and what never appears in an error line."""

from __future__ import annotations

from pathlib import Path

import pytest

from smime_proxy.cli import main


@pytest.mark.parametrize(
    "argv",
    [
        ["msg", "sign", "--p12", "k.p12", "--password", "s3cret-value"],
        ["msg", "sign", "--p12", "k.p12", "--password=s3cret-value"],
        ["msg", "decrypt", "--p12", "k.p12", "s3cret-value"],
        ["keys", "show", "alice", "--pass", "s3cret-value"],
    ],
)
def test_mistyped_password_option_is_never_echoed(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert "s3cret-value" not in captured.err + captured.out
    assert "error" in captured.err


def test_password_file_is_not_abbreviable(capsys: pytest.CaptureFixture[str]) -> None:
    """`--password-f` must not be accepted as `--password-file`."""
    with pytest.raises(SystemExit) as exited:
        main(["msg", "sign", "--p12", "k.p12", "--password-f", "pw.txt"])
    assert exited.value.code == 2


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    """Issue 14: `smime-proxy ca show --pem | head -1` ends as other Unix tools do: no
    message on stderr, the status of a process killed by SIGPIPE (128 + 13)."""
    import subprocess
    import sys

    data = str(tmp_path / "data")
    base = [sys.executable, "-m", "smime_proxy", "--data-dir", data]
    subprocess.run([*base, "ca", "init"], check=True, capture_output=True, timeout=60)
    child = subprocess.Popen([*base, "ca", "show", "--pem"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # before the child has written anything (it is still importing)
    with child.stderr:
        errors = child.stderr.read()
    assert child.wait(timeout=60) == 141
    assert errors == b""


def test_the_store_commands_progress_bar() -> None:
    from smime_proxy.cli.store import progress_bar

    assert progress_bar(30, 100) == "[#########.....................]  30/100"
    assert progress_bar(7, 7) == "[##############################] 7/7"
    assert progress_bar(0, 0).startswith("[" + "#" * 30)  # nothing to do is done
