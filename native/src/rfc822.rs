//! Content-Type values read as Dovecot 2.3 reads them (`rfc822-parser.c`,
//! `rfc2231-parser.c`): the native twin of `smime_proxy/mime/rfc822.py`'s
//! `parse_content_type`, which is its reference (tests/unit/mime/test_native.py).

/// (type, subtype or None, parameters, Dovecot's return code -1/0/1)
pub type ContentType = (Vec<u8>, Option<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>, i32);

// Dovecot's rfc822_atext_chars: 1 = atext, 2 = alpha/digit/8-bit, 4 = atext but MIME tspecial.
const fn atext_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let ones = b"!#$%&'*+-^_`{|}~";
    let mut i = 0;
    while i < ones.len() {
        t[ones[i] as usize] = 1;
        i += 1;
    }
    t[b'/' as usize] = 4;
    t[b'=' as usize] = 4;
    t[b'?' as usize] = 4;
    let mut c = 0usize;
    while c < 256 {
        if (c >= b'0' as usize && c <= b'9' as usize)
            || (c >= b'A' as usize && c <= b'Z' as usize)
            || (c >= b'a' as usize && c <= b'z' as usize)
            || c >= 0x80
        {
            t[c] = 2;
        }
        c += 1;
    }
    t
}

const ATEXT: [u8; 256] = atext_table();

fn is_token(c: u8) -> bool {
    ATEXT[c as usize] & 3 != 0 || c == b'.'
}

