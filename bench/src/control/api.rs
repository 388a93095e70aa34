//! The API cases: apply latency over three stores, each beside its floor or
//! peer, and watch fan-out.

use std::{
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use berth_control::{
    api::{ApiConfig, ApiServer, AuthConfig, admission::Admission, parse_token_file, pki::Ca},
    client::{ApiClient, Config},
    resources::{Resources, ResourcesConfig},
    store::{EtcdOptions, EtcdStore, MemStore, RedbStore, Store, StoreOptions},
};
use hyper::Method;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_rustls::TlsConnector;

use super::{APPLY_OBJECTS, APPLY_ROUNDS, BENCH_IP, WATCH_EVENTS, etcd::EtcdServer, ms};
use crate::report::{Outcome, Record, Sink, Stats};

const TOKEN: &str = "berth-bench-control-admin-token";
/// Bound on every watcher seeing every event.
const WATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// What the API cases measured; an `Err` is a Failed row.
pub struct Results {
    pub apply_mem: Result<Apply, String>,
    pub apply_redb: Result<Apply, String>,
    pub apply_etcd: Result<Apply, String>,
    pub watch: Result<Watch, String>,
}

pub struct Apply {
    /// Per object, over all rounds, ms.
    pub per_object: Vec<f64>,
    /// Each round's sum of its per-object times (the floor's samples sit
    /// between them).
    pub totals: Vec<Duration>,
    /// The case's floor or peer ([`Floor`]), one sample before each POST,
    /// ms; an `Err` is its Failed row (berth's row still stands).
    pub floor: Result<Vec<f64>, String>,
}

pub struct Watch {
    /// Watcher × event, ms from the create's reply.
    pub from_ack: Vec<f64>,
    /// Watcher × event, ms from the create's request start.
    pub from_send: Vec<f64>,
}

/// Runs the API cases; failures become `Err` strings in [`Results`].
pub async fn run(watchers: usize) -> Results {
    let apply_mem =
        apply_case(|_| Ok(Arc::new(MemStore::new(StoreOptions::default())) as Arc<dyn Store>), Floor::Healthz)
            .await
            .map_err(|e| format!("{e:#}"));
    let apply_redb = redb_case().await.map_err(|e| format!("{e:#}"));
    let apply_etcd = etcd_case().await.map_err(|e| format!("{e:#}"));
    let watch = watch_case(watchers).await.map_err(|e| format!("{e:#}"));
    Results { apply_mem, apply_redb, apply_etcd, watch }
}

async fn redb_case() -> anyhow::Result<Apply> {
    // The peer's store sits in a directory of its own on the same file
    // system as the server's (both under the temp dir).
    let dir = tempfile::Builder::new().prefix("berth-bench-redb-floor-").tempdir().context("creating a temp dir")?;
    let floor = RedbStore::open(&dir.path().join("floor.redb"), StoreOptions::default()).context("opening redb")?;
    apply_case(
        |dir| {
            let store = RedbStore::open(&dir.join("store.redb"), StoreOptions::default()).context("opening redb")?;
            Ok(Arc::new(store) as Arc<dyn Store>)
        },
        Floor::Redb { store: Arc::new(floor), _dir: dir },
    )
    .await
}

async fn etcd_case() -> anyhow::Result<Apply> {
    let etcd = tokio::task::spawn_blocking(EtcdServer::start).await.context("the etcd start task")??;
    let result = async {
        // `EtcdStore` blocks on a runtime of its own: connect off the async
        // workers (the API server calls it in `spawn_blocking` too).
        let options = EtcdOptions::new([etcd.endpoint()]);
        let store = tokio::task::spawn_blocking(move || EtcdStore::connect(options))
            .await
            .context("the etcd connect task")?
            .context("connecting the EtcdStore")?;
        let direct = etcd_client::Client::connect([etcd.endpoint()], None).await.context("connecting etcd-client")?;
        apply_case(move |_| Ok(Arc::new(store) as Arc<dyn Store>), Floor::Etcd(Box::new(direct))).await
    }
    .await;
    // Kill and reap (a blocking waitpid) off the async workers.
    let _ = tokio::task::spawn_blocking(move || drop(etcd)).await;
    result
}

/// An `ApiServer` on [`BENCH_IP`] in a temp dir; [`Server::stop`] shuts it down.
struct Server {
    addr: SocketAddr,
    ca_pem: String,
    dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    async fn start(store: impl FnOnce(&Path) -> anyhow::Result<Arc<dyn Store>>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("berth-bench-control-").tempdir().context("creating a temp dir")?;
        let pki = dir.path().join("pki");
        let ca = Ca::load_or_create(&pki).context("creating the CA")?;
        let tls = ca.write_server_cert(&pki, &[BENCH_IP.to_owned()]).context("issuing the server certificate")?;
        let users = parse_token_file(&format!("{TOKEN},admin,1,\"system:masters\"\n")).context("token file")?;
        let auth = AuthConfig { users, bootstrap_tokens: Vec::new(), node_ca: None };
        let mut config = ApiConfig::new(format!("{BENCH_IP}:0").parse()?, tls, auth);
        config.watch_timeout = Duration::from_secs(300);
        let store = store(dir.path())?;
        let admission: Arc<dyn Admission> = Arc::new(Resources::new(ResourcesConfig::default()));
        let server = ApiServer::bind(config, store, admission).context("binding the API server")?;
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server
                .serve(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self { addr, ca_pem: ca.cert_pem().to_owned(), dir, stop: Some(stop), task: Some(task) })
    }

    fn client(&self) -> anyhow::Result<ApiClient> {
        let ca_file = self.dir.path().join("client-ca.crt");
        std::fs::write(&ca_file, &self.ca_pem).context("writing the CA for the client")?;
        let config = Config {
            server: format!("https://{}", self.addr),
            ca_file: ca_file.to_string_lossy().into_owned(),
            token: Some(TOKEN.to_owned()),
            cert_file: None,
            key_file: None,
            namespace: "default".to_owned(),
        };
        ApiClient::new(config).context("building the client")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// Creates the `default` namespace (a conflict means it exists).
async fn ensure_default(client: &ApiClient) -> anyhow::Result<()> {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
    let reply = client.raw(Method::POST, "/api/v1/namespaces", Some(serde_json::to_vec(&ns)?)).await?;
    if !(200..300).contains(&reply.status) && reply.status != 409 {
        bail!("creating namespace default: HTTP {}: {}", reply.status, String::from_utf8_lossy(&reply.body));
    }
    Ok(())
}

fn service(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}
    })
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 8080}]}]}
            }
        }
    })
}

