//! Churn under load: Services change 100 times a second while wrk runs
//! through berth's XDP path against another Service. Goal: no failed
//! request and at most 5% fewer requests per second than the same load
//! without churn, in the same run.
//!
//! # Design
//! The e2e testbed (`e2e::prepare`: client → node → 4 backends running
//! `berth-bench-server`), with berth's data plane driven in-process: a
//! dedicated thread enters the node's network namespace (`setns` changes
//! only that thread), starts a [`Datapath`] with the uplink (XDP ingress,
//! tc egress) and programs [`SERVICES`] Services. It owns the data plane
//! for its whole life; the bench thread sends it commands over a channel.
//! While churning, it changes one other Service every 10 ms through
//! [`Datapath::upsert`] / [`Datapath::remove`], the incremental calls a
//! watch-driven control plane makes (the full-set [`Datapath::apply`] would
//! re-diff every Service on each change): each Service cycles through "4 backends", "weights
//! 1:2:1:2", "3 backends" and "removed", so backends, schedule slots and
//! whole Services are added and deleted under load.
//!
//! The Service under load (the last created) never changes. Runs alternate
//! without and with churn (the order flips every repetition), both modes.
//! A failed request is a wrk socket error or a non-2xx response.
//!
//! # Limitations
//! Two cores: the churn thread's CPU time competes with wrk and the
//! forwarding path, so part of any rps drop is the cost of programming
//! itself, not disturbance of the data path.

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use berth_agent::datapath::{
    Datapath, DatapathOptions, DesiredBackend, DesiredService, MapLimits, PinDir, ServiceAddr,
    schedule::{Algorithm, MaglevTableSize, Weight},
};
use berth_ebpf::abi::Protocol;
use nix::sched::{CloneFlags, setns};

use crate::{
    e2e::{self, Client, Load, Mode, WrkResult, peer::SERVICE_PORT, peer::service_vip},
    report::{Record, Sink, Stats, median},
};

/// Services programmed; all but the one under load churn.
pub const SERVICES: usize = 1000;
/// Changes per second.
pub const RATE: u32 = 100;
const TABLE: &str = "churn under load (berth-xdp)";
const GOAL_RATIO: f64 = 0.95;

/// Runs the churn measurement and records one row per mode.
///
/// # Errors
/// If the testbed or the data plane cannot be set up (a harness problem);
/// a missed goal is a row, not an error.
pub fn run(opts: &super::Options, sink: &mut Sink) -> anyhow::Result<()> {
    let (reps, duration) = if opts.quick { (1, Duration::from_secs(3)) } else { (3, Duration::from_secs(10)) };
    let server = crate::sibling_bin("berth-bench-server", "BERTH_BENCH_SERVER_BIN")?;
    let bed = e2e::prepare("bchurn", &server)?;
    let instance = format!("bchurn-{}", berth_tests::short_id());
    let pins = Pins(PinDir::new(Path::new(e2e::BPFFS_ROOT), &instance));
    let backends: Vec<DesiredBackend> = bed
        .backends()
        .iter()
        .map(|b| DesiredBackend { addr: *b.ip(), port: b.port(), weight: Weight::ONE, terminating: false })
        .collect();
    let options = DatapathOptions {
        pins: pins.0.clone(),
        limits: MapLimits::default(),
        uplink: Some(bed.topo.uplink.clone()),
        socket_lb_cgroup: None,
        stats: true,
    };
    let churner = Churner::start(bed.topo.node.path(), options, backends)?;
    let target = std::net::SocketAddrV4::new(service_vip(SERVICES - 1), SERVICE_PORT);
    let client = Client { netns: &bed.topo.client, cgroup: None };
    let cpu = Some(0);
    // Warm-up and the check that the path works.
    let warm = e2e::run_wrk(client, target, Load { mode: Mode::Close, duration: Duration::from_secs(1), cpu })?;
    if warm.requests == 0 {
        bail!("churn: no request answered through {target} during warm-up");
    }

    for mode in Mode::ALL {
        let load = Load { mode, duration, cpu };
        let (mut quiet, mut busy, mut reports) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..reps {
            for churn in if rep % 2 == 0 { [false, true] } else { [true, false] } {
                if churn {
                    churner.begin()?;
                    let r = e2e::run_wrk(client, target, load);
                    let report = churner.end()?;
                    let r = r?;
                    eprintln!(
                        "[churn] {} rep {}: with churn {:.0} rps, {} failed, {} ops ({} errors)",
                        mode.as_str(),
                        rep + 1,
                        r.rps,
                        r.failed(),
                        report.ops,
                        report.errors
                    );
                    busy.push(r);
                    reports.push(report);
                } else {
                    let r = e2e::run_wrk(client, target, load)?;
                    eprintln!(
                        "[churn] {} rep {}: quiet {:.0} rps, {} failed",
                        mode.as_str(),
                        rep + 1,
                        r.rps,
                        r.failed()
                    );
                    quiet.push(r);
                }
            }
        }
        sink.record(row(mode, &quiet, &busy, &reports, opts.quick))?;
    }
    churner.stop()?;
    drop(pins);
    drop(bed);
    Ok(())
}

