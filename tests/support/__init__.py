"""Test support code (importable as `support` with tests/ on sys.path)."""
