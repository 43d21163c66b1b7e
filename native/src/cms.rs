//! Reading CMS EnvelopedData (RFC 5652 section 6) and AuthEnvelopedData (RFC 5083) as far as
//! opening needs: the twin of `smime_proxy/crypto/enveloped.py`'s `_Envelope.read` and of
//! the asn1crypto fields its callers read, which are the reference.
//!
//! BER as X.690 8.1 has it (definite or indefinite lengths, constructed strings for the
//! content), like `crypto/ber.py`. Anything outside the shape read here (a key agreement
//! recipient, an unexpected field, a truncated element) gives None, and the Python code
//! reads the message and says what is wrong with it: this reader never decides an error.

const MAX_DEPTH: usize = 32;

#[derive(Clone, Copy)]
pub struct Tlv {
    pub tag: u8, // identifier octet (the first one of a long tag)
    pub begin: usize,
    pub start: usize,
    pub end: usize,
    pub stop: usize,
    indefinite: bool,
}

/// X.690 8.1.2-8.1.3: (identifier octet, start of contents, length or None for indefinite).
fn header(buf: &[u8], mut pos: usize) -> Option<(u8, usize, Option<usize>)> {
    if pos + 2 > buf.len() {
        return None;
    }
    let tag = buf[pos];
    pos += 1;
    if tag & 0x1F == 0x1F {
        let number_start = pos;
        while pos < buf.len() && buf[pos] & 0x80 != 0 {
            pos += 1;
        }
        pos += 1;
        if pos - number_start > 4 {
            return None;
        }
    }
    let first = *buf.get(pos)?;
    pos += 1;
    if first < 0x80 {
        return Some((tag, pos, Some(first as usize)));
    }
    let count = (first & 0x7F) as usize;
    if count == 0 {
        return if tag & 0x20 != 0 { Some((tag, pos, None)) } else { None };
    }
    if count > 8 || pos + count > buf.len() {
        return None;
    }
    let mut length: u64 = 0;
    for &b in &buf[pos..pos + count] {
        length = (length << 8) | u64::from(b);
    }
    let length = usize::try_from(length).ok()?;
    Some((tag, pos + count, Some(length)))
}

pub fn element(buf: &[u8], pos: usize, depth: usize) -> Option<Tlv> {
    if depth > MAX_DEPTH {
        return None;
    }
    let (tag, start, length) = header(buf, pos)?;
    if let Some(length) = length {
        let end = start.checked_add(length)?;
        if end > buf.len() {
            return None;
        }
        return Some(Tlv { tag, begin: pos, start, end, stop: end, indefinite: false });
    }
    let mut cursor = start;
    loop {
        if buf.get(cursor..cursor + 2) == Some(b"\x00\x00") {
            return Some(Tlv { tag, begin: pos, start, end: cursor, stop: cursor + 2, indefinite: true });
        }
        if cursor >= buf.len() {
            return None;
        }
        cursor = element(buf, cursor, depth + 1)?.stop;
    }
}

pub fn children(buf: &[u8], parent: &Tlv) -> Option<Vec<Tlv>> {
    if parent.tag & 0x20 == 0 {
        return None;
    }
    let mut items = Vec::new();
    let mut cursor = parent.start;
    while cursor < parent.end {
        let item = element(buf, cursor, 1)?;
        cursor = item.stop;
        items.push(item);
    }
    if cursor != parent.end || (parent.indefinite && items.iter().any(|i| i.stop > parent.end)) {
        return None;
    }
    Some(items)
}

/// The contents of a primitive element with this identifier octet.
fn primitive<'a>(buf: &'a [u8], item: &Tlv, tag: u8) -> Option<&'a [u8]> {
    (item.tag == tag && !item.indefinite).then(|| &buf[item.start..item.end])
}

/// An OCTET STRING's value, primitive or constructed (X.690 8.7.3): its pieces.
fn string_chunks(buf: &[u8], item: &Tlv, out: &mut Vec<(usize, usize)>) -> Option<()> {
    if item.tag & 0x20 == 0 {
        out.push((item.start, item.end));
        return Some(());
    }
    for child in children(buf, item)? {
        if child.tag & 0xDF != 0x04 {
            return None;
        }
        string_chunks(buf, &child, out)?;
    }
    Some(())
}

