//! The API server end to end: real HTTPS on loopback, a rustls client that
//! trusts the generated CA, a store behind it and a small admission that
//! exercises the seam (rejects, allocates).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests panic so failures carry a backtrace")]

mod common;

use common::TEST_IP;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_control::api::admission::{Admission, FieldError, KindInfo, Rejection};
use berth_control::api::pki::{Ca, IssuedCert, node_signing_request};
use berth_control::api::{ApiConfig, ApiServer, AuthConfig, parse_token_file};
use berth_control::store::{MemStore, Op, RedbStore, Store, StoreOptions};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, Infallible>;

const ADMIN: &str = "admin-token";
const VIEWER: &str = "viewer-token";
const NOBODY: &str = "nobody-token";
const BOOTSTRAP: &str = "abcdef.0123456789abcdef";
const ALLOCATIONS: &str = "/registry/ranges/clusterips/";

// ---------------------------------------------------------------------------
// A small admission: pods need a container, services need valid ports and
// get a ClusterIP allocated (an extra store operation in the same
// transaction), deployments need replicas >= 0, endpoints are read-only.

#[derive(Default)]
struct TestAdmission {
    /// Sleep between reading the allocations and returning, to widen the
    /// allocation race.
    delay: Duration,
    admitted: AtomicUsize,
}

fn kind(api_version: &'static str, kind: &'static str, resource: &'static str, namespaced: bool) -> KindInfo {
    KindInfo { api_version, kind, resource, namespaced, read_only: resource == "endpoints" }
}

fn invalid(field: &str, reason: &str) -> Rejection {
    Rejection::Invalid(vec![FieldError { field: field.to_owned(), reason: reason.to_owned() }])
}

impl TestAdmission {
    fn service(&self, object: &mut Value, old: Option<&Value>, store: &dyn Store) -> Result<Vec<Op>, Rejection> {
        let Some(ports) = object.pointer("/spec/ports").and_then(Value::as_array) else {
            return Err(invalid("spec.ports", "at least one port is required"));
        };
        let errors: Vec<FieldError> = ports
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.get("port").and_then(Value::as_u64).is_some_and(|p| (1..=65535).contains(&p)))
            .map(|(i, _)| FieldError {
                field: format!("spec.ports[{i}].port"),
                reason: "must be between 1 and 65535, inclusive".to_owned(),
            })
            .collect();
        if !errors.is_empty() {
            return Err(Rejection::Invalid(errors));
        }
        let asked = object.pointer("/spec/clusterIP").and_then(Value::as_str).map(str::to_owned);
        if let Some(old) = old {
            let held = old.pointer("/spec/clusterIP").cloned().unwrap_or(Value::Null);
            if asked.is_some_and(|a| Some(a.as_str()) != held.as_str()) {
                return Err(invalid("spec.clusterIP", "field is immutable"));
            }
            object["spec"]["clusterIP"] = held;
            return Ok(Vec::new());
        }
        let (used, _) = store.list(ALLOCATIONS).unwrap();
        std::thread::sleep(self.delay);
        let ip = (1..=250)
            .map(|i| format!("10.96.0.{i}"))
            .find(|ip| !used.iter().any(|(k, _)| k.ends_with(&format!("/{ip}"))))
            .ok_or_else(|| Rejection::Conflict("the service range is full".to_owned()))?;
        object["spec"]["clusterIP"] = Value::String(ip.clone());
        let owner = object.pointer("/metadata/name").cloned().unwrap_or_default().to_string();
        Ok(vec![Op::Create { key: format!("{ALLOCATIONS}{ip}"), value: owner.into_bytes() }])
    }
}

impl Admission for TestAdmission {
    fn kinds(&self) -> Vec<KindInfo> {
        vec![
            kind("v1", "Pod", "pods", true),
            kind("v1", "Service", "services", true),
            kind("v1", "Endpoints", "endpoints", true),
            kind("v1", "Node", "nodes", false),
            kind("apps/v1", "Deployment", "deployments", true),
        ]
    }

    fn admit(
        &self,
        kind: &KindInfo,
        object: &mut Value,
        old: Option<&Value>,
        store: &dyn Store,
    ) -> Result<Vec<Op>, Rejection> {
        self.admitted.fetch_add(1, Ordering::SeqCst);
        match kind.resource {
            "pods" => match object.pointer("/spec/containers").and_then(Value::as_array) {
                Some(containers) if !containers.is_empty() => Ok(Vec::new()),
                _ => Err(invalid("spec.containers", "must have at least one container")),
            },
            "services" => self.service(object, old, store),
            "deployments" => match object.pointer("/spec/replicas").and_then(Value::as_i64) {
                Some(r) if r < 0 => Err(invalid("spec.replicas", "must be greater than or equal to 0")),
                _ => Ok(Vec::new()),
            },
            _ => Ok(Vec::new()),
        }
    }

