//! IMAP structure values to wire bytes (RFC 9051 section 9): the native twin of
//! `smime_proxy/imap/wire/values.py`'s `render_structure`, its reference.

use pyo3::types::{PyBytes, PyList, PyLong, PyTuple};
use pyo3::{PyAny, PyResult, PyTypeInfo};

/// `render_string`: quoted when every byte allows it and it is short, else a literal.
pub fn string(data: &[u8], out: &mut Vec<u8>) {
    let quotable = data.len() <= 1024 && !data.iter().any(|&c| matches!(c, 0 | b'\n' | b'\r' | 0x80..=0xFF));
    if quotable {
        out.push(b'"');
        for &c in data {
            if c == b'\\' || c == b'"' {
                out.push(b'\\');
            }
            out.push(c);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
    }
}

/// One value; Ok(false) for a value only the Python renderer knows (an Atom, a Literal, a
/// negative number...): the caller then renders the whole structure in Python.
pub fn structure(value: &PyAny, out: &mut Vec<u8>, depth: usize) -> PyResult<bool> {
    if depth > 200 {
        return Ok(false);
    }
    if value.is_none() {
        out.extend_from_slice(b"NIL");
        return Ok(true);
    }
    if PyBytes::is_exact_type_of(value) {
        string(value.downcast::<PyBytes>()?.as_bytes(), out);
        return Ok(true);
    }
    let items: Vec<&PyAny> = if PyList::is_exact_type_of(value) {
        value.downcast::<PyList>()?.iter().collect()
    } else if PyTuple::is_exact_type_of(value) {
        value.downcast::<PyTuple>()?.iter().collect()
    } else if PyLong::is_exact_type_of(value) {
        let number: i64 = match value.extract() {
            Ok(n) => n,
            Err(_) => return Ok(false),
        };
        if number < 0 {
            return Ok(false);
        }
        out.extend_from_slice(number.to_string().as_bytes());
        return Ok(true);
    } else {
        return Ok(false);
    };
    list(
        &items,
        out,
        |item| PyList::is_exact_type_of(*item) || PyTuple::is_exact_type_of(*item),
        |item, out| structure(item, out, depth + 1),
    )
}

/// A parenthesized list as `render_structure` writes it: leading lists follow each other
/// without a space. `write` writes one item and says whether it could (false: stop, false).
pub fn list<T, E>(
    items: &[T],
    out: &mut Vec<u8>,
    is_list: impl Fn(&T) -> bool,
    mut write: impl FnMut(&T, &mut Vec<u8>) -> Result<bool, E>,
) -> Result<bool, E> {
    out.push(b'(');
    let mut leading = true;
    for (index, item) in items.iter().enumerate() {
        let nested = is_list(item);
        if index > 0 && !(leading && nested) {
            out.push(b' ');
        }
        if !nested {
            leading = false;
        }
        if !write(item, out)? {
            return Ok(false);
        }
    }
    out.push(b')');
    Ok(true)
}