/// The manifest of round `round`: half Services, half Deployments, with
/// their collection paths.
fn manifest(round: usize) -> Vec<(&'static str, Vec<u8>)> {
    (0..APPLY_OBJECTS)
        .map(|i| {
            let name = format!("app-r{round}-{:03}", i / 2);
            if i % 2 == 0 {
                ("/api/v1/namespaces/default/services", service(&name).to_string().into_bytes())
            } else {
                ("/apis/apps/v1/namespaces/default/deployments", deployment(&name).to_string().into_bytes())
            }
        })
        .collect()
}

/// The floor or peer measured beside one apply case, interleaved with it:
/// one sample right before each POST, of the same object where it stores one.
enum Floor {
    /// `GET /healthz` through the same client to the same server: a fresh
    /// TLS connection and a request that touches neither the store nor
    /// admission (the route is public, so the token is not checked either).
    Healthz,
    /// `Store::create` of the object's bytes on a `RedbStore` of its own
    /// (the directory lives as long as the store).
    Redb { store: Arc<RedbStore>, _dir: tempfile::TempDir },
    /// A KV put of the object's bytes under a fresh key, on a direct
    /// etcd-client connection driven by the bench's runtime.
    Etcd(Box<etcd_client::Client>),
}

impl Floor {
    /// One sample, ms.
    async fn sample(&mut self, client: &ApiClient, i: usize, body: &[u8]) -> anyhow::Result<f64> {
        let key = format!("/berth-bench-floor/{i:04}");
        match self {
            Floor::Healthz => {
                let t0 = Instant::now();
                let reply = client.raw(Method::GET, "/healthz", None).await?;
                let elapsed = ms(t0.elapsed());
                if reply.status != 200 {
                    bail!("GET /healthz: HTTP {}", reply.status);
                }
                Ok(elapsed)
            }
            Floor::Redb { store, .. } => {
                let (store, value) = (Arc::clone(store), body.to_vec());
                // Timed inside the blocking task: the commit alone, without
                // the hand-off (which berth's handlers pay and count).
                tokio::task::spawn_blocking(move || {
                    let t0 = Instant::now();
                    store.create(&key, &value).map(|_| ms(t0.elapsed()))
                })
                .await
                .context("the redb task")?
                .context("RedbStore::create")
            }
            Floor::Etcd(etcd) => {
                let value = body.to_vec();
                let t0 = Instant::now();
                etcd.put(key, value, None).await.context("etcd put")?;
                Ok(ms(t0.elapsed()))
            }
        }
    }
}