    fn release(&self, kind: &KindInfo, object: &Value, _store: &dyn Store) -> Vec<Op> {
        match (kind.resource, object.pointer("/spec/clusterIP").and_then(Value::as_str)) {
            ("services", Some(ip)) => vec![Op::Delete { key: format!("{ALLOCATIONS}{ip}"), expected: None }],
            _ => Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------
// The server under test.

struct Server {
    addr: SocketAddr,
    ca: Arc<Ca>,
    store: Arc<dyn Store>,
    admission: Arc<TestAdmission>,
    dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    async fn start() -> Server {
        Server::with(Arc::new(MemStore::default()), TestAdmission::default()).await
    }

    async fn with(store: Arc<dyn Store>, admission: TestAdmission) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let ca = Arc::new(Ca::load_or_create(&pki).unwrap());
        let tls = ca.write_server_cert(&pki, &[TEST_IP.to_owned(), "localhost".to_owned()]).unwrap();
        let users = parse_token_file(&format!(
            "# token,user,uid,groups\n{ADMIN},admin,1,\"system:masters\"\n{VIEWER},vera,2,\"berth:viewers,dev\"\n{NOBODY},nobody,3\n"
        ))
        .unwrap();
        let auth = AuthConfig { users, bootstrap_tokens: vec![BOOTSTRAP.to_owned()], node_ca: Some(Arc::clone(&ca)) };
        let mut config = ApiConfig::new(format!("{TEST_IP}:0").parse().unwrap(), tls, auth);
        config.watch_timeout = Duration::from_secs(120);
        let admission = Arc::new(admission);
        let server = ApiServer::bind(config, Arc::clone(&store), Arc::clone(&admission) as Arc<dyn Admission>).unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server { addr, ca, store, admission, dir, stop: Some(stop), task: Some(task) }
    }

    fn client(&self, token: Option<&str>) -> Client {
        Client::new(self.addr, self.ca.cert_pem(), token, None)
    }

    fn admin(&self) -> Client {
        self.client(Some(ADMIN))
    }

    fn revision(&self) -> u64 {
        self.store.current_revision().unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(15), self.task.take().unwrap()).await.unwrap().unwrap();
    }
}

// ---------------------------------------------------------------------------
// A client: hyper over tokio-rustls, trusting the cluster CA, with a bearer
// token or a client certificate.

#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    token: Option<String>,
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

impl Client {
    fn new(addr: SocketAddr, ca_pem: &str, token: Option<&str>, cert: Option<&IssuedCert>) -> Client {
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let tls = match cert {
            None => builder.with_no_client_auth(),
            Some(cert) => {
                let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
                let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        Client { addr, tls: Arc::new(tls), token: token.map(str::to_owned) }
    }

    fn with_cert(server: &Server, cert: &IssuedCert) -> Client {
        Client::new(server.addr, server.ca.cert_pem(), None, Some(cert))
    }

    /// A keep-alive connection.
    async fn connect(&self) -> Result<SendRequest<Body>, Error> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = TlsConnector::from(Arc::clone(&self.tls)).connect(ServerName::try_from("localhost")?, tcp).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    fn request(&self, method: Method, path: &str, content_type: &str, body: Body) -> Request<Body> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", content_type);
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder.body(body).unwrap()
    }

    /// One request on a fresh connection.
    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Body,
    ) -> Result<Response<Incoming>, Error> {
        let mut sender = self.connect().await?;
        Ok(sender.send_request(self.request(method, path, content_type, body)).await?)
    }

    async fn raw(&self, method: Method, path: &str, content_type: &str, body: impl Into<Bytes>) -> (StatusCode, Value) {
        let response = self.send(method, path, content_type, full(body)).await.unwrap();
        read_json(response).await
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
        self.raw(method, path, "application/json", bytes).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    async fn watch(&self, path: &str) -> Lines {
        let response = self.send(Method::GET, path, "application/json", full(Bytes::new())).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "watch {path}");
        Lines { body: response.into_body(), buf: Vec::new() }
    }
}

async fn read_json(response: Response<Incoming>) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    (status, value)
}

/// The lines of a watch response.
struct Lines {
    body: Incoming,
    buf: Vec<u8>,
}

impl Lines {
    /// The next event, or `None` when none arrives within `wait` or the
    /// stream ended.
    async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Ok(Some(Err(_)) | None) | Err(_) => return None,
            }
        }
    }

    async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(10)).await.expect("a watch event")
    }

    /// The next `n` events as (type, name, resourceVersion).
    async fn take(&mut self, n: usize) -> Vec<(String, String, String)> {
        let mut events = Vec::new();
        for _ in 0..n {
            events.push(summary(&self.next().await));
        }
        events
    }

    async fn assert_quiet(&mut self) {
        if let Some(event) = self.next_within(Duration::from_millis(300)).await {
            panic!("unexpected watch event {event}");
        }
    }
}

fn summary(event: &Value) -> (String, String, String) {
    (
        event["type"].as_str().unwrap().to_owned(),
        event["object"]["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
        event["object"]["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_owned(),
    )
}

fn ev(kind: &str, name: &str, rv: u64) -> (String, String, String) {
    (kind.to_owned(), name.to_owned(), rv.to_string())
}

fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"].as_str().expect("resourceVersion").parse().unwrap()
}

fn pod(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": labels },
        "spec": { "containers": [{ "name": "app", "image": "nginx" }] },
    })
}

fn service(name: &str, port: u64) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name },
        "spec": { "selector": { "app": name }, "ports": [{ "name": "http", "port": port, "targetPort": 8080 }] },
    })
}

const PODS: &str = "/api/v1/namespaces/default/pods";
const SERVICES: &str = "/api/v1/namespaces/default/services";

// ---------------------------------------------------------------------------

