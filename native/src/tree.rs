//! A MIME tree of byte offsets, split by Dovecot 2.3's `message-parser.c` rules: the native
//! twin of `smime_proxy/mime/tree.py` (its `_Parser`), which is its reference and documents
//! the rules (tests/unit/mime/test_native.py compares the two on every tree).

use crate::rfc822::{parse_content_type, ContentType};

pub const MAX_NESTING: usize = 100;
pub const MAX_PARTS: usize = 10000;
const BOUNDARY_STRING_MAX_LEN: usize = 80;
const BOUNDARY_END_MAX_LEN: usize = BOUNDARY_STRING_MAX_LEN + 4;

pub struct Header {
    pub name: (usize, usize),
    pub start: usize,
    pub value_start: usize,
    pub end: usize,
    pub has_colon: bool,
    /// the value, when the parser needed it (the first Content-Type)
    pub value: Option<Vec<u8>>,
}

#[derive(Default)]
pub struct Part {
    pub start: usize,
    pub body_start: usize,
    pub end: usize,
    pub headers: Vec<Header>,
    pub parent: Option<usize>,
    pub is_mime: bool,
    pub is_multipart: bool,
    pub is_digest: bool,
    pub is_message_rfc822: bool,
    pub is_text: bool,
    pub boundary: Option<Vec<u8>>,
    pub header_complete: bool,
    pub depth: usize,
    pub overflow: bool,
    pub ct: Option<ContentType>,
}

struct Boundary {
    part: usize,
    value: Vec<u8>,
}

/// A header value as Dovecot hands it to its parsers (tree.py `Header._value`).
pub fn header_value(data: &[u8], value_start: usize, end: usize, has_colon: bool) -> Vec<u8> {
    if !has_colon {
        return Vec::new();
    }
    let mut raw = &data[value_start..end];
    if raw.ends_with(b"\r\n") {
        raw = &raw[..raw.len() - 2];
    } else if raw.ends_with(b"\n") {
        raw = &raw[..raw.len() - 1];
    }
    let lwsp = |s: &[u8]| s.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    if memchr::memchr(b'\n', raw).is_none() {
        let skip = lwsp(raw);
        if skip < raw.len() || raw.is_empty() {
            return raw[skip..].to_vec();
        }
        return raw[1..].to_vec();
    }
    let owned: Vec<u8>;
    let raw: &[u8] = if memchr::memmem::find(raw, b"\r\n").is_some() {
        let mut v = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'\r' && i + 1 < raw.len() && raw[i + 1] == b'\n' {
                i += 1;
                continue;
            }
            v.push(raw[i]);
            i += 1;
        }
        owned = v;
        &owned
    } else {
        raw
    };
    let first_end = memchr::memchr(b'\n', raw).unwrap_or(raw.len());
    let first = &raw[..first_end];
    let skip_first = lwsp(first);
    let skip = if skip_first == first.len() && !first.is_empty() { 1 } else { skip_first };
    raw[skip..].to_vec()
}

struct Parser<'a> {
    data: &'a [u8],
    n: usize,
    boundaries: Vec<Boundary>,
    parts: Vec<Part>,
}

fn starts_with_at(data: &[u8], at: usize, prefix: &[u8]) -> bool {
    at <= data.len() && data[at..].starts_with(prefix)
}

impl<'a> Parser<'a> {
    /// The open boundary (its index) the line at `line` delimits, and whether it closes.
    fn boundary_at(&self, line: usize) -> Option<(usize, bool)> {
        let data = self.data;
        if self.boundaries.is_empty() || !starts_with_at(data, line, b"--") {
            return None;
        }
        let start = line + 2;
        let mut trailing_dash = false;
        let find_size = match memchr::memchr(b'\n', &data[start..]) {
            Some(offset) => {
                let mut size = offset;
                if size > 0 && data[start + size - 1] == b'\r' {
                    size -= 1;
                }
                if size > 2 && &data[start + size - 2..start + size] == b"--" {
                    trailing_dash = true;
                }
                size
            }
            None => (self.n - start).min(BOUNDARY_END_MAX_LEN),
        };
        let mut best: Option<usize> = None;
        for (index, b) in self.boundaries.iter().enumerate().rev() {
            let blen = b.value.len();
            if blen <= find_size
                && best.map_or(true, |i| self.boundaries[i].value.len() < blen)
                && starts_with_at(data, start, &b.value)
            {
                best = Some(index);
                if blen == find_size || (trailing_dash && blen == find_size - 2) {
                    break;
                }
            }
        }
        let best = best?;
        let blen = self.boundaries[best].value.len();
        let closing = starts_with_at(data, start + blen, b"--") && start + blen + 2 <= self.n;
        Some((best, closing))
    }

