//! A small client of berth's API (Kubernetes REST paths over HTTPS), for
//! the `berth` CLI and tests: one TLS connection per request, bearer token
//! or client certificate, errors decoded from Kubernetes `Status` bodies.

use std::{path::Path, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, body::Bytes};
use rustls::{ClientConfig as TlsClientConfig, RootCertStore, crypto::ring};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where and how to reach the API: `~/.config/berth/config.yaml` (or
/// `$BERTH_CLIENT_CONFIG`), written by `berth config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// `https://127.0.0.1:6443`.
    pub server: String,
    /// PEM of the CA that signed the server's certificate.
    pub ca_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A client certificate and key (PEM), instead of a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    #[serde(default = "default_namespace")]
    pub namespace: String,
}

fn default_namespace() -> String {
    "default".to_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("connecting to {server}: {message}")]
    Connect { server: String, message: String },
    /// The server answered with an error `Status`.
    #[error("{message}")]
    Status { code: u16, reason: String, message: String, causes: Vec<(String, String)> },
    #[error("bad answer from the server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// 64 for requests the server found invalid, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Status { code: 400 | 413 | 422, .. } | ClientError::Config(_) => 64,
            _ => 1,
        }
    }
}

/// A decoded answer.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct ApiClient {
    config: Config,
    host: String,
    port: u16,
    tls: TlsConnector,
}

fn read_pem(path: &str, what: &str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::Config(format!("reading the {what} {path}: {e}")))
}

impl ApiClient {
    /// # Errors
    /// A bad server URL or unreadable CA, certificate or key.
    pub fn new(config: Config) -> Result<Self, ClientError> {
        let rest = config
            .server
            .strip_prefix("https://")
            .ok_or_else(|| ClientError::Config(format!("server {:?} must be an https:// URL", config.server)))?;
        let authority = rest.trim_end_matches('/');
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.trim_matches(|c| c == '[' || c == ']').to_owned(),
                p.parse().map_err(|_| ClientError::Config(format!("bad port in {:?}", config.server)))?,
            ),
            None => (authority.to_owned(), 443),
        };
        let mut roots = RootCertStore::empty();
        let ca = read_pem(&config.ca_file, "CA certificate")?;
        for cert in CertificateDer::pem_slice_iter(&ca) {
            let cert = cert.map_err(|e| ClientError::Config(format!("{}: {e}", config.ca_file)))?;
            roots.add(cert).map_err(|e| ClientError::Config(format!("{}: {e}", config.ca_file)))?;
        }
        let builder = TlsClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let tls = match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => {
                let certs: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(&read_pem(cert, "client certificate")?)
                        .collect::<Result<_, _>>()
                        .map_err(|e| ClientError::Config(format!("{cert}: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(&read_pem(key, "client key")?)
                    .map_err(|e| ClientError::Config(format!("{key}: {e}")))?;
                builder.with_client_auth_cert(certs, key).map_err(|e| ClientError::Config(e.to_string()))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(ClientError::Config("a client certificate needs both cert_file and key_file".into())),
        };
        Ok(Self { config, host, port, tls: TlsConnector::from(Arc::new(tls)) })
    }

    pub fn namespace(&self) -> &str {
        &self.config.namespace
    }

    /// One request; `body` is JSON (or empty).
    ///
    /// # Errors
    /// Connection and TLS failures; HTTP errors are in the reply.
    pub async fn raw(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Reply, ClientError> {
        self.send(method, path, body, "application/json").await
    }

    /// A JSON merge patch (RFC 7386) of the object at `path`.
    ///
    /// # Errors
    /// Transport errors, or the server's error.
    pub async fn merge_patch(&self, path: &str, patch: &serde_json::Value) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::to_vec(patch).unwrap_or_default();
        let reply = self.send(Method::PATCH, path, Some(body), "application/merge-patch+json").await?;
        decode_reply(&reply)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &'static str,
    ) -> Result<Reply, ClientError> {
        let connect_err = |message: String| ClientError::Connect { server: self.config.server.clone(), message };
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| connect_err("timed out".into()))?
            .map_err(|e| connect_err(e.to_string()))?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| connect_err(e.to_string()))?;
        let tls = self.tls.connect(name, tcp).await.map_err(|e| connect_err(format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("{}:{}", self.host, self.port))
            .header("accept", "application/json");
        if let Some(token) = &self.config.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            req = req.header("content-type", content_type);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| connect_err(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| connect_err(e.to_string()))?.to_bytes();
        Ok(Reply { status, body })
    }

    /// A request whose success is 2xx JSON; errors are decoded `Status`es.
    ///
    /// # Errors
    /// Transport errors, or the server's error.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let reply = self.raw(method, path, body).await?;
        decode_reply(&reply)
    }
}

/// What a node has after joining: its own key and the certificate the
/// cluster CA signed for it, PEM.
#[derive(Clone)]
pub struct Joined {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joined").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// Joins the cluster at `config.server` (whose CA is `config.ca_file`) as
/// node `node`, with the bootstrap token in `config.token`: makes a key
/// here, sends only its signing request (`POST /bootstrap/v1/join`), and
/// returns the key with the signed certificate.
///
/// # Errors
/// Key generation, transport, or the server's refusal.
pub async fn join(config: &Config, node: &str) -> Result<Joined, ClientError> {
    let request = crate::api::pki::node_signing_request(node)
        .map_err(|e| ClientError::Config(format!("making a key for node {node}: {e}")))?;
    let bootstrap = Config { cert_file: None, key_file: None, ..config.clone() };
    let body = serde_json::json!({"nodeName": node, "certificateSigningRequest": request.csr_pem});
    let answer = ApiClient::new(bootstrap)?.json(Method::POST, "/bootstrap/v1/join", Some(&body)).await?;
    let cert_pem = answer["certificate"]
        .as_str()
        .ok_or_else(|| ClientError::Protocol("the join answer has no certificate".to_owned()))?
        .to_owned();
    Ok(Joined { cert_pem, key_pem: request.key_pem })
}

/// A 2xx reply's JSON, or the server's error.
fn decode_reply(reply: &Reply) -> Result<serde_json::Value, ClientError> {
    if !(200..300).contains(&reply.status) {
        return Err(status_error(reply.status, &reply.body));
    }
    serde_json::from_slice(&reply.body).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// Decodes a Kubernetes `Status` (or any body) into an error.
pub fn status_error(code: u16, body: &[u8]) -> ClientError {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let message =
        v["message"].as_str().map(str::to_owned).unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    let causes = v["details"]["causes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| (c["field"].as_str().unwrap_or("").to_owned(), c["message"].as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default();
    ClientError::Status { code, reason: v["reason"].as_str().unwrap_or("").to_owned(), message, causes }
}

/// Reads the CLI configuration file.
///
/// # Errors
/// Missing or malformed file.
pub fn load_config(path: &Path) -> Result<Config, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ClientError::Config(format!(
            "reading {}: {e} (run `berth config --server https://HOST:PORT --ca CA.crt --token TOKEN`)",
            path.display()
        ))
    })?;
    serde_yaml::from_str(&text).map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))
}
