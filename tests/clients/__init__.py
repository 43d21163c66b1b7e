"""Real mail clients against the product (a package, so mypy tells its conftest apart)."""
