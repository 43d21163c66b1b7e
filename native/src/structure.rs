//! A message's BODYSTRUCTURE in wire form, as Dovecot 2.3 writes it: the native twin of
//! `smime_proxy/imap/views.py` (`MessageView.bodystructure`: `part_data`, `bodystructure`,
//! `_is_plain_7bit`, `_params`, `_common_ext`) rendered as `render.rs` renders it, which
//! are its reference (tests/unit/imap/wire/test_native_structure.py compares them).
//!
//! Only messages without a message/rfc822 part are taken (that part's BODYSTRUCTURE holds
//! an ENVELOPE, whose address parser stays in Python): `None` for them.

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

/// render.rs `structure` for these values: NIL, strings (quoted or literal), numbers, and
/// lists whose leading lists follow each other without a space.
fn render(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Nil => out.extend_from_slice(b"NIL"),
        Value::Str(data) => crate::render::string(data, out),
        Value::Num(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::List(items) => {
            out.push(b'(');
            let mut leading = true;
            for (index, item) in items.iter().enumerate() {
                let nested = matches!(item, Value::List(_));
                if index > 0 && !(leading && nested) {
                    out.push(b' ');
                }
                if !nested {
                    leading = false;
                }
                render(item, out);
            }
            out.push(b')');
        }
    }
}
