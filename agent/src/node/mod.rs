//! The node agent's container side: runs the pods given to it (today by
//! `berth-agent run-pod` over the local admin socket; the cluster issue
//! adds the control plane as a second source), supervises them with
//! kubelet's rules, and exports cAdvisor-style metrics.
//!
//! # Design
//! Start-up has kubelet's three phases: validate the configuration (no I/O),
//! build (cgroup driver, image cache, IPAM, state directory), then adopt and
//! serve. Adoption reads every `pod.json` the previous agent process wrote
//! and resumes supervision of running containers through their shims
//! (which are in their own sessions and survive the agent); pod networks
//! with no record are garbage-collected. One task per pod and one per
//! container ([`supervisor`]); blocking work runs on the blocking pool.
//!
//! Stopping the agent (SIGTERM, SIGINT) leaves every container running, as
//! kubelet does: the next agent adopts them.
//!
//! # Limitations
//! No init containers, volumes, or Secrets/ConfigMaps; images come from
//! local OCI layouts only (no registry client).

pub mod client;
pub mod local_api;
pub mod metrics;
pub mod probes;
pub mod state;
pub mod supervisor;

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    cgroups::{self, CgroupError},
    image::{ImageError, ImageStore},
    network::{NetworkError, PodNetwork, PodNetworkConfig},
    pod::backoff::BackoffConfig,
    runtime::Runtime,
};
use state::{StateDir, StateError};
use supervisor::Shared;

/// Everything `berth-agent node` is configured with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_name: String,
    /// Pod records, container bundles, IPAM (`/var/lib/berth/<node>`).
    pub state_dir: PathBuf,
    /// The admin socket and pod network namespaces (`/run/berth/<node>`).
    pub run_dir: PathBuf,
    /// Container logs (`/var/log/berth/pods`).
    pub log_dir: PathBuf,
    /// Where image references are resolved (OCI layouts and tarballs).
    pub image_dirs: Vec<PathBuf>,
    /// Unpacked images, shared by pods.
    pub image_cache: PathBuf,
    pub pod_cidr: String,
    /// The directory under every cgroup hierarchy that berth owns.
    pub cgroup_root: String,
    pub backoff: BackoffConfig,
    pub log_max_bytes: u64,
    pub log_max_files: u32,
    /// Prometheus `/metrics` (TCP); `None` turns it off.
    pub metrics_addr: Option<SocketAddr>,
    /// The berth-agent binary, re-executed as shim and exec helper.
    pub agent_exe: PathBuf,
}

