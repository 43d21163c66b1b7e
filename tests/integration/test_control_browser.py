"""The "Secure Mail" page in a real browser: Playwright driving Debian's Chromium (never
`playwright install`), against a running daemon with the real Dovecot as credential check."""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from smime_proxy.harness import Upstream
from support.control import RunningControl, Upstreamish, running_control
from support.pki import make_ca, make_user

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SMP = "browser-smp-1"
ALICE_PW = "alice-pw"  # her mail password at the test upstream

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's chromium is not installed (scripts/test.sh)")


@pytest.fixture
def control(tmp_path: Path, upstream: Upstream) -> Iterator[RunningControl]:
    imap = Upstreamish(host=upstream.host, port=upstream.imap_port, tls="starttls",
                       ca_file=upstream.ca_file)
    with running_control(tmp_path, imap) as running:
        yield running


def test_secure_mail_page_in_chromium(control: RunningControl, tmp_path: Path,
                                      upstream: Upstream) -> None:
    from playwright.sync_api import expect, sync_playwright

    ca = make_ca("Browser Test CA")
    alice = make_user("alice@example.test", ca)
    bob = make_user("bob@example.test", ca)
    p12_path = tmp_path / "alice.p12"
    p12_path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"alice", alice.key, alice.cert, [ca.cert],
        serialization.BestAvailableEncryption(b"file-pw")))
    bob_pem = tmp_path / "bob.pem"
    bob_pem.write_bytes(bob.cert_pem())
    problems: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(accept_downloads=True).new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))

            # log in with the mail account
            page.goto(control.url + "/")
            page.get_by_label("Mail user name").fill("alice")
            page.get_by_label("Mail password").fill(ALICE_PW)
            page.get_by_label("Mail domain (for your address, optional)").fill("example.test")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_text("Logged in as")).to_be_visible()

            # import a PKCS#12 and see the certificate
            form = page.locator("#import-form")
            form.get_by_label("PFX file").set_input_files(str(p12_path))
            form.get_by_label("File password").fill("file-pw")
            form.get_by_label("New Secure Mail Password", exact=True).fill(SMP)
            form.get_by_label("New Secure Mail Password again").fill(SMP)
            form.get_by_role("button", name="Import").click()
            expect(page.get_by_text("The key and certificate were imported.")).to_be_visible()
            table = page.locator("#certificate-data")
            expect(table).to_contain_text("alice@example.test")
            expect(table).to_contain_text("RSA 2048 bits")
            expect(table).to_contain_text("Browser Test CA")

            # locked after import: unlock, lock, unlock
            expect(page.get_by_role("heading", name="Secure Mail is Locked")).to_be_visible()
            page.locator("#locked").get_by_label("Secure Mail Password").fill("wrong")
            page.get_by_role("button", name="Unlock").click()
            expect(page.get_by_text("wrong user name or Secure Mail Password")).to_be_visible()
            page.locator("#locked").get_by_label("Secure Mail Password").fill(SMP)
            page.get_by_role("button", name="Unlock").click()
            expect(page.get_by_role("heading", name="Secure Mail is Unlocked")).to_be_visible()
            expect(page.locator("#seconds-left")).to_be_visible()
            page.get_by_role("button", name="Lock now").click()
            expect(page.get_by_role("heading", name="Secure Mail is Locked")).to_be_visible()
            page.locator("#locked").get_by_label("Secure Mail Password").fill(SMP)
            page.get_by_role("button", name="Unlock").click()
            expect(page.get_by_role("heading", name="Secure Mail is Unlocked")).to_be_visible()

            # unlock by mail login (issue 13): the price in one sentence, on, then off
            form = page.locator("#mail-unlock-form")
            expect(form).to_contain_text("only as safe as your mail password")
            form.get_by_label("Secure Mail Password").fill(SMP)
            form.get_by_label("Mail password", exact=True).fill("not-the-mail-password")
            form.get_by_role("button", name="Turn on").click()
            assert not control.services.secure_mail.mail_unlock_enabled("alice")
            form = page.locator("#mail-unlock-form")
            form.get_by_label("Secure Mail Password").fill(SMP)
            form.get_by_label("Mail password", exact=True).fill(ALICE_PW)
            form.get_by_role("button", name="Turn on").click()
            expect(page.get_by_text("Your mail login now unlocks Secure Mail.")).to_be_visible()
            assert control.services.secure_mail.mail_unlock_enabled("alice")
            page.locator("#mail-unlock-form").get_by_role("button", name="Turn off").click()
            expect(page.get_by_text("no longer unlocks")).to_be_visible()
            assert not control.services.secure_mail.mail_unlock_enabled("alice")

            # the Encryption Method (issue 14): kept, and shown selected
            form = page.locator("#encryption-method-form")
            form.get_by_label("Encryption Method").select_option("aes-128-cbc")
            form.get_by_role("button", name="Save").click()
            expect(page.get_by_text("Encryption Method: aes-128-cbc.")).to_be_visible()
            assert control.services.secure_mail.encryption_method("alice") == "aes-128-cbc"
            expect(page.locator("#encryption-method-form select")).to_have_value("aes-128-cbc")

            # Store Encrypted (issue 11): the user's own switch
            page.locator("#store-encrypted-form").get_by_role("button", name="Turn on").click()
            expect(page.get_by_text("New plain mail will be stored encrypted.")).to_be_visible()
            assert control.services.secure_mail.store_encrypted_choice("alice")

            # encrypt a folder in place (issue 11): started, then done, in the list
            folder = f"PageStore{tmp_path.name[-8:]}"
            with imaplib.IMAP4(upstream.host, upstream.imap_port) as imap:
                imap.login("alice", ALICE_PW)
                imap.create(folder)
                imap.append(folder, "(\\Seen)", None, b"Subject: p\r\n\r\npage body\r\n")
            form = page.locator("#store-form")
            form.get_by_label("Folder").fill(folder)
            form.get_by_label("Secure Mail Password").fill(SMP)
            form.get_by_label("Mail password", exact=True).fill(ALICE_PW)
            form.get_by_role("button", name="Start").click()
            expect(page.get_by_text(f"Started: encrypt every message of {folder}.")
                   ).to_be_visible()
            for _ in range(100):
                page.goto(control.url + "/")
                if "done" in page.locator("#store-operations").inner_text():
                    break
                page.wait_for_timeout(100)
            expect(page.locator("#store-operations")).to_contain_text("1 of 1")

            # the folders with their counts, then one message found and encrypted alone
            with imaplib.IMAP4(upstream.host, upstream.imap_port) as imap:
                imap.login("alice", ALICE_PW)
                for subject in ("find me", "leave me"):
                    imap.append(folder, "", None, f"Subject: {subject}\r\n\r\nx\r\n".encode())
            form = page.locator("#folders-form")
            form.get_by_label("Mail password").fill(ALICE_PW)
            form.get_by_role("button", name="Show Folders").click()
            row = page.locator("#folder-counts tr", has_text=folder)
            expect(row).to_have_text(re.compile(rf"{folder}\s*3\s*1\s*2"))
            form = page.locator("#find-form")
            form.get_by_label("Folder").fill(folder)
            form.get_by_label("Subject contains").fill("find")
            form.get_by_label("Mail password").fill(ALICE_PW)
            form.get_by_role("button", name="Find").click()
            expect(page.get_by_text("1 message(s) found.")).to_be_visible()
            form = page.locator("#found-form")
            expect(form.locator("#found-messages")).to_contain_text("find me")
            form.get_by_role("checkbox").check()
            form.get_by_label("Secure Mail Password").fill(SMP)
            form.get_by_label("Mail password", exact=True).fill(ALICE_PW)
            form.get_by_role("button", name="Start").click()
            expect(page.get_by_text(f"Started: encrypt 1 message(s) of {folder}.")
                   ).to_be_visible()
            for _ in range(100):
                page.goto(control.url + "/")
                if "running" not in page.locator("#store-operations").inner_text():
                    break
                page.wait_for_timeout(100)
            page.locator("#folders-form").get_by_label("Mail password").fill(ALICE_PW)
            page.locator("#folders-form").get_by_role("button", name="Show Folders").click()
            expect(page.locator("#folder-counts tr", has_text=folder)).to_have_text(
                re.compile(rf"{folder}\s*3\s*2\s*1"))

            # export CertAndKey.pfx
            form = page.locator("#export-form")
            form.get_by_label("Secure Mail Password").fill(SMP)
            form.get_by_label("Export file password", exact=True).fill("exp-pw")
            form.get_by_label("Export file password again").fill("exp-pw")
            with page.expect_download() as download_info:
                form.get_by_role("button", name="Export").click()
            download = download_info.value
            assert download.suggested_filename == "CertAndKey.pfx"
            exported = tmp_path / "CertAndKey.pfx"
            download.save_as(str(exported))
            _key, cert, _ = pkcs12.load_key_and_certificates(exported.read_bytes(), b"exp-pw")
            assert cert is not None and cert.serial_number == alice.cert.serial_number

            # remove with the exported file
            form = page.locator("#remove-form")
            form.get_by_label("PFX file").set_input_files(str(exported))
            form.get_by_label("File password").fill("exp-pw")
            form.get_by_role("button", name="Compare and Delete").click()
            expect(page.get_by_text("The key and certificate were removed.")).to_be_visible()
            expect(page.locator("#import-form")).to_be_visible()
            assert not control.services.secure_mail.has_key("alice")

            # import it again
            form = page.locator("#import-form")
            form.get_by_label("PFX file").set_input_files(str(exported))
            form.get_by_label("File password").fill("exp-pw")
            form.get_by_label("New Secure Mail Password", exact=True).fill(SMP)
            form.get_by_label("New Secure Mail Password again").fill(SMP)
            form.get_by_role("button", name="Import").click()
            expect(page.locator("#certificate-data")).to_contain_text("alice@example.test")

            # the address book, with the certificate marker
            book = page.locator("#address-book")
            book.get_by_label("Certificate file (PEM or DER)").set_input_files(str(bob_pem))
            book.get_by_role("button", name="Add").click()
            expect(page.locator("#contacts")).to_contain_text("bob@example.test")
            expect(page.locator("#contacts .cert-marker")).to_have_text("[certificate]")

            # remove again, then generate a new key from the server CA
            form = page.locator("#remove-form")
            form.get_by_label("PFX file").set_input_files(str(exported))
            form.get_by_label("File password").fill("exp-pw")
            form.get_by_role("button", name="Compare and Delete").click()
            expect(page.get_by_text("The key and certificate were removed.")).to_be_visible()
            form = page.locator("#generate-form")
            expect(form.get_by_label("E-mail address")).to_have_value("alice@example.test")
            form.get_by_label("New Secure Mail Password", exact=True).fill(SMP)
            form.get_by_label("New Secure Mail Password again").fill(SMP)
            form.get_by_role("button", name="Generate").click()
            expect(page.get_by_text("A new key and certificate were generated.")).to_be_visible()
            expect(page.locator("#certificate-data")).to_contain_text("smime-proxy Server CA")
            new_cert = control.services.secure_mail.certificate("alice")
            assert new_cert.serial_number != alice.cert.serial_number

            # log out: the key is locked and the login form is back
            page.locator("#locked").get_by_label("Secure Mail Password").fill(SMP)
            page.get_by_role("button", name="Unlock").click()
            expect(page.get_by_role("heading", name="Secure Mail is Unlocked")).to_be_visible()
            page.get_by_role("button", name="Log out (locks the key)").click()
            expect(page.get_by_label("Mail user name")).to_be_visible()
            state = control.services.secure_mail.unlock_state("alice", control.clock())
            assert not state.unlocked
        finally:
            browser.close()
    assert problems == []  # no script error, no CSP violation
