"""A real Thunderbird (Debian's ``thunderbird`` package) for tests: Xvfb, a fresh profile, and
Marionette to drive it.

``Thunderbird(workdir, artifacts, account, certs)`` is a context manager: it starts its own Xvfb
(``-displayfd``: a free display), writes a fresh profile (support/thunderbird_profile.py: one
IMAP account and its SMTP server, no first-run wizards, update checks, telemetry, start page
or remote content; the given CA certificates trusted for TLS and/or S/MIME), starts Thunderbird
with ``--marionette --remote-allow-system-access`` and talks to it with
``support.marionette`` in the chrome context (privileged JS in the 3-pane window). Leaving it
stops Thunderbird (Marionette quit, then SIGTERM/SIGKILL of its process group) and Xvfb,
whatever happened; a process that is still running when the interpreter exits is killed too.

The account's passwords are given to Thunderbird in memory (``server.password``), so it never
prompts and nothing is written to its password manager.

What Thunderbird shows is read from its DOM (``open_message`` -> ``MessageShown``: the message
pane's text, the attachment list, the S/MIME indicators); ``security_info`` opens the header's
security button's panel ("Message Security") and reads its texts. Alerts (Thunderbird's modal
prompts, e.g. an IMAP server's ``NO`` text) are accepted and collected in ``alerts``.

Artifacts, all in ``artifacts``: screenshots of the whole X screen (``NN-name.png``, dialogs
included), ``thunderbird.log`` (its stdout/stderr), ``imap.moz_log*`` (Thunderbird's own IMAP
log: every command it sent and every line it got) and ``imap-commands.txt`` (the commands,
one a line, written at stop).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from support.marionette import Marionette, MarionetteError
from support.thunderbird_profile import Account, TrustedCert, write_profile

THUNDERBIRD = Path("/usr/lib/thunderbird/thunderbird")
XVFB = "Xvfb"
SCREEN = "1280x1024x24"


def missing() -> str | None:
    """Why Thunderbird cannot run here (None: it can)."""
    if not THUNDERBIRD.exists():
        return "Debian's thunderbird is not installed (scripts/test.sh)"
    for tool in (XVFB, "certutil"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/test.sh)"
    return None


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str


@dataclass(frozen=True)
class Crypto:
    """Thunderbird's S/MIME indicators for the shown message (msgHdrViewSMIMEOverlay.js).

    ``box``: the header's security button is shown (with ``tech``, e.g. "S/MIME");
    ``encrypted``/``signed``: the state of its icons ("ok", "notok", "mismatch", "unknown",
    ...) or None when the icon is hidden; ``signature_status``/``encryption_status``: the
    nsICMSMessageErrors name of Thunderbird's own verdict (None: not signed / not encrypted).
    """

    box: bool
    tech: str | None
    encrypted: str | None
    signed: str | None
    signature_status: str | None
    encryption_status: str | None


@dataclass(frozen=True)
class SecurityInfo:
    """What the header's security button says about the shown message: its icons' alt texts
    and tooltip, and the texts of its "Message Security" panel (msgReadSMIMEOverlay.js's
    ``loadSmimeMessageSecurityInfo``, msgSecurityInfo.properties). Empty strings: not shown."""

    button_title: str
    signed_icon_alt: str
    encrypted_icon_alt: str
    panel_open: bool
    signature_label: str
    """e.g. "Message Is Signed", "Digital Signature Is Not Valid"."""
    signature_header: str
    signature_explanation: str
    signed_by: str
    signer_email: str
    signer_issuer: str
    encryption_label: str
    encryption_explanation: str
    confirm: str
    """The text of a confirm prompt shown instead of the panel (an IMAP message whose parts
    were fetched on demand: "verify it by downloading the whole message?"), else ""."""


@dataclass(frozen=True)
class MessageShown:
    """What the message pane showed after opening one message."""

    subject: str | None
    """The subject in the message header pane (None: no message header shown)."""
    body: str
    """The message pane's text (``innerText`` of its document)."""
    pane_url: str
    attachments: list[Attachment]
    crypto: Crypto
    alerts: list[str]
    """Alerts raised while it was opened (accepted)."""
    loaded: bool
    """Thunderbird finished displaying it (its MsgLoaded event)."""