#[test]
fn create_get_list_update_delete() {
    common::run(async {
        let server = Server::start().await;
        let admin = server.admin();

        let (status, created) = admin.post(PODS, &pod("web-1", json!({ "app": "web" }))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["metadata"]["namespace"], "default");
        assert_eq!(created["metadata"]["generation"], 1);
        let uid = created["metadata"]["uid"].as_str().unwrap();
        assert_eq!(uid.len(), 36, "{uid}");
        let ts = created["metadata"]["creationTimestamp"].as_str().unwrap();
        assert!(ts.len() == 20 && ts.ends_with('Z'), "{ts}");
        assert_eq!(rv(&created), server.revision());

        let (status, got) = admin.get(&format!("{PODS}/web-1")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got, created);

        // YAML bodies, and a second namespace.
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: db-1\n  labels: {app: db}\nspec:\n  containers:\n  - name: db\n    image: postgres\n";
        let (status, body) = admin.raw(Method::POST, PODS, "application/yaml", yaml).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, _) = admin.post("/api/v1/namespaces/other/pods", &pod("web-1", json!({ "app": "web" }))).await;
        assert_eq!(status, StatusCode::CREATED);

        let (status, list) = admin.get(PODS).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["kind"], "PodList");
        assert_eq!(list["metadata"]["resourceVersion"], server.revision().to_string());
        let names: Vec<&str> =
            list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["db-1", "web-1"]);
        let (_, list) = admin.get(&format!("{PODS}?labelSelector=app%3Dweb")).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        let (_, list) = admin.get("/api/v1/pods?labelSelector=app%3Dweb").await;
        assert_eq!(list["items"].as_array().unwrap().len(), 2, "all namespaces");
        let (_, list) = admin.get(&format!("{PODS}?labelSelector=app+in+(web,db),app!%3Ddb")).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        let (_, list) = admin.get(&format!("{PODS}?fieldSelector=metadata.name%3Ddb-1")).await;
        assert_eq!(list["items"][0]["metadata"]["name"], "db-1");

        // Update: new resourceVersion, generation counts spec changes only.
        let mut changed = got.clone();
        changed["spec"]["containers"][0]["image"] = json!("nginx:2");
        let (status, updated) = admin.put(&format!("{PODS}/web-1"), &changed).await;
        assert_eq!(status, StatusCode::OK, "{updated}");
        assert!(rv(&updated) > rv(&created));
        assert_eq!(updated["metadata"]["generation"], 2);
        assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
        // An update that changes nothing writes nothing.
        let before = server.revision();
        let (status, same) = admin.put(&format!("{PODS}/web-1"), &updated).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(rv(&same), rv(&updated));
        assert_eq!(server.revision(), before);

        // Merge patch.
        let patch = json!({ "metadata": { "labels": { "tier": "front", "app": null } } });
        let (status, patched) =
            admin.raw(Method::PATCH, &format!("{PODS}/web-1"), "application/merge-patch+json", patch.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{patched}");
        assert_eq!(patched["metadata"]["labels"], json!({ "tier": "front" }));
        assert_eq!(patched["metadata"]["generation"], 2);

        // Cluster-scoped and grouped kinds.
        let node = json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "n1", "namespace": "ignored" } });
        let (status, node) = admin.post("/api/v1/nodes", &node).await;
        assert_eq!(status, StatusCode::CREATED, "{node}");
        assert!(node["metadata"].get("namespace").is_none());
        assert_eq!(admin.get("/api/v1/nodes/n1").await.0, StatusCode::OK);
        let deployment = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" }, "spec": { "replicas": 3 } });
        let (status, _) = admin.post("/apis/apps/v1/namespaces/default/deployments", &deployment).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(admin.get("/apis/apps/v1/namespaces/default/deployments/web").await.0, StatusCode::OK);
        assert!(server.store.get("/registry/deployments/default/web").unwrap().is_some());

        // Delete returns the object; it is gone afterwards.
        let (status, deleted) = admin.delete(&format!("{PODS}/web-1")).await;
        assert_eq!(status, StatusCode::OK, "{deleted}");
        assert_eq!(deleted["metadata"]["name"], "web-1");
        let (status, missing) = admin.get(&format!("{PODS}/web-1")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(missing["reason"], "NotFound");
        assert_eq!(missing["message"], "pods \"web-1\" not found");
        assert_eq!(admin.delete(&format!("{PODS}/web-1")).await.0, StatusCode::NOT_FOUND);

        // Discovery and health.
        let (_, resources) = admin.get("/api/v1").await;
        assert!(
            resources["resources"].as_array().unwrap().iter().any(|r| r["name"] == "pods" && r["namespaced"] == true)
        );
        let (_, groups) = admin.get("/apis").await;
        assert_eq!(groups["groups"][0]["name"], "apps");
        let (status, version) = server.client(None).get("/version").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(version["major"], "1");
        let response =
            server.client(None).send(Method::GET, "/healthz", "text/plain", full(Bytes::new())).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(admin.get("/api/v1/widgets").await.0, StatusCode::NOT_FOUND);
        // A long generateName is cut to 58 characters before the suffix.
        let mut generated = pod("", json!({}));
        generated["metadata"].as_object_mut().unwrap().remove("name");
        generated["metadata"]["generateName"] = json!("g".repeat(100));
        let (status, body) = admin.post(PODS, &generated).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let name = body["metadata"]["name"].as_str().unwrap();
        assert_eq!(name.len(), 63, "{name}");
        assert!(name.starts_with(&"g".repeat(58)), "{name}");
        admin.call(Method::DELETE, &format!("{PODS}/{name}"), None).await;
        server.stop().await;
    })
}

