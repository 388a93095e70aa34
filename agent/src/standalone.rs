//! Standalone mode: the data plane driven by a services file, no control
//! plane.
//!
//! # Design
//! Start-up in three phases: validate the file (no kernel change) → build
//! (load and attach programs, program the maps, bind the admin endpoint) →
//! run (a dedicated datapath thread owns the kernel state and re-reads the
//! file every poll interval or on SIGHUP; tokio serves the admin endpoint).
//! A file that fails validation is rejected whole and changes nothing; the
//! previous configuration keeps serving. SIGTERM/SIGINT stop the agent but
//! leave programs and maps pinned, so forwarding continues; a restarted agent
//! picks them up (see [`crate::datapath`]).
//!
//! A reload programs only the Services whose entry in the file changed
//! ([`Datapath::apply_changes`]), so its cost does not grow with the number
//! of Services; start-up and the first reload after a failed one use the
//! full-set [`Datapath::apply`], which also repairs anything the kernel holds
//! that the file does not.
//!
//! # Limitations
//! Changing `instance`, `uplink`, `socket_lb_cgroup`, `metrics_address` or
//! `limits` needs a restart: a reload with such a change is rejected.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use crate::{
    admin::{AdminError, AdminServer},
    config::{ConfigError, StandaloneConfig},
    datapath::{
        Datapath, DatapathError, DatapathOptions, DesiredService, MapLimits, Maps, PinDir, ServiceAddr,
        loader::DEFAULT_BPFFS_ROOT,
    },
    metrics::{AgentMetrics, Labels},
};

/// Command-line knobs of standalone mode.
#[derive(Debug, Clone)]
pub struct StandaloneArgs {
    pub config: PathBuf,
    /// Parent of the per-instance pin directories.
    pub bpffs_root: PathBuf,
    /// How often the file is checked for changes.
    pub poll_interval: Duration,
}

impl Default for StandaloneArgs {
    fn default() -> Self {
        Self {
            config: PathBuf::new(),
            bpffs_root: PathBuf::from(DEFAULT_BPFFS_ROOT),
            poll_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    // Boxed: the load errors carry verifier logs and paths, and this enum is
    // returned through every start-up step.
    #[error(transparent)]
    Datapath(#[from] Box<DatapathError>),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("removing pins under {path}")]
    Cleanup {
        path: PathBuf,
        #[source]
        source: Box<crate::datapath::LoadError>,
    },
}

impl StandaloneError {
    /// Exit code: 64 (EX_USAGE) for a bad configuration, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            StandaloneError::Config(_) => 64,
            _ => 1,
        }
    }
}

/// Reads and validates a services file against this machine (interfaces,
/// cgroup2). Changes nothing.
///
/// # Errors
/// Every problem in the file, each with its field path.
pub fn check(path: &Path) -> Result<StandaloneConfig, ConfigError> {
    StandaloneConfig::load(path, &crate::config::Checks::system())
}

fn options(config: &StandaloneConfig, bpffs_root: &Path) -> DatapathOptions {
    DatapathOptions {
        pins: PinDir::new(bpffs_root, &config.instance),
        limits: limits(config),
        uplink: Some(config.uplink.clone()),
        socket_lb_cgroup: config.socket_lb_cgroup.clone(),
        stats: true,
    }
}

fn limits(config: &StandaloneConfig) -> MapLimits {
    let l = &config.limits;
    MapLimits {
        services: l.services,
        backends: l.backends,
        schedule_slots: l.schedule_slots,
        conntrack: l.conntrack,
        affinity: l.affinity,
        sock_rev: l.sock_rev,
    }
}

/// Fields that cannot change without a restart.
fn restart_only_changes(old: &StandaloneConfig, new: &StandaloneConfig) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.instance != new.instance {
        changed.push("instance");
    }
    if old.uplink != new.uplink {
        changed.push("uplink");
    }
    if old.socket_lb_cgroup != new.socket_lb_cgroup {
        changed.push("socket_lb_cgroup");
    }
    if old.metrics_address != new.metrics_address {
        changed.push("metrics_address");
    }
    if old.limits != new.limits {
        changed.push("limits");
    }
    changed
}

