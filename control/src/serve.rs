//! `berth serve`: the API server over a store, with its PKI and tokens.
//!
//! # Design
//! Three phases: validate the options (no I/O), build (open the store, load
//! or create the CA and the server certificate, read the token file), then
//! serve until SIGTERM/SIGINT. On first start with no token file, an admin
//! token is generated into `<data-dir>/tokens.csv` (mode 0600) and the
//! `berth config` command that uses it is printed, so a fresh install is
//! usable at once and never anonymous.
//!
//! The leader runs the controller passes on a short period
//! (`--controller-period-ms`): the Deployment reconcile (pods from
//! templates, rolling updates, status) and the scheduler (pending pods to
//! nodes). With the embedded store this process is always the leader; over
//! etcd, `berth serve` processes campaign (etcd lease election) and only the
//! winner runs the passes, stopping as soon as it loses the lease.
//!
//! Each pass runs, in order: node lifecycle (heartbeat grace → NotReady,
//! toleration → eviction), Deployments (pods and revision history), the
//! scheduler, endpoints, namespaces (emptying terminating ones), the
//! garbage collector (dependents of deleted
//! Deployments, pods of missing nodes, terminating pods of lost nodes).
//!
//! # Limitations
//! No agent joins, heartbeats or reports pod status yet (the cluster
//! issue): until one does, a registered Node goes NotReady after the grace
//! period.

use std::{
    io::Write,
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    api::admission::Admission,
    api::{ApiConfig, ApiServer, AuthConfig, load_token_file, pki::Ca},
    controllers::{
        gc::collect_garbage,
        loops::{reconcile_deployments, schedule_pending},
        namespaces::finalize_namespaces,
        node_lifecycle::LifecycleConfig,
        passes::{reconcile_endpoints, reconcile_nodes},
    },
    resources::{DEFAULT_NAMESPACE, NAMESPACE, Resources, ResourcesConfig, store_key},
    store::{EtcdOptions, EtcdStore, Fence, Op, RedbStore, Store, StoreError, StoreOptions},
};

/// Which store backs the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// `<data-dir>/state.redb`.
    Redb,
    /// etcd endpoints (`http://127.0.0.1:2379`), keys under `root`.
    Etcd { endpoints: Vec<String>, root: String },
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub store: StoreChoice,
    /// kube-apiserver's `--token-auth-file` format; `None`: generate one.
    pub token_file: Option<PathBuf>,
    pub bootstrap_tokens: Vec<String>,
    /// Extra names and addresses for the server certificate.
    pub sans: Vec<String>,
    pub service_cidr: String,
    pub node_port_range: String,
    /// How often the leader runs the controller passes.
    pub controller_period: std::time::Duration,
    /// Node heartbeat grace and pod eviction toleration.
    pub lifecycle: LifecycleConfig,
    /// Over etcd: how long a leader's lease lasts without renewal, so how
    /// long a crashed leader's controllers stay unowned.
    pub leader_lease: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeSetupError {
    #[error("bad option: {0}")]
    Options(String),
    #[error("{what}: {message}")]
    Setup { what: String, message: String },
}

impl ServeSetupError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ServeSetupError::Options(_) => 64,
            ServeSetupError::Setup { .. } => 1,
        }
    }
}

fn setup(what: impl Into<String>) -> impl FnOnce(String) -> ServeSetupError {
    let what = what.into();
    move |message| ServeSetupError::Setup { what, message }
}

/// Generates the first admin token file, once.
fn first_token_file(dir: &Path) -> Result<PathBuf, ServeSetupError> {
    let path = dir.join("tokens.csv");
    if path.exists() {
        return Ok(path);
    }
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| setup("reading /dev/urandom")(e.to_string()))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| setup(format!("creating {}", path.display()))(e.to_string()))?;
    writeln!(f, "{token},admin,admin,\"system:masters\"")
        .map_err(|e| setup(format!("writing {}", path.display()))(e.to_string()))?;
    eprintln!(
        "berth serve: generated an admin token in {}; configure the CLI with:\n  berth config --server https://{{address}} --ca {} --token {token}",
        path.display(),
        dir.join("ca.crt").display()
    );
    Ok(path)
}

