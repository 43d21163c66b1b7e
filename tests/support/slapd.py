"""A real OpenLDAP server for tests: Debian's `slapd` with a generated `slapd.conf` (no
system configuration), one MDB database under `dc=example,dc=test`, listening on 127.0.0.1
with ldap:// (StartTLS offered) and ldaps://, TLS from the test upstream's throw-away CA.

`Slapd.start(work_dir)` returns once both ports answer; `stop()` ends it. `add_person`
writes an inetOrgPerson entry with a mail address and optional certificates (through
ldap3 as the admin, so the test needs nothing but slapd itself).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import ldap3
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smime_proxy.harness.tls import TlsFiles, ensure_tls
from support.control import free_port

BASE = "dc=example,dc=test"
PEOPLE = f"ou=people,{BASE}"
ADMIN_DN = f"cn=admin,{BASE}"
ADMIN_PASSWORD = "directory-admin-secret"
SCHEMAS = ("core", "cosine", "inetorgperson")


def slapd_binary() -> str | None:
    return shutil.which("slapd") or (
        "/usr/sbin/slapd" if Path("/usr/sbin/slapd").exists() else None)


@dataclass
class Slapd:
    process: subprocess.Popen[bytes]
    work_dir: Path
    ldap_port: int
    ldaps_port: int
    tls: TlsFiles

    @property
    def ldap_url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @classmethod
    def start(cls, work_dir: Path) -> Slapd:
        binary = slapd_binary()
        if binary is None:
            raise RuntimeError("slapd is not installed (scripts/test.sh installs it)")
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / "db").mkdir(exist_ok=True)
        tls = ensure_tls(work_dir / "tls")
        ldap_port, ldaps_port = free_port(), free_port()
        includes = "\n".join(f"include /etc/ldap/schema/{name}.schema" for name in SCHEMAS)
        (work_dir / "slapd.conf").write_text(f"""{includes}
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {work_dir}/slapd.pid
TLSCertificateFile {tls.server_cert}
TLSCertificateKeyFile {tls.server_key}
TLSCACertificateFile {tls.ca_cert}
database mdb
maxsize 104857600
suffix "{BASE}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PASSWORD}
directory {work_dir}/db
access to * by * read
""")
        log = (work_dir / "slapd.log").open("wb")
        process = subprocess.Popen(
            [binary, "-f", str(work_dir / "slapd.conf"), "-d", "0",
             "-h", f"ldap://127.0.0.1:{ldap_port}/ ldaps://127.0.0.1:{ldaps_port}/"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        server = cls(process, work_dir, ldap_port, ldaps_port, tls)
        deadline = time.monotonic() + 20
        while not all(_answers(port) for port in (ldap_port, ldaps_port)):
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError("slapd did not start: "
                                   + (work_dir / "slapd.log").read_text(errors="replace")[-2000:])
            time.sleep(0.05)
        server._add_base()
        return server

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def admin(self) -> ldap3.Connection:
        server = ldap3.Server("127.0.0.1", port=self.ldap_port, get_info=ldap3.NONE)
        return ldap3.Connection(server, user=ADMIN_DN, password=ADMIN_PASSWORD,
                                auto_bind=ldap3.AUTO_BIND_NO_TLS, raise_exceptions=True)

    def _add_base(self) -> None:
        connection = self.admin()
        try:
            connection.add(BASE, ["dcObject", "organization"], {"o": "example", "dc": "example"})
            connection.add(PEOPLE, ["organizationalUnit"], {"ou": "people"})
        finally:
            connection.unbind()

    def add_person(self, uid: str, mail: str,
                   certificates: tuple[x509.Certificate, ...] = (),
                   smime_blobs: tuple[bytes, ...] = ()) -> str:
        """An inetOrgPerson `uid=<uid>` with `mail`; `certificates` as userCertificate;binary
        (slapd checks their syntax), `smime_blobs` as userSMIMECertificate (it does not)."""
        dn = f"uid={uid},{PEOPLE}"
        attributes: dict[str, object] = {"uid": uid, "cn": uid, "sn": uid, "mail": mail}
        ders = [c.public_bytes(serialization.Encoding.DER) for c in certificates]
        if ders:
            attributes["userCertificate;binary"] = ders
        if smime_blobs:
            attributes["userSMIMECertificate"] = list(smime_blobs)
        connection = self.admin()
        try:
            connection.add(dn, ["inetOrgPerson"], attributes)
        finally:
            connection.unbind()
        return dn

    def certificates_of(self, dn: str) -> list[bytes]:
        connection = self.admin()
        try:
            connection.search(dn, "(objectClass=*)", search_scope=ldap3.BASE,
                              attributes=["userCertificate;binary"])
            values: list[bytes] = connection.response[0]["raw_attributes"].get(
                "userCertificate;binary", [])
            return values
        finally:
            connection.unbind()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
