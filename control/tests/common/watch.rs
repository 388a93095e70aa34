//! A streaming watch over the real API for end-to-end tests: TLS with the
//! cluster CA and the configuration's token, events handed out line by
//! line as they arrive (`ApiClient` reads a response to its end).

use std::sync::Arc;

use berth_control::client::Config;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where and how to open watches.
pub struct Watcher {
    host: String,
    port: u16,
    token: String,
    tls: TlsConnector,
}

/// One open watch response.
pub struct EventStream {
    body: Incoming,
    buf: Vec<u8>,
}

impl Watcher {
    pub fn new(config: &Config) -> Watcher {
        let (host, port) = config.server.trim_start_matches("https://").rsplit_once(':').expect("host:port");
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&config.ca_file).expect("the CA file") {
            roots.add(cert.expect("a CA certificate")).expect("a usable CA certificate");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Watcher {
            host: host.to_owned(),
            port: port.parse().expect("a port"),
            token: config.token.clone().expect("a token"),
            tls: TlsConnector::from(Arc::new(tls)),
        }
    }

    /// GETs `path` (a watch URL) and returns the status, with the stream
    /// when it is 200; `Err` when the server cannot be reached.
    pub async fn open(&self, path: &str) -> std::io::Result<(u16, Option<EventStream>)> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        let server_name = ServerName::try_from(self.host.clone()).expect("a server name");
        let tls = self.tls.connect(server_name, tcp).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = Request::builder()
            .uri(path)
            .header("host", format!("{}:{}", self.host, self.port))
            .header("authorization", format!("Bearer {}", self.token))
            .body(Empty::<Bytes>::new())
            .expect("a request");
        let response = sender.send_request(request).await.map_err(std::io::Error::other)?;
        let code = response.status().as_u16();
        let stream = (code == 200).then(|| EventStream { body: response.into_body(), buf: Vec::new() });
        Ok((code, stream))
    }
}

impl EventStream {
    /// The next event, or `None` once the server ended the stream (or it
    /// broke). Cancel-safe: a partial line stays buffered.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).expect("a watch event is JSON"));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) | None => return None,
            }
        }
    }
}
