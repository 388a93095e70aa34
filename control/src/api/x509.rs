//! Just enough DER to read the subject of a client certificate: its common
//! names and organizations, which name the caller as kube-apiserver's x509
//! authenticator does (CN = user, O = groups).
//!
//! rustls has verified the certificate against the CA before this runs, so
//! the input was signed by us; the parser is still total (bounds-checked,
//! no panics) because it is cheap to be.

/// The parts of a certificate subject that identify a caller.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Subject {
    pub common_names: Vec<String>,
    pub organizations: Vec<String>,
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;
/// id-at-commonName, 2.5.4.3.
const CN: &[u8] = &[0x55, 0x04, 0x03];
/// id-at-organizationName, 2.5.4.10.
const O: &[u8] = &[0x55, 0x04, 0x0a];

/// One DER TLV: its tag, its contents and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match tlv(input)? {
        (t, contents, rest) if t == tag => Some((contents, rest)),
        _ => None,
    }
}

/// The subject of a DER certificate, `None` if it does not parse.
pub(super) fn subject(cert: &[u8]) -> Option<Subject> {
    let (certificate, _) = expect(cert, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = tlv(rest)?.2;
    }
    // serialNumber, signature, issuer, validity, then the subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (name, _) = expect(rest, SEQUENCE)?;
    let mut subject = Subject::default();
    let mut rdns = name;
    while !rdns.is_empty() {
        let (rdn, next) = expect(rdns, SET)?;
        rdns = next;
        let mut attributes = rdn;
        while !attributes.is_empty() {
            let (attribute, next) = expect(attributes, SEQUENCE)?;
            attributes = next;
            let (oid, value) = expect(attribute, OID)?;
            let (_string_type, text, _) = tlv(value)?;
            // UTF8String, PrintableString and IA5String are ASCII/UTF-8;
            // other string types are not used for names we issue.
            let Ok(text) = std::str::from_utf8(text) else { continue };
            if oid == CN {
                subject.common_names.push(text.to_owned());
            } else if oid == O {
                subject.organizations.push(text.to_owned());
            }
        }
    }
    Some(subject)
}
