"""The profile of a fresh Thunderbird for tests (support/thunderbird.py starts it).

``write_profile(dir, account, certs, marionette_port)`` writes ``user.js`` (one IMAP account
with its SMTP server, at the given host and ports, STARTTLS or plain; Marionette's port; no
first-run UI, start page, default-client check, update checks, telemetry, remote content,
crash or safe-mode dialogs) and an NSS database (``cert9.db``, empty password) holding the
given CA certificates with their ``certutil -t`` trust (TLS servers and/or S/MIME).
The account's password is not in the profile: the harness hands it to Thunderbird in memory.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Account:
    """One mail account: IMAP for reading, SMTP submission for sending (STARTTLS or plain)."""

    user: str
    password: str = field(repr=False)
    address: str
    full_name: str
    imap_host: str
    imap_port: int
    smtp_host: str
    smtp_port: int
    starttls: bool = True


@dataclass(frozen=True)
class TrustedCert:
    """A CA certificate for the profile's NSS database; ``trust`` as ``certutil -t``
    (``"C,,"``: TLS servers, ``",C,"``: S/MIME)."""

    nickname: str
    pem: Path
    trust: str


def _js_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def profile_prefs(account: Account, marionette_port: int) -> dict[str, str | int | bool]:
    """The ``user.js`` of a fresh profile with ``account`` as its only mail account."""
    socket_type = 2 if account.starttls else 0  # nsMsgSocketType: 2 STARTTLS, 0 plain
    return {
        "marionette.port": marionette_port,
        # no first-run UI, start page, default-client check, update checks or telemetry
        "mail.shell.checkDefaultClient": False,
        "mail.rights.version": 1,
        "mailnews.start_page.enabled": False,
        "mailnews.start_page.override_url": "",
        "mail.provider.enabled": False,
        "mail.inappnotifications.enabled": False,
        "app.update.auto": False,
        "app.update.checkInstallTime": False,
        "app.update.disabledForTesting": True,
        "extensions.update.enabled": False,
        "extensions.getAddons.cache.enabled": False,
        "extensions.blocklist.enabled": False,
        "datareporting.policy.dataSubmissionEnabled": False,
        "datareporting.policy.dataSubmissionPolicyBypassNotification": True,
        "datareporting.healthreport.uploadEnabled": False,
        "toolkit.telemetry.enabled": False,
        "toolkit.telemetry.archive.enabled": False,
        "toolkit.telemetry.newProfilePing.enabled": False,
        "toolkit.telemetry.shutdownPingSender.enabled": False,
        "toolkit.telemetry.firstShutdownPing.enabled": False,
        "browser.safebrowsing.malware.enabled": False,
        "browser.safebrowsing.phishing.enabled": False,
        "network.captive-portal-service.enabled": False,
        "network.connectivity-service.enabled": False,
        "services.settings.server": "data:,#remote-settings-dummy/v1",
        "browser.dom.window.dump.enabled": True,
        # no remote content, no crash/safe-mode dialogs
        "mailnews.message_display.disable_remote_image": True,
        "toolkit.startup.max_resumed_crashes": -1,
        "browser.sessionstore.resume_from_crash": False,
        # the account
        "mail.accountmanager.accounts": "account1,account2",
        "mail.accountmanager.defaultaccount": "account1",
        "mail.accountmanager.localfoldersserver": "server2",
        "mail.account.account1.identities": "id1",
        "mail.account.account1.server": "server1",
        "mail.account.account2.server": "server2",
        "mail.identity.id1.fullName": account.full_name,
        "mail.identity.id1.useremail": account.address,
        "mail.identity.id1.smtpServer": "smtp1",
        "mail.identity.id1.valid": True,
        "mail.identity.id1.fcc_folder": f"imap://{account.user}@{account.imap_host}/Sent",
        "mail.identity.id1.draft_folder": f"imap://{account.user}@{account.imap_host}/Drafts",
        "mail.server.server1.type": "imap",
        "mail.server.server1.hostname": account.imap_host,
        "mail.server.server1.port": account.imap_port,
        "mail.server.server1.userName": account.user,
        "mail.server.server1.name": account.address,
        "mail.server.server1.socketType": socket_type,
        "mail.server.server1.authMethod": 3,  # nsMsgAuthMethod.passwordCleartext
        "mail.server.server1.login_at_startup": False,
        "mail.server.server2.type": "none",
        "mail.server.server2.hostname": "Local Folders",
        "mail.server.server2.userName": "nobody",
        "mail.server.server2.name": "Local Folders",
        "mail.smtpservers": "smtp1",
        "mail.smtp.defaultserver": "smtp1",
        "mail.smtpserver.smtp1.type": "smtp",
        "mail.smtpserver.smtp1.hostname": account.smtp_host,
        "mail.smtpserver.smtp1.port": account.smtp_port,
        "mail.smtpserver.smtp1.username": account.user,
        "mail.smtpserver.smtp1.try_ssl": socket_type,
        "mail.smtpserver.smtp1.authMethod": 3,
    }


def write_profile(profile: Path, account: Account, certs: Sequence[TrustedCert],
                  marionette_port: int) -> None:
    profile.mkdir(parents=True)
    lines = []
    for name, value in profile_prefs(account, marionette_port).items():
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, int):
            rendered = str(value)
        else:
            rendered = _js_string(value)
        lines.append(f"user_pref({_js_string(name)}, {rendered});\n")
    (profile / "user.js").write_text("".join(lines), encoding="utf-8")
    db = f"sql:{profile}"
    subprocess.run(["certutil", "-N", "-d", db, "--empty-password"], check=True,
                   capture_output=True, timeout=30)
    for cert in certs:
        subprocess.run(["certutil", "-A", "-d", db, "-n", cert.nickname, "-t", cert.trust,
                        "-i", str(cert.pem)], check=True, capture_output=True, timeout=30)
