//! Base64 decoding exactly as CPython's non-strict `binascii.a2b_base64` does it
//! (Modules/binascii.c), its twin and reference: characters outside the alphabet are
//! skipped, a pad that completes a quantum ends the data (what follows is ignored), a pad
//! before the third character of a quantum is skipped, and a last quantum of one character
//! or an unpadded partial one is an error. `binascii` reads a byte at a time (150 µs for a
//! 27 KB message body on the bench machine, with the GIL held); here whole quanta of four
//! alphabet characters are decoded at once.

/// The six-bit value of each byte, or 64 for a byte outside the alphabet.
const TABLE: [u8; 256] = {
    let mut table = [64u8; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Why a2b_base64 would raise `binascii.Error` (the caller lets binascii raise it).
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// one data character more than a multiple of four
    ExcessCharacter,
    /// a partial quantum without its padding
    IncorrectPadding,
}

pub fn decode(input: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 3);
    let mut quad_pos = 0u8;
    let mut left = 0u32;
    let mut pads = 0u8;
    let mut i = 0;
    let n = input.len();
    while i < n {
        if quad_pos == 0 && i + 4 <= n {
            let (a, b, c, d) = (
                TABLE[input[i] as usize],
                TABLE[input[i + 1] as usize],
                TABLE[input[i + 2] as usize],
                TABLE[input[i + 3] as usize],
            );
            if (a | b | c | d) < 64 {
                let v = (u32::from(a) << 18) | (u32::from(b) << 12) | (u32::from(c) << 6) | u32::from(d);
                out.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]);
                pads = 0;
                i += 4;
                continue;
            }
        }
        let ch = input[i];
        i += 1;
        if ch == b'=' {
            if quad_pos >= 2 {
                pads += 1;
                if quad_pos + pads >= 4 {
                    return Ok(out); // the quantum is complete: nothing after it is read
                }
            }
            continue;
        }
        let value = TABLE[ch as usize];
        if value >= 64 {
            continue;
        }
        pads = 0;
        let value = u32::from(value);
        match quad_pos {
            0 => {
                quad_pos = 1;
                left = value;
            }
            1 => {
                quad_pos = 2;
                out.push(((left << 2) | (value >> 4)) as u8);
                left = value & 0x0f;
            }
            2 => {
                quad_pos = 3;
                out.push(((left << 4) | (value >> 2)) as u8);
                left = value & 0x03;
            }
            _ => {
                quad_pos = 0;
                out.push(((left << 6) | value) as u8);
                left = 0;
            }
        }
    }
    match quad_pos {
        0 => Ok(out),
        1 => Err(Error::ExcessCharacter),
        _ => Err(Error::IncorrectPadding),
    }
}
