//! Decrypting the content of an EnvelopedData (AES-CBC, RFC 3565) or AuthEnvelopedData
//! (AES-GCM, RFC 5084) with its content-encryption key, by the OpenSSL the system has. The
//! twin and reference is crypto/enveloped.py `_decrypt_cbc` / `_decrypt_gcm`: this takes
//! only the usual shapes (AES, a 12-byte GCM nonce, parameters in minimal DER) and answers
//! `None` for anything else and every failure, which the Python code then reads and
//! reports itself (the same error for the same input).
//!
//! The plaintext is written once, into the buffer the caller gives (the bytes object the
//! client is shown from): a 25 MB message is not copied again here.

use openssl::cipher::{Cipher, CipherRef};
use openssl::cipher_ctx::CipherCtx;

const BLOCK: usize = 16;

/// The AES cipher for `key`'s length, from the mode's 128-, 192- and 256-bit ciphers.
fn aes(key: &[u8], ciphers: [fn() -> &'static CipherRef; 3]) -> Option<&'static CipherRef> {
    let index = match key.len() {
        16 => 0,
        24 => 1,
        32 => 2,
        _ => return None,
    };
    Some(ciphers[index]())
}

fn aes_cbc(key: &[u8]) -> Option<&'static CipherRef> {
    aes(key, [Cipher::aes_128_cbc, Cipher::aes_192_cbc, Cipher::aes_256_cbc])
}

fn aes_gcm(key: &[u8]) -> Option<&'static CipherRef> {
    aes(key, [Cipher::aes_128_gcm, Cipher::aes_192_gcm, Cipher::aes_256_gcm])
}

/// The IV of AES-CBC: `OCTET STRING` of 16 bytes (RFC 3565 4.1), the whole parameters.
pub fn cbc_iv(parameters: &[u8]) -> Option<&[u8]> {
    match parameters {
        [0x04, 0x10, iv @ ..] if iv.len() == BLOCK => Some(iv),
        _ => None,
    }
}

/// GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING, aes-ICVlen INTEGER DEFAULT 12 }
/// (RFC 5084 3.2): the nonce (12 bytes here) and the tag length, minimal DER only.
pub fn gcm_parameters(parameters: &[u8]) -> Option<(&[u8], usize)> {
    match parameters {
        [0x30, 0x0E, 0x04, 0x0C, rest @ ..] if rest.len() == 12 => Some((rest, 12)),
        [0x30, 0x11, 0x04, 0x0C, rest @ ..] if rest.len() == 15 => match rest[12..] {
            [0x02, 0x01, length] if (12..=16).contains(&length) => {
                Some((&rest[..12], usize::from(length)))
            }
            _ => None,
        },
        _ => None,
    }
}

/// The length of the plaintext of an AES-CBC ciphertext under `key` and `iv`, with its
/// PKCS#7 padding (RFC 5652 6.3) checked, from its last block alone; None for a wrong
/// length or padding.
pub fn cbc_plain_length(key: &[u8], iv: &[u8], ciphertext: &[u8]) -> Option<usize> {
    let cipher = aes_cbc(key)?;
    if ciphertext.is_empty() || ciphertext.len() % BLOCK != 0 {
        return None;
    }
    let at = ciphertext.len() - BLOCK;
    // CBC: a block decrypts under the one before it (the IV for the first) as its IV
    let chain = if at == 0 { iv } else { &ciphertext[at - BLOCK..at] };
    let mut ctx = CipherCtx::new().ok()?;
    ctx.decrypt_init(Some(cipher), Some(key), Some(chain)).ok()?;
    ctx.set_padding(false);
    let mut last = [0u8; 2 * BLOCK];
    let written = ctx.cipher_update(&ciphertext[at..], Some(&mut last)).ok()?;
    if written != BLOCK {
        return None;
    }
    let pad = usize::from(last[BLOCK - 1]);
    if !(1..=BLOCK).contains(&pad) || last[BLOCK - pad..BLOCK].iter().any(|&b| usize::from(b) != pad) {
        return None;
    }
    Some(ciphertext.len() - pad)
}

/// AES-CBC into `out`, whose length `cbc_plain_length` gave: all but the last two blocks
/// straight into it (OpenSSL asks for a block of room more than it writes, which the
/// padding and the last block leave), then those two blocks' unpadded bytes.
pub fn cbc_decrypt(key: &[u8], iv: &[u8], ciphertext: &[u8], out: &mut [u8]) -> Option<()> {
    let cipher = aes_cbc(key)?;
    let head = ciphertext.len().saturating_sub(2 * BLOCK);
    let mut ctx = CipherCtx::new().ok()?;
    ctx.decrypt_init(Some(cipher), Some(key), Some(iv)).ok()?;
    ctx.set_padding(false);
    if head > 0 {
        // without padding, decrypting whole blocks writes exactly as many bytes
        let written = ctx.cipher_update(&ciphertext[..head], Some(&mut out[..head + BLOCK])).ok()?;
        if written != head {
            return None;
        }
    }
    let mut tail = [0u8; 3 * BLOCK];
    let rest = ciphertext.len() - head;
    let written = ctx.cipher_update(&ciphertext[head..], Some(&mut tail)).ok()?;
    if written != rest || out.len() < head || out.len() - head > rest {
        return None;
    }
    let keep = out.len() - head;
    out[head..].copy_from_slice(&tail[..keep]);
    Some(())
}

/// AES-GCM into `out` (as long as the ciphertext); None when the tag does not verify.
pub fn gcm_decrypt(key: &[u8], nonce: &[u8], ciphertext: &[u8], tag: &[u8], out: &mut [u8]) -> Option<()> {
    let cipher = aes_gcm(key)?;
    let mut ctx = CipherCtx::new().ok()?;
    ctx.decrypt_init(Some(cipher), None, None).ok()?;
    ctx.set_iv_length(nonce.len()).ok()?;
    ctx.decrypt_init(None, Some(key), Some(nonce)).ok()?;
    ctx.set_tag(tag).ok()?;
    if !ciphertext.is_empty() {
        // GCM is a stream mode: decrypting writes exactly as many bytes as it reads
        let written = ctx.cipher_update(ciphertext, Some(out)).ok()?;
        if written != ciphertext.len() {
            return None;
        }
    }
    let mut rest = [0u8; BLOCK];
    match ctx.cipher_final(&mut rest) {
        Ok(0) => Some(()),
        _ => None,
    }
}
