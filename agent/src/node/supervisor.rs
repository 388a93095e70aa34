//! Pod and container supervision with kubelet's rules: one task per pod
//! (network, cgroup, stop) and one per container (image, start, probes,
//! exit, restart with CrashLoopBackOff, graceful stop).
//!
//! Everything that blocks (image unpacking, netlink, cgroupfs, starting a
//! shim, exec) runs in `spawn_blocking`; namespaces are only ever entered
//! by the re-exec'd shim and exec helpers, never on a tokio worker.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use nix::sys::signal::Signal;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    cgroups::{Driver, Resources},
    image::{Image, ImageStore},
    network::{PodNet, PodNetwork},
    node::{
        NodeConfig,
        probes::{self, Probes},
        state::{ContainerRecord, Instance, PodRecord, StateDir, StateError},
    },
    pod::{
        backoff::{CrashLoop, crash_loop_message, should_restart},
        manifest::{ContainerSpecDef, PodSpec, merge_env},
        status::{
            ContainerState, ContainerStatus, PodCondition, PodStatus, PodTermination, Timestamp, pod_conditions,
            pod_phase, terminated_reason,
        },
    },
    runtime::{ContainerSpec, ContainerStatus as RuntimeStatus, ExitInfo, LogConfig, Runtime},
};

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The shared parts every pod and container task uses.
pub struct Shared {
    pub config: NodeConfig,
    pub runtime: Arc<Runtime>,
    pub driver: Arc<dyn Driver>,
    pub images: ImageStore,
    pub network: PodNetwork,
    pub state: StateDir,
    pub pods: Mutex<BTreeMap<String, Arc<PodHandle>>>,
}

impl Shared {
    pub fn pod(&self, key: &str) -> Option<Arc<PodHandle>> {
        lock(&self.pods).get(key).cloned()
    }

    pub fn all_pods(&self) -> Vec<Arc<PodHandle>> {
        lock(&self.pods).values().cloned().collect()
    }
}

/// A poisoned lock only means a task panicked while holding it; the data
/// is plain state that stays meaningful.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What is known live about one container (not persisted: probes start
/// over after an agent restart, as kubelet's do).
#[derive(Debug, Clone)]
pub struct ContainerLive {
    pub state: ContainerState,
    pub ready: bool,
    pub started: bool,
}

/// One pod: its record (persisted on every change), live container
/// states, and the stop request.
pub struct PodHandle {
    pub record: Mutex<PodRecord>,
    pub live: Mutex<Vec<ContainerLive>>,
    /// `Some(grace)` once a stop was requested.
    pub stop: watch::Sender<Option<Duration>>,
    /// True once the pod is gone (stopped, cleaned up).
    pub gone: watch::Sender<bool>,
    /// The last conditions reported, for their transition times.
    conditions: Mutex<Vec<PodCondition>>,
    /// Held while the record is copied and written ([`PodHandle::persist`]).
    saving: Mutex<()>,
}

impl PodHandle {
    pub fn key(&self) -> String {
        let r = lock(&self.record);
        format!("{}/{}", r.spec.namespace, r.spec.name)
    }

    pub fn spec(&self) -> PodSpec {
        lock(&self.record).spec.clone()
    }

    /// kubelet's view of the pod, composed from the record and live state.
    pub fn status(&self) -> PodStatus {
        let (record, live) = self.snapshot();
        let statuses: Vec<ContainerStatus> = record
            .containers
            .iter()
            .zip(record.spec.containers.iter())
            .zip(live.iter())
            .map(|((rec, def), live)| ContainerStatus {
                name: rec.name.clone(),
                state: live.state.clone(),
                last_state: rec.last_state.clone(),
                ready: live.ready,
                started: live.started,
                restart_count: rec.restart_count,
                image: def.image.clone(),
                image_id: rec.image_id.clone(),
                container_id: rec.instance.as_ref().map(|i| format!("berth://{}", i.id)),
            })
            .collect();
        let termination = if record.stopping { PodTermination::Stopped } else { PodTermination::Active };
        let phase = pod_phase(record.spec.restart_policy, &statuses, termination);
        let mut previous = lock(&self.conditions);
        let conditions = pod_conditions(phase, &statuses, &previous, &Timestamp::now());
        previous.clone_from(&conditions);
        PodStatus {
            phase,
            conditions,
            pod_ip: record.net.as_ref().map(|n| n.ip),
            start_time: Some(Timestamp::from_unix_ms(record.created_at_unix_ms as i64)),
            container_statuses: statuses,
        }
    }

