"""The config's `store:` section: SQLite by default, PostgreSQL with `dsn` or `dsn_file`;
mistakes are one ConfigError naming the YAML path, and the DSN (it holds the database
password) is never shown by an error or a repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from smime_proxy.app import open_stores
from smime_proxy.config import Config, StoreConfig
from smime_proxy.errors import ConfigError
from smime_proxy.keystore.sqlite import SqliteDatabase
from support.configs import minimal_config

SECRET = "Db-Secret-8842"
DSN = f"host=db.example.test port=5432 dbname=smime user=proxy password={SECRET}"


def _config(tmp_path: Path, store: object = None) -> Config:
    return minimal_config(tmp_path, store=store)


def _error(tmp_path: Path, store: object) -> str:
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, store)
    message = str(info.value)
    assert "\n" not in message and SECRET not in message
    return message


def test_sqlite_is_the_default(tmp_path: Path) -> None:
    assert _config(tmp_path).store == StoreConfig("sqlite") == StoreConfig()
    assert _config(tmp_path, {"backend": "sqlite"}).store == StoreConfig()


def test_postgresql_with_a_dsn_that_no_repr_shows(tmp_path: Path) -> None:
    config = _config(tmp_path, {"backend": "postgresql", "dsn": f"  {DSN} "})
    assert config.store.backend == "postgresql"
    assert config.store.read_dsn() == DSN
    assert SECRET not in repr(config) and SECRET not in repr(config.store)
    uri = f"postgresql://proxy:{SECRET}@db.example.test/smime"
    assert _config(tmp_path, {"backend": "postgresql", "dsn": uri}).store.read_dsn() == uri


def test_postgresql_with_a_dsn_file_read_at_open(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "dsn").write_text(DSN + "\n")
    store = _config(tmp_path, {"backend": "postgresql", "dsn_file": "secrets/dsn"}).store
    assert store.dsn_file == tmp_path / "secrets" / "dsn" and store.dsn is None
    assert store.read_dsn() == DSN
    (tmp_path / "secrets" / "dsn").write_text("two\nlines = x\n")
    with pytest.raises(ConfigError, match=r"^store.dsn_file: .* does not hold"):
        store.read_dsn()
    (tmp_path / "secrets" / "dsn").unlink()
    with pytest.raises(ConfigError, match=r"^store.dsn_file: cannot read"):
        store.read_dsn()


@pytest.mark.parametrize(("store", "expected"), [
    ({"backend": "postgresql"}, "store.dsn: missing"),
    ({"backend": "postgresql", "dsn": DSN, "dsn_file": "x"}, "store.dsn_file: give dsn or"),
    ({"backend": "sqlite", "dsn": DSN}, "store.dsn: only for backend postgresql"),
    ({"dsn_file": "x"}, "store.dsn_file: only for backend postgresql"),
    ({"backend": "mysql"}, "store.backend: expected"),
    ({"backend": "postgresql", "dsn": f"just words {SECRET}"}, "store.dsn: expected a "),
    ({"backend": "postgresql", "dsn": f"password={SECRET}\nhost=x"}, "store.dsn: expected a "),
    ({"backend": "postgresql", "dsn": 5432}, "store.dsn: expected a "),
    ({"backend": "postgresql", "dsn_file": "missing"}, "store.dsn_file: file not found"),
    ({"backend": "postgresql", "password": SECRET}, "store.password: unknown key"),
    ("postgresql", "store: expected a mapping"),
])
def test_mistakes_name_the_path_and_never_the_dsn(tmp_path: Path, store: object,
                                                 expected: str) -> None:
    assert _error(tmp_path, store).startswith(expected)


def test_the_sqlite_default_opens_as_before(tmp_path: Path) -> None:
    config = _config(tmp_path)
    stores = open_stores(config.data_dir, store=config.store)
    try:
        assert isinstance(stores.database, SqliteDatabase)
        assert stores.database.path == tmp_path / "data" / "smime-proxy.sqlite3"
    finally:
        stores.close()
