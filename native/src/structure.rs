//! A message's BODYSTRUCTURE in wire form, as Dovecot 2.3 writes it: the native twin of
//! `smime_proxy/imap/views.py` (`MessageView.bodystructure`: `part_data`, `bodystructure`,
//! `_is_plain_7bit`, `_params`, `_common_ext`) rendered as `render.rs` renders it, which
//! are its reference (tests/unit/imap/wire/test_native_structure.py compares them).
//!
//! Only messages without a message/rfc822 part are taken (that part's BODYSTRUCTURE holds
//! an ENVELOPE, whose address parser stays in Python): `None` for them.
//!
//! The ENVELOPE (views.py `envelope`) is made here when every address field is in the form
//! mime/address.py's regular expression reads (`_fast`: `a@b`, `Name <a@b>`, `"Name" <a@b>`
//! lists); any other form is None, and Python's Dovecot-rule parser reads the message.

use crate::rfc822::{parse_content_type, parse_language, parse_token_value, parse_transfer_encoding};
use crate::tree::{header_value, Part};

enum Value {
    Nil,
    Str(Vec<u8>),
    Num(usize),
    List(Vec<Value>),
}

type Params = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Default)]
struct PartData {
    content_type: Option<Vec<u8>>,
    subtype: Option<Vec<u8>>,
    params: Params,
    cte: Option<Vec<u8>>,
    content_id: Option<Vec<u8>>,
    description: Option<Vec<u8>>,
    disposition: Option<Vec<u8>>,
    disposition_params: Params,
    md5: Option<Vec<u8>>,
    language: Option<Vec<Vec<u8>>>,
    location: Option<Vec<u8>>,
}

/// transfer.py `c_string`: a value up to its first NUL.
fn c_string(value: &[u8]) -> Vec<u8> {
    match value.iter().position(|&c| c == 0) {
        Some(nul) => value[..nul].to_vec(),
        None => value.to_vec(),
    }
}

/// views.py `nolf`.
fn nolf(value: &Option<Vec<u8>>) -> Value {
    match value {
        Some(v) => Value::Str(v.iter().copied().filter(|&c| c != b'\r' && c != b'\n').collect()),
        None => Value::Nil,
    }
}

fn part_data(data: &[u8], part: &Part) -> PartData {
    let mut d = PartData::default();
    if !part.is_mime {
        return d;
    }
    for h in &part.headers {
        let name = &data[h.name.0..h.name.1];
        if name.len() < 8 || !name[..8].eq_ignore_ascii_case(b"content-") {
            continue;
        }
        let key = name[8..].to_ascii_lowercase();
        if key == b"type" {
            if d.content_type.is_none() {
                let value = header_value(data, h.value_start, h.end, h.has_colon);
                let parsed = match &part.ct {
                    Some(ct) if !value.contains(&0) => ct.clone(),
                    _ => parse_content_type(&c_string(&value)),
                };
                d.content_type = Some(c_string(&parsed.0));
                d.subtype = Some(parsed.1.as_deref().map(c_string).unwrap_or_default());
                d.params = parsed.2;
            }
            continue;
        }
        let value = c_string(&header_value(data, h.value_start, h.end, h.has_colon));
        match key.as_slice() {
            b"transfer-encoding" => {
                if d.cte.is_none() {
                    d.cte = parse_transfer_encoding(&value);
                }
            }
            b"id" => {
                if d.content_id.is_none() {
                    d.content_id = Some(value);
                }
            }
            b"md5" => {
                if d.md5.is_none() {
                    d.md5 = Some(value);
                }
            }
            b"description" => {
                if d.description.is_none() {
                    d.description = Some(value);
                }
            }
            b"disposition" => {
                if d.disposition_params.is_empty() {
                    if let (Some(token), params) = parse_token_value(&value) {
                        d.disposition = Some(token);
                        d.disposition_params = params;
                    }
                }
            }
            b"language" => {
                if d.language.is_none() {
                    let langs = parse_language(&value);
                    if !langs.is_empty() {
                        d.language = Some(langs);
                    }
                }
            }
            b"location" => {
                if d.location.is_none() {
                    d.location = Some(value);
                }
            }
            _ => {}
        }
    }
    if part.overflow {
        d.content_type = Some(b"application".to_vec());
        d.subtype = Some(b"octet-stream".to_vec());
    }
    d
}