    /// The record and the live state read together, so a change made with
    /// [`PodHandle::update`] is seen whole or not at all (a status with
    /// `lastState: terminated` but `state: running` read as phase Running
    /// for a container that had ended).
    pub(super) fn snapshot(&self) -> (PodRecord, Vec<ContainerLive>) {
        // Lock order: record, then live, everywhere both are held.
        let record = lock(&self.record);
        let live = lock(&self.live);
        (record.clone(), live.clone())
    }

    /// Changes a container's record and live state as one step, then
    /// persists the record (after the locks are released: the save
    /// fsyncs).
    async fn update(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        index: usize,
        f: impl FnOnce(&mut ContainerRecord, &mut ContainerLive),
    ) {
        {
            let mut record = lock(&self.record);
            let mut live = lock(&self.live);
            if let (Some(r), Some(l)) = (record.containers.get_mut(index), live.get_mut(index)) {
                f(r, l);
            }
        }
        self.save(shared).await;
    }

    /// Writes the record to the state directory. Saves of one pod take
    /// turns and each copies the record only once it has its turn, so the
    /// file always ends with the newest record: two saves from different
    /// threads (two containers' supervisors, a stop request) could
    /// otherwise write the older copy last, and an agent restarted then
    /// would adopt a stale record.
    ///
    /// # Errors
    /// The state directory's write errors.
    pub fn persist(&self, state: &StateDir) -> Result<(), StateError> {
        let _turn = lock(&self.saving);
        let record = lock(&self.record).clone();
        state.save(&record)
    }

