//! Configuration, the listener, TLS and connections.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::admission::{Admission, KindInfo};
use super::auth::{AuthConfig, Caller};
use super::handlers;
use super::pki::crypto;
use crate::store::Store;

/// kube-apiserver's default request body limit (`--max-request-bytes`
/// is 3 MiB, like etcd's default request limit plus headroom).
pub const DEFAULT_BODY_LIMIT: usize = 3 << 20;
/// How long a watch request lasts unless it asks for less
/// (`timeoutSeconds`); kube-apiserver's `--min-request-timeout` is 30 min.
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A client has this long for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// And this long for each request's headers (slow-loris protection).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// On shutdown, requests in flight get this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The server's certificate and key, and the CA its clients' certificates
/// must chain to. All PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The server certificate chain, leaf first.
    pub cert_pem: String,
    pub key_pem: String,
    /// CA certificates that sign client (node) certificates.
    pub client_ca_pem: String,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// Everything [`ApiServer::bind`] needs besides the store and admission.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub addr: SocketAddr,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    /// Largest request body accepted; larger ones get 413.
    pub body_limit: usize,
    /// Longest a watch request stays open unless it asks for a time
    /// (`timeoutSeconds`): each lasts a random time between half of this and
    /// this, and the client then watches again from its last
    /// resourceVersion.
    pub watch_timeout: Duration,
}

impl ApiConfig {
    /// A configuration with the default body limit and watch timeout.
    pub fn new(addr: SocketAddr, tls: TlsConfig, auth: AuthConfig) -> ApiConfig {
        ApiConfig { addr, tls, auth, body_limit: DEFAULT_BODY_LIMIT, watch_timeout: DEFAULT_WATCH_TIMEOUT }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("no usable {what} in the TLS configuration")]
    Pem { what: &'static str },
    #[error("the client CA is not usable")]
    ClientCa(#[source] rustls::server::VerifierBuilderError),
    #[error("building the TLS configuration")]
    Tls(#[source] rustls::Error),
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("registering the listener with the runtime")]
    Listen(#[source] std::io::Error),
}

/// What request handling shares.
pub(super) struct State {
    pub store: Arc<dyn Store>,
    pub admission: Arc<dyn Admission>,
    /// `admission.kinds()`, read once.
    pub kinds: Vec<KindInfo>,
    pub auth: AuthConfig,
    pub body_limit: usize,
    pub watch_timeout: Duration,
    pub local_addr: SocketAddr,
    /// Becomes `true` when the server shuts down; watches end on it.
    pub shutdown: watch::Receiver<bool>,
}

/// One TLS connection's identity.
pub(super) struct Connection {
    pub peer: SocketAddr,
    /// The caller its verified client certificate names, if it sent one.
    pub certificate: Option<Caller>,
}

/// The HTTPS API server: bound, not yet serving.
pub struct ApiServer {
    listener: std::net::TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
}

impl fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServer").field("addr", &self.state.local_addr).finish_non_exhaustive()
    }
}

/// The rustls configuration: ring, TLS 1.2/1.3, HTTP/1.1, client
/// certificates verified against the client CA but optional, so token
/// users connect without one.
fn server_tls(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| ServeError::Pem { what: "server certificate" })?;
    if certs.is_empty() {
        return Err(ServeError::Pem { what: "server certificate" });
    }
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())
        .map_err(|_| ServeError::Pem { what: "server private key" })?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(tls.client_ca_pem.as_bytes()) {
        let ca = ca.map_err(|_| ServeError::Pem { what: "client CA certificate" })?;
        roots.add(ca).map_err(|_| ServeError::Pem { what: "client CA certificate" })?;
    }
    if roots.is_empty() {
        return Err(ServeError::Pem { what: "client CA certificate" });
    }
    let provider = Arc::clone(crypto());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .allow_unauthenticated()
        .build()
        .map_err(ServeError::ClientCa)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServeError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(ServeError::Tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl ApiServer {
    /// Check the TLS configuration and bind the listening socket. Needs no
    /// runtime; [`ApiServer::serve`] does.
    ///
    /// # Errors
    /// [`ServeError::Pem`], [`ServeError::ClientCa`], [`ServeError::Tls`]
    /// for an unusable TLS configuration, [`ServeError::Bind`].
    pub fn bind(config: ApiConfig, store: Arc<dyn Store>, admission: Arc<dyn Admission>) -> Result<Self, ServeError> {
        let tls = server_tls(&config.tls)?;
        let bind_err = |source| ServeError::Bind { addr: config.addr, source };
        let listener = std::net::TcpListener::bind(config.addr).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let kinds = admission.kinds();
        let state = Arc::new(State {
            store,
            admission,
            kinds,
            auth: config.auth,
            body_limit: config.body_limit,
            watch_timeout: config.watch_timeout,
            local_addr,
            shutdown: shutdown_rx,
        });
        Ok(ApiServer { listener, acceptor: TlsAcceptor::from(tls), state, shutdown })
    }

    /// The bound address (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.state.local_addr
    }

    /// Serve until `shutdown` completes, then stop accepting, end watches,
    /// and give requests in flight a grace period to finish.
    ///
    /// # Errors
    /// [`ServeError::Listen`] when the socket cannot join the runtime.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let listener = TcpListener::from_std(self.listener).map_err(ServeError::Listen)?;
        tracing::info!(addr = %self.state.local_addr, "API server listening");
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let (state, acceptor) = (Arc::clone(&self.state), self.acceptor.clone());
                        connections.spawn(connection(state, acceptor, tcp, peer));
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning, keep serving.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        let _ = self.shutdown.send(true);
        let drained =
            tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(left = connections.len(), "closing connections still busy after the grace period");
            connections.shutdown().await;
        }
        tracing::info!("API server stopped");
        Ok(())
    }
}

/// Serve one TCP connection: TLS handshake, then HTTP/1.1 requests.
async fn connection(state: Arc<State>, acceptor: TlsAcceptor, tcp: TcpStream, peer: SocketAddr) {
    // Responses are written whole; waiting for Nagle adds up to 40 ms to
    // every small response on loopback.
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let certificate = tls.get_ref().1.peer_certificates().and_then(|certs| certs.first()).and_then(|cert| {
        let caller = Caller::from_certificate(cert);
        if caller.is_none() {
            tracing::warn!(%peer, "verified client certificate without a readable subject; ignoring it");
        }
        caller
    });
    let conn = Arc::new(Connection { peer, certificate });
    let mut shutdown = state.shutdown.clone();
    let service = service_fn(move |request| {
        let (state, conn) = (Arc::clone(&state), Arc::clone(&conn));
        async move { Ok::<_, Infallible>(handlers::handle(&state, &conn, request).await) }
    });
    let http = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(http);
    tokio::select! {
        result = http.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        }
        () = stopped(&mut shutdown) => {
            http.as_mut().graceful_shutdown();
            let _ = http.await;
        }
    }
}

/// Resolves once the server shuts down (or its state is gone).
pub(super) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    loop {
        let stop = *shutdown.borrow_and_update();
        if stop || shutdown.changed().await.is_err() {
            return;
        }
    }
}