_JS_MAIN_READY = """
const tabmail = window.gTabmail;
const about3 = tabmail && tabmail.currentAbout3Pane;
return document.readyState == "complete" && !!about3 && !!about3.folderTree
  && about3.document.readyState == "complete";
"""

_JS_SET_PASSWORDS = """
const server = MailServices.accounts.defaultAccount.incomingServer;
server.password = arguments[0];
const outgoing = MailServices.outgoingServer.defaultServer;
outgoing.password = arguments[0];
return [server.serverURI, outgoing.key];
"""

_JS_SHOW_FOLDER = """
const { MailUtils } = ChromeUtils.importESModule("resource:///modules/MailUtils.sys.mjs");
const server = MailServices.accounts.defaultAccount.incomingServer;
const folder = MailUtils.getOrCreateFolder(server.serverURI + "/" + arguments[0]);
const about3 = window.gTabmail.currentAbout3Pane;
if (!about3.gFolder || about3.gFolder.URI != folder.URI) {
  about3.displayFolder(folder);
}
return about3.gFolder ? about3.gFolder.URI : null;
"""

_JS_LIST = """
const about3 = window.gTabmail.currentAbout3Pane;
const view = about3.gDBView;
const rows = [];
if (view) {
  for (let i = 0; i < view.rowCount; i++) {
    const hdr = view.getMsgHdrAt(i);
    rows.push({subject: hdr.mime2DecodedSubject, messageId: hdr.messageId});
  }
}
return {folder: about3.gFolder ? about3.gFolder.URI : null, rows};
"""

_JS_SELECT = """
const about3 = window.gTabmail.currentAbout3Pane;
const view = about3.gDBView;
const am = about3.messageBrowser.contentWindow;
if (arguments[1]) {
  about3.threadTree.selectedIndex = -1;
}
for (let i = 0; view && i < view.rowCount; i++) {
  const hdr = view.getMsgHdrAt(i);
  if (hdr.mime2DecodedSubject == arguments[0]) {
    about3.selectMessage(hdr);
    return hdr.messageId;
  }
}
return null;
"""

_JS_TAG = """
const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
const about3 = window.gTabmail.currentAbout3Pane;
const view = about3.gDBView;
let key = "";
try { key = MailServices.tags.getKeyForTag(arguments[1]); } catch (e) { key = ""; }
if (!key) {
  MailServices.tags.addTag(arguments[1], "#3333ff", "");  // Settings > Tags > Add
  key = MailServices.tags.getKeyForTag(arguments[1]);
}
for (let i = 0; view && i < view.rowCount; i++) {
  const hdr = view.getMsgHdrAt(i);
  if (hdr.mime2DecodedSubject == arguments[0]) {
    hdr.folder.addKeywordsToMessages([hdr], key);  // what the Tag menu does
    return key;
  }
}
return null;
"""

_JS_SHOWN = """
const about3 = window.gTabmail.currentAbout3Pane;
const am = about3.messageBrowser.contentWindow;
const doc = am.document;
const pane = am.getMessagePaneBrowser();
const content = pane && pane.contentDocument;
const names = {};
for (const k in Ci.nsICMSMessageErrors) {
  if (typeof Ci.nsICMSMessageErrors[k] == "number") names[Ci.nsICMSMessageErrors[k]] = k;
}
const status = value =>
  (value === undefined || value === -1) ? null : (names[value] || String(value));
const icon = (id, prefix) => {
  const img = doc.getElementById(id);
  if (!img || img.hidden) return null;
  const m = (img.getAttribute("src") || "").match(new RegExp(prefix + "-([a-z]+)\\\\.svg"));
  return m ? m[1] : (img.getAttribute("src") || "shown");
};
const box = doc.getElementById("cryptoBox");
const subjectBox = doc.getElementById("expandedsubjectBox");
const headerShown = !!subjectBox && !doc.getElementById("msgHeaderView").collapsed;
return {
  messageId: am.gMessage ? am.gMessage.messageId : null,
  loaded: !!am.msgLoaded,
  settled: !!am.msgLoaded && (!!am.gSmimeProcessedDispatched || !am.gExpectedSignatureCount),
  subject: headerShown ? (subjectBox.value || subjectBox).textContent.trim() : null,
  body: content && content.body ? content.body.innerText : "",
  paneUrl: pane && pane.currentURI ? pane.currentURI.spec.slice(0, 200) : "",
  attachments: (am.currentAttachments || []).map(a => ({name: a.name, contentType: a.contentType})),
  crypto: {
    box: !!box && !box.hidden,
    tech: box && !box.hidden ? box.getAttribute("tech") : null,
    encrypted: icon("encryptedHdrIcon", "message-encrypted"),
    signed: icon("signedHdrIcon", "message-signed"),
    signatureStatus: status(am.gSignatureStatus),
    encryptionStatus: status(am.gEncryptionStatus),
  },
};
"""