enum Control {
    Reload,
    Shutdown,
}

/// Runs standalone mode until SIGTERM/SIGINT.
///
/// # Errors
/// A bad file (exit 64), or a failure to load, attach or bind.
pub fn run(args: StandaloneArgs) -> Result<(), StandaloneError> {
    // Phase 1: validate. Nothing in the kernel changes on a bad file.
    let text = std::fs::read(&args.config).map_err(|source| ConfigError::Read { path: args.config.clone(), source })?;
    let config = check(&args.config)?;

    // Phase 2: build.
    let seen = Instant::now();
    let opts = options(&config, &args.bpffs_root);
    let mut datapath = Datapath::start(opts.clone()).map_err(Box::new)?;
    for (point, outcome) in datapath.attached() {
        tracing::info!(?point, ?outcome, "attached");
    }
    let report = datapath.apply(&config.desired_services()).map_err(Box::new)?;
    tracing::info!(?report, instance = %config.instance, "configuration programmed");
    let labels = Arc::new(RwLock::new(Labels::from_table(datapath.table())));
    let (registry, agent_metrics) = crate::metrics::registry(
        Maps::open(&opts.pins).map_err(|e| Box::new(DatapathError::from(e)))?,
        opts.limits,
        labels.clone(),
    );
    agent_metrics.programming_latency.observe(seen.elapsed().as_secs_f64());
    agent_metrics.reload("applied");
    let ready = Arc::new(AtomicBool::new(true));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(StandaloneError::Runtime)?;
    let admin = runtime.block_on(AdminServer::bind(config.metrics_address, registry, ready.clone()))?;
    if let Some(addr) = admin.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    }

    // Phase 3: run. The datapath thread owns the kernel state.
    let (tx, rx) = mpsc::channel::<Control>();
    let poll = args.poll_interval;
    let path = args.config.clone();
    let worker = std::thread::Builder::new()
        .name("berth-datapath".into())
        .spawn(move || reload_loop(datapath, config, text, &path, poll, &rx, &labels, &agent_metrics))
        .map_err(StandaloneError::Runtime)?;

    runtime.block_on(async move {
        let server = tokio::spawn(admin.serve());
        let mut hup = signal(tokio::signal::unix::SignalKind::hangup());
        let mut term = signal(tokio::signal::unix::SignalKind::terminate());
        loop {
            tokio::select! {
                _ = hup.recv() => { let _ = tx.send(Control::Reload); }
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        tracing::info!("stopping; programs and maps stay pinned, forwarding continues");
        let _ = tx.send(Control::Shutdown);
        server.abort();
    });
    ready.store(false, Ordering::Release);
    // The datapath thread exits on Shutdown; a panic there already logged.
    let _ = worker.join();
    Ok(())
}

fn signal(kind: tokio::signal::unix::SignalKind) -> tokio::signal::unix::Signal {
    // Registering a handler fails only if the signal is forbidden (SIGKILL,
    // SIGSTOP), never for HUP/TERM.
    #[allow(clippy::expect_used)]
    tokio::signal::unix::signal(kind).expect("registering a signal handler")
}

#[allow(clippy::too_many_arguments)]
fn reload_loop(
    mut datapath: Datapath,
    mut current: StandaloneConfig,
    mut current_text: Vec<u8>,
    path: &Path,
    poll: Duration,
    rx: &mpsc::Receiver<Control>,
    labels: &RwLock<Labels>,
    metrics: &AgentMetrics,
) {
    // After a failed apply the kernel may hold a mix of two files; only a
    // full-set apply is sure to converge from there.
    let mut full_next = false;
    loop {
        match rx.recv_timeout(poll) {
            Ok(Control::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(Control::Reload) | Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the services file; keeping the current configuration");
                metrics.reload("failed");
                continue;
            }
        };
        if text == current_text {
            continue;
        }
        let seen = Instant::now();
        current_text = text;
        let next = match check(path) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!("{e}\nconfiguration rejected; the previous one keeps serving");
                metrics.reload("rejected");
                continue;
            }
        };
        let fixed = restart_only_changes(&current, &next);
        if !fixed.is_empty() {
            tracing::error!(fields = ?fixed, "configuration rejected: these fields need a restart; the previous one keeps serving");
            metrics.reload("rejected");
            continue;
        }
        let desired = next.desired_services();
        let result = if full_next {
            datapath.apply(&desired)
        } else {
            let (removed, upserted) = changed_services(&current.desired_services(), &desired);
            datapath.apply_changes(&removed, &upserted)
        };
        match result {
            Ok(report) => {
                full_next = false;
                metrics.programming_latency.observe(seen.elapsed().as_secs_f64());
                metrics.reload("applied");
                *labels.write().unwrap_or_else(|e| e.into_inner()) = Labels::from_table(datapath.table());
                tracing::info!(?report, elapsed_us = seen.elapsed().as_micros() as u64, "configuration applied");
                current = next;
            }
            Err(e) => {
                // The table still describes the kernel exactly; the next
                // change (or SIGHUP) retries from there.
                full_next = true;
                metrics.reload("failed");
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "applying the configuration failed");
                *labels.write().unwrap_or_else(|e| e.into_inner()) = Labels::from_table(datapath.table());
                current_text.clear();
            }
        }
    }
}

