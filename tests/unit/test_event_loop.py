"""smime_proxy.event_loop: uvloop by default, asyncio's loop on request, a bad choice refused
by name (and `smime-proxy serve` exits 2 on it)."""

from __future__ import annotations

import asyncio
import warnings

import pytest
import uvloop

from smime_proxy import event_loop
from smime_proxy.cli import main
from smime_proxy.errors import ConfigError


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_is_the_default() -> None:
    assert event_loop.loop_name({}) == "uvloop"
    assert event_loop.loop_factory({}) is uvloop.new_event_loop


def test_run_uses_the_chosen_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(event_loop.ENVIRONMENT_VARIABLE, raising=False)
    assert event_loop.run(_loop_type()) is uvloop.Loop
    monkeypatch.setenv(event_loop.ENVIRONMENT_VARIABLE, "asyncio")
    chosen = event_loop.run(_loop_type())
    assert chosen is not uvloop.Loop
    assert issubclass(chosen, asyncio.BaseEventLoop)


def test_a_bad_choice_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="SMIME_PROXY_EVENT_LOOP='trio'"):
        event_loop.loop_name({"SMIME_PROXY_EVENT_LOOP": "trio"})
    monkeypatch.setenv(event_loop.ENVIRONMENT_VARIABLE, "trio")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the refused coroutine is closed, not left unawaited
        with pytest.raises(ConfigError):
            event_loop.run(_loop_type())


def test_serve_exits_2_on_a_bad_choice(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(event_loop.ENVIRONMENT_VARIABLE, "gevent")
    assert main(["serve", "--config", "/nonexistent/smime-proxy.yaml", "--check"]) == 2
    err = capsys.readouterr().err
    assert "SMIME_PROXY_EVENT_LOOP='gevent'" in err
    assert len(err.strip().splitlines()) == 1


async def test_async_tests_run_on_the_daemons_loop() -> None:
    """conftest's pytest_asyncio_loop_factories hook."""
    running = type(asyncio.get_running_loop())
    assert (running is uvloop.Loop) == (event_loop.loop_name() == "uvloop")


async def test_writing_to_a_closed_connection_is_dropped_not_raised() -> None:
    """uvloop raises RuntimeError where asyncio's loop drops the bytes: both drop them."""
    accepted: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert event_loop.write_if_open(writer, b"a line\r\n")
    writer.transport.abort()
    assert not event_loop.write_if_open(writer, b"another\r\n")
    for other in accepted:
        other.close()
        await other.wait_closed()
    server.close()
    await server.wait_closed()