pub enum RecipientId {
    IssuerSerial { issuer: (usize, usize), serial: (usize, usize) },
    SubjectKeyId((usize, usize)),
}

pub struct KeyTransport {
    pub rid: RecipientId,
    pub algorithm: (usize, usize),          // OID contents
    pub parameters: Option<(usize, usize)>, // the whole TLV
    pub encrypted_key: (usize, usize),
}

pub struct Envelope {
    pub kind: (usize, usize),                // contentType OID contents
    pub algorithm: (usize, usize),           // content-encryption algorithm OID contents
    pub parameters: Option<(usize, usize)>,  // its parameters' TLV
    pub recipients: Vec<KeyTransport>,
    pub content: Vec<(usize, usize)>,        // the encrypted content's pieces
    pub mac: Option<(usize, usize)>,         // AuthEnvelopedData
    pub auth_attributes: bool,
}

const ENVELOPED_DATA: &[u8] = b"\x2A\x86\x48\x86\xF7\x0D\x01\x07\x03";
const AUTH_ENVELOPED_DATA: &[u8] = b"\x2A\x86\x48\x86\xF7\x0D\x01\x09\x10\x01\x17";

fn range(item: &Tlv) -> (usize, usize) {
    (item.start, item.end)
}

/// AlgorithmIdentifier ::= SEQUENCE { algorithm OID, parameters ANY OPTIONAL }
fn algorithm(buf: &[u8], item: &Tlv) -> Option<((usize, usize), Option<(usize, usize)>)> {
    if item.tag != 0x30 {
        return None;
    }
    let fields = children(buf, item)?;
    let oid = fields.first()?;
    primitive(buf, oid, 0x06)?;
    match fields.len() {
        1 => Some((range(oid), None)),
        2 => Some((range(oid), Some((fields[1].begin, fields[1].stop)))),
        _ => None,
    }
}

/// IssuerAndSerialNumber ::= SEQUENCE { issuer Name, serialNumber INTEGER }, or a
/// subjectKeyIdentifier [0] IMPLICIT OCTET STRING (RFC 5652 5.3, 6.2.1). The Name is
/// compared as DER bytes first (`crypto.signer_info.named_by_parts`): one of indefinite
/// length is left to the Python reader.
fn identifier(buf: &[u8], item: &Tlv) -> Option<RecipientId> {
    match item.tag {
        0x30 => {
            let ias = children(buf, item)?;
            if ias.len() != 2 || ias[0].tag != 0x30 || ias[0].indefinite {
                return None;
            }
            primitive(buf, &ias[1], 0x02)?;
            Some(RecipientId::IssuerSerial { issuer: (ias[0].begin, ias[0].stop), serial: range(&ias[1]) })
        }
        0x80 => Some(RecipientId::SubjectKeyId(range(item))),
        _ => None,
    }
}

/// KeyTransRecipientInfo ::= SEQUENCE { version, rid, keyEncryptionAlgorithm, encryptedKey }
fn key_transport(buf: &[u8], item: &Tlv) -> Option<KeyTransport> {
    let fields = children(buf, item)?;
    if fields.len() != 4 {
        return None;
    }
    primitive(buf, &fields[0], 0x02)?;
    let rid = identifier(buf, &fields[1])?;
    let (algorithm, parameters) = algorithm(buf, &fields[2])?;
    primitive(buf, &fields[3], 0x04)?;
    Some(KeyTransport { rid, algorithm, parameters, encrypted_key: range(&fields[3]) })
}