_JS_SECURITY_OPEN = """
const am = window.gTabmail.currentAbout3Pane.messageBrowser.contentWindow;
const box = am.document.getElementById("cryptoBox");
if (!box || box.hidden) return false;
am.showMessageReadSecurityInfo();
return true;
"""

_JS_SECURITY_READ = """
const am = window.gTabmail.currentAbout3Pane.messageBrowser.contentWindow;
const doc = am.document;
const text = id => {
  const el = doc.getElementById(id);
  return el && !el.collapsed && !el.hidden ? el.textContent.trim() : "";
};
const attr = (id, name) => {
  const el = doc.getElementById(id);
  return el && !el.hidden ? (el.getAttribute(name) || "") : "";
};
const panel = doc.getElementById("messageSecurityPanel");
return {
  buttonTitle: attr("encryptionTechBtn", "title"),
  signedIconAlt: attr("signedHdrIcon", "alt"),
  encryptedIconAlt: attr("encryptedHdrIcon", "alt"),
  panelOpen: !!panel && panel.state == "open",
  signatureLabel: text("signatureLabel"),
  signatureHeader: text("signatureHeader"),
  signatureExplanation: text("signatureExplanation"),
  signedBy: text("signatureCert") ? text("signedBy") : "",
  signerEmail: text("signatureCert") ? text("signerEmail") : "",
  signerIssuer: text("signatureCert") ? text("sigCertIssuedBy") : "",
  encryptionLabel: text("encryptionLabel"),
  encryptionExplanation: text("encryptionExplanation"),
};
"""

_JS_SECURITY_CLOSE = """
const am = window.gTabmail.currentAbout3Pane.messageBrowser.contentWindow;
const panel = am.document.getElementById("messageSecurityPanel");
if (panel && panel.state != "closed") panel.hidePopup();
return true;
"""

_JS_COMPOSE = """
const params = Cc["@mozilla.org/messengercompose/composeparams;1"]
  .createInstance(Ci.nsIMsgComposeParams);
const fields = Cc["@mozilla.org/messengercompose/composefields;1"]
  .createInstance(Ci.nsIMsgCompFields);
fields.to = arguments[0];
fields.subject = arguments[1];
fields.body = arguments[2];
params.type = Ci.nsIMsgCompType.New;
params.format = Ci.nsIMsgCompFormat.PlainText;
params.identity = MailServices.accounts.defaultAccount.defaultIdentity;
params.composeFields = fields;
MailServices.compose.OpenComposeWindowWithParams(null, params);
return true;
"""

_JS_COMPOSE_STATE = """
const win = Services.wm.getMostRecentWindow("msgcompose");
if (!win) return {open: false};
return {open: !win.closed, ready: !!win.gLoadingComplete, subject: win.document.title,
        sending: !!win.gSendOperationInProgress};
"""

_JS_COMPOSE_SEND = """
const win = Services.wm.getMostRecentWindow("msgcompose");
win.goDoCommand("cmd_sendNow");
return true;
"""

_ALERT_OPEN = "unexpected alert open"
_NO_ALERT = "no such alert"

_running: set[Thunderbird] = set()


def _kill_leftovers() -> None:
    for tb in list(_running):
        tb.stop()