fn row(mode: Mode, quiet: &[WrkResult], busy: &[WrkResult], reports: &[ChurnReport], quick: bool) -> Record {
    let rps = |runs: &[WrkResult]| median(&runs.iter().map(|r| r.rps).collect::<Vec<_>>()).unwrap_or(0.0);
    let p99 = |runs: &[WrkResult]| median(&runs.iter().map(|r| r.p99_ms).collect::<Vec<_>>()).unwrap_or(0.0);
    let (q, b) = (rps(quiet), rps(busy));
    let ratio = if q > 0.0 { b / q } else { 0.0 };
    let failed: u64 = busy.iter().map(WrkResult::failed).sum();
    let failed_quiet: u64 = quiet.iter().map(WrkResult::failed).sum();
    let ops: u64 = reports.iter().map(|r| r.ops).sum();
    let errors: u64 = reports.iter().map(|r| r.errors).sum();
    let secs: f64 = reports.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    let cpu: f64 = reports.iter().map(|r| r.cpu.as_secs_f64()).sum();
    let mut lat: Vec<f64> = reports.iter().flat_map(|r| r.latencies_ms.iter().copied()).collect();
    let lat = Stats::of(&mut lat);
    let rec = Record::new(TABLE, mode.as_str(), "berth-xdp")
        .param("services", SERVICES)
        .param("rate", format!("{RATE}/s"))
        .param("reps", busy.len())
        .figure("ops", ops as f64, "")
        .figure("ops/s", if secs > 0.0 { ops as f64 / secs } else { 0.0 }, "")
        .figure("apply errors", errors as f64, "")
        .figure("apply p50", lat.map_or(0.0, |s| s.median), "ms")
        .figure("apply p99", lat.map_or(0.0, |s| s.p99), "ms")
        .figure("churn CPU", if secs > 0.0 { cpu / secs * 100.0 } else { 0.0 }, "% of a core")
        .figure("rps quiet", q, "rps")
        .figure("rps churn", b, "rps")
        .figure("ratio", ratio, "x")
        .figure("p99 quiet", p99(quiet), "ms")
        .figure("p99 churn", p99(busy), "ms")
        .figure("failed churn", failed as f64, "")
        .figure("failed quiet", failed_quiet as f64, "");
    let achieved = secs > 0.0 && ops as f64 / secs >= 0.95 * f64::from(RATE);
    let met = failed == 0 && ratio >= GOAL_RATIO && errors == 0 && achieved;
    let mut text = format!("0 failed requests, rps ≥ {GOAL_RATIO}× quiet, {RATE} changes/s");
    if !met {
        text.push_str(&format!(
            " (got {ratio:.3}×, {failed} failed, {:.0} changes/s; the churn thread used {:.0}% of a core: each change \
             is a full-state apply of {SERVICES} Services, p50 {:.2} ms)",
            if secs > 0.0 { ops as f64 / secs } else { 0.0 },
            if secs > 0.0 { cpu / secs * 100.0 } else { 0.0 },
            lat.map_or(0.0, |s| s.median)
        ));
    }
    if quick {
        text.push_str(" (quick: short runs, noisy)");
    }
    rec.goal(text, met)
}