fn params(params: &Params, default_charset: bool) -> Value {
    if !default_charset && params.is_empty() {
        return Value::Nil;
    }
    let mut out = Vec::new();
    let mut seen_charset = false;
    for (name, value) in params {
        if default_charset && name.eq_ignore_ascii_case(b"charset") {
            seen_charset = true;
        }
        out.push(Value::Str(name.clone()));
        out.push(Value::Str(value.clone()));
    }
    if default_charset && !seen_charset {
        out.push(Value::Str(b"charset".to_vec()));
        out.push(Value::Str(b"us-ascii".to_vec()));
    }
    Value::List(out)
}

fn common_ext(d: &PartData, out: &mut Vec<Value>) {
    out.push(match &d.disposition {
        Some(disposition) => Value::List(vec![Value::Str(disposition.clone()), params(&d.disposition_params, false)]),
        None => Value::Nil,
    });
    out.push(match &d.language {
        Some(langs) => Value::List(langs.iter().cloned().map(Value::Str).collect()),
        None => Value::Nil,
    });
    out.push(nolf(&d.location));
}

fn body_lines(data: &[u8], part: &Part) -> usize {
    memchr::memchr_iter(b'\n', &data[part.body_start..part.end]).count()
}

fn empty_body(size: usize, lines: usize) -> Vec<Value> {
    vec![
        Value::Str(b"text".to_vec()),
        Value::Str(b"plain".to_vec()),
        Value::List(vec![Value::Str(b"charset".to_vec()), Value::Str(b"us-ascii".to_vec())]),
        Value::Nil,
        Value::Nil,
        Value::Str(b"7bit".to_vec()),
        Value::Num(size),
        Value::Num(lines),
    ]
}

/// views.py `bodystructure(part, extended=True)`; None at a message/rfc822 part.
fn bodystructure(data: &[u8], parts: &[Part], children: &[Vec<usize>], index: usize) -> Option<Value> {
    let part = &parts[index];
    let d = part_data(data, part);
    if part.is_multipart {
        let mut out = Vec::new();
        for &child in &children[index] {
            out.push(bodystructure(data, parts, children, child)?);
        }
        if children[index].is_empty() {
            let mut empty = empty_body(0, 0);
            empty.extend([Value::Nil, Value::Nil, Value::Nil, Value::Nil]);
            out.push(Value::List(empty));
        }
        out.push(Value::Str(d.subtype.clone().unwrap_or_else(|| b"x-unknown".to_vec())));
        out.push(params(&d.params, false));
        common_ext(&d, &mut out);
        return Some(Value::List(out));
    }
    if part.is_message_rfc822 {
        return None;
    }
    let (mut out, text) = match &d.content_type {
        None => (vec![Value::Str(b"text".to_vec()), Value::Str(b"plain".to_vec())], true),
        Some(ctype) => (
            vec![Value::Str(ctype.clone()), Value::Str(d.subtype.clone().unwrap_or_default())],
            ctype.eq_ignore_ascii_case(b"text"),
        ),
    };
    out.push(params(&d.params, text));
    out.push(nolf(&d.content_id));
    out.push(nolf(&d.description));
    out.push(Value::Str(d.cte.clone().unwrap_or_else(|| b"7bit".to_vec())));
    out.push(Value::Num(part.end - part.body_start));
    if text {
        out.push(Value::Num(body_lines(data, part)));
    }
    out.push(nolf(&d.md5));
    common_ext(&d, &mut out);
    Some(Value::List(out))
}

/// views.py `_is_plain_7bit`.
fn is_plain_7bit(part: &Part, d: &PartData) -> bool {
    if !part.is_text || part.is_multipart || part.is_message_rfc822 {
        return false;
    }
    if let Some(subtype) = &d.subtype {
        if !subtype.eq_ignore_ascii_case(b"plain") {
            return false;
        }
    }
    if !d.params.is_empty()
        && (d.params.len() > 1
            || !d.params[0].0.eq_ignore_ascii_case(b"charset")
            || !d.params[0].1.eq_ignore_ascii_case(b"us-ascii"))
    {
        return false;
    }
    if d.content_id.is_some() || d.description.is_some() {
        return false;
    }
    if let Some(cte) = &d.cte {
        if !cte.eq_ignore_ascii_case(b"7bit") {
            return false;
        }
    }
    d.md5.is_none() && d.disposition.is_none() && d.language.is_none() && d.location.is_none()
}