/// ContentInfo(EnvelopedData | AuthEnvelopedData) with key transport recipients only.
pub fn read_envelope(buf: &[u8]) -> Option<Envelope> {
    let root = element(buf, 0, 0)?;
    if root.stop != buf.len() || root.tag != 0x30 {
        return None;
    }
    let parts = children(buf, &root)?;
    if parts.len() != 2 || parts[1].tag != 0xA0 {
        return None;
    }
    let kind_bytes = primitive(buf, &parts[0], 0x06)?;
    let auth = match kind_bytes {
        ENVELOPED_DATA => false,
        AUTH_ENVELOPED_DATA => true,
        _ => return None,
    };
    let body = children(buf, &parts[1])?;
    if body.len() != 1 || body[0].tag != 0x30 {
        return None;
    }
    let fields = children(buf, &body[0])?;
    let mut at = 0;
    primitive(buf, fields.get(at)?, 0x02)?; // version
    at += 1;
    if fields.get(at)?.tag == 0xA0 {
        at += 1; // originatorInfo: not read by opening
    }
    let set = fields.get(at)?;
    if set.tag != 0x31 {
        return None;
    }
    at += 1;
    let mut recipients = Vec::new();
    for info in children(buf, set)? {
        if info.tag != 0x30 {
            return None; // a key agreement (or other) recipient: the Python code reads it
        }
        recipients.push(key_transport(buf, &info)?);
    }
    // EncryptedContentInfo ::= SEQUENCE { contentType, contentEncryptionAlgorithm,
    //                                     encryptedContent [0] IMPLICIT OCTET STRING OPTIONAL }
    let eci_item = fields.get(at)?;
    if eci_item.tag != 0x30 {
        return None;
    }
    at += 1;
    let eci = children(buf, eci_item)?;
    if eci.len() != 3 || !matches!(eci[2].tag, 0x80 | 0xA0) {
        return None;
    }
    primitive(buf, &eci[0], 0x06)?;
    let (algorithm, parameters) = algorithm(buf, &eci[1])?;
    let mut content = Vec::new();
    string_chunks(buf, &eci[2], &mut content)?;
    let mut auth_attributes = false;
    let mut mac = None;
    if auth {
        if fields.get(at).map(|f| f.tag) == Some(0xA1) {
            auth_attributes = true;
            at += 1;
        }
        mac = Some(range(primitive(buf, fields.get(at)?, 0x04).map(|_| &fields[at])?));
        at += 1;
        if fields.get(at).map(|f| f.tag) == Some(0xA2) {
            at += 1;
        }
    } else if fields.get(at).map(|f| f.tag) == Some(0xA1) {
        at += 1;
    }
    if at != fields.len() {
        return None;
    }
    Some(Envelope {
        kind: range(&parts[0]),
        algorithm,
        parameters,
        recipients,
        content,
        mac,
        auth_attributes,
    })
}

pub struct Signer {
    pub sid: RecipientId, // the same CHOICE as a recipient's (RFC 5652 5.3, 6.2.1)
    pub digest_algorithm: (usize, usize),
    pub signed_attributes: Option<(usize, usize)>, // the SET's contents
    pub signature_algorithm: (usize, usize),
    pub signature_algorithm_tlv: (usize, usize), // read again for RSA-PSS parameters
    pub signature: (usize, usize),
    pub unsigned_attributes: Option<(usize, usize)>,
}

pub struct Signed {
    pub content_type: (usize, usize),         // eContentType OID contents
    pub content: Option<Vec<(usize, usize)>>, // eContent's pieces, when encapsulated
    pub certificates: Vec<(usize, usize)>,    // each Certificate's TLV
    pub signers: Vec<Signer>,
}

const SIGNED_DATA: &[u8] = b"\x2A\x86\x48\x86\xF7\x0D\x01\x07\x02";

/// The contents of an implicitly tagged SET OF Attribute, definite length only.
fn attribute_set(item: &Tlv) -> Option<(usize, usize)> {
    (!item.indefinite).then(|| range(item))
}

/// SignerInfo ::= SEQUENCE { version, sid, digestAlgorithm, signedAttrs [0] IMPLICIT
/// OPTIONAL, signatureAlgorithm, signature OCTET STRING, unsignedAttrs [1] IMPLICIT OPTIONAL }
fn signer(buf: &[u8], item: &Tlv) -> Option<Signer> {
    if item.tag != 0x30 {
        return None;
    }
    let fields = children(buf, item)?;
    let mut at = 0;
    primitive(buf, fields.get(at)?, 0x02)?;
    at += 1;
    let sid = identifier(buf, fields.get(at)?)?;
    at += 1;
    let (digest_algorithm, _) = algorithm(buf, fields.get(at)?)?;
    at += 1;
    let mut signed_attributes = None;
    if fields.get(at)?.tag == 0xA0 {
        signed_attributes = Some(attribute_set(&fields[at])?);
        at += 1;
    }
    let (signature_algorithm, _) = algorithm(buf, fields.get(at)?)?;
    let signature_algorithm_tlv = (fields[at].begin, fields[at].stop);
    at += 1;
    primitive(buf, fields.get(at)?, 0x04)?;
    let signature = range(&fields[at]);
    at += 1;
    let mut unsigned_attributes = None;
    if let Some(item) = fields.get(at) {
        if item.tag != 0xA1 {
            return None;
        }
        unsigned_attributes = Some(attribute_set(item)?);
        at += 1;
    }
    if at != fields.len() {
        return None;
    }
    Some(Signer {
        sid,
        digest_algorithm,
        signed_attributes,
        signature_algorithm,
        signature_algorithm_tlv,
        signature,
        unsigned_attributes,
    })
}

