"""`python -m smime_proxy`: the same entry point as the `smime-proxy` console script.

May import: cli.
"""

from smime_proxy.cli import main

raise SystemExit(main())
