//! Who is calling (authentication) and what they may do (authorization).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::admission::KindInfo;
use super::error::{ApiError, qualified};
use super::pki::{Ca, NODE_USER_PREFIX, NODES_GROUP};
use super::x509;

/// The group whose members may read and write everything, as in
/// Kubernetes.
pub const ADMIN_GROUP: &str = "system:masters";
/// The group whose members may only read (get, list, watch).
pub const VIEWER_GROUP: &str = "berth:viewers";

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read and write every resource.
    Admin,
    /// get, list and watch only.
    Viewer,
    /// Authenticated, no access to resources (discovery only).
    None,
}

impl Role {
    /// The role of a member of `groups`: [`ADMIN_GROUP`] wins over
    /// [`VIEWER_GROUP`].
    pub fn of_groups<S: AsRef<str>>(groups: &[S]) -> Role {
        if groups.iter().any(|g| g.as_ref() == ADMIN_GROUP) {
            Role::Admin
        } else if groups.iter().any(|g| g.as_ref() == VIEWER_GROUP) {
            Role::Viewer
        } else {
            Role::None
        }
    }
}

/// One line of the token file.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenUser {
    pub token: String,
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub role: Role,
}

impl fmt::Debug for TokenUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenUser")
            .field("name", &self.name)
            .field("uid", &self.uid)
            .field("groups", &self.groups)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Why a token file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading token file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file line {line}: {reason}")]
    Line { line: usize, reason: String },
}

/// Parse a token file in kube-apiserver's `--token-auth-file` format: CSV
/// lines `token,user,uid[,"group1,group2"[,role]]`. Blank lines and lines
/// starting with `#` are skipped. The role comes from the optional fifth
/// column (`admin` or `viewer`) or else from the groups ([`Role::of_groups`]).
///
/// # Errors
/// [`TokenFileError::Line`] for a line with fewer than three fields, an
/// empty token or user, an unterminated quote, an unknown role or a token
/// used twice.
pub fn parse_token_file(text: &str) -> Result<Vec<TokenUser>, TokenFileError> {
    let mut users: Vec<TokenUser> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let err = |reason: &str| TokenFileError::Line { line: line_no, reason: reason.to_owned() };
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields = csv_fields(trimmed).ok_or_else(|| err("unterminated quoted field"))?;
        let [token, name, uid, rest @ ..] = fields.as_slice() else {
            return Err(err("expected token,user,uid[,groups[,role]]"));
        };
        if token.is_empty() || name.is_empty() {
            return Err(err("empty token or user name"));
        }
        let groups: Vec<String> = rest
            .first()
            .map(|g| g.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        let role = match rest.get(1).map(|r| r.trim()) {
            None | Some("") => Role::of_groups(&groups),
            Some("admin") => Role::Admin,
            Some("viewer") => Role::Viewer,
            Some(_) => return Err(err("role must be admin or viewer")),
        };
        if rest.len() > 2 {
            return Err(err("too many fields"));
        }
        if users.iter().any(|u| u.token == *token) {
            return Err(err("token used twice"));
        }
        users.push(TokenUser { token: token.clone(), name: name.clone(), uid: uid.clone(), groups, role });
    }
    Ok(users)
}

/// [`parse_token_file`] on the file at `path`.
///
/// # Errors
/// As [`parse_token_file`], and [`TokenFileError::Read`].
pub fn load_token_file(path: &Path) -> Result<Vec<TokenUser>, TokenFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| TokenFileError::Read { path: path.to_owned(), source })?;
    parse_token_file(&text)
}

/// Split one CSV line (RFC 4180 quoting: `"a,b"` and `""` for a quote).
fn csv_fields(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            // Leading blanks are not part of a field (Go's csv with
            // TrimLeadingSpace, as kube-apiserver reads the file).
            (' ' | '\t', false) if field.is_empty() => {}
            ('"', false) if field.is_empty() => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => quoted = false,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    if quoted {
        return None;
    }
    fields.push(field);
    Some(fields.into_iter().map(|f| f.trim().to_owned()).collect())
}

