"""A real Redis for tests: Debian's `redis-server`, a throw-away instance in a fresh directory
under /tmp, listening on 127.0.0.1 on a free port, with nothing written to disk (no RDB
snapshots, no append-only file); no system instance is used.

`RedisServer.start()` returns once the server answers PING; `stop()` ends it (SIGTERM, then
SIGKILL) and removes the directory; `halt()` and `resume()` stop and start it on its port.
The server requires a password (`requirepass`), so tests also see that a URL's password never
shows in an error. `url(db)` gives a redis:// URL, `dump()` every key and value.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from support.control import free_port


def redis_server_binary() -> str | None:
    """Debian's redis-server (package redis-server), or None when it is not installed."""
    found = shutil.which("redis-server")
    if found is None and Path("/usr/bin/redis-server").exists():
        found = "/usr/bin/redis-server"
    return found


@dataclass
class RedisServer:
    binary: str
    work_dir: Path
    port: int
    password: str = field(repr=False)
    process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0, *, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"redis://:{secret}@127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        """A plain client (the caller closes it)."""
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, password=self.password,
                           socket_timeout=5)

    @classmethod
    def start(cls) -> RedisServer:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/test.sh installs the "
                               "Debian package redis-server)")
        work_dir = Path(tempfile.mkdtemp(prefix="smime-redis-"))
        server = cls(binary, work_dir, free_port(), secrets.token_urlsafe(16))
        try:
            server._run()
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self) -> None:
        config = self.work_dir / "redis.conf"
        # the password in a file of the temporary directory, not on the command line
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode yes\n"
            f"dir {self.work_dir}\nsave \"\"\nappendonly no\ndaemonize no\n"
            f"logfile {self.work_dir / 'redis.log'}\nrequirepass {self.password}\n")
        config.chmod(0o600)
        self.process = subprocess.Popen([self.binary, str(config)], cwd=self.work_dir,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                log = self.work_dir / "redis.log"
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited ({self.process.returncode}): {tail}")
            with contextlib.suppress(redis.exceptions.RedisError), self.client() as client:
                if client.ping():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING within 20 s")
            time.sleep(0.05)

    def _end_process(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def halt(self) -> None:
        """End the server but keep its directory (`resume` starts it again)."""
        self._end_process()

    def resume(self) -> None:
        """Start a halted server again on the same port (empty: nothing was on disk)."""
        self._run()

    def stop(self) -> None:
        """End the server (idempotent) and remove its directory."""
        self._end_process()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def flush(self) -> None:
        """Every database emptied (a test's clean start)."""
        with self.client() as client:
            client.flushall()

    def dump(self, db: int = 0) -> dict[bytes, object]:
        """Every key of `db` with its value, whatever its type (what someone with Redis reads)."""
        found: dict[bytes, object] = {}
        with self.client(db) as client:
            for key in client.scan_iter(count=1000):
                kind = client.type(key)
                if kind == b"hash":
                    found[key] = client.hgetall(key)
                elif kind == b"string":
                    found[key] = client.get(key)
                elif kind == b"list":
                    found[key] = client.lrange(key, 0, -1)
                elif kind == b"set":
                    found[key] = client.smembers(key)
                elif kind == b"zset":
                    found[key] = client.zrange(key, 0, -1, withscores=True)
                else:
                    found[key] = client.dump(key)
        return found
