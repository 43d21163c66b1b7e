"""`smime-proxy serve --config FILE`: run the daemon in the foreground.

May import: app, config, event_loop, logs, stdlib.
"""

from __future__ import annotations

import argparse
from typing import Any

from smime_proxy import event_loop
from smime_proxy.config import check_ports_free, load_config
from smime_proxy.logs import setup_logging


def register(sub: argparse._SubParsersAction[Any]) -> None:
    serve = sub.add_parser("serve", help="run the proxy daemon (foreground)")
    serve.add_argument("--config", required=True, metavar="FILE", help="the YAML config file")
    serve.add_argument(
        "--check", action="store_true", help="validate the config and exit (0 = fine)"
    )
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from smime_proxy.app import Daemon, build_services, default_fronts

    event_loop.loop_name()  # a bad SMIME_PROXY_EVENT_LOOP: ConfigError, exit 2, named
    config = load_config(args.config)  # ConfigError -> exit 2 with the YAML path
    if args.check:
        return 0
    check_ports_free(config)
    setup_logging(config.logging.format, config.logging.level)
    services = build_services(config)
    event_loop.run(Daemon(services, default_fronts(services)).run())
    return 0