async fn apply_case(
    store: impl FnOnce(&Path) -> anyhow::Result<Arc<dyn Store>>,
    mut floor: Floor,
) -> anyhow::Result<Apply> {
    let server = Server::start(store).await?;
    let result = async {
        let client = server.client()?;
        ensure_default(&client).await?;
        let mut per_object = Vec::with_capacity(APPLY_ROUNDS * APPLY_OBJECTS);
        let mut totals = Vec::with_capacity(APPLY_ROUNDS);
        let mut floor_samples = Vec::with_capacity(APPLY_ROUNDS * APPLY_OBJECTS);
        let mut floor_failed = None;
        for round in 0..APPLY_ROUNDS {
            let mut round_total = 0.0;
            for (i, (path, body)) in manifest(round).into_iter().enumerate() {
                if floor_failed.is_none() {
                    match floor.sample(&client, round * APPLY_OBJECTS + i, &body).await {
                        Ok(sample) => floor_samples.push(sample),
                        Err(e) => floor_failed = Some(format!("{e:#}")),
                    }
                }
                let t0 = Instant::now();
                let reply = client.raw(Method::POST, path, Some(body)).await?;
                let elapsed = ms(t0.elapsed());
                per_object.push(elapsed);
                round_total += elapsed;
                if reply.status != 201 {
                    bail!("POST {path}: HTTP {}: {}", reply.status, String::from_utf8_lossy(&reply.body));
                }
            }
            totals.push(Duration::from_secs_f64(round_total / 1e3));
        }
        let floor = floor_failed.map_or(Ok(floor_samples), Err);
        Ok(Apply { per_object, totals, floor })
    }
    .await;
    server.stop().await;
    result
}

fn tls_connector(ca_pem: &str) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("parsing the CA")?).context("adding the CA")?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Opens one watch; returns once the response headers are in, then sends
/// `(event name, seen)` for every ADDED event on `seen`.
async fn watcher(
    addr: SocketAddr,
    tls: TlsConnector,
    seen: mpsc::UnboundedSender<(String, Instant)>,
) -> anyhow::Result<JoinHandle<()>> {
    let tcp = TcpStream::connect(addr).await.context("connecting")?;
    let name = ServerName::try_from(BENCH_IP.to_owned())?;
    let mut stream = tls.connect(name, tcp).await.context("TLS handshake")?;
    let request = format!(
        "GET /api/v1/namespaces/default/services?watch=1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nAccept: application/json\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if !line.starts_with("HTTP/1.1 200") {
        bail!("watch answered {:?}", line.trim_end());
    }
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            bail!("watch closed during the headers");
        }
        if line == "\r\n" {
            break;
        }
    }
    Ok(tokio::spawn(async move {
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let now = Instant::now();
            if !line.contains("\"ADDED\"") {
                continue;
            }
            if let Some(name) = event_name(&line)
                && seen.send((name.to_owned(), now)).is_err()
            {
                return;
            }
        }
    }))
}

