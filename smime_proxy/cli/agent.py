"""`smime-proxy agent --socket PATH`: run the key agent process in the foreground (the only
process that holds unlocked private keys; README "Running several nodes" and
docs/key-agent.md). Stops on SIGTERM or SIGINT; its unlocks end with it.

May import: agent, event_loop, logs, stdlib.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from smime_proxy import event_loop
from smime_proxy.logs import setup_logging


def register(sub: argparse._SubParsersAction[Any]) -> None:
    agent = sub.add_parser("agent", help="run the key agent process (foreground)")
    agent.add_argument("--socket", required=True, type=Path, metavar="PATH",
                       help="the Unix socket to listen on (its directory is made 0700)")
    agent.add_argument("--allow-uid", type=int, action="append", default=[], metavar="UID",
                       help="a user id allowed to connect besides the agent's own "
                            "(the daemon's, when it runs as another user); repeatable")
    agent.add_argument("--log-format", choices=("text", "json"), default="text")
    agent.set_defaults(handler=_agent)


def _agent(args: argparse.Namespace) -> int:
    from smime_proxy.agent.server import AgentServer

    setup_logging(args.log_format, "info")
    server = AgentServer(args.socket, allowed_uids=args.allow_uid)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.start()
        print(f"smime-proxy agent: listening on {args.socket}", flush=True)
        try:
            await stop.wait()
        finally:
            await server.stop()

    event_loop.run(run())
    return 0
