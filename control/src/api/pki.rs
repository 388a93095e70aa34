//! The cluster's certificate authority: one CA (ECDSA P-256) that signs the
//! API server's certificate and the nodes' client certificates.
//!
//! # Design
//! `berth serve` keeps the CA in a directory: `ca.crt` (mode 0644) and
//! `ca.key` (mode 0600), created on first start ([`Ca::load_or_create`]).
//! The server certificate is issued afresh on each start for the SANs the
//! server is reachable under ([`Ca::write_server_cert`]), so changing the
//! address needs no manual step. Node certificates are issued at join
//! (`POST /bootstrap/v1/join`): CN `system:node:<name>`, O `system:nodes`,
//! as kubelet client certificates are named. As in kubelet's TLS
//! bootstrap, the node makes its key and a certificate signing request
//! ([`node_signing_request`]) and the key never leaves it; the CA checks
//! the request's signature (proof that the node holds the key) and subject,
//! and signs only the public key, with the subject, usages and validity it
//! chooses itself ([`Ca::sign_node_request`]).
//!
//! Signing needs the CA's subject and key only, so [`Ca::load`] rebuilds
//! the subject berth always gives its CA and checks that `ca.crt` has that
//! subject and the public key of `ca.key`.
//!
//! # Limitations
//! - Only a CA that berth created can be loaded (a fixed subject), not an
//!   external one.
//! - No revocation: leaf certificates are valid for a year; a node renews
//!   its own before then (`POST /bootstrap/v1/join` with its current
//!   certificate), and removing a node does not invalidate its certificate
//!   before it expires.
//! - The CA key sits unencrypted on disk, protected by file mode only, as
//!   kubeadm's `ca.key` is.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::objects::{civil_from_days, random_bytes, unix_now};
use super::server::TlsConfig;
use super::x509;

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const SERVER_CERT: &str = "server.crt";
const SERVER_KEY: &str = "server.key";
const CA_COMMON_NAME: &str = "berth-ca";
const ORGANIZATION: &str = "berth";
/// The group every node certificate carries.
pub const NODES_GROUP: &str = "system:nodes";
/// The prefix of a node certificate's common name.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// The ring provider, built once: berth uses ring, never aws-lc.
pub(crate) fn crypto() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Why a node's join did not get a certificate.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The request's fault: 422.
    #[error(transparent)]
    Refused(CsrRefused),
    /// The CA's: 500.
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// Why a CA operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{operation} {}", path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a CA already exists in {}", dir.display())]
    Exists { dir: PathBuf },
    #[error("{} is not a berth CA: {reason}", path.display())]
    NotBerthCa { path: PathBuf, reason: &'static str },
    #[error("{what}")]
    Certificate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("the system random number generator failed")]
    Random,
}

/// Why a node's certificate signing request was refused (the request's
/// fault, not the CA's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CsrRefused(pub String);

/// A node's private key and the certificate signing request for it, both
/// PEM: made on the node, which keeps the key.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeSigningRequest {
    pub csr_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for NodeSigningRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeSigningRequest").field("csr_pem", &self.csr_pem).finish_non_exhaustive()
    }
}

/// A new key (ECDSA P-256) for node `name` and its signing request, with
/// the subject the CA will accept: CN `system:node:<name>`, O
/// `system:nodes`.
///
/// # Errors
/// Key generation or encoding failures.
pub fn node_signing_request(name: &str) -> Result<NodeSigningRequest, PkiError> {
    let key = KeyPair::generate().map_err(rcgen_error(format!("generating a key for node {name}")))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = node_subject(name);
    let csr = params.serialize_request(&key).map_err(rcgen_error(format!("the signing request of node {name}")))?;
    let csr_pem = csr.pem().map_err(rcgen_error(format!("encoding the signing request of node {name}")))?;
    Ok(NodeSigningRequest { csr_pem, key_pem: key.serialize_pem() })
}

fn node_subject(name: &str) -> DistinguishedName {
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, NODES_GROUP);
    subject.push(DnType::CommonName, format!("{NODE_USER_PREFIX}{name}"));
    subject
}