    /// [`PodHandle::persist`] on a blocking thread: the save fsyncs the
    /// file and its directory, which must not hold up an async worker.
    async fn save(self: &Arc<Self>, shared: &Arc<Shared>) {
        let (pod, saver) = (Arc::clone(self), Arc::clone(shared));
        let saved = tokio::task::spawn_blocking(move || pod.persist(&saver.state)).await;
        let error = match saved {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::error!(pod = %self.key(), error = %error, "persisting pod state failed");
    }

    fn set_live(&self, index: usize, f: impl FnOnce(&mut ContainerLive)) {
        if let Some(c) = lock(&self.live).get_mut(index) {
            f(c);
        }
    }

    async fn update_record(self: &Arc<Self>, shared: &Arc<Shared>, index: usize, f: impl FnOnce(&mut ContainerRecord)) {
        if let Some(c) = lock(&self.record).containers.get_mut(index) {
            f(c);
        }
        self.save(shared).await;
    }

    fn stop_requested(&self) -> Option<Duration> {
        *self.stop.borrow()
    }
}

fn waiting(reason: &str, message: impl Into<String>) -> ContainerState {
    let message: String = message.into();
    ContainerState::waiting(reason, Some(message).filter(|m| !m.is_empty()))
}

fn running(started_at_unix_ms: u64) -> ContainerState {
    ContainerState::Running { started_at: Timestamp::from_unix_ms(started_at_unix_ms as i64) }
}

/// A fresh handle for a record (new or adopted).
pub fn handle_for(record: PodRecord) -> Arc<PodHandle> {
    let live = record
        .containers
        .iter()
        .map(|c| ContainerLive {
            state: c.finished.clone().unwrap_or_else(|| waiting("ContainerCreating", "")),
            ready: false,
            started: false,
        })
        .collect();
    let stopping = record.stopping.then_some(record.spec.termination_grace);
    Arc::new(PodHandle {
        record: Mutex::new(record),
        live: Mutex::new(live),
        stop: watch::channel(stopping).0,
        gone: watch::channel(false).0,
        conditions: Mutex::new(Vec::new()),
        saving: Mutex::new(()),
    })
}

/// Runs a pod until it is stopped and cleaned up. `adopting` says the
/// record came from a previous agent process.
pub async fn run_pod(shared: Arc<Shared>, pod: Arc<PodHandle>) {
    let spec = pod.spec();
    let key = pod.key();
    let mut stop = pod.stop.subscribe();

    // The sandbox: network namespace + veth + address, and the pod cgroup.
    // Retried (kubelet's FailedCreatePodSandBox) until it works or the pod
    // is stopped.
    let mut delay = Duration::from_millis(500);
    let net = loop {
        let (s, uid) = (shared.clone(), spec.uid.clone());
        let result = tokio::task::spawn_blocking(move || sandbox(&s, &uid, &spec_pod_resources(&s, &uid))).await;
        match result {
            Ok(Ok(net)) => break Some(net),
            Ok(Err(message)) => {
                tracing::warn!(pod = %key, error = %message, "creating the pod sandbox failed; retrying");
                for i in 0..pod.spec().containers.len() {
                    pod.set_live(i, |c| c.state = waiting("ContainerCreating", format!("sandbox: {message}")));
                }
            }
            Err(e) => tracing::error!(pod = %key, error = %e, "sandbox task panicked"),
        }
        if pod.stop_requested().is_some() {
            break None;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    };

    if let Some(net) = net {
        lock(&pod.record).net = Some(net.clone());
        pod.save(&shared).await;
        let workers: Vec<JoinHandle<()>> = (0..spec.containers.len())
            .map(|i| tokio::spawn(run_container(shared.clone(), pod.clone(), i, net.clone())))
            .collect();
        for w in workers {
            if let Err(e) = w.await {
                tracing::error!(pod = %key, error = %e, "container task panicked");
            }
        }
    }
    // Containers are all stopped: release the sandbox.
    let (s, uid) = (shared.clone(), spec.uid.clone());
    let cleanup = tokio::task::spawn_blocking(move || {
        let mut problems = Vec::new();
        if let Err(e) = s.network.teardown(&uid) {
            problems.push(format!("network: {e}"));
        }
        if let Err(e) = s.driver.remove(&pod_cgroup(&uid)) {
            problems.push(format!("cgroup: {e}"));
        }
        if let Err(e) = s.state.remove(&uid) {
            problems.push(format!("state: {e}"));
        }
        problems
    })
    .await
    .unwrap_or_else(|e| vec![format!("cleanup task panicked: {e}")]);
    for p in cleanup {
        tracing::warn!(pod = %key, problem = %p, "pod cleanup incomplete");
    }
    lock(&shared.pods).remove(&key);
    pod.gone.send_replace(true);
    tracing::info!(pod = %key, "pod removed");
}

pub fn pod_cgroup(uid: &str) -> PathBuf {
    Path::new("pods").join(uid)
}

/// kubelet's pod-level cgroup: the sum of the containers' limits when
/// every container has one, otherwise unlimited; shares are the sum of
/// requests.
fn spec_pod_resources(shared: &Shared, uid: &str) -> Resources {
    let spec = shared.pods.lock().unwrap_or_else(|e| e.into_inner()).values().map(|p| p.spec()).find(|s| s.uid == uid);
    let Some(spec) = spec else { return Resources::from_kubernetes(&Default::default()) };
    let each: Vec<Resources> = spec.containers.iter().map(|c| Resources::from_kubernetes(&c.resources)).collect();
    let all = |f: fn(&Resources) -> Option<u64>| each.iter().map(f).sum::<Option<u64>>();
    Resources {
        cpu_shares: each.iter().map(|r| r.cpu_shares).sum::<u64>().clamp(2, 262_144),
        cfs_quota_us: all(|r| r.cfs_quota_us),
        cfs_period_us: crate::cgroups::CFS_PERIOD_US,
        memory_limit_bytes: all(|r| r.memory_limit_bytes),
        pids_limit: all(|r| r.pids_limit),
    }
}

fn sandbox(shared: &Shared, uid: &str, resources: &Resources) -> Result<PodNet, String> {
    let cgroup = pod_cgroup(uid);
    shared.driver.create(&cgroup).map_err(|e| e.to_string())?;
    shared.driver.apply(&cgroup, resources).map_err(|e| e.to_string())?;
    shared.network.setup(uid).map_err(|e| e.to_string())
}

/// How one instance of a container ended, or why it never started.
enum Ended {
    Exited(ExitInfo),
    /// The start failed (bad command, bad user): kubelet's StartError.
    StartFailed(String),
}

async fn run_container(shared: Arc<Shared>, pod: Arc<PodHandle>, index: usize, net: PodNet) {
    let spec = pod.spec();
    let def = spec.containers[index].clone();
    let key = format!("{}/{}", pod.key(), def.name);
    let mut stop = pod.stop.subscribe();
    let mut crash = CrashLoop::new(shared.config.backoff);

    // Adoption: an instance recorded by the previous agent process.
    let recorded = lock(&pod.record).containers[index].clone();
    let mut adopted = match (&recorded.instance, &recorded.finished) {
        (Some(instance), None) => Some(instance.clone()),
        _ => None,
    };
    if recorded.finished.is_some() && adopted.is_none() && !recorded_should_restart(&spec, &recorded) {
        // Terminated for good before the restart: nothing to supervise.
        stop_wait(&mut stop).await;
        return;
    }

    loop {
        // An adopted instance is still looked at: a stop the previous agent
        // began must still stop it.
        if pod.stop_requested().is_some() && adopted.is_none() {
            break;
        }
        let instance = match adopted.take() {
            Some(instance) => {
                let (rt, bundle) = (shared.runtime.clone(), instance.bundle.clone());
                match tokio::task::spawn_blocking(move || rt.status(&bundle)).await {
                    Ok(Ok(RuntimeStatus::Running { .. })) => {
                        tracing::info!(container = %key, id = %instance.id, "adopted running container");
                        pod.set_live(index, |c| c.state = running(instance.started_at_unix_ms));
                        instance
                    }
                    Ok(Ok(RuntimeStatus::Exited(info))) => {
                        tracing::info!(container = %key, "container exited while the agent was away");
                        if !finish_instance(&shared, &pod, index, &instance, Ended::Exited(info), &mut crash).await {
                            break;
                        }
                        continue;
                    }
                    other => {
                        let why = match other {
                            Ok(Err(e)) => e.to_string(),
                            Err(e) => e.to_string(),
                            _ => "no shim and no exit record".to_owned(),
                        };
                        tracing::warn!(container = %key, reason = %why, "recorded container is gone");
                        let info = ExitInfo {
                            exit_code: 137,
                            signal: None,
                            oom_killed: false,
                            started_at_unix_ms: instance.started_at_unix_ms,
                            finished_at_unix_ms: now_ms(),
                        };
                        let ended = Ended::Exited(info);
                        if !finish_instance(&shared, &pod, index, &instance, ended, &mut crash).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            None => {
                let image = match pull(&shared, &pod, index, &def, &mut stop).await {
                    Some(image) => image,
                    None => break,
                };
                pod.set_live(index, |c| c.state = waiting("ContainerCreating", ""));
                let restart_count = lock(&pod.record).containers[index].restart_count;
                let cspec = container_spec(&shared, &spec, &def, &image, &net, restart_count);
                let instance = Instance {
                    id: cspec.id.clone(),
                    bundle: cspec.bundle.clone(),
                    cgroup: cspec.cgroup.clone(),
                    shim_pid: 0,
                    started_at_unix_ms: now_ms(),
                    stop_signal: image.config.stop_signal.clone(),
                };
                let rt = shared.runtime.clone();
                let to_start = cspec.clone();
                match tokio::task::spawn_blocking(move || rt.start(&to_start)).await {
                    Ok(Ok(started)) => {
                        let instance = Instance {
                            shim_pid: started.shim_pid,
                            started_at_unix_ms: started.started_at_unix_ms,
                            ..instance
                        };
                        pod.update(&shared, index, |c, live| {
                            c.instance = Some(instance.clone());
                            c.finished = None;
                            c.image_id = image.digest.clone();
                            live.state = running(instance.started_at_unix_ms);
                        })
                        .await;
                        tracing::info!(container = %key, id = %instance.id, pid = started.pid, "container started");
                        instance
                    }
                    other => {
                        let message = match other {
                            Ok(Err(e)) => e.to_string(),
                            Err(e) => e.to_string(),
                            Ok(Ok(_)) => String::new(),
                        };
                        tracing::warn!(container = %key, error = %message, "container failed to start");
                        let rt = shared.runtime.clone();
                        let _ = tokio::task::spawn_blocking(move || rt.remove(&cspec)).await;
                        if !finish_instance(&shared, &pod, index, &instance, Ended::StartFailed(message), &mut crash)
                            .await
                        {
                            break;
                        }
                        continue;
                    }
                }
            }
        };

        // Supervise: exit, liveness failure or a stop request.
        let exec = probes::RuntimeExec { runtime: shared.runtime.clone(), bundle: instance.bundle.clone() };
        let mut probes = Probes::spawn(&def, net.ip, Arc::new(exec));
        let live_pod = pod.clone();
        let mut readiness = probes.ready.clone();
        let mut startup = probes.started.clone();
        let reporter = tokio::spawn(async move {
            loop {
                let (ready, started) = (*readiness.borrow(), *startup.borrow());
                live_pod.set_live(index, |c| {
                    c.ready = ready;
                    c.started = started;
                });
                tokio::select! {
                    r = readiness.changed() => if r.is_err() { break },
                    r = startup.changed() => if r.is_err() { break },
                }
            }
        });
        let wait = shared.runtime.wait(&instance.bundle, instance.shim_pid);
        tokio::pin!(wait);
        let ended = tokio::select! {
            exit = &mut wait => exit,
            why = probes.liveness_failed() => {
                tracing::info!(container = %key, reason = %why, "killing the container; it will be restarted as its policy says");
                stop_instance(&shared, &instance, spec.termination_grace, wait).await
            }
            grace = stop_wait(&mut stop) => {
                stop_instance(&shared, &instance, grace, wait).await
            }
        };
        probes.abort();
        reporter.abort();
        pod.set_live(index, |c| {
            c.ready = false;
        });
        let ended = match ended {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(container = %key, error = %e, "lost track of the container");
                ExitInfo {
                    exit_code: 137,
                    signal: None,
                    oom_killed: false,
                    started_at_unix_ms: instance.started_at_unix_ms,
                    finished_at_unix_ms: now_ms(),
                }
            }
        };
        tracing::info!(container = %key, exit_code = ended.exit_code, oom = ended.oom_killed, "container exited");
        if !finish_instance(&shared, &pod, index, &instance, Ended::Exited(ended), &mut crash).await {
            break;
        }
    }
    pod.set_live(index, |c| c.ready = false);
}

fn recorded_should_restart(spec: &PodSpec, rec: &ContainerRecord) -> bool {
    match &rec.finished {
        Some(ContainerState::Terminated { exit_code, .. }) => should_restart(spec.restart_policy, *exit_code),
        _ => true,
    }
}

/// Resolves when a stop is requested, with its grace period.
async fn stop_wait(stop: &mut watch::Receiver<Option<Duration>>) -> Duration {
    loop {
        if let Some(grace) = *stop.borrow_and_update() {
            return grace;
        }
        if stop.changed().await.is_err() {
            // The pod handle is gone: nobody can ask any more.
            std::future::pending::<()>().await;
        }
    }
}

/// kubelet's graceful stop: the stop signal to PID 1, then after the grace
/// period SIGKILL to every process in the container's cgroup.
async fn stop_instance(
    shared: &Shared,
    instance: &Instance,
    grace: Duration,
    wait: std::pin::Pin<&mut impl std::future::Future<Output = Result<ExitInfo, crate::runtime::RuntimeError>>>,
) -> Result<ExitInfo, crate::runtime::RuntimeError> {
    let signal = stop_signal(instance);
    if let Err(e) = shared.runtime.signal(&instance.bundle, signal) {
        tracing::debug!(id = %instance.id, error = %e, "stop signal not delivered (already exited?)");
    }
    let mut wait = wait;
    match tokio::time::timeout(grace, &mut wait).await {
        Ok(exit) => exit,
        Err(_) => {
            tracing::info!(id = %instance.id, grace_s = grace.as_secs_f64(), "grace period over; killing the cgroup");
            let (rt, cgroup) = (shared.runtime.clone(), instance.cgroup.clone());
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || rt.kill_all(&cgroup)).await {
                tracing::warn!(id = %instance.id, error = %e, "killing the cgroup failed");
            }
            wait.await
        }
    }
}

/// The image's `StopSignal` (`SIGQUIT`, `QUIT` or `3`), SIGTERM otherwise.
fn stop_signal(instance: &Instance) -> Signal {
    let Some(name) = instance.stop_signal.as_deref() else { return Signal::SIGTERM };
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n).unwrap_or(Signal::SIGTERM);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    full.parse().unwrap_or_else(|_| {
        tracing::warn!(signal = name, "unknown image StopSignal; using SIGTERM");
        Signal::SIGTERM
    })
}

/// Records how an instance ended, removes it, and waits out the restart
/// back-off. Returns false when the container is done for good (policy,
/// or a stop request).
async fn finish_instance(
    shared: &Arc<Shared>,
    pod: &Arc<PodHandle>,
    index: usize,
    instance: &Instance,
    ended: Ended,
    crash: &mut CrashLoop,
) -> bool {
    let spec = pod.spec();
    let (state, exit_code, ran_for) = match ended {
        Ended::Exited(info) => {
            let reason = terminated_reason(info.exit_code, info.oom_killed);
            let ran = Duration::from_millis(info.finished_at_unix_ms.saturating_sub(info.started_at_unix_ms));
            (
                ContainerState::Terminated {
                    exit_code: info.exit_code,
                    signal: info.signal,
                    reason: reason.to_owned(),
                    message: None,
                    started_at: Some(Timestamp::from_unix_ms(info.started_at_unix_ms as i64)),
                    finished_at: Timestamp::from_unix_ms(info.finished_at_unix_ms as i64),
                },
                info.exit_code,
                ran,
            )
        }
        Ended::StartFailed(message) => (
            ContainerState::Terminated {
                exit_code: 128,
                signal: None,
                reason: "StartError".to_owned(),
                message: Some(message),
                started_at: None,
                finished_at: Timestamp::now(),
            },
            128,
            Duration::ZERO,
        ),
    };
    // The instance's files go; its logs stay for `logs --previous`.
    if instance.shim_pid != 0 {
        let (rt, bundle, cgroup) = (shared.runtime.clone(), instance.bundle.clone(), instance.cgroup.clone());
        let removed = tokio::task::spawn_blocking(move || rt.remove_instance(&bundle, &cgroup)).await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(id = %instance.id, error = %e, "removing the container instance failed");
        }
    }
    let stopping = pod.stop_requested().is_some();
    let restart = !stopping && should_restart(spec.restart_policy, exit_code);
    pod.update(shared, index, |c, live| {
        c.last_state = Some(state.clone());
        c.finished = Some(state.clone());
        c.instance = None;
        live.state = state.clone();
        live.ready = false;
    })
    .await;
    if !restart {
        if !stopping {
            // Done for good: stay Terminated until the pod is stopped.
            let mut stop = pod.stop.subscribe();
            stop_wait(&mut stop).await;
        }
        return false;
    }
    let _ = ran_for;
    let now = tokio::time::Instant::now();
    let at = crash.on_exit(now);
    let delay = at.saturating_duration_since(now);
    pod.update_record(shared, index, |c| c.restart_count += 1).await;
    if !delay.is_zero() {
        let name = spec.containers[index].name.clone();
        pod.set_live(index, |c| {
            c.state = waiting("CrashLoopBackOff", crash_loop_message(delay, &name, &spec.display_name()));
        });
        let mut stop = pod.stop.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop_wait(&mut stop) => return false,
        }
    }
    true
}