/// The `metadata.name` of a watch event line (the bench's names are `bw-N`).
fn event_name(line: &str) -> Option<&str> {
    let start = line.find("\"name\":\"bw-")? + "\"name\":\"".len();
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

async fn watch_case(watchers: usize) -> anyhow::Result<Watch> {
    let server = Server::start(|_| Ok(Arc::new(MemStore::new(StoreOptions::default())) as Arc<dyn Store>)).await?;
    let result = async {
        let client = server.client()?;
        ensure_default(&client).await?;
        let tls = tls_connector(&server.ca_pem)?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut readers = Vec::with_capacity(watchers);
        for i in 0..watchers {
            readers.push(watcher(server.addr, tls.clone(), tx.clone()).await.with_context(|| format!("watcher {i}"))?);
        }
        drop(tx);
        let mut sent = Vec::with_capacity(WATCH_EVENTS);
        for i in 0..WATCH_EVENTS {
            let name = format!("bw-{i}");
            let t0 = Instant::now();
            let reply = client
                .raw(Method::POST, "/api/v1/namespaces/default/services", Some(service(&name).to_string().into_bytes()))
                .await?;
            let ack = Instant::now();
            if reply.status != 201 {
                bail!("creating {name}: HTTP {}: {}", reply.status, String::from_utf8_lossy(&reply.body));
            }
            sent.push((t0, ack));
        }
        let want = watchers * WATCH_EVENTS;
        let (mut from_ack, mut from_send) = (Vec::with_capacity(want), Vec::with_capacity(want));
        let deadline = tokio::time::Instant::now() + WATCH_TIMEOUT;
        while from_ack.len() < want {
            let Ok(Some((name, seen))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                break;
            };
            let Some((t0, ack)) =
                name.strip_prefix("bw-").and_then(|n| n.parse::<usize>().ok()).and_then(|i| sent.get(i))
            else {
                continue;
            };
            from_send.push(ms(seen.duration_since(*t0)));
            from_ack.push(signed_ms(seen, *ack));
        }
        for r in readers {
            r.abort();
        }
        if from_ack.len() < want {
            bail!("watchers saw {} of {want} events within {WATCH_TIMEOUT:?}", from_ack.len());
        }
        Ok(Watch { from_ack, from_send })
    }
    .await;
    server.stop().await;
    result
}

/// `a - b` in ms, negative when `a` is earlier.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    if a >= b { ms(a - b) } else { -ms(b - a) }
}

fn latency(table: &str, case: &str, peer: &str, sample: &[f64]) -> Option<(Record, Stats)> {
    let mut v = sample.to_vec();
    let s = Stats::of(&mut v)?;
    let row = Record::new(table, case, peer)
        .figure("p50", s.median, "ms")
        .figure("p90", s.p90, "ms")
        .figure("p99", s.p99, "ms")
        .figure("mean", s.mean, "ms")
        .figure("n", s.n as f64, "");
    Some((row, s))
}

const MEM: &str = "berth API + MemStore";
const REDB: &str = "berth API + RedbStore (fsync)";
const ETCD: &str = "berth API + EtcdStore";
const HEALTHZ: &str = "floor: TLS connect + GET /healthz (no store, no admission)";
const REDB_COMMIT: &str = "peer: redb commit (RedbStore::create, store only)";
const ETCD_PUT: &str = "peer: etcd put (etcd-client, direct)";

