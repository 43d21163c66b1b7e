//! `smime_proxy._native`: the parts of opening a message that Python is too slow for on two
//! cores (issue 10, docs/native.md). Every function here has a Python twin in the package
//! that is its reference; the package uses this module when it is built and works the
//! same without it. The work on a large message runs with the GIL released; on a usual one
//! (20 KB) it is shorter than handing the GIL over and taking it back (`without_gil_if_large`).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

mod base64;
mod cms;
mod decrypt;
mod fields;
mod render;
mod rfc822;
mod structure;
mod tree;

/// Work on `size` bytes, with the GIL released only when the input is large: handing the
/// GIL to another thread and taking it back costs more than reading a 20 KB message, and
/// the threads that open messages would wait on each other at every call.
fn without_gil_if_large<T: Send>(py: Python<'_>, size: usize, work: impl FnOnce() -> T + Send) -> T {
    if size >= RELEASE_GIL_FROM {
        py.allow_threads(work)
    } else {
        work()
    }
}

const RELEASE_GIL_FROM: usize = 1 << 18;

fn content_type_tuple(py: Python<'_>, ct: &rfc822::ContentType) -> PyObject {
    let params = PyList::empty(py);
    for (key, value) in &ct.2 {
        let pair = PyTuple::new(py, [PyBytes::new(py, key), PyBytes::new(py, value)]);
        params.append(pair).expect("a list takes an item");
    }
    let subtype: PyObject = match &ct.1 {
        Some(subtype) => PyBytes::new(py, subtype).into(),
        None => py.None(),
    };
    (PyBytes::new(py, &ct.0), subtype, params, ct.3).into_py(py)
}

/// `mime.tree`'s parse as flat records (tree.py `_from_native` builds the `Part`s): per
/// part `(start, body_start, end, parent or -1, flags, boundary, depth, ct, headers)`,
/// flags bits 1 mime, 2 multipart, 4 digest, 8 message/rfc822, 16 text, 32 header
/// complete, 64 overflow; per header `(name, start, value_start, end, has_colon, value)`.
#[pyfunction]
fn parse_tree(py: Python<'_>, message: &PyBytes) -> PyResult<PyObject> {
    let data = message.as_bytes();
    let parts = without_gil_if_large(py, data.len(), || tree::parse(data));
    let out = PyList::empty(py);
    for part in &parts {
        out.append(part_record(py, data, part)?)?;
    }
    Ok(out.into())
}

/// mime/tree.py `parse_top`: the root's record as `parse_tree` gives it, and its children's
/// (start, end); the other parts' records are not made (a caller asking about the top of a
/// message only spent most of its time on them).
#[pyfunction]
fn parse_top(py: Python<'_>, message: &PyBytes) -> PyResult<(PyObject, Vec<(usize, usize)>)> {
    let data = message.as_bytes();
    let parts = without_gil_if_large(py, data.len(), || tree::parse(data));
    let children = parts.iter().filter(|p| p.parent == Some(0)).map(|p| (p.start, p.end)).collect();
    Ok((part_record(py, data, &parts[0])?, children))
}

fn part_record(py: Python<'_>, data: &[u8], part: &tree::Part) -> PyResult<PyObject> {
    let headers = PyList::empty(py);
    for h in &part.headers {
        let value: PyObject = match &h.value {
            Some(v) => PyBytes::new(py, v).into(),
            None => py.None(),
        };
        let record = (PyBytes::new(py, &data[h.name.0..h.name.1]), h.start, h.value_start, h.end, h.has_colon, value);
        let record: PyObject = record.into_py(py);
        headers.append(record)?;
    }
    let flags = u32::from(part.is_mime)
        | u32::from(part.is_multipart) << 1
        | u32::from(part.is_digest) << 2
        | u32::from(part.is_message_rfc822) << 3
        | u32::from(part.is_text) << 4
        | u32::from(part.header_complete) << 5
        | u32::from(part.overflow) << 6;
    let boundary: PyObject = match &part.boundary {
        Some(b) => PyBytes::new(py, b).into(),
        None => py.None(),
    };
    let ct: PyObject = match &part.ct {
        Some(ct) => content_type_tuple(py, ct),
        None => py.None(),
    };
    let parent: i64 = part.parent.map_or(-1, |p| p as i64);
    Ok(PyTuple::new(
        py,
        [
            part.start.into_py(py),
            part.body_start.into_py(py),
            part.end.into_py(py),
            parent.into_py(py),
            flags.into_py(py),
            boundary,
            part.depth.into_py(py),
            ct,
            headers.into_py(py),
        ],
    )
    .into())
}

fn pair(py: Python<'_>, range: (usize, usize)) -> PyObject {
    range.into_py(py)
}

fn maybe_pair(py: Python<'_>, range: Option<(usize, usize)>) -> PyObject {
    match range {
        Some(r) => pair(py, r),
        None => py.None(),
    }
}