/// Pulls (imports) the image, retrying with back-off on failure
/// (ErrImagePull, then ImagePullBackOff). `None` when stopped meanwhile.
async fn pull(
    shared: &Arc<Shared>,
    pod: &PodHandle,
    index: usize,
    def: &ContainerSpecDef,
    stop: &mut watch::Receiver<Option<Duration>>,
) -> Option<Image> {
    let mut delay = shared.config.backoff.initial;
    let mut first = true;
    loop {
        let (s, reference) = (shared.clone(), def.image.clone());
        let result = tokio::task::spawn_blocking(move || s.images.pull(&reference, &s.config.image_dirs)).await;
        let message = match result {
            Ok(Ok(image)) => return Some(image),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(image = %def.image, error = %message, "image pull failed");
        let reason = if first { "ErrImagePull" } else { "ImagePullBackOff" };
        pod.set_live(index, |c| c.state = waiting(reason, message.clone()));
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop_wait(stop) => return None,
        }
        pod.set_live(index, |c| c.state = waiting("ImagePullBackOff", message.clone()));
        delay = (delay * 2).min(shared.config.backoff.max);
    }
}

/// The runtime's view of one container instance.
fn container_spec(
    shared: &Shared,
    pod: &PodSpec,
    def: &ContainerSpecDef,
    image: &Image,
    net: &PodNet,
    restart_count: u32,
) -> ContainerSpec {
    let id = format!("{}-{}-{}", &pod.uid[..pod.uid.len().min(12)], def.name, restart_count);
    let args = def.argv(&image.config.entrypoint, &image.config.cmd);
    // Like the runtimes kubelet drives: HOSTNAME first, so the image and
    // the manifest may override it.
    let mut base = vec![format!("HOSTNAME={}", pod.hostname)];
    base.extend(image.config.env.iter().cloned());
    let env = merge_env(&base, &def.runtime_env());
    let (image_uid, image_gid) = resolve_user(&image.rootfs, &image.config.user);
    let uid = def.run_as_user.unwrap_or(image_uid);
    let gid = def.run_as_group.unwrap_or(if def.run_as_user.is_some() { 0 } else { image_gid });
    let cwd = def
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| Some(image.config.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_owned());
    ContainerSpec {
        id: id.clone(),
        bundle: shared.state.pod_dir(&pod.uid).join("containers").join(&id),
        image_rootfs: image.rootfs.clone(),
        args,
        env,
        cwd,
        uid,
        gid,
        additional_gids: Vec::new(),
        hostname: pod.hostname.clone(),
        netns: Some(net.netns.clone()),
        cgroup: pod_cgroup(&pod.uid).join(&id),
        resources: Resources::from_kubernetes(&def.resources),
        log: LogConfig {
            path: log_path(&shared.config.log_dir, pod, &def.name, restart_count),
            max_bytes: shared.config.log_max_bytes,
            max_files: shared.config.log_max_files,
        },
    }
}