/// Records the API rows.
///
/// # Errors
/// Sink failures.
pub fn record(results: &Results, watchers: usize, sink: &mut Sink) -> anyhow::Result<()> {
    const APPLY: &str = "API apply (5 rounds of a 100-object manifest, one POST each over HTTPS)";
    const OVER: &str = "API apply: berth over its floor (per object, p50 / p50)";
    let cases = [
        (MEM, HEALTHZ, &results.apply_mem),
        (REDB, REDB_COMMIT, &results.apply_redb),
        (ETCD, ETCD_PUT, &results.apply_etcd),
    ];
    let mut ratios = Vec::new();
    for (peer, floor_peer, r) in cases {
        let a = match r {
            Ok(a) => a,
            Err(why) => {
                // Without the case there is no server (or no etcd): the
                // floor has no figure either.
                for p in [peer, floor_peer] {
                    sink.record(Record::new(APPLY, "per object", p).outcome(Outcome::Failed(why.clone())))?;
                }
                ratios.push((peer, floor_peer, None, None));
                continue;
            }
        };
        let berth = latency(APPLY, "per object", peer, &a.per_object);
        if let Some((row, _)) = &berth {
            sink.record(row.clone().param("objects", APPLY_OBJECTS))?;
        }
        let totals: Vec<f64> = a.totals.iter().map(|t| ms(*t)).collect();
        let total = crate::report::median(&totals).unwrap_or(f64::NAN);
        sink.record(
            Record::new(APPLY, "whole manifest (median round)", peer)
                .param("objects", APPLY_OBJECTS)
                .figure("total", total, "ms"),
        )?;
        let floor = match &a.floor {
            Ok(sample) => latency(APPLY, "per object", floor_peer, sample),
            Err(_) => None,
        };
        match (&floor, &a.floor) {
            (Some((row, _)), _) => sink.record(row.clone().param("objects", APPLY_OBJECTS))?,
            (None, Err(why)) => {
                sink.record(Record::new(APPLY, "per object", floor_peer).outcome(Outcome::Failed(why.clone())))?
            }
            (None, Ok(_)) => sink.record(
                Record::new(APPLY, "per object", floor_peer).outcome(Outcome::Failed("no sample".to_owned())),
            )?,
        }
        ratios.push((peer, floor_peer, berth.map(|(_, s)| s.median), floor.map(|(_, s)| s.median)));
    }
    // TLS + `/healthz` (measured in the MemStore case) plus a store's floor:
    // the request and the commit without berth's handling in between.
    let healthz = ratios.iter().find(|r| r.0 == MEM).and_then(|r| r.3);
    let mut rows = Vec::new();
    for (peer, floor_peer, berth, floor) in ratios {
        rows.push((peer, floor_peer.to_owned(), berth, floor));
        if peer != MEM {
            // "peer: redb commit (…)" → "redb commit".
            let store = floor_peer.trim_start_matches("peer: ").split(" (").next().unwrap_or(floor_peer);
            let sum = healthz.zip(floor).map(|(h, f)| h + f);
            rows.push((peer, format!("sum: TLS connect + GET /healthz + {store}"), berth, sum));
        }
    }
    for (peer, reference, berth, floor) in rows {
        // The case is berth's side, the peer the reference it is divided by.
        let row = match (berth, floor) {
            (Some(b), Some(f)) => Record::new(OVER, peer, reference)
                .figure("berth p50", b, "ms")
                .figure("floor p50", f, "ms")
                .figure("berth − floor", b - f, "ms")
                .figure("ratio", b / f, "x"),
            _ => Record::new(OVER, peer, reference)
                .outcome(Outcome::Failed("berth or its floor has no figure (see the apply table)".to_owned())),
        };
        sink.record(row)?;
    }
    const WATCH: &str = "Watch fan-out (Service creates)";
    let case = format!("{watchers} watchers × {WATCH_EVENTS} events");
    match &results.watch {
        Ok(w) => {
            for (peer, sample) in [
                ("berth API + MemStore: create acknowledged → event read", &w.from_ack),
                ("berth API + MemStore: create sent → event read", &w.from_send),
            ] {
                if let Some((row, _)) = latency(WATCH, &case, peer, sample) {
                    sink.record(row.param("watchers", watchers).param("events", WATCH_EVENTS))?;
                }
            }
        }
        Err(why) => {
            sink.record(Record::new(WATCH, &case, "berth API + MemStore").outcome(Outcome::Failed(why.clone())))?
        }
    }
    Ok(())
}