/// The text of a subject attribute, for the string types CSRs use.
fn dn_text(value: &DnValue) -> Option<&str> {
    match value {
        DnValue::Utf8String(s) => Some(s),
        DnValue::PrintableString(s) => Some(s.as_str()),
        DnValue::Ia5String(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Whether a parsed request asks for exactly node `name`'s client
/// identity, as Kubernetes' CSR approver checks a kubelet's: one CN
/// `system:node:<name>`, one O `system:nodes`, nothing else in the subject,
/// no subject alternative names, not a CA, no usage but client auth.
fn check_node_request(name: &str, request: &CertificateSigningRequestParams) -> Result<(), CsrRefused> {
    let wanted_cn = format!("{NODE_USER_PREFIX}{name}");
    let (mut cn, mut o) = (Vec::new(), Vec::new());
    for (kind, value) in request.params.distinguished_name.iter() {
        let text = dn_text(value).unwrap_or("<not a string>").to_owned();
        match kind {
            DnType::CommonName => cn.push(text),
            DnType::OrganizationName => o.push(text),
            other => return Err(CsrRefused(format!("the subject may hold only CN and O, not {other:?}"))),
        }
    }
    if cn != [wanted_cn.clone()] {
        return Err(CsrRefused(format!("the subject's CN must be {wanted_cn:?}, not {cn:?}")));
    }
    if o != [NODES_GROUP] {
        return Err(CsrRefused(format!("the subject's O must be {NODES_GROUP:?} alone, not {o:?}")));
    }
    let params = &request.params;
    if !params.subject_alt_names.is_empty() {
        return Err(CsrRefused("a node client certificate has no subject alternative names".to_owned()));
    }
    if !matches!(params.is_ca, IsCa::NoCa | IsCa::ExplicitNoCa) {
        return Err(CsrRefused("a node client certificate cannot be a CA".to_owned()));
    }
    if params.extended_key_usages.iter().any(|u| *u != ExtendedKeyUsagePurpose::ClientAuth) {
        return Err(CsrRefused("a node client certificate may only be used for client authentication".to_owned()));
    }
    Ok(())
}

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// The cluster CA, loaded with its key.
pub struct Ca {
    dir: PathBuf,
    cert_pem: String,
    params: CertificateParams,
    key: KeyPair,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn rcgen_error(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |source| PkiError::Certificate { what, source }
}

/// The subject and constraints of berth's CA: also what [`Ca::load`]
/// rebuilds the issuer from.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, ORGANIZATION);
    name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// Validity from yesterday (clock skew between nodes) for `years`, and a
/// random serial number.
fn stamp(params: &mut CertificateParams, years: i64) -> Result<(), PkiError> {
    let (year, month, day) = civil_from_days(unix_now().div_euclid(86_400) - 1);
    // date_time_ymd panics on dates that do not exist; the 28th exists in
    // every month, and both ends of the range move together.
    let day = u8::try_from(day.min(28)).unwrap_or(28);
    let month = u8::try_from(month).unwrap_or(1);
    let year = i32::try_from(year).unwrap_or(1970);
    params.not_before = rcgen::date_time_ymd(year, month, day);
    params.not_after = rcgen::date_time_ymd(year.saturating_add(i32::try_from(years).unwrap_or(1)), month, day);
    let mut serial = random_bytes::<16>().map_err(|_| PkiError::Random)?;
    // Positive and without a leading zero byte, as RFC 5280 wants.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(())
}

/// Write `contents` to `dir/name` with `mode`, through a temporary file and
/// a rename so a crash never leaves half a key.
fn write_file(dir: &Path, name: &str, contents: &str, mode: u32) -> Result<(), PkiError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let io = |operation| {
        let path = path.clone();
        move |source| PkiError::Io { operation, path, source }
    };
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io("creating"))?;
    file.write_all(contents.as_bytes()).map_err(io("writing"))?;
    file.sync_all().map_err(io("syncing"))?;
    fs::rename(&tmp, &path).map_err(io("renaming into"))?;
    Ok(())
}

impl Ca {
    /// Create a CA in `dir` (made if missing): `ca.crt` and `ca.key`.
    ///
    /// # Errors
    /// [`PkiError::Exists`] when `dir` already holds a `ca.crt`, I/O and signing
    /// errors.
    pub fn create(dir: &Path) -> Result<Ca, PkiError> {
        if dir.join(CA_CERT).exists() {
            return Err(PkiError::Exists { dir: dir.to_owned() });
        }
        fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            operation: "creating directory",
            path: dir.to_owned(),
            source,
        })?;
        let key = KeyPair::generate().map_err(rcgen_error("generating the CA key"))?;
        let mut params = ca_params();
        stamp(&mut params, 10)?;
        let cert = params.self_signed(&key).map_err(rcgen_error("self-signing the CA"))?;
        let cert_pem = cert.pem();
        // The key first, the certificate last: ca.crt marks a complete CA.
        // A crash in between leaves a key that signed nothing, which the
        // next creation replaces.
        write_file(dir, CA_KEY, &key.serialize_pem(), 0o600)?;
        write_file(dir, CA_CERT, &cert_pem, 0o644)?;
        tracing::info!(dir = %dir.display(), "created cluster CA");
        Ok(Ca { dir: dir.to_owned(), cert_pem, params: ca_params(), key })
    }

    /// Load the CA that [`Ca::create`] wrote to `dir`.
    ///
    /// # Errors
    /// I/O errors, unparsable PEM, or [`PkiError::NotBerthCa`] when
    /// `ca.crt` does not have berth's CA subject or `ca.key`'s public key.
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|source| PkiError::Io { operation: "reading", path, source })
        };
        let cert_pem = read(CA_CERT)?;
        let key = KeyPair::from_pem(&read(CA_KEY)?).map_err(rcgen_error(format!("parsing {CA_KEY}")))?;
        let cert_path = dir.join(CA_CERT);
        let not_ca = |reason| PkiError::NotBerthCa { path: cert_path.clone(), reason };
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|_| not_ca("no PEM certificate"))?;
        let subject = x509::subject(&der).ok_or_else(|| not_ca("unparsable certificate"))?;
        if subject.common_names != [CA_COMMON_NAME] || subject.organizations != [ORGANIZATION] {
            return Err(not_ca("its subject is not O=berth, CN=berth-ca"));
        }
        let public = key.public_key_raw();
        if !der.windows(public.len()).any(|w| w == public) {
            return Err(not_ca("it does not hold the public key of ca.key"));
        }
        Ok(Ca { dir: dir.to_owned(), cert_pem, params: ca_params(), key })
    }

    /// [`Ca::load`] if `dir` holds a CA, else [`Ca::create`].
    ///
    /// # Errors
    /// As [`Ca::load`] and [`Ca::create`].
    pub fn load_or_create(dir: &Path) -> Result<Ca, PkiError> {
        if dir.join(CA_CERT).exists() { Ca::load(dir) } else { Ca::create(dir) }
    }

    /// The CA certificate, PEM: what clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The directory the CA lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn issue(
        &self,
        what: &str,
        common_name: &str,
        organization: Option<&str>,
        sans: &[String],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate().map_err(rcgen_error(format!("generating a key for {what}")))?;
        let mut params =
            CertificateParams::new(sans.to_vec()).map_err(rcgen_error(format!("subject alt names of {what}")))?;
        let mut name = DistinguishedName::new();
        if let Some(organization) = organization {
            name.push(DnType::OrganizationName, organization);
        }
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        stamp(&mut params, 1)?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(rcgen_error(format!("signing {what}")))?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A server certificate for `sans` (IP addresses and DNS names).
    ///
    /// # Errors
    /// A SAN that is neither an IP address nor a valid DNS name, signing
    /// errors.
    pub fn issue_server(&self, sans: &[String]) -> Result<IssuedCert, PkiError> {
        self.issue("the API server certificate", "berth-apiserver", Some(ORGANIZATION), sans, {
            ExtendedKeyUsagePurpose::ServerAuth
        })
    }

    /// A client certificate naming user `common_name` in group
    /// `organization`, as kube-apiserver's x509 authenticator reads them.
    ///
    /// # Errors
    /// Signing errors.
    pub fn issue_client(&self, common_name: &str, organization: Option<&str>) -> Result<IssuedCert, PkiError> {
        self.issue(
            &format!("client {common_name}"),
            common_name,
            organization,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    /// The client certificate of node `name`: CN `system:node:<name>`, O
    /// `system:nodes`.
    ///
    /// # Errors
    /// Signing errors.
    pub fn issue_node(&self, name: &str) -> Result<IssuedCert, PkiError> {
        self.issue_client(&format!("{NODE_USER_PREFIX}{name}"), Some(NODES_GROUP))
    }

    /// Signs node `name`'s certificate signing request (PEM): the request
    /// must be validly signed by its key and ask for exactly the node's
    /// identity (see [`check_node_request`]). The certificate carries the
    /// CA's choice of subject, usages and validity (a year), and only the
    /// request's public key. Returns the certificate, PEM.
    ///
    /// # Errors
    /// [`JoinError::Refused`] for a request that does not parse, is not
    /// signed by its key or asks for anything else; [`JoinError::Pki`] when
    /// signing fails.
    pub fn sign_node_request(&self, name: &str, csr_pem: &str) -> Result<String, JoinError> {
        let request = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            JoinError::Refused(CsrRefused(match e {
                rcgen::Error::InvalidCertificationRequestSignature => {
                    "the request is not signed by the key it carries".to_owned()
                }
                other => format!("not a PEM certificate signing request berth can read: {other}"),
            }))
        })?;
        check_node_request(name, &request).map_err(JoinError::Refused)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = node_subject(name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        stamp(&mut params, 1)?;
        let signing = CertificateSigningRequestParams { params, public_key: request.public_key };
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = signing.signed_by(&issuer).map_err(rcgen_error(format!("signing node {name}'s certificate")))?;
        Ok(cert.pem())
    }

    /// Issue a server certificate for `sans`, write it to `dir` as
    /// `server.crt`/`server.key` (0600), and return the TLS configuration
    /// that serves it and accepts this CA's client certificates.
    ///
    /// # Errors
    /// As [`Ca::issue_server`], and I/O errors.
    pub fn write_server_cert(&self, dir: &Path, sans: &[String]) -> Result<TlsConfig, PkiError> {
        let issued = self.issue_server(sans)?;
        write_file(dir, SERVER_KEY, &issued.key_pem, 0o600)?;
        write_file(dir, SERVER_CERT, &issued.cert_pem, 0o644)?;
        Ok(TlsConfig { cert_pem: issued.cert_pem, key_pem: issued.key_pem, client_ca_pem: self.cert_pem.clone() })
    }
}
