//! One container run's probes: kubelet's workers from [`crate::pod::probe`]
//! wired to the pod's address and to the runtime's exec, combined into the
//! container's `started` and `ready` and a liveness (or startup) failure.

use std::{net::Ipv4Addr, path::PathBuf, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    pod::{
        manifest::ContainerSpecDef,
        probe::{ExecProbe, ExecResult, NetProber, ProbeKind, ProbeResult, ProbeState, WorkerExit, run_worker},
        status::{container_ready, container_started},
    },
    runtime::Runtime,
};

/// Exec probes through the runtime: the command joins the container's
/// namespaces and cgroup.
pub struct RuntimeExec {
    pub runtime: Arc<Runtime>,
    pub bundle: PathBuf,
}

impl ExecProbe for RuntimeExec {
    fn exec<'a>(&'a self, argv: &'a [String], timeout: Duration) -> BoxFuture<'a, Result<ExecResult, String>> {
        Box::pin(async move {
            let (rt, bundle, argv) = (self.runtime.clone(), self.bundle.clone(), argv.to_vec());
            match tokio::task::spawn_blocking(move || rt.exec(&bundle, &argv, timeout)).await {
                Ok(Ok(out)) if out.timed_out => Err(format!("command timed out after {timeout:?}")),
                Ok(Ok(out)) => {
                    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
                    output.push_str(&String::from_utf8_lossy(&out.stderr));
                    Ok(ExecResult { exit_code: out.exit_code.unwrap_or(128 + out.signal.unwrap_or(0)), output })
                }
                // A command that cannot be executed fails the probe, as the
                // runtime's exit code 126/127 does under kubelet.
                Ok(Err(crate::runtime::RuntimeError::Exec { message, .. })) => {
                    Ok(ExecResult { exit_code: 126, output: message })
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// The running probes of one container run. Dropping it (or `abort`) stops
/// them.
pub struct Probes {
    pub ready: watch::Receiver<bool>,
    pub started: watch::Receiver<bool>,
    failed: watch::Receiver<Option<String>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Probes {
    pub fn spawn(def: &ContainerSpecDef, pod_ip: Ipv4Addr, exec: Arc<dyn ExecProbe>) -> Self {
        let prober: Arc<NetProber> = Arc::new(NetProber { pod_ip, exec });
        let started_at = tokio::time::Instant::now();
        let (failed_tx, failed) = watch::channel(None::<String>);
        let failed_tx = Arc::new(failed_tx);
        let mut tasks = Vec::new();
        let mut spawn = |kind: ProbeKind,
                         spec: &Option<crate::pod::probe::ProbeSpec>,
                         gate: Option<watch::Receiver<ProbeState>>|
         -> Option<watch::Receiver<ProbeState>> {
            let spec = spec.clone()?;
            let (tx, rx) = watch::channel(ProbeState::initial(kind));
            let (prober, failed_tx) = (prober.clone(), failed_tx.clone());
            tasks.push(tokio::spawn(async move {
                if let WorkerExit::Failed { message } = run_worker(kind, spec, prober, started_at, gate, tx).await {
                    failed_tx.send_replace(Some(format!("{kind} probe failed: {message}")));
                }
            }));
            Some(rx)
        };
        let startup = spawn(ProbeKind::Startup, &def.startup, None);
        let readiness = spawn(ProbeKind::Readiness, &def.readiness, startup.clone());
        let _liveness = spawn(ProbeKind::Liveness, &def.liveness, startup.clone());
        // Keep the liveness receiver alive inside a task so its worker runs.
        let (ready_tx, ready) = watch::channel(false);
        let (started_tx, started) = watch::channel(false);
        tasks.push(tokio::spawn(combine(startup, readiness, _liveness, ready_tx, started_tx)));
        Self { ready, started, failed, tasks }
    }

    /// Resolves when a liveness or startup probe reached its failure
    /// threshold, with the message.
    pub async fn liveness_failed(&mut self) -> String {
        loop {
            if let Some(m) = self.failed.borrow_and_update().clone() {
                return m;
            }
            if self.failed.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.abort();
    }
}

/// kubelet's `started` and `ready` from the probe states.
async fn combine(
    mut startup: Option<watch::Receiver<ProbeState>>,
    mut readiness: Option<watch::Receiver<ProbeState>>,
    _liveness: Option<watch::Receiver<ProbeState>>,
    ready_tx: watch::Sender<bool>,
    started_tx: watch::Sender<bool>,
) {
    loop {
        let s: Option<ProbeResult> = startup.as_ref().map(|r| r.borrow().result);
        let r: Option<ProbeResult> = readiness.as_ref().map(|r| r.borrow().result);
        let started = container_started(true, s);
        started_tx.send_replace(started);
        ready_tx.send_replace(container_ready(true, started, r));
        let changed = async {
            tokio::select! {
                c = async { match startup.as_mut() { Some(x) => x.changed().await, None => std::future::pending().await } } => c,
                c = async { match readiness.as_mut() { Some(x) => x.changed().await, None => std::future::pending().await } } => c,
            }
        };
        if changed.await.is_err() {
            // A worker ended (startup succeeded and stopped, or was
            // cancelled): stop watching the closed channel.
            if startup.as_ref().is_some_and(|x| x.has_changed().is_err()) {
                let last = startup.as_ref().map(|x| x.borrow().result);
                startup = None;
                if last != Some(ProbeResult::Success) {
                    // Never started: stays not started until cancelled.
                    started_tx.send_replace(false);
                    ready_tx.send_replace(false);
                    std::future::pending::<()>().await;
                }
            }
            if readiness.as_ref().is_some_and(|x| x.has_changed().is_err()) {
                std::future::pending::<()>().await;
            }
        }
    }
}
