"""A real PostgreSQL for tests: Debian's `postgresql` binaries (`initdb`, `pg_ctl` under
/usr/lib/postgresql/*/bin), a throw-away cluster in a fresh directory under /tmp, listening on
127.0.0.1 on a free port, its Unix socket in that directory; no system cluster is used.

`PostgresServer.start()` returns once the server accepts connections; `stop()` ends it and
removes the directory. The cluster's superuser is `smime` with a password over TCP
(scram-sha-256), so tests also see how a wrong password is reported. `fresh_schema()` gives a
test an empty schema of its own (its DSN's search_path), `fresh_database()` an empty database.

initdb and the server refuse to run as root: when the tests run as root, the cluster belongs
to the `postgres` user that Debian's package creates (else `nobody`), and every PostgreSQL
command runs under that user (subprocess `user=`/`group=`); as anyone else, as themselves.
"""

from __future__ import annotations

import itertools
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from support.control import free_port

SUPERUSER = "smime"
_counter = itertools.count(1)


def postgres_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL bin directory, else the one of `pg_ctl` on PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is not None and Path(pg_ctl).with_name("initdb").exists():
        return Path(pg_ctl).resolve().parent
    return None


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged owner of the cluster when we are root; None otherwise."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class PostgresServer:
    bin_dir: Path
    work_dir: Path
    port: int
    password: str = field(repr=False)
    owner: pwd.struct_passwd | None

    @property
    def socket_dir(self) -> Path:
        return self.work_dir / "socket"

    def dsn(self, dbname: str = "postgres", *, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return (f"host=127.0.0.1 port={self.port} user={SUPERUSER} password={secret} "
                f"dbname={dbname}")

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit superuser connection over the Unix socket (trust)."""
        return psycopg.connect(host=str(self.socket_dir), port=self.port, user=SUPERUSER,
                               dbname="postgres", autocommit=True)

    def fresh_schema(self) -> tuple[str, str]:
        """A new empty schema in the database `postgres`: (name, DSN whose search_path is
        only that schema). What a test's store sees is an empty database; creating a schema
        takes a millisecond where CREATE DATABASE takes a checkpoint."""
        name = f"s{os.getpid()}_{next(_counter)}"
        with self.admin() as db:
            db.execute(f'CREATE SCHEMA "{name}"')
        return name, f"{self.dsn()} options=-csearch_path={name}"

    def drop_schema(self, name: str) -> None:
        with self.admin() as db:
            db.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

    def fresh_database(self) -> tuple[str, str]:
        """A new empty database: (name, DSN)."""
        name = f"t{os.getpid()}_{next(_counter)}"
        with self.admin() as db:
            db.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
        return name, self.dsn(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # --- life cycle ------------------------------------------------------------------------

    def _command(self, *argv: str) -> subprocess.CompletedProcess[str]:
        owner = self.owner
        return subprocess.run(
            list(argv), cwd=self.work_dir, capture_output=True, text=True, timeout=120,
            check=False,
            user=None if owner is None else owner.pw_uid,
            group=None if owner is None else owner.pw_gid,
            extra_groups=None if owner is None else [],
            env={**os.environ, "LC_ALL": "C", "LANG": "C"})

    @classmethod
    def start(cls) -> PostgresServer:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (scripts/test.sh installs the "
                               "Debian package postgresql)")
        owner = _run_as()
        # under /tmp, not pytest's 0700 root-owned tree: the cluster's owner must reach it
        work_dir = Path(tempfile.mkdtemp(prefix="smime-postgres-"))
        server = cls(bin_dir, work_dir, free_port(), secrets.token_urlsafe(16), owner)
        try:
            server._init_and_start()
        except BaseException:
            server.stop()
            raise
        return server

    def _init_and_start(self) -> None:
        (self.socket_dir).mkdir()
        pwfile = self.work_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self.owner is not None:
            for path in (self.work_dir, self.socket_dir, pwfile):
                os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        data = self.work_dir / "data"
        done = self._command(
            str(self.bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER,
            f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
            "-E", "UTF8", "--locale=C", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout[-1500:]} {done.stderr[-1500:]}")
        pwfile.unlink()
        settings = {
            "listen_addresses": "'127.0.0.1'", "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            # a test cluster: durability is not wanted, speed is
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "max_connections": "200", "shared_buffers": "32MB", "logging_collector": "off",
        }
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/support/postgres.py\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        done = self._command(str(self.bin_dir / "pg_ctl"), "-D", str(data),
                             "-l", str(self.work_dir / "postgres.log"), "-w", "-t", "60",
                             "start")
        if done.returncode != 0:
            log = self.work_dir / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stdout[-800:]} {done.stderr[-800:]} "
                               f"{tail}")

    def stop(self) -> None:
        data = self.work_dir / "data"
        if (data / "postmaster.pid").exists():
            self._command(str(self.bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                          "-w", "-t", "30", "stop")
        shutil.rmtree(self.work_dir, ignore_errors=True)
