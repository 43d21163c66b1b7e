"""Integration tests against real daemons (a package, so mypy tells its conftest apart)."""
