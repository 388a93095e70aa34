//! apimachinery's name rules (`pkg/util/validation`), with its messages.
//!
//! Each check returns every message that applies (empty when valid), as
//! apimachinery's `Is*` functions do; callers wrap them in
//! `Invalid value: "<value>": <message>`.

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const DNS1035_LABEL_MAX: usize = 63;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const PORT_NAME_MAX: usize = 15;

/// apimachinery's `RegexError`: the message, examples and the regex.
fn regex_error(message: &str, regex: &str, examples: &[&str]) -> String {
    let mut s = format!("{message} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push('\'');
        s.push_str(example);
        s.push_str("', ");
    }
    s.push_str("regex used for validation is '");
    s.push_str(regex);
    s.push_str("')");
    s
}

fn max_len(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn is_dns1123_label_text(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.first().copied().is_some_and(lower_alnum)
        && b.last().copied().is_some_and(lower_alnum)
        && b.iter().all(|&c| lower_alnum(c) || c == b'-')
}

/// A lowercase RFC 1123 label: namespaces, container names, Service port
/// names.
pub(crate) fn dns1123_label(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        out.push(max_len(DNS1123_LABEL_MAX));
    }
    if !is_dns1123_label_text(s) {
        out.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?",
            &["my-name", "123-abc"],
        ));
    }
    out
}

/// A lowercase RFC 1123 subdomain: Pod, Deployment and Node names.
pub(crate) fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        out.push(max_len(DNS1123_SUBDOMAIN_MAX));
    }
    if !s.split('.').all(is_dns1123_label_text) {
        out.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
            &["example.com"],
        ));
    }
    out
}

/// An RFC 1035 label: Service names (they become DNS names and must not
/// start with a digit).
pub(crate) fn dns1035_label(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > DNS1035_LABEL_MAX {
        out.push(max_len(DNS1035_LABEL_MAX));
    }
    let b = s.as_bytes();
    let valid = b.first().is_some_and(u8::is_ascii_lowercase)
        && b.last().copied().is_some_and(lower_alnum)
        && b.iter().all(|&c| lower_alnum(c) || c == b'-');
    if !valid {
        out.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            "[a-z]([-a-z0-9]*[a-z0-9])?",
            &["my-name", "abc-123"],
        ));
    }
    out
}

const QUALIFIED_NAME_MESSAGE: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_REGEX: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain.
pub(crate) fn qualified_name(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                out.push("prefix part must be non-empty".to_owned());
            } else {
                out.extend(dns1123_subdomain(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            out.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MESSAGE, QUALIFIED_NAME_REGEX, &["MyName", "my.name", "123-abc"])
            ));
            return out;
        }
    };
    if name.is_empty() {
        out.push("name part must be non-empty".to_owned());
    } else if name.len() > QUALIFIED_NAME_MAX {
        out.push(format!("name part {}", max_len(QUALIFIED_NAME_MAX)));
    }
    if !is_qualified_name_part(name) {
        out.push(format!(
            "name part {}",
            regex_error(QUALIFIED_NAME_MESSAGE, QUALIFIED_NAME_REGEX, &["MyName", "my.name", "123-abc"])
        ));
    }
    out
}

/// A label value: empty, or a qualified name part of at most 63
/// characters.
pub(crate) fn label_value(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > LABEL_VALUE_MAX {
        out.push(max_len(LABEL_VALUE_MAX));
    }
    if !s.is_empty() && !is_qualified_name_part(s) {
        out.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    out
}

/// IANA_SVC_NAME: what a container port, and a Service `targetPort` by
/// name, may be called.
pub(crate) fn port_name(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > PORT_NAME_MAX {
        out.push(max_len(PORT_NAME_MAX));
    }
    if s.is_empty() || !s.bytes().all(|b| lower_alnum(b) || b == b'-') {
        out.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned());
    }
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)".to_owned());
    }
    if s.contains("--") {
        out.push("must not contain consecutive hyphens".to_owned());
    }
    if s.starts_with('-') || s.ends_with('-') {
        out.push("must not begin or end with a hyphen".to_owned());
    }
    out
}

/// `[0-9]+%`, for maxSurge and maxUnavailable: the percentage, if valid.
pub(crate) fn percent(s: &str) -> Result<u64, String> {
    s.strip_suffix('%')
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        // Beyond u64 is far beyond any bound a caller checks.
        .map(|digits| digits.parse::<u64>().unwrap_or(u64::MAX))
        .ok_or_else(|| {
            regex_error(
                "a valid percent string must be a numeric string followed by an ending '%'",
                "[0-9]+%",
                &["1%", "93%"],
            )
        })
}

/// `must be between 1 and 65535, inclusive`.
pub(crate) const PORT_RANGE_MESSAGE: &str = "must be between 1 and 65535, inclusive";

/// A port number, if it is one.
pub(crate) fn port_number(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|&p| p != 0)
}