/// A cursor over one header value (Dovecot's `struct rfc822_parser_context`).
/// Methods return Dovecot's codes: -1 error, 0 end of input reached, 1 more input follows.
struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn more(&self) -> i32 {
        if self.pos < self.data.len() {
            1
        } else {
            0
        }
    }

    /// One (nested) comment; its text is not kept (a Content-Type does not need it).
    fn skip_comment(&mut self) -> i32 {
        let data = self.data;
        let mut level = 1;
        self.pos += 1;
        while self.pos < data.len() {
            match data[self.pos] {
                b'(' => level += 1,
                b')' => {
                    level -= 1;
                    if level == 0 {
                        self.pos += 1;
                        return self.more();
                    }
                }
                b'\\' => {
                    self.pos += 1;
                    if self.pos >= data.len() {
                        return -1;
                    }
                    if matches!(data[self.pos], b'\r' | b'\n' | 0) {
                        self.pos -= 1; // kept as a character
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        -1
    }

    fn skip_lwsp(&mut self) -> i32 {
        let data = self.data;
        while self.pos < data.len() {
            while self.pos < data.len() && matches!(data[self.pos], b' ' | b'\t' | b'\r' | b'\n') {
                self.pos += 1;
            }
            if self.pos >= data.len() || data[self.pos] != b'(' {
                break;
            }
            if self.skip_comment() < 0 {
                return -1;
            }
        }
        self.more()
    }

    fn parse_atom(&mut self, out: &mut Vec<u8>) -> i32 {
        if self.pos >= self.data.len() || ATEXT[self.data[self.pos] as usize] == 0 {
            return -1;
        }
        let start = self.pos;
        while self.pos < self.data.len() && ATEXT[self.data[self.pos] as usize] != 0 {
            self.pos += 1;
        }
        out.extend_from_slice(&self.data[start..self.pos]);
        if self.pos < self.data.len() {
            self.skip_lwsp()
        } else {
            0
        }
    }

    fn parse_mime_token(&mut self, out: &mut Vec<u8>) -> i32 {
        let start = self.pos;
        while self.pos < self.data.len() && is_token(self.data[self.pos]) {
            self.pos += 1;
        }
        out.extend_from_slice(&self.data[start..self.pos]);
        if self.pos < self.data.len() {
            self.skip_lwsp()
        } else {
            0
        }
    }

    fn parse_quoted_string(&mut self, out: &mut Vec<u8>) -> i32 {
        let data = self.data;
        self.pos += 1;
        let mut start = self.pos;
        while self.pos < data.len() {
            match memchr::memchr3(b'"', b'\\', b'\n', &data[self.pos..]) {
                None => {
                    self.pos = data.len();
                    break;
                }
                Some(offset) => self.pos += offset,
            }
            match data[self.pos] {
                b'"' => {
                    out.extend_from_slice(&data[start..self.pos]);
                    self.pos += 1;
                    return self.skip_lwsp();
                }
                b'\n' => {
                    let mut seg_end = self.pos;
                    if seg_end > start && data[seg_end - 1] == b'\r' {
                        seg_end -= 1;
                    }
                    out.extend_from_slice(&data[start..seg_end]);
                    start = self.pos + 1;
                }
                _ => {
                    // a backslash
                    self.pos += 1;
                    if self.pos >= data.len() {
                        return -1;
                    }
                    if matches!(data[self.pos], b'\r' | b'\n' | 0) {
                        self.pos -= 1; // kept as a character
                    } else {
                        out.extend_from_slice(&data[start..self.pos - 1]);
                        start = self.pos;
                    }
                }
            }
            self.pos += 1;
        }
        -1
    }

    /// type "/" subtype; on a broken value after the type, `out` is emptied.
    fn parse_content_type(&mut self, out: &mut Vec<u8>) -> i32 {
        if self.skip_lwsp() <= 0 {
            return -1;
        }
        if self.parse_mime_token(out) <= 0 || out.is_empty() {
            return -1;
        }
        if self.data[self.pos] != b'/' {
            out.clear();
            return -1;
        }
        self.pos += 1;
        if self.skip_lwsp() <= 0 {
            out.clear();
            return -1;
        }
        out.push(b'/');
        let type_len = out.len();
        let ret = self.parse_mime_token(out);
        if ret < 0
            || out.len() == type_len
            || (self.pos < self.data.len() && self.data[self.pos] != b';')
        {
            out.clear();
            return -1;
        }
        ret
    }

    /// One `; key=value`: (ret, key, value); ret 0 at the end, -1 broken, 1 found.
    fn parse_content_param(&mut self) -> (i32, Vec<u8>, Vec<u8>) {
        let data = self.data;
        if self.pos >= data.len() {
            return (0, Vec::new(), Vec::new());
        }
        if data[self.pos] != b';' {
            return (-1, Vec::new(), Vec::new());
        }
        self.pos += 1;
        if self.skip_lwsp() <= 0 {
            return (-1, Vec::new(), Vec::new());
        }
        let mut key = Vec::new();
        if self.parse_mime_token(&mut key) <= 0 {
            return (-1, Vec::new(), Vec::new());
        }
        if data[self.pos] != b'=' {
            return (-1, Vec::new(), Vec::new());
        }
        self.pos += 1;
        let mut value = Vec::new();
        let mut ret = self.skip_lwsp();
        if ret <= 0 {
        } else if data[self.pos] == b'"' {
            ret = self.parse_quoted_string(&mut value);
        } else if data[self.pos] == b'=' {
            // Dovecot's workaround for name==?utf-8?b?...?=
            let start = self.pos;
            while self.pos < data.len() && !matches!(data[self.pos], b';' | b' ' | b'\t' | b'\r' | b'\n') {
                self.pos += 1;
            }
            value.extend_from_slice(&data[start..self.pos]);
        } else {
            ret = self.parse_mime_token(&mut value);
        }
        (if ret < 0 { -1 } else { 1 }, key, value)
    }
}

struct Extended {
    name: Vec<u8>,
    index: u32,
    extended: bool,
    value: Vec<u8>,
    order: usize,
}

/// The remaining `;`-parameters, RFC 2231 continuations merged as Dovecot merges them.
fn rfc2231_parse(parser: &mut Parser<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut result = Vec::new();
    let mut ext: Vec<Extended> = Vec::new();
    // Dovecot keeps the index of a previous `key*N` for a later `key*` (no digits)
    let mut index: u32 = 0;
    loop {
        let (ret, key, value) = parser.parse_content_param();
        if ret == 0 {
            break;
        }
        if ret < 0 {
            if parser.pos >= parser.data.len() {
                break;
            }
            parser.pos += 1;
            continue;
        }
        let star = match key.iter().position(|&c| c == b'*') {
            None => {
                result.push((key, value));
                continue;
            }
            Some(star) => star,
        };
        let mut p = star;
        if p + 1 < key.len() {
            p += 1;
            index = 0;
            while p < key.len() && key[p].is_ascii_digit() {
                index = index.wrapping_mul(10).wrapping_add(u32::from(key[p] - b'0'));
                p += 1;
            }
        }
        let extended = p < key.len() && key[p] == b'*';
        if extended {
            p += 1;
        }
        if p < key.len() {
            result.push((key, value));
        } else {
            let order = ext.len();
            ext.push(Extended { name: key[..star].to_vec(), index, extended, value, order });
        }
    }
    if ext.is_empty() {
        return result;
    }
    ext.sort_by(|a, b| (&a.name, a.index, a.order).cmp(&(&b.name, b.index, b.order)));
    let mut i = 0;
    while i < ext.len() {
        let first_key = ext[i].name.to_ascii_lowercase();
        let mut ok = true;
        let mut have_extended = false;
        let mut next_index: u64 = 0;
        let mut j = i;
        while j < ext.len() && ext[j].name.to_ascii_lowercase() == first_key {
            if u64::from(ext[j].index) != next_index {
                ok = false;
            }
            have_extended |= ext[j].extended;
            next_index += 1;
            j += 1;
        }
        if !ok {
            for e in &ext[i..j] {
                let mut name = e.name.clone();
                name.extend_from_slice(format!("*{}", e.index).as_bytes());
                if e.extended {
                    name.push(b'*');
                }
                result.push((name, e.value.clone()));
            }
        } else {
            let mut merged = Vec::new();
            if !ext[i].extended && have_extended {
                merged.extend_from_slice(b"''");
            }
            for e in &ext[i..j] {
                if !e.extended && have_extended {
                    for &c in &e.value {
                        if c == b'%' {
                            merged.extend_from_slice(b"%25");
                        } else {
                            merged.push(c);
                        }
                    }
                } else {
                    merged.extend_from_slice(&e.value);
                }
            }
            let mut name = ext[i].name.clone();
            if have_extended {
                name.push(b'*');
            }
            result.push((name, merged));
        }
        i = j;
    }
    result
}

/// (type, subtype or None, parameters, ret) of a Content-Type value, Dovecot-tolerant.
pub fn parse_content_type(value: &[u8]) -> ContentType {
    let mut parser = Parser { data: value, pos: 0 };
    parser.skip_lwsp();
    let mut out = Vec::new();
    let ret = parser.parse_content_type(&mut out);
    let (ctype, subtype) = match out.iter().position(|&c| c == b'/') {
        Some(slash) => (out[..slash].to_vec(), Some(out[slash + 1..].to_vec())),
        None => (out, None),
    };
    if ret < 0 {
        return (ctype, subtype, Vec::new(), ret);
    }
    let params = rfc2231_parse(&mut parser);
    (ctype, subtype, params, ret)
}

/// rfc822.py `parse_transfer_encoding`: the Content-Transfer-Encoding token, or None when
/// Dovecot would ignore the field.
pub fn parse_transfer_encoding(value: &[u8]) -> Option<Vec<u8>> {
    let mut parser = Parser { data: value, pos: 0 };
    parser.skip_lwsp();
    let mut out = Vec::new();
    if parser.parse_mime_token(&mut out) >= 0 && parser.skip_lwsp() == 0 && !out.is_empty() {
        Some(out)
    } else {
        None
    }
}

/// rfc822.py `parse_token_value`: (token, parameters) of a Content-Disposition-like value.
pub fn parse_token_value(value: &[u8]) -> (Option<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>) {
    let mut parser = Parser { data: value, pos: 0 };
    parser.skip_lwsp();
    let mut out = Vec::new();
    if parser.parse_mime_token(&mut out) < 0 {
        return (None, Vec::new());
    }
    let params = rfc2231_parse(&mut parser);
    (Some(out), params)
}

/// rfc822.py `parse_language`: Content-Language tags (atoms separated by commas).
pub fn parse_language(value: &[u8]) -> Vec<Vec<u8>> {
    let mut parser = Parser { data: value, pos: 0 };
    let mut langs = Vec::new();
    parser.skip_lwsp();
    loop {
        let mut out = Vec::new();
        if parser.parse_atom(&mut out) < 0 {
            break;
        }
        langs.push(out);
        if parser.pos >= parser.data.len() || parser.data[parser.pos] != b',' {
            break;
        }
        parser.pos += 1;
        parser.skip_lwsp();
    }
    langs
}