/// kubelet's layout: `<log dir>/<namespace>_<name>_<uid>/<container>/<restart>.log`.
pub fn log_path(log_dir: &Path, pod: &PodSpec, container: &str, restart_count: u32) -> PathBuf {
    log_dir
        .join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
        .join(container)
        .join(format!("{restart_count}.log"))
}

/// The image's `User`: `uid[:gid]` numbers, or names looked up in the
/// image's /etc/passwd and /etc/group. Unknown names fall back to root,
/// with a warning (runc would refuse; kubelet surfaces the runtime's error).
fn resolve_user(rootfs: &Path, user: &str) -> (u32, u32) {
    if user.is_empty() {
        return (0, 0);
    }
    let (u, g) = user.split_once(':').map_or((user, None), |(u, g)| (u, Some(g)));
    let lookup = |file: &str, name: &str| -> Option<(u32, u32)> {
        let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.first() != Some(&name) {
                return None;
            }
            Some((f.get(2)?.parse().ok()?, f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0)))
        })
    };
    let (uid, mut gid) = match u.parse::<u32>() {
        Ok(n) => (n, 0),
        Err(_) => lookup("etc/passwd", u).unwrap_or_else(|| {
            tracing::warn!(user = u, "image user not in /etc/passwd; running as root");
            (0, 0)
        }),
    };
    if let Some(g) = g {
        gid = g.parse().ok().or_else(|| lookup("etc/group", g).map(|(id, _)| id)).unwrap_or(gid);
    }
    (uid, gid)
}