impl NodeConfig {
    pub fn socket_path(&self) -> PathBuf {
        self.run_dir.join("agent.sock")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("cgroups")]
    Cgroup(#[from] CgroupError),
    #[error("image cache")]
    Image(#[from] ImageError),
    #[error("pod network")]
    Network(#[from] NetworkError),
    #[error("state directory")]
    State(#[from] StateError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl NodeError {
    pub fn exit_code(&self) -> i32 {
        match self {
            NodeError::Config(_) => 64,
            _ => 1,
        }
    }
}

/// A built node: the shared state, with adopted pods registered but not
/// yet supervised.
pub struct Node {
    pub shared: Arc<Shared>,
}

impl Node {
    /// Phase 1 and 2: validate, then open the cgroup driver, image cache,
    /// IPAM and state directory, and load the previous agent's records.
    ///
    /// # Errors
    /// A bad configuration (exit 64) or a resource that cannot be opened.
    pub fn build(config: NodeConfig) -> Result<Self, NodeError> {
        if config.node_name.is_empty() || config.node_name.contains('/') {
            return Err(NodeError::Config(format!("node name {:?} must be non-empty without '/'", config.node_name)));
        }
        if config.log_max_bytes < 4096 || config.log_max_files == 0 {
            return Err(NodeError::Config("log rotation needs max bytes ≥ 4096 and max files ≥ 1".to_owned()));
        }
        let pod_cidr =
            config.pod_cidr.parse().map_err(|e| NodeError::Config(format!("pod CIDR {:?}: {e}", config.pod_cidr)))?;
        for dir in [&config.state_dir, &config.run_dir, &config.log_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|source| NodeError::Io { what: format!("creating {}", dir.display()), source })?;
        }
        let driver: Arc<dyn cgroups::Driver> = Arc::from(cgroups::detect(&config.cgroup_root)?);
        let runtime = Arc::new(Runtime::new(driver.clone(), config.agent_exe.clone()));
        let images = ImageStore::open(&config.image_cache)?;
        let network = PodNetwork::open(PodNetworkConfig {
            state_dir: config.state_dir.clone(),
            pod_cidr,
            netns_dir: config.run_dir.join("netns"),
        })?;
        let state = StateDir::open(&config.state_dir)?;
        let (records, errors) = state.load_all();
        for e in errors {
            tracing::error!(error = %e, "a pod record could not be read; its pod is not adopted");
        }
        reap_unsupervised(&state, &runtime, &driver, &records);
        let mut pods = BTreeMap::new();
        for record in records {
            let handle = supervisor::handle_for(record);
            pods.insert(handle.key(), handle);
        }
        let keep: HashSet<String> = pods.values().map(|p| p.spec().uid).collect();
        match network.garbage_collect(&keep) {
            Ok(removed) if !removed.is_empty() => tracing::info!(?removed, "removed pod networks with no pod record"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pod network garbage collection failed"),
        }
        let shared = Arc::new(Shared { config, runtime, driver, images, network, state, pods: Mutex::new(pods) });
        Ok(Self { shared })
    }

    /// Phase 3: supervise the adopted pods, serve the admin socket and
    /// metrics, until SIGTERM/SIGINT. Containers keep running afterwards.
    ///
    /// # Errors
    /// The socket or metrics address cannot be bound.
    pub async fn run(self) -> Result<(), NodeError> {
        let shared = self.shared;
        let adopted = shared.all_pods();
        tracing::info!(node = %shared.config.node_name, pods = adopted.len(), "node agent starting");
        for pod in adopted {
            tokio::spawn(supervisor::run_pod(shared.clone(), pod));
        }
        let socket = shared.config.socket_path();
        let api = local_api::bind(&socket, shared.clone())
            .map_err(|source| NodeError::Io { what: format!("binding {}", socket.display()), source })?;
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = api.serve().await {
                tracing::error!(error = %e, "admin socket stopped");
            }
        })];
        if let Some(addr) = shared.config.metrics_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Io { what: format!("binding metrics address {addr}"), source })?;
            tracing::info!(address = %listener.local_addr().map_or(addr, |a| a), "serving /metrics");
            let router = metrics::router(shared.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "metrics endpoint stopped");
                }
            }));
        }
        tracing::info!(socket = %socket.display(), "ready");
        let mut term = signal(tokio::signal::unix::SignalKind::terminate());
        let mut int = signal(tokio::signal::unix::SignalKind::interrupt());
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("agent stopping; containers keep running and will be adopted by the next agent");
        for t in tasks {
            t.abort();
        }
        let _ = std::fs::remove_file(&socket);
        // Give in-flight state writes a moment; they are atomic anyway.
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(())
    }
}

/// Containers no record points at: instances started just before the
/// previous agent died (before their record was written), and pod
/// directories without a record. Nobody would supervise them, so they are
/// killed and removed; their pod networks go with the garbage collection.
fn reap_unsupervised(
    state: &StateDir,
    runtime: &Runtime,
    driver: &Arc<dyn cgroups::Driver>,
    records: &[state::PodRecord],
) {
    for record in records {
        let uid = &record.spec.uid;
        let current: HashSet<&str> =
            record.containers.iter().filter_map(|c| c.instance.as_ref()).map(|i| i.id.as_str()).collect();
        for id in state.bundle_ids(uid) {
            if current.contains(id.as_str()) {
                continue;
            }
            let bundle = state.pod_dir(uid).join("containers").join(&id);
            let cgroup = supervisor::pod_cgroup(uid).join(&id);
            tracing::warn!(pod = %uid, id = %id, "removing a container instance no record points at");
            if let Err(e) = runtime.kill_all(&cgroup).and_then(|()| runtime.remove_instance(&bundle, &cgroup)) {
                tracing::warn!(id = %id, error = %e, "removing an unsupervised container failed");
            }
        }
    }
    for uid in state.orphan_uids() {
        tracing::warn!(pod = %uid, "removing a pod directory without a record");
        let cgroup = supervisor::pod_cgroup(&uid);
        for id in state.bundle_ids(&uid) {
            let bundle = state.pod_dir(&uid).join("containers").join(&id);
            let _ =
                runtime.kill_all(&cgroup.join(&id)).and_then(|()| runtime.remove_instance(&bundle, &cgroup.join(&id)));
        }
        if let Err(e) = driver.kill_all(&cgroup).and_then(|()| driver.remove(&cgroup)) {
            tracing::warn!(pod = %uid, error = %e, "removing the pod cgroup failed");
        }
        if let Err(e) = state.remove(&uid) {
            tracing::warn!(pod = %uid, error = %e, "removing the pod directory failed");
        }
    }
}

fn signal(kind: tokio::signal::unix::SignalKind) -> tokio::signal::unix::Signal {
    // Installing a handler fails only when the runtime has no signal driver,
    // which ours always has.
    #[allow(clippy::expect_used)]
    tokio::signal::unix::signal(kind).expect("tokio runtime with signal driver")
}