/// `crypto.enveloped`'s reading of ContentInfo(EnvelopedData | AuthEnvelopedData), as
/// (start, end) offsets into `der`; None when the message needs the Python reader (a key
/// agreement recipient, or anything outside the usual shape: it then says what is wrong).
/// `(kind OID, algorithm OID, algorithm parameters TLV or None, recipients, content
/// pieces, mac or None, has authAttrs)`, each recipient `(0, issuer Name TLV, serial) |
/// (1, subject key identifier, None)` + `(key algorithm OID, its parameters or None,
/// encrypted key)`.
#[pyfunction]
fn read_envelope(py: Python<'_>, der: &PyBytes) -> Option<PyObject> {
    let data = der.as_bytes();
    let envelope = without_gil_if_large(py, data.len(), || cms::read_envelope(data))?;
    let recipients = PyList::empty(py);
    for r in &envelope.recipients {
        let (kind, first, second) = identifier(py, &r.rid);
        let record = (kind, first, second, pair(py, r.algorithm), maybe_pair(py, r.parameters),
                      pair(py, r.encrypted_key));
        let record: PyObject = record.into_py(py);
        recipients.append(record).expect("a list takes an item");
    }
    let content: Vec<PyObject> = envelope.content.iter().map(|r| pair(py, *r)).collect();
    Some((pair(py, envelope.kind), pair(py, envelope.algorithm),
          maybe_pair(py, envelope.parameters), recipients, content,
          maybe_pair(py, envelope.mac), envelope.auth_attributes).into_py(py))
}

fn identifier(py: Python<'_>, id: &cms::RecipientId) -> (i32, PyObject, PyObject) {
    match id {
        cms::RecipientId::IssuerSerial { issuer, serial } => (0, pair(py, *issuer), pair(py, *serial)),
        cms::RecipientId::SubjectKeyId(key) => (1, pair(py, *key), py.None()),
    }
}

/// `crypto.signed`'s reading of ContentInfo(SignedData), as offsets into `der`; None when
/// the Python reader must read it. `(eContentType OID, eContent pieces or None,
/// certificate TLVs, signers)`, each signer `(sid kind, issuer Name TLV | key identifier,
/// serial or None, digest OID, signedAttrs contents or None, signature OID, the signature
/// AlgorithmIdentifier's TLV, signature, unsignedAttrs contents or None)`.
#[pyfunction]
fn read_signed(py: Python<'_>, der: &PyBytes) -> Option<PyObject> {
    let data = der.as_bytes();
    let signed = without_gil_if_large(py, data.len(), || cms::read_signed(data))?;
    let signers = PyList::empty(py);
    for s in &signed.signers {
        let (kind, first, second) = identifier(py, &s.sid);
        let record: PyObject = PyTuple::new(py, [
            kind.into_py(py), first, second, pair(py, s.digest_algorithm),
            maybe_pair(py, s.signed_attributes), pair(py, s.signature_algorithm),
            pair(py, s.signature_algorithm_tlv), pair(py, s.signature),
            maybe_pair(py, s.unsigned_attributes),
        ]).into();
        signers.append(record).expect("a list takes an item");
    }
    let content: PyObject = match &signed.content {
        Some(pieces) => pieces.iter().map(|r| pair(py, *r)).collect::<Vec<_>>().into_py(py),
        None => py.None(),
    };
    let certificates: Vec<PyObject> = signed.certificates.iter().map(|r| pair(py, *r)).collect();
    Some((pair(py, signed.content_type), content, certificates, signers).into_py(py))
}

/// `imap.wire.values.render_structure`'s bytes, or None for a value only the Python
/// renderer knows (it then renders the whole structure).
#[pyfunction]
fn render_structure(py: Python<'_>, value: &PyAny) -> PyResult<Option<PyObject>> {
    let mut out = Vec::new();
    if !render::structure(value, &mut out, 0)? {
        return Ok(None);
    }
    Ok(Some(PyBytes::new(py, &out).into()))
}

/// `crypto.attributes.read_attributes` as offsets into `contents`: per attribute (type OID
/// contents, value TLVs); None where the Python reader raises.
#[pyfunction]
fn read_attributes(contents: &PyBytes) -> Option<Vec<((usize, usize), Vec<(usize, usize)>)>> {
    cms::read_attributes(contents.as_bytes())
}

/// `mime.rfc822.parse_content_type` (its general parser: the fast path gives the same).
#[pyfunction]
fn parse_content_type(py: Python<'_>, value: &PyBytes) -> PyObject {
    let ct = rfc822::parse_content_type(value.as_bytes());
    content_type_tuple(py, &ct)
}

/// `binascii.a2b_base64(data[start:])` (non-strict), or None where binascii raises (the
/// caller lets binascii say why). Not worth releasing the GIL for below 256 KiB either:
/// a 27 KB body takes about 20 µs here.
#[pyfunction]
fn decode_base64(py: Python<'_>, data: &PyBytes, start: usize) -> Option<PyObject> {
    let all = data.as_bytes();
    let input = &all[start.min(all.len())..];
    let decoded = without_gil_if_large(py, input.len(), || base64::decode(input)).ok()?;
    Some(PyBytes::new(py, &decoded).into())
}