#[test]
fn bad_requests_store_nothing() {
    common::run(async {
        let server = Server::start().await;
        let admin = server.admin();
        let before = server.revision();

        let (status, body) = admin.raw(Method::POST, PODS, "application/json", "{\"metadata\": ").await;
        assert_eq!((status, body["reason"].as_str()), (StatusCode::BAD_REQUEST, Some("BadRequest")), "{body}");
        let (status, _) = admin.raw(Method::POST, PODS, "application/yaml", "a: [").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = admin.raw(Method::POST, PODS, "text/plain", "hello").await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let mut wrong_ns = pod("p", json!({}));
        wrong_ns["metadata"]["namespace"] = json!("other");
        let (status, body) = admin.post(PODS, &wrong_ns).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let mut wrong_kind = pod("p", json!({}));
        wrong_kind["kind"] = json!("Service");
        assert_eq!(admin.post(PODS, &wrong_kind).await.0, StatusCode::BAD_REQUEST);
        let (status, body) = admin.post(PODS, &json!({ "spec": {} })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["details"]["causes"][0]["field"], "metadata.name");
        assert_eq!(body["details"]["causes"][0]["reason"], "FieldValueRequired");
        let (status, _) = admin.post(PODS, &pod("a%2Fb", json!({}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, _) =
            admin.post("/api/v1/namespaces/default/endpoints", &json!({ "metadata": { "name": "e" } })).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _) = admin.post(&format!("{PODS}?dryRun=All"), &pod("p", json!({}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // Metadata strings must be strings.
        let (status, body) = admin.post(PODS, &json!({ "metadata": { "name": 123, "generateName": "g-" } })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, _) = admin.post(PODS, &json!({ "metadata": { "name": "n", "resourceVersion": 5 } })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // Field selectors name only the fields Kubernetes supports, so a
        // typo is an error, not an empty list.
        let (status, body) = admin.get(&format!("{PODS}?fieldSelector=spec.bogus%3Dx")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["message"], "field label not supported: spec.bogus");
        let (status, _) = admin.get(&format!("{PODS}?fieldSelector=spec.nodeName%3Dn1,metadata.name%3Dp")).await;
        assert_eq!(status, StatusCode::OK);
        // Lists and watches from a revision the store never reached: 504,
        // ResourceVersionTooLarge, at once (no cache to wait for).
        let (status, _) = admin.get(&format!("{PODS}?resourceVersion=abc")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let future = before + 1000;
        let (status, body) = admin.get(&format!("{PODS}?resourceVersion={future}")).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert_eq!(body["details"]["causes"][0]["reason"], "ResourceVersionTooLarge");
        let (status, body) = admin.get(&format!("{PODS}?watch=1&resourceVersion={future}")).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert_eq!(server.revision(), before, "nothing stored");

        // generateName.
        let mut generated = pod("", json!({}));
        generated["metadata"] = json!({ "generateName": "web-" });
        let (status, body) = admin.post(PODS, &generated).await;
        assert_eq!(status, StatusCode::CREATED);
        let name = body["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        server.stop().await;
    })
}

#[test]
fn stale_update_conflicts_and_changes_nothing() {
    common::run(async {
        let server = Server::start().await;
        let admin = server.admin();
        let (_, v1) = admin.post(PODS, &pod("web", json!({ "v": "1" }))).await;
        let mut v2 = v1.clone();
        v2["metadata"]["labels"]["v"] = json!("2");
        let (status, v2) = admin.put(&format!("{PODS}/web"), &v2).await;
        assert_eq!(status, StatusCode::OK);

        // A writer still holding v1 loses.
        let mut stale = v1.clone();
        stale["metadata"]["labels"]["v"] = json!("3");
        let before = server.revision();
        let (status, body) = admin.put(&format!("{PODS}/web"), &stale).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["reason"], "Conflict");
        assert_eq!(
            body["message"],
            "Operation cannot be fulfilled on pods \"web\": the object has been modified; please apply your changes to the latest version and try again"
        );
        assert_eq!(body["details"], json!({ "name": "web", "group": "", "kind": "pods" }));
        assert_eq!(server.revision(), before);
        let (_, now) = admin.get(&format!("{PODS}/web")).await;
        assert_eq!(now, v2);

        // An update without a resourceVersion is unconditional, as
        // Kubernetes allows (`kubectl replace`); a different uid is refused.
        let mut unversioned = v2.clone();
        unversioned["metadata"].as_object_mut().unwrap().remove("resourceVersion");
        unversioned["metadata"]["labels"] = json!({"v": "3"});
        let (status, body) = admin.put(&format!("{PODS}/web"), &unversioned).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["metadata"]["labels"]["v"], "3");
        assert!(rv(&body) > rv(&v2));
        let v3 = body;
        let before = server.revision();
        let mut other_uid = v3.clone();
        other_uid["metadata"]["uid"] = json!("11111111-1111-4111-8111-111111111111");
        let (status, body) = admin.put(&format!("{PODS}/web"), &other_uid).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body["message"].as_str().unwrap().contains("metadata.uid"), "{body}");
        let uid_patch = json!({ "metadata": { "uid": "11111111-1111-4111-8111-111111111111" } });
        let (status, _) = admin
            .raw(Method::PATCH, &format!("{PODS}/web"), "application/merge-patch+json", uid_patch.to_string())
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        // Name mismatch with the URL.
        let (status, _) = admin.put(&format!("{PODS}/other"), &v2).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // A stale merge patch precondition.
        let patch = json!({ "metadata": { "resourceVersion": rv(&v1).to_string(), "labels": { "v": "4" } } });
        let (status, _) =
            admin.raw(Method::PATCH, &format!("{PODS}/web"), "application/merge-patch+json", patch.to_string()).await;
        assert_eq!(status, StatusCode::CONFLICT);
        // Strategic merge patches are not supported.
        let (status, _) =
            admin.raw(Method::PATCH, &format!("{PODS}/web"), "application/strategic-merge-patch+json", "{}").await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

        // Delete with a stale precondition, then a current one.
        let options = json!({ "kind": "DeleteOptions", "apiVersion": "v1", "preconditions": { "resourceVersion": rv(&v1).to_string() } });
        let (status, body) = admin.call(Method::DELETE, &format!("{PODS}/web"), Some(&options)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(server.revision(), before);
        // DeleteOptions are decoded strictly; only Background propagation.
        for (options, want) in [
            (json!({ "propagationPolicy": "Bogus" }), StatusCode::UNPROCESSABLE_ENTITY),
            (json!({ "propagationPolicy": "Orphan" }), StatusCode::UNPROCESSABLE_ENTITY),
            (json!({ "orphanDependents": true }), StatusCode::UNPROCESSABLE_ENTITY),
            (json!({ "gracePeriod": 3 }), StatusCode::BAD_REQUEST),
            (json!({ "dryRun": ["All"] }), StatusCode::BAD_REQUEST),
        ] {
            let (status, body) = admin.call(Method::DELETE, &format!("{PODS}/web"), Some(&options)).await;
            assert_eq!(status, want, "{options}: {body}");
        }
        assert_eq!(server.revision(), before);
        let options = json!({
            "propagationPolicy": "Background",
            "preconditions": { "resourceVersion": rv(&v3).to_string(), "uid": v3["metadata"]["uid"] },
        });
        let (status, _) = admin.call(Method::DELETE, &format!("{PODS}/web"), Some(&options)).await;
        assert_eq!(status, StatusCode::OK);
        server.stop().await;
    })
}

#[test]
fn admission_rejection_is_422_with_causes_and_stores_nothing() {
    common::run(async {
        let server = Server::start().await;
        let admin = server.admin();
        let before = server.revision();
        let (status, body) = admin.post(SERVICES, &service("web", 0)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["status"], "Failure");
        assert_eq!(body["reason"], "Invalid");
        assert_eq!(body["code"], 422);
        assert_eq!(
            body["message"],
            "Service \"web\" is invalid: spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        );
        assert_eq!(
            body["details"],
            json!({
                "name": "web",
                "group": "",
                "kind": "Service",
                "causes": [{
                    "reason": "FieldValueInvalid",
                    "message": "Invalid value: 0: must be between 1 and 65535, inclusive",
                    "field": "spec.ports[0].port",
                }],
            })
        );
        // Two causes, and a missing field.
        let mut two = service("web", 70000);
        two["spec"]["ports"].as_array_mut().unwrap().push(json!({ "port": 0 }));
        let (_, body) = admin.post(SERVICES, &two).await;
        assert_eq!(body["details"]["causes"].as_array().unwrap().len(), 2);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("Service \"web\" is invalid: [spec.ports[0].port: Invalid value: 70000")
        );
        let (_, body) = admin.post(SERVICES, &json!({ "metadata": { "name": "web" } })).await;
        assert_eq!(
            body["message"],
            "Service \"web\" is invalid: spec.ports: Required value: at least one port is required"
        );

        assert_eq!(server.revision(), before);
        assert!(server.store.list("/registry/").unwrap().0.is_empty(), "nothing stored");

        // Admission's extra operation commits with the object, and is released
        // with it.
        let (status, web) = admin.post(SERVICES, &service("web", 80)).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(web["spec"]["clusterIP"], "10.96.0.1");
        assert!(server.store.get(&format!("{ALLOCATIONS}10.96.0.1")).unwrap().is_some());
        // An update that violates admission leaves the object as it was.
        let mut moved = web.clone();
        moved["spec"]["clusterIP"] = json!("10.96.0.9");
        let (status, _) = admin.put(&format!("{SERVICES}/web"), &moved).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(admin.get(&format!("{SERVICES}/web")).await.1, web);
        assert_eq!(admin.delete(&format!("{SERVICES}/web")).await.0, StatusCode::OK);
        assert!(server.store.list("/registry/").unwrap().0.is_empty(), "allocation released");
        server.stop().await;
    })
}

#[test]
fn oversized_bodies_get_413_and_store_nothing() {
    common::run(async {
        let server = Server::start().await;
        let admin = server.admin();
        let before = server.revision();
        let mut big = pod("big", json!({}));
        big["metadata"]["annotations"] = json!({ "blob": "x".repeat(4 << 20) });
        let bytes = serde_json::to_vec(&big).unwrap();

        // With a Content-Length: refused before reading.
        let (status, body) = admin.raw(Method::POST, PODS, "application/json", bytes.clone()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["reason"], "RequestEntityTooLarge");
        assert_eq!(body["code"], 413);

        // Chunked: refused once past the limit.
        let chunks: Vec<Result<Frame<Bytes>, Infallible>> =
            bytes.chunks(64 << 10).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
        let stream = StreamBody::new(futures::stream::iter(chunks)).boxed_unsync();
        let response = admin.send(Method::POST, PODS, "application/json", stream).await.unwrap();
        let (status, body) = read_json(response).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

        assert_eq!(server.revision(), before);
        assert_eq!(admin.get(&format!("{PODS}/big")).await.0, StatusCode::NOT_FOUND);
        // Just under the limit is fine.
        big["metadata"]["annotations"] = json!({ "blob": "x".repeat(3 << 19) });
        assert_eq!(admin.post(PODS, &big).await.0, StatusCode::CREATED);
        server.stop().await;
    })
}

#[test]
fn tokens_authenticate_and_roles_authorize() {
    common::run(async {
        let server = Server::start().await;
        let (status, body) = server.client(None).get(PODS).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["reason"], "Unauthorized");
        assert_eq!(server.client(Some("wrong")).get(PODS).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(server.client(None).get("/api/v1/nowhere").await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(server.client(None).post(PODS, &pod("p", json!({}))).await.0, StatusCode::UNAUTHORIZED);

        let viewer = server.client(Some(VIEWER));
        assert_eq!(server.admin().post(PODS, &pod("p", json!({}))).await.0, StatusCode::CREATED);
        assert_eq!(viewer.get(PODS).await.0, StatusCode::OK);
        assert_eq!(viewer.get(&format!("{PODS}/p")).await.0, StatusCode::OK);
        let mut watch = viewer.watch(&format!("{PODS}?watch=1")).await;
        assert_eq!(watch.next().await["type"], "ADDED");
        let before = server.revision();
        let (status, body) = viewer.post(PODS, &pod("q", json!({}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["reason"], "Forbidden");
        assert_eq!(
            body["message"],
            "pods is forbidden: User \"vera\" cannot create resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        assert_eq!(viewer.delete(&format!("{PODS}/p")).await.0, StatusCode::FORBIDDEN);
        assert_eq!(server.revision(), before);

        // Authenticated without a role: discovery only.
        let nobody = server.client(Some(NOBODY));
        assert_eq!(nobody.get("/api").await.0, StatusCode::OK);
        assert_eq!(nobody.get(PODS).await.0, StatusCode::FORBIDDEN);
        server.stop().await;
    })
}

#[test]
fn node_client_certificates() {
    common::run(async {
        let server = Server::start().await;
        let node = Client::with_cert(&server, &server.ca.issue_node("n1").unwrap());
        assert_eq!(server.admin().post(PODS, &pod("p", json!({}))).await.0, StatusCode::CREATED);
        assert_eq!(node.get(PODS).await.0, StatusCode::OK);
        let (status, body) = node.post("/api/v1/nodes", &json!({ "metadata": { "name": "n1" } })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = node.post("/api/v1/nodes", &json!({ "metadata": { "name": "n2" } })).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(node.post(PODS, &pod("q", json!({}))).await.0, StatusCode::FORBIDDEN);
        let (_, n1) = node.get("/api/v1/nodes/n1").await;
        let mut ready = n1.clone();
        ready["status"] = json!({ "conditions": [{ "type": "Ready", "status": "True" }] });
        assert_eq!(node.put("/api/v1/nodes/n1", &ready).await.0, StatusCode::OK);
        // Pods: a node writes (status) and deletes the pods bound to it,
        // and no others.
        let admin = server.admin();
        let mut mine = pod("mine", json!({}));
        mine["spec"]["nodeName"] = json!("n1");
        let mut theirs = pod("theirs", json!({}));
        theirs["spec"]["nodeName"] = json!("n2");
        let (_, mine) = admin.post(PODS, &mine).await;
        let (_, theirs) = admin.post(PODS, &theirs).await;
        let mut running = mine.clone();
        running["status"] = json!({ "phase": "Running" });
        assert_eq!(node.put(&format!("{PODS}/mine"), &running).await.0, StatusCode::OK);
        assert_eq!(node.put(&format!("{PODS}/theirs"), &theirs).await.0, StatusCode::FORBIDDEN);
        assert_eq!(node.call(Method::DELETE, &format!("{PODS}/theirs"), None).await.0, StatusCode::FORBIDDEN);
        assert_eq!(node.call(Method::DELETE, &format!("{PODS}/p"), None).await.0, StatusCode::FORBIDDEN);
        assert_eq!(node.call(Method::DELETE, &format!("{PODS}/mine"), None).await.0, StatusCode::OK);

        // A certificate from another CA fails the handshake: no response.
        let other_dir = tempfile::tempdir().unwrap();
        let other = Ca::create(other_dir.path()).unwrap();
        let forged = Client::with_cert(&server, &other.issue_node("n1").unwrap());
        let result = forged.send(Method::GET, PODS, "application/json", full(Bytes::new())).await;
        assert!(result.is_err(), "forged certificate accepted: {:?}", result.map(|r| r.status()));
        // The CA reloads from disk and still signs certificates the server
        // accepts.
        let reloaded = Ca::load(&server.dir.path().join("pki")).unwrap();
        let again = Client::with_cert(&server, &reloaded.issue_node("n1").unwrap());
        assert_eq!(again.get(PODS).await.0, StatusCode::OK);
        server.stop().await;
    })
}

#[test]
fn join_issues_a_working_node_certificate() {
    common::run(async {
        let server = Server::start().await;
        let joiner = server.client(Some(BOOTSTRAP));
        // The node makes its key; only the signing request travels.
        let request = node_signing_request("worker-1").unwrap();
        let join = json!({ "nodeName": "worker-1", "certificateSigningRequest": request.csr_pem });
        let (status, body) = joiner.post("/bootstrap/v1/join", &join).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["ca"], server.ca.cert_pem());
        assert!(body.get("key").is_none(), "the server never sees or sends a key: {body}");
        let cert = IssuedCert { cert_pem: body["certificate"].as_str().unwrap().to_owned(), key_pem: request.key_pem };
        let node = Client::with_cert(&server, &cert);
        assert_eq!(node.get(PODS).await.0, StatusCode::OK);
        assert_eq!(
            node.post("/api/v1/nodes", &json!({ "metadata": { "name": "worker-1" } })).await.0,
            StatusCode::CREATED
        );
        assert_eq!(
            node.post("/api/v1/nodes", &json!({ "metadata": { "name": "worker-2" } })).await.0,
            StatusCode::FORBIDDEN
        );

        // Rotation: the node's own certificate renews it (a new key), and
        // only for its own name.
        let renewal = node_signing_request("worker-1").unwrap();
        let renew = json!({ "nodeName": "worker-1", "certificateSigningRequest": renewal.csr_pem });
        let (status, body) = node.post("/bootstrap/v1/join", &renew).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let renewed =
            IssuedCert { cert_pem: body["certificate"].as_str().unwrap().to_owned(), key_pem: renewal.key_pem };
        assert_eq!(Client::with_cert(&server, &renewed).get(PODS).await.0, StatusCode::OK);
        let other = node_signing_request("worker-2").unwrap();
        let (status, body) = node
            .post("/bootstrap/v1/join", &json!({ "nodeName": "worker-2", "certificateSigningRequest": other.csr_pem }))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body["message"].as_str().unwrap().ends_with("may only renew its own certificate"), "{body}");

        let (status, body) =
            server.client(Some("abcdef.wrong")).post("/bootstrap/v1/join", &json!({ "nodeName": "worker-1" })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(
            server.client(None).post("/bootstrap/v1/join", &json!({ "nodeName": "x" })).await.0,
            StatusCode::UNAUTHORIZED
        );
        // A user token is not a bootstrap token.
        assert_eq!(
            server.admin().post("/bootstrap/v1/join", &json!({ "nodeName": "x" })).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (status, body) = joiner.post("/bootstrap/v1/join", &json!({ "nodeName": "Bad_Name" })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["details"]["causes"][0]["field"], "nodeName");
        // No request, or a request for another node's identity: 422.
        let (status, body) = joiner.post("/bootstrap/v1/join", &json!({ "nodeName": "worker-2" })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["details"]["causes"][0]["field"], "certificateSigningRequest");
        let stolen = json!({ "nodeName": "worker-2", "certificateSigningRequest": join["certificateSigningRequest"] });
        let (status, body) = joiner.post("/bootstrap/v1/join", &stolen).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body["details"]["causes"][0]["message"].as_str().unwrap().contains("CN must be \"system:node:worker-2\""),
            "{body}"
        );
        server.stop().await;
    })
}

#[test]
fn watch_from_zero_replays_history_then_live_events() {
    common::run(async {
        let server = Server::start().await;
        let admin = server.admin();
        let (_, a) = admin.post(PODS, &pod("a", json!({}))).await;
        let mut a2 = a.clone();
        a2["metadata"]["labels"] = json!({ "x": "y" });
        let (_, a2) = admin.put(&format!("{PODS}/a"), &a2).await;
        let (_, b) = admin.post(PODS, &pod("b", json!({}))).await;
        let (_, b_gone) = admin.delete(&format!("{PODS}/b")).await;
        // Other namespaces and kinds are not in this watch.
        admin.post("/api/v1/namespaces/defaultx/pods", &pod("c", json!({}))).await;
        admin.post(SERVICES, &service("s", 80)).await;

        let mut watch = admin.watch(&format!("{PODS}?watch=1&resourceVersion=0")).await;
        assert_eq!(
            watch.take(4).await,
            [
                ev("ADDED", "a", rv(&a)),
                ev("MODIFIED", "a", rv(&a2)),
                ev("ADDED", "b", rv(&b)),
                ev("DELETED", "b", rv(&b_gone))
            ]
        );
        watch.assert_quiet().await;
        let (_, d) = admin.post(PODS, &pod("d", json!({}))).await;
        let event = watch.next().await;
        assert_eq!(summary(&event), ev("ADDED", "d", rv(&d)));
        assert_eq!(event["object"], d);

        // Without a resourceVersion: the current state, then changes.
        let mut fresh = admin.watch(&format!("{PODS}?watch=true")).await;
        let mut initial = fresh.take(2).await;
        initial.sort();
        assert_eq!(initial, [ev("ADDED", "a", rv(&a2)), ev("ADDED", "d", rv(&d))]);
        fresh.assert_quiet().await;
        let (_, d_gone) = admin.delete(&format!("{PODS}/d")).await;
        assert_eq!(fresh.take(1).await, [ev("DELETED", "d", rv(&d_gone))]);
        server.stop().await;
    })
}

#[test]
fn watch_resumes_after_a_dropped_connection() {
    common::run(async {
        let server = Server::start().await;
        let admin = server.admin();
        for i in 0..3 {
            admin.post(PODS, &pod(&format!("p{i}"), json!({}))).await;
        }
        let mut watch = admin.watch(&format!("{PODS}?watch=1")).await;
        let seen = watch.take(3).await;
        let (_, p3) = admin.post(PODS, &pod("p3", json!({}))).await;
        let event = watch.next().await;
        assert_eq!(summary(&event), ev("ADDED", "p3", rv(&p3)));
        let last = rv(&event["object"]);
        drop(watch);
        assert_eq!(seen.len(), 3);

        // Writes while disconnected.
        let mut expected = Vec::new();
        let (_, p4) = admin.post(PODS, &pod("p4", json!({}))).await;
        expected.push(ev("ADDED", "p4", rv(&p4)));
        let (_, gone) = admin.delete(&format!("{PODS}/p0")).await;
        expected.push(ev("DELETED", "p0", rv(&gone)));
        let (_, mut p3) = admin.get(&format!("{PODS}/p3")).await;
        p3["metadata"]["labels"] = json!({ "v": "2" });
        let (_, p3) = admin.put(&format!("{PODS}/p3"), &p3).await;
        expected.push(ev("MODIFIED", "p3", rv(&p3)));

        let mut resumed = admin.watch(&format!("{PODS}?watch=1&resourceVersion={last}")).await;
        assert_eq!(resumed.take(3).await, expected, "exactly the missed events, in order");
        resumed.assert_quiet().await;
        let (_, p5) = admin.post(PODS, &pod("p5", json!({}))).await;
        assert_eq!(resumed.take(1).await, [ev("ADDED", "p5", rv(&p5))]);
        resumed.assert_quiet().await;
        server.stop().await;
    })
}

#[test]
fn watch_with_a_selector_sees_objects_enter_and_leave_it() {
    common::run(async {
        let server = Server::start().await;
        let admin = server.admin();
        let (_, a) = admin.post(PODS, &pod("a", json!({ "app": "web" }))).await;
        admin.post(PODS, &pod("b", json!({ "app": "db" }))).await;
        let mut watch = admin.watch(&format!("{PODS}?watch=1&labelSelector=app%3Dweb")).await;
        assert_eq!(watch.take(1).await, [ev("ADDED", "a", rv(&a))]);
        watch.assert_quiet().await;
        let (_, b) = admin.get(&format!("{PODS}/b")).await;
        let mut b2 = b.clone();
        b2["metadata"]["labels"]["app"] = json!("web");
        let (_, b2) = admin.put(&format!("{PODS}/b"), &b2).await;
        assert_eq!(watch.take(1).await, [ev("ADDED", "b", rv(&b2))]);
        let mut a2 = a.clone();
        a2["metadata"]["labels"]["app"] = json!("db");
        let (_, a2) = admin.put(&format!("{PODS}/a"), &a2).await;
        assert_eq!(watch.take(1).await, [ev("DELETED", "a", rv(&a2))]);
        admin.delete(&format!("{PODS}/a")).await;
        watch.assert_quiet().await;
        server.stop().await;
    })
}

#[test]
fn watch_from_a_compacted_revision_gets_410() {
    common::run(async {
        let server = Server::start().await;
        let admin = server.admin();
        for i in 0..5 {
            admin.post(PODS, &pod(&format!("p{i}"), json!({}))).await;
        }
        server.store.compact(4).unwrap();
        let mut watch = admin.watch(&format!("{PODS}?watch=1&resourceVersion=2")).await;
        let event = watch.next().await;
        assert_eq!(event["type"], "ERROR");
        assert_eq!(
            event["object"],
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "too old resource version: 2 (4)",
                "reason": "Expired",
                "code": 410,
            })
        );
        assert!(watch.next_within(Duration::from_secs(5)).await.is_none(), "the stream ends");
        // From the compaction point on, it resumes; from 0 it falls back to
        // the current state.
        let mut watch = admin.watch(&format!("{PODS}?watch=1&resourceVersion=4")).await;
        assert_eq!(watch.take(1).await, [ev("ADDED", "p4", 5)]);
        let mut watch = admin.watch(&format!("{PODS}?watch=1&resourceVersion=0")).await;
        assert_eq!(watch.take(5).await.len(), 5);
        watch.assert_quiet().await;
        // timeoutSeconds ends a watch cleanly.
        let mut short = admin.watch(&format!("{PODS}?watch=1&resourceVersion=5&timeoutSeconds=1")).await;
        assert!(short.next_within(Duration::from_secs(5)).await.is_none());
        server.stop().await;
    })
}

#[test]
fn concurrent_creates_of_one_name_have_one_winner() {
    common::run(async {
        let server = Server::start().await;
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let admin = server.admin();
                tokio::spawn(async move { admin.post(SERVICES, &service("web", 80)).await })
            })
            .collect();
        let mut statuses = Vec::new();
        for task in tasks {
            let (status, body) = task.await.unwrap();
            if status == StatusCode::CONFLICT {
                assert_eq!(body["reason"], "AlreadyExists", "{body}");
                assert_eq!(body["message"], "services \"web\" already exists");
            }
            statuses.push(status);
        }
        assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 1, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count(), 9, "{statuses:?}");
        assert_eq!(server.store.list(ALLOCATIONS).unwrap().0.len(), 1);
        server.stop().await;
    })
}

#[test]
fn allocation_races_are_admitted_again() {
    common::run(async {
        // Every admission reads the allocations, then waits: concurrent creates
        // all pick the same address and all but one transaction fail on it.
        let admission = TestAdmission { delay: Duration::from_millis(100), ..TestAdmission::default() };
        let server = Server::with(Arc::new(MemStore::default()), admission).await;
        let n = 5;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let admin = server.admin();
                tokio::spawn(async move { admin.post(SERVICES, &service(&format!("s{i}"), 80)).await })
            })
            .collect();
        let mut ips = Vec::new();
        for task in tasks {
            let (status, body) = task.await.unwrap();
            assert_eq!(status, StatusCode::CREATED, "{body}");
            ips.push(body["spec"]["clusterIP"].as_str().unwrap().to_owned());
        }
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), n, "distinct addresses");
        assert_eq!(server.store.list(ALLOCATIONS).unwrap().0.len(), n);
        assert!(server.admission.admitted.load(Ordering::SeqCst) > n, "some were admitted again");
        server.stop().await;
    })
}

