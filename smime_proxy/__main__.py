"""`python -m smime_proxy`: the same entry point as the `smime-proxy` console script."""

from smime_proxy.cli import main

raise SystemExit(main())