/// crypto/enveloped.py `_decrypt_cbc` (`mode` "cbc") or `_decrypt_gcm` ("gcm") for the
/// usual shapes: the plaintext, or None for anything else and every failure (the Python
/// code then decrypts it, or says what is wrong, itself).
#[pyfunction]
fn decrypt_content(
    py: Python<'_>,
    mode: &str,
    key: &[u8],
    parameters: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Option<PyObject> {
    let refused = || PyValueError::new_err("");
    let plain = match mode {
        "cbc" => {
            let iv = decrypt::cbc_iv(parameters)?;
            let length = decrypt::cbc_plain_length(key, iv, ciphertext)?;
            PyBytes::new_with(py, length, |out| {
                without_gil_if_large(py, ciphertext.len(), || decrypt::cbc_decrypt(key, iv, ciphertext, out))
                    .ok_or_else(refused)
            })
        }
        "gcm" => {
            let nonce = match decrypt::gcm_parameters(parameters) {
                Some((nonce, length)) if length == tag.len() => nonce,
                _ => return None,
            };
            PyBytes::new_with(py, ciphertext.len(), |out| {
                without_gil_if_large(py, ciphertext.len(), || decrypt::gcm_decrypt(key, nonce, ciphertext, tag, out))
                    .ok_or_else(refused)
            })
        }
        _ => return None,
    };
    plain.ok().map(|bytes| bytes.into())
}

/// imap/views.py `MessageView.bodystructure()` and `envelope()` rendered (imap/fetch_rewrite.py
/// `render_item_value`) for a message with CRLF line ends: each, or None where the Python
/// views must answer (a message/rfc822 part; an address the fast reading does not take).
#[pyfunction]
fn render_views(py: Python<'_>, message: &PyBytes) -> (Option<PyObject>, Option<PyObject>) {
    let data = message.as_bytes();
    let (structure, envelope) = without_gil_if_large(py, data.len(), || {
        let parts = tree::parse(data);
        (structure::message_bodystructure(data, &parts), structure::message_envelope(data, &parts))
    });
    let wire = |value: Option<Vec<u8>>| value.map(|v| -> PyObject { PyBytes::new(py, &v).into() });
    (wire(structure), wire(envelope))
}

/// mime/entity.py `_fields`: the header fields of `header` (the header block, its empty
/// line left out), each made by `make(name, raw)` (the `HeaderField` named tuple, made by
/// `tuple.__new__`: no Python frame per field).
#[pyfunction]
fn header_fields(py: Python<'_>, header: &PyBytes, make: &PyAny) -> PyResult<PyObject> {
    let data = header.as_bytes();
    let new = py.get_type::<PyTuple>().getattr("__new__")?;
    let mut fields = Vec::new();
    for (start, end, name) in fields::split(data) {
        let pair = (PyString::intern(py, &name), PyBytes::new(py, &data[start..end]));
        fields.push(new.call1((make, pair))?);
    }
    Ok(PyTuple::new(py, fields).into())
}

/// mime/entity.py `has_bare_lf`: whether some LF in `data` has no CR before it (the question
/// `canonical_crlf` and the views' `to_crlf` ask of every message; counting LFs and CRLFs
/// twice over took 20 µs for 20 KB).
#[pyfunction]
fn has_bare_lf(py: Python<'_>, data: &PyBytes) -> bool {
    let bytes = data.as_bytes();
    without_gil_if_large(py, bytes.len(), || {
        memchr::memchr_iter(b'\n', bytes).any(|at| at == 0 || bytes[at - 1] != b'\r')
    })
}

#[pymodule]
fn _native(_py: Python<'_>, m: &PyModule) -> PyResult<()> {
    m.add("INTERFACE", 13)?; // smime_proxy/native.py INTERFACE: bumped with every change here
    m.add("MAX_NESTING", tree::MAX_NESTING)?;
    m.add("MAX_PARTS", tree::MAX_PARTS)?;
    m.add_function(wrap_pyfunction!(parse_tree, m)?)?;
    m.add_function(wrap_pyfunction!(parse_top, m)?)?;
    m.add_function(wrap_pyfunction!(parse_content_type, m)?)?;
    m.add_function(wrap_pyfunction!(read_envelope, m)?)?;
    m.add_function(wrap_pyfunction!(read_signed, m)?)?;
    m.add_function(wrap_pyfunction!(render_structure, m)?)?;
    m.add_function(wrap_pyfunction!(read_attributes, m)?)?;
    m.add_function(wrap_pyfunction!(decode_base64, m)?)?;
    m.add_function(wrap_pyfunction!(decrypt_content, m)?)?;
    m.add_function(wrap_pyfunction!(render_views, m)?)?;
    m.add_function(wrap_pyfunction!(header_fields, m)?)?;
    m.add_function(wrap_pyfunction!(has_bare_lf, m)?)?;
    Ok(())
}
