//! The HTTPS API server: routing, resourceVersion, list/watch, authentication.
//!
//! # Design
//! - **Kubernetes' REST shape**, so kubectl-shaped clients work:
//!   `/api/v1/namespaces/{ns}/{resource}[/{name}]`, `/api/v1/{resource}[/{name}]`
//!   (all namespaces, or cluster-scoped kinds), `/apis/{group}/{version}/…`,
//!   discovery (`/api`, `/apis`, `/api/v1`, `/apis/apps/v1`, kubectl's short
//!   names), `/version`, `/healthz`, `/readyz`, `/livez`. Which kinds exist, their defaults,
//!   validation and allocations belong to the [`admission::Admission`]
//!   behind the server; the server knows HTTP, identity, the store and
//!   watches.
//! - **Objects in the store** are JSON under `/registry/<resource>/<ns>/<name>`
//!   (cluster-scoped: `/registry/<resource>/<name>`), without
//!   `resourceVersion`: that is the store revision of the object's last
//!   write, known only once the write commits, and is set on every object
//!   the server returns (as a string). The server sets `uid`,
//!   `creationTimestamp` and `generation` (bumped when `spec` changes) and
//!   keeps them across updates.
//! - **Writes** go through one store transaction: the object and the
//!   operations admission returns commit together or not at all, so nothing
//!   is stored for any refused request. When the transaction fails on an
//!   admission key (two writes allocated the same address), the write is
//!   admitted again, up to five times. Updates need `metadata.resourceVersion`
//!   and are compare-and-swap on it (409 when stale); an update that changes
//!   nothing writes nothing. JSON merge patches (`PATCH`,
//!   `application/merge-patch+json`) read, patch and compare-and-swap,
//!   retrying on a concurrent write unless the patch names a
//!   resourceVersion.
//! - **Watches** (`?watch=1`) stream `{"type","object"}` lines: without a
//!   `resourceVersion` the current objects as ADDED, then changes; from
//!   `resourceVersion=N` every change after N, from the store's history, so
//!   a client that lost its connection resumes without gaps or duplicates;
//!   when the history after N has been compacted, one ERROR event with a
//!   410 `Expired` Status, as kube-apiserver sends. With a label or field
//!   selector, an object that stops matching is sent as DELETED and one
//!   that starts matching as ADDED. A watch lasts `timeoutSeconds` or the
//!   configured watch timeout, and ends at shutdown.
//! - **Errors** are [`ApiError`]s, turned into Kubernetes `Status` objects
//!   (reason, code, details with field causes) in one function.
//! - **Transport and identity.** HTTPS only (rustls with ring, HTTP/1.1).
//!   Users present bearer tokens from a token file ([`parse_token_file`]):
//!   `system:masters` (or role `admin`) read and write, `berth:viewers` (or
//!   role `viewer`) only get/list/watch, others only discovery. Nodes
//!   present client certificates signed by the cluster CA ([`pki::Ca`]),
//!   verified during the handshake; client certificates are optional so
//!   token users need none, and other certificates fail the handshake. A
//!   certificate names its caller as in Kubernetes (CN user, O groups); CN
//!   `system:node:<name>` in O `system:nodes` is node `<name>`, which may
//!   read everything, write its own Node object and update and delete the
//!   pods bound to it (Kubernetes' Node authorizer), within what
//!   [`Admission::restrict_node`] allows (Kubernetes' NodeRestriction). No
//!   credentials: 401, except for health, version and join.
//! - **Join.** `POST /bootstrap/v1/join` with `Authorization: Bearer
//!   <bootstrap token>` and `{"nodeName": "n1", "certificateSigningRequest":
//!   "<PEM>"}` returns `{"certificate","ca"}` (PEM): as in kubelet's TLS
//!   bootstrap the node keeps its key, and the CA signs the request only for
//!   that node's identity ([`pki::Ca::sign_node_request`]). A node renews
//!   its certificate the same way, authenticated by its current one
//!   instead of a token, for its own name only.
//! - **Limits.** Bodies over the limit (3 MiB by default) get 413: at once
//!   from `Content-Length`, or as soon as a chunked body passes it; TLS
//!   handshakes and request headers have timeouts.
//!
//! # Limitations
//! - Bootstrap tokens do not expire and may be reused, and any holder can
//!   join under any node name (as with Kubernetes' default CSR
//!   auto-approval for bootstrap tokens).
//! - There is no `/status` subresource: users may write status through the
//!   main resource (nodes are held to status by NodeRestriction).
//! - No strategic merge patch, JSON patch or server-side apply (415).
//!   kubectl `create`, `get`, `get -w`, `label`, `annotate`, `patch
//!   --type=merge`, `delete`, and `apply` of new objects work; `apply` of a
//!   changed object does not (it sends a strategic merge patch). No
//!   `dryRun` (400), no `deletecollection`, no `limit`/`continue` paging
//!   (lists are whole), no watch bookmarks, no Table output (kubectl prints
//!   names and ages only), no protobuf, no HTTP/2. `/openapi/v2` is an
//!   empty document, so kubectl leaves validation to the server.
//! - Lists and gets always read the latest state (`resourceVersion` and
//!   `resourceVersionMatch` on a list are ignored).
//! - Deletion is immediate, except where [`Admission::deletion`] makes it
//!   graceful (pods); no finalizers, and no foreground or orphan
//!   propagation (the controllers' garbage collector removes dependents in
//!   the background).
//! - Authorization is the fixed roles above, not RBAC.
//! - No limit on connections or concurrent watches, and no rate limits
//!   (kube-apiserver's max-in-flight and priority and fairness).

pub mod admission;
mod auth;
mod body;
mod discovery;
mod error;
mod handlers;
mod objects;
pub mod pki;
mod routes;
mod server;
mod watch;
mod x509;

#[cfg(test)]
mod tests;

pub use self::auth::{
    ADMIN_GROUP, AuthConfig, Role, TokenFileError, TokenUser, VIEWER_GROUP, load_token_file, parse_token_file,
};
pub use self::error::{ApiError, Cause};
pub use self::server::{ApiConfig, ApiServer, DEFAULT_BODY_LIMIT, DEFAULT_WATCH_TIMEOUT, ServeError, TlsConfig};