/// `MessageView.bodystructure()` of a message (CRLF line ends, as the view holds it) parsed
/// into `parts`, in wire form; None when a part is message/rfc822.
pub fn message_bodystructure(data: &[u8], parts: &[Part]) -> Option<Vec<u8>> {
    let root = &parts[0];
    let value = if is_plain_7bit(root, &part_data(data, root)) {
        // Dovecot stores no BODYSTRUCTURE for such a message and writes the default
        let mut out = empty_body(root.end - root.body_start, body_lines(data, root));
        out.extend([Value::Nil, Value::Nil, Value::Nil, Value::Nil]);
        Value::List(out)
    } else {
        let mut children = vec![Vec::new(); parts.len()];
        for (index, part) in parts.iter().enumerate() {
            if let Some(parent) = part.parent {
                children[parent].push(index);
            }
        }
        bodystructure(data, parts, &children, 0)?
    };
    let mut out = Vec::new();
    render(&value, &mut out);
    Some(out)
}

/// render.rs `structure` for these values (NIL, strings, numbers, lists).
fn render(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Nil => out.extend_from_slice(b"NIL"),
        Value::Str(data) => crate::render::string(data, out),
        Value::Num(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::List(items) => {
            let written: Result<bool, std::convert::Infallible> = crate::render::list(
                items,
                out,
                |item| matches!(item, Value::List(_)),
                |item, out| {
                    render(item, out);
                    Ok(true)
                },
            );
            let _ = written;
        }
    }
}

// --- ENVELOPE ---------------------------------------------------------------------------

/// address.py `_ATEXT`: RFC 5322 atext and 8-bit bytes.
fn is_atext(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c >= 0x80 || b"!#$%&'*+-/=?^_`{|}~".contains(&c)
}

fn lwsp(data: &[u8], mut at: usize) -> usize {
    while at < data.len() && matches!(data[at], b' ' | b'\t' | b'\r' | b'\n') {
        at += 1;
    }
    at
}

fn atext_run(data: &[u8], mut at: usize) -> usize {
    while at < data.len() && is_atext(data[at]) {
        at += 1;
    }
    at
}

/// `_DOT_ATOM` (possessive): its end, or None.
fn dot_atom(data: &[u8], at: usize) -> Option<usize> {
    let mut end = atext_run(data, at);
    if end == at {
        return None;
    }
    while end + 1 < data.len() && data[end] == b'.' && is_atext(data[end + 1]) {
        end = atext_run(data, end + 1);
    }
    Some(end)
}

/// `_WORD`: a quoted string without escapes or line breaks, or atext then atext and dots;
/// its end, or None.
fn word(data: &[u8], at: usize) -> Option<usize> {
    if at >= data.len() {
        return None;
    }
    if data[at] == b'"' {
        let mut end = at + 1;
        while end < data.len() && !matches!(data[end], b'"' | b'\\' | b'\r' | b'\n') {
            end += 1;
        }
        return if end < data.len() && data[end] == b'"' { Some(end + 1) } else { None };
    }
    if !is_atext(data[at]) {
        return None;
    }
    let mut end = at + 1;
    while end < data.len() && (is_atext(data[end]) || data[end] == b'.') {
        end += 1;
    }
    Some(end)
}

/// (name, mailbox, domain) of one address.
type Mailbox = (Option<Vec<u8>>, Vec<u8>, Vec<u8>);

/// `_FAST_MAILBOX` at `at`: its end and the address, or None.
fn mailbox(data: &[u8], at: usize) -> Option<(usize, Mailbox)> {
    // `(phrase)?+ LWSP <dot-atom@dot-atom>`: the phrase, when there is one, is taken whole
    let mut words: Vec<(usize, usize)> = Vec::new();
    let mut end = at;
    if let Some(first) = word(data, at) {
        words.push((at, first));
        end = first;
        loop {
            let next = lwsp(data, end);
            match word(data, next) {
                Some(stop) => {
                    words.push((next, stop));
                    end = stop;
                }
                None => break,
            }
        }
    }
    let open = lwsp(data, end);
    if open < data.len() && data[open] == b'<' {
        if let Some(local) = dot_atom(data, open + 1) {
            if local < data.len() && data[local] == b'@' {
                if let Some(domain) = dot_atom(data, local + 1) {
                    if domain < data.len() && data[domain] == b'>' {
                        let parts: Vec<&[u8]> = words
                            .iter()
                            .map(|&(a, b)| if data[a] == b'"' { &data[a + 1..b - 1] } else { &data[a..b] })
                            .collect();
                        let name = parts.join(&b' ');
                        let name = if name.is_empty() { None } else { Some(name) };
                        return Some((domain + 1, (name, data[open + 1..local].to_vec(), data[local + 1..domain].to_vec())));
                    }
                }
            }
        }
        return None;
    }
    // `dot-atom@dot-atom`
    let local = dot_atom(data, at)?;
    if local < data.len() && data[local] == b'@' {
        let domain = dot_atom(data, local + 1)?;
        return Some((domain, (None, data[at..local].to_vec(), data[local + 1..domain].to_vec())));
    }
    None
}