/// Build and serve until SIGTERM/SIGINT.
///
/// # Errors
/// Bad options (exit 64) or a store, PKI, token file or address that
/// cannot be used.
pub fn run(options: ServeOptions) -> Result<(), ServeSetupError> {
    let service_cidr =
        options.service_cidr.parse().map_err(|e| ServeSetupError::Options(format!("--service-cidr: {e}")))?;
    let node_port_range =
        options.node_port_range.parse().map_err(|e| ServeSetupError::Options(format!("--node-port-range: {e}")))?;
    std::fs::create_dir_all(&options.data_dir)
        .map_err(|e| setup(format!("creating {}", options.data_dir.display()))(e.to_string()))?;
    let store: Arc<dyn Store> = match &options.store {
        StoreChoice::Redb => {
            let path = options.data_dir.join("state.redb");
            Arc::new(
                RedbStore::open(&path, StoreOptions::default())
                    .map_err(|e| setup("opening the store")(e.to_string()))?,
            )
        }
        StoreChoice::Etcd { endpoints, root } => {
            let mut etcd = EtcdOptions::new(endpoints.clone());
            etcd.root = root.clone();
            Arc::new(EtcdStore::connect(etcd).map_err(|e| setup("connecting to etcd")(e.to_string()))?)
        }
    };
    let ca = Ca::load_or_create(&options.data_dir).map_err(|e| setup("the cluster CA")(e.to_string()))?;
    let mut sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), options.listen.ip().to_string()];
    sans.extend(options.sans.iter().cloned());
    sans.sort();
    sans.dedup();
    let tls =
        ca.write_server_cert(&options.data_dir, &sans).map_err(|e| setup("the server certificate")(e.to_string()))?;
    let token_file = match &options.token_file {
        Some(p) => p.clone(),
        None => first_token_file(&options.data_dir)?,
    };
    let users = load_token_file(&token_file).map_err(|e| setup(format!("{}", token_file.display()))(e.to_string()))?;
    let auth = AuthConfig { users, bootstrap_tokens: options.bootstrap_tokens.clone(), node_ca: Some(Arc::new(ca)) };
    let admission = Arc::new(Resources::new(ResourcesConfig { service_cidr, node_port_range }));
    ensure_default_namespace(store.as_ref(), admission.as_ref())?;
    let elector = match &options.store {
        StoreChoice::Redb => None,
        StoreChoice::Etcd { endpoints, root } => {
            let mut etcd = EtcdOptions::new(endpoints.clone());
            etcd.root = root.clone();
            let elections = EtcdStore::connect(etcd).map_err(|e| setup("connecting to etcd")(e.to_string()))?;
            let identity = format!("{}-{}", options.listen, std::process::id());
            Some((elections, identity))
        }
    };
    if options.leader_lease < std::time::Duration::from_secs(2) {
        // etcd refuses lease TTLs under 2 s (its minimum), and a renewal
        // every TTL/3 needs some room.
        return Err(ServeSetupError::Options("--leader-lease-seconds must be at least 2".into()));
    }
    let lease = options.leader_lease;
    let controllers = (store.clone(), admission.clone(), options.controller_period, options.lifecycle);
    let server = ApiServer::bind(ApiConfig::new(options.listen, tls, auth), store, admission)
        .map_err(|e| setup(format!("serving on {}", options.listen))(e.to_string()))?;
    eprintln!("berth serve: listening on https://{}", server.local_addr());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| setup("starting the runtime")(e.to_string()))?;
    runtime.block_on(async move {
        let (store, admission, period, lifecycle) = controllers;
        let loops = tokio::spawn(async move {
            match elector {
                None => run_passes(store, admission, period, lifecycle, Arc::new(|| true)).await,
                Some((etcd, identity)) => {
                    // The controllers write through their own connection,
                    // fenced with the leadership: a write of a leader whose
                    // lease has expired fails in etcd itself.
                    let etcd = Arc::new(etcd);
                    let elector = etcd.elector("controllers", &identity, lease);
                    let fenced: Arc<dyn Store> = etcd.clone();
                    loop {
                        match elector.campaign().await {
                            Ok(leadership) => {
                                tracing::info!(identity = %identity, "leading: running the controllers");
                                let fence = leadership
                                    .key()
                                    .zip(leadership.lease_id())
                                    .map(|(key, lease)| Fence { key: key.to_owned(), lease });
                                etcd.set_fence(fence);
                                let leadership = Arc::new(leadership);
                                let held = leadership.clone();
                                let leading: Leading = Arc::new(move || held.is_leader());
                                // Biased: after a stall both may be ready at
                                // once, and the loss must win, or a pass
                                // would start after another process leads.
                                tokio::select! {
                                    biased;
                                    lost = leadership.lost() => {
                                        tracing::warn!(?lost, "lost the leadership; controllers stopped");
                                    }
                                    () = run_passes(fenced.clone(), admission.clone(), period, lifecycle, leading) => {
                                        tracing::warn!("lost the leadership between passes; controllers stopped");
                                    }
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "campaign failed; retrying");
                                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            }
                        }
                    }
                }
            }
        });
        let shutdown = async {
            let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
            match term {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        let served = server.serve(shutdown).await.map_err(|e| setup("serving")(e.to_string()));
        loops.abort();
        served
    })
}

/// Creates the `default` Namespace object on first start, as
/// kube-apiserver does (objects may live in `default` without it; clients
/// like `kubectl get ns default` expect it). Several servers may race: the
/// loser's create finds it there.
fn ensure_default_namespace(store: &dyn Store, admission: &Resources) -> Result<(), ServeSetupError> {
    let key = store_key(&NAMESPACE, None, DEFAULT_NAMESPACE);
    let exists = store.get(&key).map_err(|e| setup("reading the default namespace")(e.to_string()))?;
    if exists.is_some() {
        return Ok(());
    }
    let mut object = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": DEFAULT_NAMESPACE},
    });
    let ops = admission
        .admit(&NAMESPACE, &mut object, None, store)
        .map_err(|e| setup("admitting the default namespace")(format!("{e:?}")))?;
    let bytes = serde_json::to_vec(&object).map_err(|e| setup("encoding the default namespace")(e.to_string()))?;
    let mut txn = vec![Op::Create { key, value: bytes }];
    txn.extend(ops);
    match store.txn(&txn) {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(setup("creating the default namespace")(e.to_string())),
    }
}