/// What differs between two desired sets: the Services that left, and the
/// Services that are new or changed in `next`.
fn changed_services(current: &[DesiredService], next: &[DesiredService]) -> (Vec<ServiceAddr>, Vec<DesiredService>) {
    let before: BTreeMap<ServiceAddr, &DesiredService> = current.iter().map(|s| (s.addr(), s)).collect();
    let after: BTreeMap<ServiceAddr, &DesiredService> = next.iter().map(|s| (s.addr(), s)).collect();
    let removed = before.keys().filter(|addr| !after.contains_key(addr)).copied().collect();
    let upserted = next.iter().filter(|s| before.get(&s.addr()) != Some(s)).cloned().collect();
    (removed, upserted)
}

/// Removes every link and map pinned for `instance`: forwarding through it
/// stops. Idempotent.
///
/// # Errors
/// A pin that cannot be removed.
pub fn cleanup(bpffs_root: &Path, instance: &str) -> Result<Vec<PathBuf>, StandaloneError> {
    let pins = PinDir::new(bpffs_root, instance);
    pins.remove_all()
        .map_err(|source| StandaloneError::Cleanup { path: pins.path().to_owned(), source: Box::new(source) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]
mod tests {
    use std::net::Ipv4Addr;

    use berth_ebpf::abi::Protocol;

    use super::*;
    use crate::datapath::{
        DesiredBackend,
        schedule::{Algorithm, MaglevTableSize, Weight},
    };

    fn service(last: u8, backends: &[u8]) -> DesiredService {
        DesiredService {
            name: format!("svc-{last}"),
            vip: Ipv4Addr::new(198, 19, 0, last),
            port: 80,
            protocol: Protocol::Tcp,
            algorithm: Algorithm::Wrr,
            maglev_table_size: MaglevTableSize::DEFAULT,
            affinity_timeout_s: None,
            backends: backends
                .iter()
                .map(|b| DesiredBackend {
                    addr: Ipv4Addr::new(198, 18, *b, 2),
                    port: 8080,
                    weight: Weight::ONE,
                    terminating: false,
                })
                .collect(),
        }
    }

    #[test]
    fn reload_programs_only_what_changed() {
        let current = vec![service(1, &[1, 2]), service(2, &[1]), service(3, &[3])];
        let next = vec![service(1, &[1, 2]), service(2, &[1, 2]), service(4, &[4])];
        let (removed, upserted) = changed_services(&current, &next);
        assert_eq!(removed, vec![service(3, &[]).addr()]);
        assert_eq!(upserted, vec![service(2, &[1, 2]), service(4, &[4])]);
        let (removed, upserted) = changed_services(&next, &next);
        assert!(removed.is_empty() && upserted.is_empty());
    }
}