/// address.py `parse_address_list` where its `_fast` takes the value; None otherwise.
fn fast_addresses(value: &[u8]) -> Option<Vec<Mailbox>> {
    let mut value = value;
    if value.contains(&b'"') {
        // `_strip_blank_folds`
        while value.len() >= 2 && value[value.len() - 2] == b'\n' && matches!(value[value.len() - 1], b' ' | b'\t') {
            value = &value[..value.len() - 2];
        }
    }
    let mut out = Vec::new();
    let (mut end, first) = mailbox(value, lwsp(value, 0))?;
    out.push(first);
    loop {
        let comma = lwsp(value, end);
        if comma < value.len() && value[comma] == b',' {
            let (next_end, next) = mailbox(value, lwsp(value, comma + 1))?;
            out.push(next);
            end = next_end;
        } else {
            break;
        }
    }
    if lwsp(value, end) == value.len() {
        Some(out)
    } else {
        None
    }
}

/// views.py `for_humans`.
fn for_humans(src: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(src.len());
    for &c in src {
        match c {
            b'\r' | b'\n' => {}
            0 => out.push(0x80),
            b'\t' | b' ' => {
                if out.last() != Some(&b' ') {
                    out.push(b' ');
                }
            }
            _ => out.push(c),
        }
    }
    let start = out.iter().position(|&c| c != b' ').unwrap_or(out.len());
    let end = out.iter().rposition(|&c| c != b' ').map_or(start, |i| i + 1);
    out[start..end].to_vec()
}

fn address_list(addresses: &[Mailbox]) -> Value {
    if addresses.is_empty() {
        return Value::Nil;
    }
    Value::List(
        addresses
            .iter()
            .map(|(name, mailbox, domain)| {
                Value::List(vec![
                    name.as_deref().map_or(Value::Nil, |n| Value::Str(for_humans(n))),
                    Value::Nil,
                    Value::Str(mailbox.clone()),
                    Value::Str(domain.clone()),
                ])
            })
            .collect(),
    )
}

/// `MessageView.envelope()` of a message parsed into `parts`, in wire form; None when an
/// address field is not in the form the fast reading takes.
pub fn message_envelope(data: &[u8], parts: &[Part]) -> Option<Vec<u8>> {
    let mut strings: [Option<Vec<u8>>; 10] = Default::default();
    let mut addresses: [Option<Vec<Mailbox>>; 10] = Default::default();
    for h in &parts[0].headers {
        let name = data[h.name.0..h.name.1].to_ascii_lowercase();
        let slot = match name.as_slice() {
            b"date" => (0, false),
            b"subject" => (1, false),
            b"in-reply-to" => (8, false),
            b"message-id" => (9, false),
            b"from" => (2, true),
            b"sender" => (3, true),
            b"reply-to" => (4, true),
            b"to" => (5, true),
            b"cc" => (6, true),
            b"bcc" => (7, true),
            _ => continue,
        };
        let value = c_string(&header_value(data, h.value_start, h.end, h.has_colon));
        if slot.1 {
            let found = fast_addresses(&value)?;
            addresses[slot.0].get_or_insert_with(Vec::new).extend(found);
        } else {
            strings[slot.0] = Some(value);
        }
    }
    let from = addresses[2].clone().unwrap_or_default();
    let or_from = |index: usize| match &addresses[index] {
        Some(list) if !list.is_empty() => address_list(list),
        _ => address_list(&from),
    };
    let value = Value::List(vec![
        nolf(&strings[0]),
        strings[1].as_deref().map_or(Value::Nil, |s| Value::Str(for_humans(s))),
        address_list(&from),
        or_from(3),
        or_from(4),
        address_list(addresses[5].as_deref().unwrap_or(&[])),
        address_list(addresses[6].as_deref().unwrap_or(&[])),
        address_list(addresses[7].as_deref().unwrap_or(&[])),
        nolf(&strings[8]),
        nolf(&strings[9]),
    ]);
    let mut out = Vec::new();
    render(&value, &mut out);
    Some(out)
}