/// Whether this process still leads; checked before every controller
/// pass and between its parts.
type Leading = Arc<dyn Fn() -> bool + Send + Sync>;

/// The controller passes, one period apart, while `leading` holds (for
/// the embedded store: forever). Each pass runs on the blocking pool (the
/// store is synchronous); a failed pass is logged and the next one tries
/// again. Leadership is checked before each part of a pass, so a process
/// that stalled past its lease does no more than finish the part it was
/// in (see `leader.rs` on fencing).
async fn run_passes(
    store: Arc<dyn Store>,
    admission: Arc<Resources>,
    period: std::time::Duration,
    lifecycle: LifecycleConfig,
    leading: Leading,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !leading() {
            return;
        }
        let (s, a, still) = (store.clone(), admission.clone(), leading.clone());
        let pass = tokio::task::spawn_blocking(move || {
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let (s, a) = (s.as_ref(), a.as_ref());
            // Nodes first (readiness feeds endpoints and placement), then
            // pods from Deployments, then their placement, then endpoints,
            // then what deleted owners and lost nodes left behind.
            type Part<'a> = (&'static str, Box<dyn Fn() -> Result<String, String> + 'a>);
            let parts: [Part<'_>; 6] = [
                ("nodes", Box::new(|| summary(reconcile_nodes(s, &lifecycle, now)))),
                ("deployments", Box::new(|| summary(reconcile_deployments(s, a, now)))),
                ("scheduler", Box::new(|| summary(schedule_pending(s, now)))),
                ("endpoints", Box::new(|| summary(reconcile_endpoints(s, now)))),
                ("namespaces", Box::new(|| summary(finalize_namespaces(s, a, now)))),
                ("garbage collector", Box::new(|| summary(collect_garbage(s, now)))),
            ];
            let mut results = Vec::with_capacity(parts.len());
            for (name, part) in parts {
                if !still() {
                    break;
                }
                // A part that panics (a bug) must not take the others
                // down with it: endpoints keep following pods even if the
                // Deployment pass trips over one object.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(part))
                    .unwrap_or_else(|_| Err("panicked (a bug; see the log above)".to_owned()));
                results.push((name, result));
            }
            results
        })
        .await;
        match pass {
            Ok(results) => {
                for (name, result) in results {
                    match result {
                        Ok(summary) => tracing::debug!(pass = name, %summary, "controller pass"),
                        Err(e) => tracing::warn!(pass = name, error = %e, "controller pass failed"),
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "controller pass panicked"),
        }
    }
}

fn summary<T: std::fmt::Debug>(result: Result<T, impl std::fmt::Display>) -> Result<String, String> {
    result.map(|r| format!("{r:?}")).map_err(|e| e.to_string())
}