atexit.register(_kill_leftovers)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group of ``proc`` (its own session), SIGKILL what is left."""
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(pgid):
                return
            time.sleep(0.05)
    proc.poll()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ThunderbirdError(AssertionError):
    """Thunderbird did not do what was asked in time (the message names the artifacts)."""


class Thunderbird:
    """A running Thunderbird on its own Xvfb; see the module docstring."""

    def __init__(self, workdir: Path, artifacts: Path, account: Account,
                 certs: Sequence[TrustedCert] = (), *, start_timeout: float = 60.0) -> None:
        self.workdir = workdir
        self.artifacts = artifacts
        self.account = account
        self.certs = list(certs)
        self.start_timeout = start_timeout
        self.alerts: list[str] = []
        self.display: str | None = None
        self._xvfb: subprocess.Popen[bytes] | None = None
        self._xvfb_log: Any = None
        self._tb: subprocess.Popen[bytes] | None = None
        self._tb_log: Any = None
        self._marionette: Marionette | None = None
        self._shots = 0

    # --- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Thunderbird:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            with contextlib.suppress(Exception):
                self.screenshot("failure")
        self.stop()

    def start(self) -> None:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        _running.add(self)
        deadline = time.monotonic() + self.start_timeout
        self._start_xvfb(deadline)
        port = _free_port()
        profile = self.workdir / "profile"
        write_profile(profile, self.account, self.certs, port)
        home = self.workdir / "home"
        (home / "tmp").mkdir(parents=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "TMPDIR": str(home / "tmp"),
            "DISPLAY": self.display or "",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
            "DBUS_SESSION_BUS_ADDRESS": "disabled:",
            "NO_AT_BRIDGE": "1",
            "GTK_A11Y": "none",
            "MOZ_ENABLE_WAYLAND": "0",
            "MOZ_CRASHREPORTER_DISABLE": "1",
            "MOZ_DISABLE_AUTO_SAFE_MODE": "1",
            "MOZ_LOG": "sync,timestamp,IMAP:5",
            "MOZ_LOG_FILE": str(self.artifacts / "imap"),
        }
        self._tb_log = (self.artifacts / "thunderbird.log").open("wb")
        self._tb = subprocess.Popen(
            [str(THUNDERBIRD), "--marionette", "--remote-allow-system-access", "--no-remote",
             "--profile", str(profile)],
            stdin=subprocess.DEVNULL, stdout=self._tb_log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        tb_proc = self._tb
        try:
            self._marionette = Marionette.connect(
                "127.0.0.1", port, deadline=deadline, alive=lambda: tb_proc.poll() is None)
            self._marionette.start_chrome_session()
        except (OSError, MarionetteError) as exc:
            raise ThunderbirdError(
                f"Thunderbird did not start ({exc}); exit {tb_proc.poll()}; "
                f"artifacts: {self.artifacts}") from exc
        self.wait_for(lambda: bool(self.run(_JS_MAIN_READY)), "the main window",
                      timeout=max(1.0, deadline - time.monotonic()))
        self.run(_JS_SET_PASSWORDS, self.account.password)

    def _start_xvfb(self, deadline: float) -> None:
        read_fd, write_fd = os.pipe()
        self._xvfb_log = (self.artifacts / "xvfb.log").open("wb")
        try:
            self._xvfb = subprocess.Popen(
                [XVFB, "-displayfd", str(write_fd), "-screen", "0", SCREEN, "-nolisten", "tcp",
                 "-noreset"],
                pass_fds=(write_fd,), stdin=subprocess.DEVNULL,
                stdout=self._xvfb_log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            os.close(write_fd)
        data = b""
        try:
            while not data.endswith(b"\n") and time.monotonic() < deadline:
                chunk = os.read(read_fd, 16)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(read_fd)
        if not data.strip().isdigit():
            raise ThunderbirdError(f"Xvfb did not start (see {self.artifacts / 'xvfb.log'})")
        self.display = ":" + data.decode().strip()

    def stop(self) -> None:
        """Stop Thunderbird and Xvfb (idempotent; never raises)."""
        if self._marionette is not None:
            if self._tb is not None and self._tb.poll() is None:
                with contextlib.suppress(Exception):
                    self.screenshot("final")
                with contextlib.suppress(Exception):
                    self._marionette.set_timeout(5.0)
                    self._marionette.quit()
            with contextlib.suppress(Exception):
                self._marionette.close()
            self._marionette = None
        if self._tb is not None:
            if self._tb.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._tb.wait(timeout=10)
            _stop_group(self._tb, grace=3.0)
            self._tb = None
        if self._tb_log is not None:
            self._tb_log.close()
            self._tb_log = None
        if self._xvfb is not None:
            _stop_group(self._xvfb, grace=3.0)
            self._xvfb = None
        if self._xvfb_log is not None:
            self._xvfb_log.close()
            self._xvfb_log = None
        _running.discard(self)
        with contextlib.suppress(OSError):
            self._write_imap_commands()

    def _write_imap_commands(self) -> None:
        commands: list[str] = []
        for log in sorted(self.artifacts.glob("imap*.moz_log")):
            for line in log.read_text(errors="replace").splitlines():
                m = re.search(r" I/IMAP (\S+?):[^:]*:([^:]*):SendData: (.*)$", line)
                if m:
                    stamp = line[11:26]
                    commands.append(f"{stamp} {m.group(1)[-6:]} {m.group(2)}: {m.group(3)}")
        (self.artifacts / "imap-commands.txt").write_text("\n".join(commands) + "\n")

    # --- Marionette ---------------------------------------------------------------------------

    @property
    def marionette(self) -> Marionette:
        if self._marionette is None:
            raise ThunderbirdError("Thunderbird is not running")
        return self._marionette

    def run(self, script: str, *args: Any) -> Any:
        """Run privileged JS in the main window; alerts in the way are accepted (and kept)."""
        for _ in range(20):
            try:
                return self.marionette.execute(script, *args)
            except MarionetteError as exc:
                if exc.error != _ALERT_OPEN:
                    raise
                self.accept_alerts()
        raise ThunderbirdError(f"alerts keep coming: {self.alerts[-3:]}")

    def accept_alerts(self) -> list[str]:
        """Accept every open alert; returns their texts (also added to ``alerts``)."""
        texts: list[str] = []
        while True:
            try:
                text = self.marionette.command("WebDriver:GetAlertText")
            except MarionetteError as exc:
                if exc.error == _NO_ALERT:
                    break
                raise
            if not texts:
                self.screenshot("alert")
            texts.append(str(text).strip())
            with contextlib.suppress(MarionetteError):
                self.marionette.command("WebDriver:AcceptAlert")
            time.sleep(0.1)
        self.alerts.extend(texts)
        return texts

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 20.0,
                 interval: float = 0.2) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self._tb is None or self._tb.poll() is not None:
                raise ThunderbirdError(f"Thunderbird exited while waiting for {what}; "
                                       f"artifacts: {self.artifacts}")
            if time.monotonic() > deadline:
                self.screenshot("timeout")
                raise ThunderbirdError(f"timed out after {timeout:.0f} s waiting for {what}; "
                                       f"alerts {self.alerts}; artifacts: {self.artifacts}")
            time.sleep(interval)

    def screenshot(self, name: str) -> Path:
        """The whole X screen (dialogs included) as ``NN-name.png`` in the artifacts."""
        self._shots += 1
        path = self.artifacts / f"{self._shots:02d}-{name}.png"
        if shutil.which("import") and self.display:
            subprocess.run(["import", "-display", self.display, "-window", "root", str(path)],
                           capture_output=True, timeout=30, check=False)
        if not path.exists() and self._marionette is not None:
            with contextlib.suppress(MarionetteError, OSError):
                path.write_bytes(self._marionette.screenshot_png())
        return path

    # --- what a user does ------------------------------------------------------------------

    def show_folder(self, name: str = "INBOX") -> None:
        """Select the account's folder ``name`` in the folder pane (Thunderbird logs in,
        SELECTs it and syncs its headers)."""
        uri = f"imap://{self.account.user}@{self.account.imap_host}/{name}"
        self.wait_for(lambda: self.run(_JS_SHOW_FOLDER, name) == uri, f"folder {name}",
                      timeout=20.0)

    def subjects(self) -> list[str]:
        """The subjects in the thread pane, top to bottom."""
        listing = self.run(_JS_LIST)
        return [str(row["subject"]) for row in listing["rows"]]

    def wait_for_subjects(self, subjects: Sequence[str], timeout: float = 30.0) -> list[str]:
        self.wait_for(lambda: all(s in self.subjects() for s in subjects),
                      f"the subjects {list(subjects)} in the message list", timeout=timeout)
        return self.subjects()

    def open_message(self, subject: str, *, reselect: bool = False,
                     timeout: float = 30.0) -> MessageShown:
        """Click the message with ``subject`` in the list and wait until the message pane
        shows it (or until Thunderbird has raised an alert about it and gone quiet).
        ``reselect``: clear the selection first, so that a message already selected is
        opened again."""
        alerts_before = len(self.alerts)
        message_id = self.run(_JS_SELECT, subject, reselect)
        if message_id is None:
            raise ThunderbirdError(f"no message {subject!r} in the list {self.subjects()}")
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        shown: dict[str, Any] = {}
        while time.monotonic() < deadline:
            count = len(self.alerts)
            shown = self.run(_JS_SHOWN)
            if len(self.alerts) != count:
                quiet_since = time.monotonic()
            mine = shown["messageId"] == message_id
            if mine and shown["settled"]:
                time.sleep(0.3)  # late signature callbacks repaint the indicators
                shown = self.run(_JS_SHOWN)
                break
            if quiet_since is not None and time.monotonic() - quiet_since > 2.0:
                break
            time.sleep(0.2)
        else:
            self.screenshot("open-timeout")
            raise ThunderbirdError(f"{subject!r} was not shown within {timeout:.0f} s: "
                                   f"{shown}; artifacts: {self.artifacts}")
        self.screenshot("opened")
        crypto = shown["crypto"]
        return MessageShown(
            subject=shown["subject"],
            body=str(shown["body"]),
            pane_url=str(shown["paneUrl"]),
            attachments=[Attachment(str(a["name"]), str(a["contentType"]))
                         for a in shown["attachments"]],
            crypto=Crypto(box=bool(crypto["box"]), tech=crypto["tech"],
                          encrypted=crypto["encrypted"], signed=crypto["signed"],
                          signature_status=crypto["signatureStatus"],
                          encryption_status=crypto["encryptionStatus"]),
            alerts=self.alerts[alerts_before:],
            loaded=bool(shown["loaded"]) and shown["messageId"] == message_id,
        )

    def tag_message(self, subject: str, tag: str) -> str:
        """Tag the message with ``subject`` with the tag named ``tag`` (made if missing, as
        Settings > Tags > Add does); returns the tag's IMAP keyword."""
        key = self.run(_JS_TAG, subject, tag)
        if key is None:
            raise ThunderbirdError(f"no message {subject!r} in the list {self.subjects()}")
        return str(key)

    def security_info(self, timeout: float = 10.0) -> SecurityInfo | None:
        """Click the shown message's security button (what Ctrl+Alt+S does) and read what its
        "Message Security" panel says (screenshot ``security-info``), then close it. None: no
        security button (a message without S/MIME)."""
        alerts_before = len(self.alerts)
        if not self.run(_JS_SECURITY_OPEN):
            return None
        read: dict[str, Any] = {}

        def ready() -> bool:
            nonlocal read
            read = self.run(_JS_SECURITY_READ)
            return bool(read["panelOpen"] and read["signatureLabel"]) \
                or len(self.alerts) > alerts_before

        self.wait_for(ready, "the Message Security panel", timeout=timeout)
        time.sleep(0.3)  # the icons' alt texts are localized asynchronously
        read = self.run(_JS_SECURITY_READ)
        self.screenshot("security-info")
        self.run(_JS_SECURITY_CLOSE)
        return SecurityInfo(
            button_title=read["buttonTitle"], signed_icon_alt=read["signedIconAlt"],
            encrypted_icon_alt=read["encryptedIconAlt"], panel_open=read["panelOpen"],
            signature_label=read["signatureLabel"], signature_header=read["signatureHeader"],
            signature_explanation=read["signatureExplanation"], signed_by=read["signedBy"],
            signer_email=read["signerEmail"], signer_issuer=read["signerIssuer"],
            encryption_label=read["encryptionLabel"],
            encryption_explanation=read["encryptionExplanation"],
            confirm=" / ".join(self.alerts[alerts_before:]))

    def send_message(self, to: str, subject: str, body: str, timeout: float = 45.0) -> None:
        """Write a new plain-text message in the compose window and press Send; returns when
        the compose window has closed (sent, and the Sent copy saved)."""
        self.run(_JS_COMPOSE, to, subject, body)
        self.wait_for(lambda: bool(self.run(_JS_COMPOSE_STATE).get("ready")),
                      "the compose window", timeout=20.0)
        self.screenshot("compose")
        self.run(_JS_COMPOSE_SEND)
        self.wait_for(lambda: not self.run(_JS_COMPOSE_STATE).get("open"),
                      "the compose window to close after Send", timeout=timeout)
        self.screenshot("sent")
