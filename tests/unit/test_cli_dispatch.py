"""The CLI dispatcher: exit codes and what never appears in an error line."""

from __future__ import annotations

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