/// How callers authenticate.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Bearer-token users (see [`parse_token_file`]).
    pub users: Vec<TokenUser>,
    /// Tokens a node presents to `POST /bootstrap/v1/join`.
    pub bootstrap_tokens: Vec<String>,
    /// Signs node certificates at join; without it join answers 404.
    pub node_ca: Option<Arc<Ca>>,
}

/// What an authenticated caller may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Access {
    Role(Role),
    /// A node: read everything, write its own Node object and the pods
    /// bound to it (the latter checked by the handler, which reads the pod).
    Node(String),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Caller {
    pub name: String,
    pub access: Access,
}

impl Caller {
    /// The node this caller is, if it authenticated as one.
    pub(super) fn node(&self) -> Option<&str> {
        match &self.access {
            Access::Node(node) => Some(node),
            Access::Role(_) => None,
        }
    }

    /// The caller a verified client certificate names: a node for CN
    /// `system:node:<name>` in O `system:nodes`, else user CN in groups O.
    pub(super) fn from_certificate(der: &[u8]) -> Option<Caller> {
        let subject = x509::subject(der)?;
        let name = subject.common_names.first()?.clone();
        if subject.organizations.iter().any(|o| o == NODES_GROUP)
            && let Some(node) = name.strip_prefix(NODE_USER_PREFIX)
            && !node.is_empty()
        {
            let node = node.to_owned();
            return Some(Caller { name, access: Access::Node(node) });
        }
        let role = Role::of_groups(&subject.organizations);
        Some(Caller { name, access: Access::Role(role) })
    }
}

/// Compare two secrets in time independent of where they differ.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of an `Authorization` header value.
pub(super) fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl AuthConfig {
    /// The user holding `token`. Every entry is compared, in constant time,
    /// so the answer's timing does not reveal a prefix.
    pub(super) fn user(&self, token: &str) -> Option<Caller> {
        let mut found = None;
        for user in &self.users {
            if constant_time_eq(user.token.as_bytes(), token.as_bytes()) {
                found = Some(Caller { name: user.name.clone(), access: Access::Role(user.role) });
            }
        }
        found
    }

    pub(super) fn is_bootstrap_token(&self, token: &str) -> bool {
        self.bootstrap_tokens.iter().fold(false, |acc, t| acc | constant_time_eq(t.as_bytes(), token.as_bytes()))
    }
}

/// A request verb, as RBAC names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    fn is_read(self) -> bool {
        matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

/// Whether `caller` may `verb` objects of `kind` (in `namespace`, named
/// `name` when known: a create learns its name from the body and is asked
/// again once it has it).
///
/// # Errors
/// [`ApiError::Forbidden`], worded as kube-apiserver's RBAC denials.
pub(super) fn authorize(
    caller: &Caller,
    verb: Verb,
    kind: &KindInfo,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<(), ApiError> {
    let allowed = match &caller.access {
        Access::Role(Role::Admin) => true,
        Access::Role(Role::Viewer) => verb.is_read(),
        Access::Role(Role::None) => false,
        // A node reads everything (it needs pods, services, endpoints) and
        // writes only its own Node object.
        Access::Node(node) => verb.is_read() || (kind.resource == "nodes" && name.is_none_or(|n| n == node)),
    };
    if allowed {
        return Ok(());
    }
    let group = super::error::group(kind);
    let mut message = format!(
        "{} is forbidden: User {:?} cannot {} resource {:?} in API group {group:?}",
        match name {
            Some(name) => format!("{} {name:?}", qualified(kind)),
            None => qualified(kind),
        },
        caller.name,
        verb.as_str(),
        kind.resource,
    );
    match namespace {
        Some(namespace) => message = format!("{message} in the namespace {namespace:?}"),
        None => message.push_str(" at the cluster scope"),
    }
    Err(ApiError::Forbidden(message))
}
