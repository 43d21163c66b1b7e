"""Opening a large message makes as few copies of it as it can (issue 10: a 25 MB message
in bounded memory), and leaves no reference cycle that would keep a copy alive until the
next garbage collection. Memory is counted by tracemalloc: exact, not a timing."""

from __future__ import annotations

import base64
import gc
import random
import tracemalloc

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.display import open_message
from smime_proxy.smime import Recipient, encrypt_message, sign_message
from support.pki import NOW, Identity

SIZE = 3_000_000


def large(alice: Identity, bob: Identity) -> bytes:
    blob = base64.encodebytes(random.Random(7).randbytes(SIZE)).replace(b"\n", b"\r\n")
    inner = (b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: big\r\n"
             b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
             b"--b\r\nContent-Type: text/plain\r\n\r\nA large attachment.\r\n"
             b"--b\r\nContent-Type: application/octet-stream\r\n"
             b"Content-Transfer-Encoding: base64\r\n\r\n" + blob + b"--b--\r\n")
    signer = InProcessKeyAgent(alice.key, alice.cert, tuple(alice.chain))
    signed = sign_message(inner, signer, now=NOW)
    return encrypt_message(signed, [Recipient(bob.cert, supports_gcm=True)])


def test_a_large_signed_and_encrypted_message_is_opened_in_about_two_copies(
        alice: Identity, bob: Identity, root: Identity) -> None:
    stored = large(alice, bob)
    agent = InProcessKeyAgent(bob.key, bob.cert, tuple(bob.chain))
    gc.collect()
    gc.disable()  # what is freed must be freed by reference counting alone
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        opened = open_message(stored, agent, (root.cert,), now=NOW)
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    shown = len(opened.content)
    assert opened.signature is not None and opened.signature.valid and shown > SIZE
    # the decoded DER and the decrypted entity, or the verified one and the shown one, at
    # once: never three copies (it was three before the ciphertext was read in place and
    # the multipart/signed split in place)
    assert peak - base < 2.3 * shown
    # the shown message and the report's signed content: nothing else outlives it
    assert kept - base < 2.2 * shown


def test_opening_leaves_no_reference_cycle(alice: Identity, bob: Identity,
                                           root: Identity) -> None:
    signed = sign_message(
        b"From: alice@example.test\r\nTo: bob@example.test\r\n\r\nhello\r\n",
        InProcessKeyAgent(alice.key, alice.cert, tuple(alice.chain)), now=NOW)
    message = encrypt_message(signed, [Recipient(bob.cert, supports_gcm=True)])
    agent = InProcessKeyAgent(bob.key, bob.cert, tuple(bob.chain))
    open_message(message, agent, (root.cert,), now=NOW)  # warm caches
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        open_message(message, agent, (root.cert,), now=NOW)
        gc.collect()
        cycles = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert cycles == []