#[test]
fn shutdown_ends_watches() {
    common::run(async {
        let server = Server::start().await;
        let mut watch = server.admin().watch(&format!("{PODS}?watch=1")).await;
        watch.assert_quiet().await;
        let started = Instant::now();
        server.stop().await;
        assert!(watch.next_within(Duration::from_secs(5)).await.is_none());
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    })
}

// ---------------------------------------------------------------------------
// Latency of a create on loopback, one keep-alive connection, MemStore and
// RedbStore in the same run. `cargo test -p berth-control --test api --
// --ignored --nocapture create_latency`.

async fn create_latencies(server: &Server, prefix: &str, n: usize) -> Vec<Duration> {
    let admin = server.admin();
    let mut sender = admin.connect().await.unwrap();
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let body = serde_json::to_vec(&pod(&format!("{prefix}{i}"), json!({ "app": "bench" }))).unwrap();
        let request = admin.request(Method::POST, PODS, "application/json", full(body));
        let started = Instant::now();
        sender.ready().await.unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        response.into_body().collect().await.unwrap();
        latencies.push(started.elapsed());
        assert_eq!(status, StatusCode::CREATED);
    }
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn create_latency() {
    common::run(create_latency_body());
}

async fn create_latency_body() {
    let n = 500;
    let mem = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let redb: Arc<dyn Store> =
        Arc::new(RedbStore::open(&dir.path().join("store.redb"), StoreOptions::default()).unwrap());
    let redb = Server::with(redb, TestAdmission::default()).await;
    for (name, server) in [("MemStore", &mem), ("RedbStore", &redb)] {
        // Warm up (connection, allocator, redb file growth), then measure.
        create_latencies(server, "warm-", 20).await;
        let latencies = create_latencies(server, "p", n).await;
        println!(
            "{name}: {n} creates, p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.9),
            percentile(&latencies, 0.99),
            latencies[n - 1]
        );
    }
    mem.stop().await;
    redb.stop().await;
}