/// Removes the instance's pins on drop (detaching what is still attached).
struct Pins(PinDir);

impl Drop for Pins {
    fn drop(&mut self) {
        if let Err(e) = self.0.remove_all() {
            eprintln!("berth-bench: churn: removing pins {}: {e}", self.0.path().display());
        }
    }
}

/// What one churn period did.
#[derive(Debug, Default)]
struct ChurnReport {
    ops: u64,
    errors: u64,
    elapsed: Duration,
    /// CPU time of the churn thread (building desired states + apply).
    cpu: Duration,
    latencies_ms: Vec<f64>,
}

/// CPU time this thread has used (utime + stime from
/// `/proc/thread-self/stat`, in USER_HZ = 100 ticks); zero if unreadable.
fn thread_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else { return Duration::ZERO };
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let Some((_, rest)) = stat.rsplit_once(") ") else { return Duration::ZERO };
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

enum Command {
    Begin,
    End(mpsc::Sender<ChurnReport>),
}

/// The data-plane thread: owns the [`Datapath`] (inside the node's
/// network namespace) from start to drop.
struct Churner {
    tx: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Churner {
    fn start(node_netns: PathBuf, options: DatapathOptions, backends: Vec<DesiredBackend>) -> anyhow::Result<Self> {
        let ns = File::open(&node_netns).with_context(|| format!("open {}", node_netns.display()))?;
        let (tx, rx) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<Duration>>();
        let thread = std::thread::Builder::new()
            .name("berth-churn".into())
            .spawn(move || -> anyhow::Result<()> {
                let started = Instant::now();
                let setup = (|| -> anyhow::Result<(Datapath, Services)> {
                    setns(&ns, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {}", node_netns.display()))?;
                    let mut dp = Datapath::start(options).context("starting the data plane on the node")?;
                    let services = Services::new(backends);
                    dp.apply(&services.desired()).context("programming the initial Services")?;
                    Ok((dp, services))
                })();
                let (mut dp, mut services) = match setup {
                    Ok(v) => {
                        let _ = ready_tx.send(Ok(started.elapsed()));
                        v
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                churn_loop(&mut dp, &mut services, &rx);
                Ok(())
            })
            .context("spawning the churn thread")?;
        let churner = Self { tx: Some(tx), thread: Some(thread) };
        match ready_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(took)) => {
                eprintln!("[churn] data plane up with {SERVICES} Services in {took:.1?}");
                Ok(churner)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(anyhow!("the churn thread did not start the data plane within 120 s")),
        }
    }

    fn send(&self, cmd: Command) -> anyhow::Result<()> {
        self.tx.as_ref().context("churn thread stopped")?.send(cmd).map_err(|_| anyhow!("the churn thread exited"))
    }

    fn begin(&self) -> anyhow::Result<()> {
        self.send(Command::Begin)
    }

    fn end(&self) -> anyhow::Result<ChurnReport> {
        let (tx, rx) = mpsc::channel();
        self.send(Command::End(tx))?;
        rx.recv_timeout(Duration::from_secs(30)).map_err(|_| anyhow!("the churn thread did not report"))
    }

    /// Stops the thread (dropping the data plane) and waits for it.
    fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        // Closing the channel ends the loop within one tick.
        self.tx.take();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => bail!("the churn thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Churner {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("berth-bench: churn: {e:#}");
        }
    }
}

/// Idle until `Begin`; then one change every 1/[`RATE`] s until `End`.
fn churn_loop(dp: &mut Datapath, services: &mut Services, rx: &mpsc::Receiver<Command>) {
    let tick = Duration::from_secs(1) / RATE;
    loop {
        match rx.recv() {
            Ok(Command::Begin) => {}
            Ok(Command::End(reply)) => {
                let _ = reply.send(ChurnReport::default());
                continue;
            }
            Err(_) => return,
        }
        let started = Instant::now();
        let cpu_before = thread_cpu();
        let mut report = ChurnReport::default();
        let mut next = started;
        let reply = loop {
            match rx.try_recv() {
                Ok(Command::End(reply)) => break Some(reply),
                Ok(Command::Begin) => {}
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => break None,
            }
            let now = Instant::now();
            if now < next {
                std::thread::sleep((next - now).min(tick));
                continue;
            }
            next += tick;
            let i = services.step();
            let t = Instant::now();
            let result = match services.service(i) {
                Some(service) => dp.upsert(&service),
                None => dp.remove(ServiceAddr { vip: service_vip(i), port: SERVICE_PORT, protocol: Protocol::Tcp }),
            };
            match result {
                Ok(_) => report.ops += 1,
                Err(e) => {
                    if report.errors == 0 {
                        eprintln!("[churn] apply failed: {e}");
                    }
                    report.errors += 1;
                }
            }
            report.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
        };
        report.elapsed = started.elapsed();
        report.cpu = thread_cpu().saturating_sub(cpu_before);
        match reply {
            Some(reply) => {
                let _ = reply.send(report);
            }
            None => return,
        }
    }
}

/// The desired state: the Service under load (the last) never changes;
/// each other one cycles through four variants, one step per change.
struct Services {
    backends: Vec<DesiredBackend>,
    variant: Vec<u8>,
    next: usize,
}

impl Services {
    fn new(backends: Vec<DesiredBackend>) -> Self {
        Self { backends, variant: vec![0; SERVICES], next: 0 }
    }

    /// Changes the next churned Service (round-robin over all but the last)
    /// and returns its index.
    fn step(&mut self) -> usize {
        let i = self.next;
        self.variant[i] = (self.variant[i] + 1) % 4;
        self.next = (self.next + 1) % (SERVICES - 1);
        i
    }

    fn desired(&self) -> Vec<DesiredService> {
        (0..SERVICES).filter_map(|i| self.service(i)).collect()
    }

    fn service(&self, i: usize) -> Option<DesiredService> {
        let backends: Vec<DesiredBackend> = match self.variant[i] {
            0 => self.backends.clone(),
            1 => self
                .backends
                .iter()
                .enumerate()
                .map(|(k, b)| DesiredBackend {
                    weight: if k % 2 == 1 { Weight::new(2).unwrap_or(Weight::ONE) } else { Weight::ONE },
                    ..*b
                })
                .collect(),
            2 => self
                .backends
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != i % self.backends.len())
                .map(|(_, b)| *b)
                .collect(),
            _ => return None,
        };
        Some(DesiredService {
            name: format!("svc-{i}"),
            vip: service_vip(i),
            port: SERVICE_PORT,
            protocol: Protocol::Tcp,
            algorithm: Algorithm::Wrr,
            maglev_table_size: MaglevTableSize::DEFAULT,
            affinity_timeout_s: None,
            backends,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn churn_cycles_every_other_service_and_never_the_target() {
        let b = |n| DesiredBackend {
            addr: Ipv4Addr::new(198, 18, n, 2),
            port: 8080,
            weight: Weight::ONE,
            terminating: false,
        };
        let mut s = Services::new(vec![b(1), b(2), b(3), b(4)]);
        let initial = s.desired();
        assert_eq!(initial.len(), SERVICES);
        for _ in 0..3 * (SERVICES - 1) {
            let _ = s.step();
        }
        // Every churned Service is now in variant 3 (removed); the target stays.
        let d = s.desired();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0], initial[SERVICES - 1]);
        let _ = s.step();
        assert_eq!(s.desired().len(), 2, "the first Service came back");
    }
}