    fn new_part(&mut self, start: usize, parent: usize, is_mime: bool) -> usize {
        let depth = self.parts[parent].depth + 1;
        self.parts.push(Part { start, parent: Some(parent), is_mime, depth, ..Part::default() });
        self.parts.len() - 1
    }

    fn run(&mut self) {
        let data = self.data;
        let n = self.n;
        self.parts.push(Part::default());
        let mut part = 0usize;
        let mut pos = 0usize;
        let mut logical = 0usize;
        let mut nl_owner: Option<usize> = None;
        loop {
            // ---- header block of `part`, starting at pos ----
            let (next, mut cut) = self.parse_header(part, pos, logical);
            pos = next;
            if cut < pos && !self.parts[part].headers.is_empty() {
                nl_owner = self.parts[part].parent;
            }
            self.classify(part);
            let p = &mut self.parts[part];
            if p.header_complete && p.boundary.is_some() && p.is_multipart {
                if p.depth + 1 < MAX_NESTING {
                    let value = p.boundary.clone().unwrap_or_default();
                    self.boundaries.push(Boundary { part, value });
                } else {
                    p.is_multipart = false;
                    p.is_digest = false;
                    p.boundary = None;
                    p.overflow = true;
                }
            } else if p.is_multipart {
                p.boundary = None;
            }
            if self.parts[part].header_complete && !self.boundaries.is_empty() && cut == pos {
                if let Some((found, _)) = self.boundary_at(pos) {
                    if self.boundaries[found].part != part {
                        let blank = if pos >= 2 && data[pos - 2] == b'\r' { 2 } else { 1 };
                        cut = pos - blank;
                        self.parts[part].body_start = cut;
                        nl_owner = self.parts[part].parent;
                    }
                }
            }
            let count = self.parts.len();
            let p = &mut self.parts[part];
            if p.is_message_rfc822 && (p.depth + 1 >= MAX_NESTING || count >= MAX_PARTS) {
                p.is_message_rfc822 = false;
                p.overflow = true;
            }
            if self.parts[part].is_message_rfc822 {
                part = self.new_part(cut, part, false);
                logical = cut;
                continue;
            }
            // ---- body of `part` up to a delimiter of an open multipart, or EOF ----
            let mut first_line_cut = cut;
            loop {
                let mut found = None;
                let mut line = 0usize;
                let mut delim_start = 0usize;
                if !self.boundaries.is_empty() {
                    found = self.boundary_at(pos);
                    if found.is_some() {
                        line = pos;
                        delim_start = first_line_cut;
                    } else {
                        let mut search = pos;
                        while let Some(offset) = memchr::memmem::find(&data[search..], b"\n--") {
                            let hit = search + offset;
                            found = self.boundary_at(hit + 1);
                            if found.is_some() {
                                line = hit + 1;
                                delim_start =
                                    if hit > pos && data[hit - 1] == b'\r' { hit - 1 } else { hit };
                                break;
                            }
                            search = hit + 1;
                        }
                    }
                }
                let (boundary, closing) = match found {
                    None => {
                        let mut p = Some(part);
                        while let Some(i) = p {
                            self.parts[i].end = n;
                            p = self.parts[i].parent;
                        }
                        return;
                    }
                    Some(found) => found,
                };
                // close every part up to the multipart that owns the boundary
                let owner = self.boundaries[boundary].part;
                let mut below_nl = true;
                while part != owner {
                    if Some(part) == nl_owner {
                        below_nl = false;
                    }
                    let p = &mut self.parts[part];
                    p.end = if below_nl { delim_start.max(p.body_start) } else { line };
                    part = p.parent.expect("a boundary's owner encloses the part");
                }
                nl_owner = None;
                self.boundaries.truncate(boundary + usize::from(!closing));
                // skip the rest of the delimiter line
                pos = match memchr::memchr(b'\n', &data[line..]) {
                    Some(offset) => line + offset + 1,
                    None => n,
                };
                first_line_cut = pos;
                if closing
                    || self.boundaries.last().map_or(true, |b| b.part != part)
                    || self.parts.len() >= MAX_PARTS
                {
                    continue; // epilogue of `part`
                }
                part = self.new_part(pos, part, true);
                logical = pos;
                break;
            }
        }
    }