/// kubectl itself against the server, when it is installed: discovery,
/// OpenAPI download, create, a server-side rejection, get, label (a merge
/// patch), watch, delete, and a read-only token refused.
#[test]
#[ignore = "needs kubectl, which `cargo xtask setup` does not install (no Debian package); run with --ignored"]
fn kubectl_works() {
    common::run(async {
        assert!(
            std::process::Command::new("kubectl").arg("version").arg("--client").output().is_ok(),
            "kubectl not installed"
        );
        let server = Server::start().await;
        let dir = server.dir.path();
        std::fs::write(dir.join("ca.crt"), server.ca.cert_pem()).unwrap();
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: berth\nclusters:\n- name: berth\n  cluster:\n    server: https://{TEST_IP}:{}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    token: {ADMIN}\ncontexts:\n- name: berth\n  context: {{cluster: berth, user: admin, namespace: default}}\n",
            server.addr.port(),
            dir.join("ca.crt").display()
        );
        std::fs::write(dir.join("kubeconfig"), kubeconfig).unwrap();
        let pod_yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  containers:\n  - {name: app, image: nginx}\n";
        std::fs::write(dir.join("pod.yaml"), pod_yaml).unwrap();
        std::fs::write(
            dir.join("bad.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 0}]\n",
        )
        .unwrap();
        let kubeconfig = dir.join("kubeconfig");
        let kubectl = move |args: &[&str]| {
            let kubeconfig = kubeconfig.clone();
            let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            async move {
                tokio::task::spawn_blocking(move || {
                    let output = std::process::Command::new("kubectl")
                        .arg("--kubeconfig")
                        .arg(&kubeconfig)
                        .args(&args)
                        .output()
                        .unwrap();
                    let text = format!(
                        "{}{}",
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    );
                    (output.status.success(), text)
                })
                .await
                .unwrap()
            }
        };
        let pod_file = dir.join("pod.yaml").display().to_string();
        let bad_file = dir.join("bad.yaml").display().to_string();
        let (ok, out) = kubectl(&["create", "-f", &pod_file]).await;
        assert!(ok && out.contains("pod/web created"), "{out}");
        let (ok, out) = kubectl(&["apply", "-f", &bad_file]).await;
        assert!(!ok, "{out}");
        assert!(
        out.contains("The Service \"web\" is invalid: spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"),
        "{out}"
    );
        let (ok, out) = kubectl(&["get", "po", "web", "-o", "json"]).await;
        assert!(ok, "{out}");
        let pod: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(pod["metadata"]["resourceVersion"], "1");
        let (ok, out) = kubectl(&["label", "pod", "web", "tier=front"]).await;
        assert!(ok, "{out}");
        let (ok, out) = kubectl(&["get", "pods", "-l", "tier=front", "-o", "name"]).await;
        assert_eq!((ok, out.trim()), (true, "pod/web"));
        let (ok, out) = kubectl(&["--token", VIEWER, "delete", "pod", "web"]).await;
        assert!(!ok && out.contains("forbidden"), "{out}");
        let (ok, out) = kubectl(&["delete", "pod", "web", "--wait=false"]).await;
        assert!(ok, "{out}");
        let (ok, out) = kubectl(&["get", "svc,deploy,nodes"]).await;
        assert!(ok && out.contains("No resources found"), "{out}");
        server.stop().await;
    })
}