/// ContentInfo(SignedData) (RFC 5652 section 5), as far as verification reads it.
pub fn read_signed(buf: &[u8]) -> Option<Signed> {
    let root = element(buf, 0, 0)?;
    if root.stop != buf.len() || root.tag != 0x30 {
        return None;
    }
    let parts = children(buf, &root)?;
    if parts.len() != 2 || parts[1].tag != 0xA0 || primitive(buf, &parts[0], 0x06)? != SIGNED_DATA {
        return None;
    }
    let body = children(buf, &parts[1])?;
    if body.len() != 1 || body[0].tag != 0x30 {
        return None;
    }
    let fields = children(buf, &body[0])?;
    let mut at = 0;
    primitive(buf, fields.get(at)?, 0x02)?; // version
    at += 1;
    if fields.get(at)?.tag != 0x31 {
        return None; // digestAlgorithms
    }
    at += 1;
    // EncapsulatedContentInfo ::= SEQUENCE { eContentType, eContent [0] EXPLICIT OCTET STRING
    //                                       OPTIONAL }
    let encap_item = fields.get(at)?;
    if encap_item.tag != 0x30 {
        return None;
    }
    at += 1;
    let encap = children(buf, encap_item)?;
    let content_type = range(encap.first()?);
    primitive(buf, &encap[0], 0x06)?;
    let content = match encap.len() {
        1 => None,
        2 if encap[1].tag == 0xA0 => {
            let inner = children(buf, &encap[1])?;
            if inner.len() != 1 || inner[0].tag & 0xDF != 0x04 {
                return None;
            }
            let mut pieces = Vec::new();
            string_chunks(buf, &inner[0], &mut pieces)?;
            Some(pieces)
        }
        _ => return None,
    };
    let mut certificates = Vec::new();
    if fields.get(at)?.tag == 0xA0 {
        for choice in children(buf, &fields[at])? {
            // an attribute or other certificate: the Python reader (asn1crypto checks them)
            if choice.tag != 0x30 || choice.indefinite {
                return None;
            }
            certificates.push((choice.begin, choice.stop));
        }
        at += 1;
    }
    if fields.get(at)?.tag == 0xA1 {
        at += 1; // crls: not read
    }
    let set = fields.get(at)?;
    if set.tag != 0x31 {
        return None;
    }
    at += 1;
    if at != fields.len() {
        return None;
    }
    let mut signers = Vec::new();
    for item in children(buf, set)? {
        signers.push(signer(buf, &item)?);
    }
    Some(Signed { content_type, content, certificates, signers })
}

/// The attributes in the contents of a SET OF Attribute (signedAttrs, unsignedAttrs), as
/// `crypto/attributes.py`'s `read_attributes` reads them (its reference): per attribute, its
/// type OID's contents and each value's TLV; None where that code raises (it then says why).
pub fn read_attributes(buf: &[u8]) -> Option<Vec<((usize, usize), Vec<(usize, usize)>)>> {
    let whole = Tlv { tag: 0x30, begin: 0, start: 0, end: buf.len(), stop: buf.len(), indefinite: false };
    let mut out = Vec::new();
    for item in children(buf, &whole)? {
        if item.tag != 0x30 {
            return None;
        }
        let fields = children(buf, &item)?;
        if fields.len() != 2 || fields[1].tag != 0x31 {
            return None;
        }
        primitive(buf, &fields[0], 0x06)?;
        let values = children(buf, &fields[1])?.iter().map(|v| (v.begin, v.stop)).collect();
        out.push((range(&fields[0]), values));
    }
    Some(out)
}