    /// The header block at pos; (next position, end of the header block).
    fn parse_header(&mut self, part: usize, mut pos: usize, logical: usize) -> (usize, usize) {
        let data = self.data;
        let n = self.n;
        let mut prev_nl = 0usize;
        loop {
            if pos >= n {
                let p = &mut self.parts[part];
                p.body_start = if !p.headers.is_empty() { n } else { logical.max(pos.min(n)) };
                return (n, p.body_start);
            }
            if !self.boundaries.is_empty()
                && starts_with_at(data, pos, b"--")
                && self.boundary_at(pos).is_some()
            {
                let p = &mut self.parts[part];
                let cut = if !p.headers.is_empty() { pos - prev_nl } else { logical };
                p.body_start = cut;
                return (pos, cut);
            }
            let mut lf = memchr::memchr(b'\n', &data[pos..]).map(|o| pos + o);
            let (mut line_end, mut next_pos) = match lf {
                Some(lf) => (lf, lf + 1),
                None => (n, n),
            };
            if line_end == pos || (line_end == pos + 1 && data[pos] == b'\r' && lf.is_some()) {
                let p = &mut self.parts[part];
                p.body_start = next_pos;
                p.header_complete = true;
                return (next_pos, next_pos);
            }
            // a field: its first line, then continuation lines
            let first_line_end = line_end;
            while lf.is_some() && next_pos < n && matches!(data[next_pos], b' ' | b'\t') {
                lf = memchr::memchr(b'\n', &data[next_pos..]).map(|o| next_pos + o);
                match lf {
                    Some(l) => {
                        line_end = l;
                        next_pos = l + 1;
                    }
                    None => {
                        line_end = n;
                        next_pos = n;
                    }
                }
            }
            let _ = line_end;
            let header = match memchr::memchr(b':', &data[pos..first_line_end]) {
                Some(offset) => {
                    let colon = pos + offset;
                    let mut name_end = colon;
                    while name_end > pos && matches!(data[name_end - 1], b' ' | b'\t') {
                        name_end -= 1;
                    }
                    Header {
                        name: (pos, name_end),
                        start: pos,
                        value_start: colon + 1,
                        end: next_pos,
                        has_colon: true,
                        value: None,
                    }
                }
                None => {
                    let mut stop = first_line_end;
                    if first_line_end < n && stop > pos && data[stop - 1] == b'\r' {
                        stop -= 1;
                    }
                    Header {
                        name: (pos, stop),
                        start: pos,
                        value_start: next_pos,
                        end: next_pos,
                        has_colon: false,
                        value: None,
                    }
                }
            };
            self.parts[part].headers.push(header);
            prev_nl = match lf {
                None => 0,
                Some(l) if l > 0 && data[l - 1] == b'\r' => 2,
                Some(_) => 1,
            };
            pos = next_pos;
        }
    }

    /// Flags from the header block (Dovecot's parse_content_type + end of headers).
    fn classify(&mut self, part: usize) {
        let data = self.data;
        let parent_digest =
            self.parts[part].parent.map_or(false, |i| self.parts[i].is_digest && self.parts[i].is_multipart);
        let p = &mut self.parts[part];
        let mut seen_ct = false;
        for h in p.headers.iter_mut() {
            let name = &data[h.name.0..h.name.1];
            if name.eq_ignore_ascii_case(b"mime-version") {
                p.is_mime = true;
            } else if name.eq_ignore_ascii_case(b"content-type") {
                p.is_mime = true;
                if seen_ct {
                    continue;
                }
                seen_ct = true;
                let value = header_value(data, h.value_start, h.end, h.has_colon);
                let ct = parse_content_type(&value);
                h.value = Some(value);
                let mut full = ct.0.to_ascii_lowercase();
                if let Some(subtype) = &ct.1 {
                    full.push(b'/');
                    full.extend(subtype.iter().map(u8::to_ascii_lowercase));
                }
                if full == b"message/rfc822" {
                    p.is_message_rfc822 = true;
                } else if full.starts_with(b"text") && (full.len() == 4 || full[4] == b'/') {
                    p.is_text = true;
                } else if full.starts_with(b"multipart/") {
                    p.is_multipart = true;
                    p.is_digest = &full[10..] == b"digest";
                    if ct.3 >= 0 {
                        if let Some((_, value)) =
                            ct.2.iter().find(|(key, _)| key.eq_ignore_ascii_case(b"boundary"))
                        {
                            p.boundary = Some(value[..value.len().min(BOUNDARY_STRING_MAX_LEN)].to_vec());
                        }
                    }
                }
                p.ct = Some(ct);
            }
        }
        if !p.is_mime {
            p.is_message_rfc822 = false;
            p.is_text = false;
            p.is_multipart = false;
            p.is_digest = false;
            p.boundary = None;
        }
        if !seen_ct || !p.is_mime {
            if parent_digest {
                p.is_message_rfc822 = true;
            } else {
                p.is_text = true;
            }
        }
    }
}

/// The parts of `data` in the order they begin (the root first); each names its parent.
pub fn parse(data: &[u8]) -> Vec<Part> {
    let mut parser = Parser { data, n: data.len(), boundaries: Vec::new(), parts: Vec::new() };
    parser.run();
    parser.parts
}
