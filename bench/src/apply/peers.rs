//! Programming time of kube-proxy's modes: the rows of the "full load" and
//! "one change" tables for `iptables-legacy`, `iptables-nft` and
//! `nftables`, next to berth's (see [`super::berth`]).
//!
//! # Design
//! Each (peer, N) case runs in a namespace of its own (`bapl-…`), so one
//! case's leftovers never weigh on the next, and is bounded in time:
//! - full load: kube-proxy's first sync of N Services × 4 backends, one
//!   `iptables-restore --noflush --counters` (after the jump rules, untimed)
//!   or one `nft -f`, timed from spawn to exit; it is also the setup of the
//!   change phase;
//! - one change: one more backend for one Service, the input kube-proxy's
//!   partial sync writes ([`kube_iptables::Sync::Partial`]: all top-level
//!   chains, `KUBE-SERVICES`' N rules included, plus the Service's SVC and
//!   SEP chains; [`kube_nftables::partial`]: the Service's chains re-added,
//!   flushed and refilled), up to 100 changes, each on another Service,
//!   until the case's time budget is spent (the row says how many: `n`).
//!
//! The tools are spawned from a thread that entered the namespace (`setns`
//! changes only that thread; children inherit it), not through `ip netns
//! exec`, whose own start-up (~1.3 ms here) would be counted otherwise.
//! Input files are generated before the clock starts; kube-proxy's own
//! generation time is not counted (berth's rows count its whole apply).
//!
//! An operation that hits its bound is killed and its row is
//! `Outcome::TimedOut` (figures, if any, from the operations before it);
//! a peer whose load timed out at some N is not tried at larger N.
//!
//! # Limitations
//! 100k Services do not fit the e2e VIP range (198.19.0.0/16): Services
//! past 65 534 take VIPs from 198.18.64.0 up (no traffic flows here).
//! kube-proxy's `iptables-save`/`nft list chains` reads around a sync are
//! not counted. One full load per case (no repetitions): at 10k it takes
//! seconds to minutes.

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use berth_tests::Netns;
use nix::sched::{CloneFlags, setns};

use super::Options;
use crate::{
    e2e::{
        peer::{BACKEND_PORT, BACKENDS, MAX_SERVICES, SERVICE_PORT, TimedOut, service_vip},
        peers::{
            kube_iptables::{self, Backend, ServicePort},
            kube_nftables,
        },
    },
    report::{Outcome, Record, Sink, Stats},
};

/// Most changes measured per case.
const CHANGES: usize = 100;
/// Changes in quick mode.
const QUICK_CHANGES: usize = 5;
/// Time budget of the change phase of one case.
const CHANGE_BUDGET: Duration = Duration::from_secs(60);
/// Bound on one change.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on untimed setup steps (jump rules, teardown).
const STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// Bound on a full load of `n` Services.
fn load_timeout(n: usize) -> Duration {
    if n <= 10_000 { Duration::from_secs(180) } else { Duration::from_secs(300) }
}

/// One of kube-proxy's ways to program the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Iptables(Backend),
    Nftables,
}

impl Tool {
    const ALL: [Tool; 3] = [Tool::Iptables(Backend::Legacy), Tool::Iptables(Backend::Nft), Tool::Nftables];

    fn peer(self) -> &'static str {
        match self {
            Tool::Iptables(b) => b.peer(),
            Tool::Nftables => "nftables",
        }
    }

    /// What a change runs, for the `api` column.
    fn change_api(self) -> &'static str {
        match self {
            Tool::Iptables(_) => "iptables-restore --noflush (kube-proxy partial sync)",
            Tool::Nftables => "nft -f (kube-proxy partial sync transaction)",
        }
    }

    /// The command applying `file` (to be spawned inside the namespace).
    fn apply(self, file: &Path, counters: bool) -> Command {
        match self {
            // A lock file of the case's own (see `kube_iptables::XTABLES_LOCKFILE`).
            Tool::Iptables(b) => {
                kube_iptables::restore_command(b, file, counters, &file.with_file_name("xtables.lock"))
            }
            Tool::Nftables => {
                let mut cmd = Command::new("nft");
                cmd.arg("-f").arg(file);
                cmd
            }
        }
    }

    fn full(self, services: &[ServicePort]) -> String {
        match self {
            Tool::Iptables(_) => kube_iptables::restore(services, kube_iptables::Sync::Full),
            Tool::Nftables => kube_nftables::full(services),
        }
    }

    fn partial(self, services: &[ServicePort], changed: usize) -> String {
        match self {
            Tool::Iptables(_) => kube_iptables::restore(services, kube_iptables::Sync::Partial(&[changed])),
            Tool::Nftables => kube_nftables::partial(services, &[changed]),
        }
    }

    /// Empties the namespace's tables before it is deleted, so the kernel's
    /// deferred namespace cleanup does not run during the next case.
    fn teardown(self, dir: &Path) -> anyhow::Result<()> {
        let file = dir.join("teardown");
        let text = match self {
            Tool::Iptables(_) => "*filter\n-F\n-X\nCOMMIT\n*nat\n-F\n-X\nCOMMIT\n".to_owned(),
            Tool::Nftables => kube_nftables::cleanup(),
        };
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        kube_iptables::run_bounded(self.apply(&file, false), "teardown", STEP_TIMEOUT).map(drop)
    }
}

/// Service `i`'s VIP: the e2e plan's (198.19.0.1 …) while it lasts, then
/// 198.18.64.0 – 198.18.255.255 (49 152 more).
///
/// # Panics
/// Past 114 686 Services.
fn vip(i: usize) -> Ipv4Addr {
    const EXTRA: usize = 192 * 256;
    if i < MAX_SERVICES {
        return service_vip(i);
    }
    let offset = i - MAX_SERVICES;
    assert!(offset < EXTRA, "service index {i} beyond the apply benchmark's VIP range");
    // < 49 152 by the assert.
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 64, 0)) + offset as u32)
}

/// The endpoint added by change `j`: 198.18.10.0/23, never a VIP or a
/// backend.
fn new_endpoint(j: usize) -> SocketAddrV4 {
    let j = u32::try_from(j % 500).unwrap_or(0);
    SocketAddrV4::new(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 10, 1)) + j), BACKEND_PORT)
}

/// The Service change `j` touches: spread over the range, never twice for
/// j < 100 (7919 is prime, so coprime with every N used here).
fn changed_service(j: usize, n: usize) -> usize {
    (n / 2 + j * 7919) % n
}

fn services(n: usize) -> Vec<ServicePort> {
    let backends: Vec<SocketAddrV4> =
        (0..BACKENDS).map(|k| SocketAddrV4::new(berth_tests::topology::backend_addr(k), BACKEND_PORT)).collect();
    (0..n)
        .map(|i| ServicePort {
            namespace: kube_iptables::NAMESPACE.to_owned(),
            name: format!("svc-{i}"),
            port_name: kube_iptables::PORT_NAME.to_owned(),
            cluster_ip: vip(i),
            port: SERVICE_PORT,
            endpoints: backends.clone(),
        })
        .collect()
}

/// Runs `f` on a thread inside `ns` (only that thread switches; processes
/// it spawns start there).
fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    let file = File::open(ns.path()).with_context(|| format!("opening {}", ns.path().display()))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("apply peers: case thread panicked"))?
    })
}

/// How one measured phase ended.
struct Phase {
    samples_ms: Vec<f64>,
    timed_out: Option<String>,
}

fn record(sink: &mut Sink, row: Record, phase: &Phase) -> anyhow::Result<()> {
    let mut samples = phase.samples_ms.clone();
    let mut row = row;
    if let Some(stats) = Stats::of(&mut samples) {
        row = row.figure("median_ms", stats.median, "ms").figure("p99_ms", stats.p99, "ms");
    }
    row = row.figure("n", phase.samples_ms.len() as f64, "");
    if let Some(why) = &phase.timed_out {
        row = row.outcome(Outcome::TimedOut(why.clone()));
    }
    sink.record(row)
}

fn timed_out(e: &anyhow::Error) -> Option<String> {
    e.downcast_ref::<TimedOut>().map(ToString::to_string)
}

/// One (tool, N) case: full load, then changes. Returns whether the load
/// finished (a timed-out load skips larger N).
fn run_case(tool: Tool, n: usize, changes: usize, sink: &mut Sink) -> anyhow::Result<bool> {
    let full_row = Record::new("full load", format!("{n} Services × {BACKENDS} backends"), tool.peer())
        .param("services", n)
        .param("backends", BACKENDS);
    let change_row = Record::new("one change", format!("add 1 backend to a {BACKENDS}-backend Service"), tool.peer())
        .param("services", n)
        .param("backends", BACKENDS)
        .param("api", tool.change_api());
    let dir = tempfile::Builder::new().prefix("berth-apply-peers-").tempdir().context("temp dir")?;
    let mut services = services(n);
    let full_file = dir.path().join("full");
    std::fs::write(&full_file, tool.full(&services)).context("writing the full ruleset")?;
    let ns = Netns::unique("bapl")?;

    let (load, change) = in_netns(&ns, || {
        if let Tool::Iptables(_) = tool {
            let jumps = dir.path().join("jumps");
            std::fs::write(&jumps, kube_iptables::jumps()).context("writing jumps")?;
            kube_iptables::run_bounded(tool.apply(&jumps, false), "jump rules", STEP_TIMEOUT)?;
        }
        let what = format!("{} full load of {n} Services", tool.peer());
        let load = match kube_iptables::run_bounded(tool.apply(&full_file, true), &what, load_timeout(n)) {
            Ok(t) => Phase { samples_ms: vec![t.as_secs_f64() * 1e3], timed_out: None },
            Err(e) => match timed_out(&e) {
                Some(why) => Phase { samples_ms: vec![], timed_out: Some(why) },
                None => return Err(e),
            },
        };
        if load.timed_out.is_some() {
            let change = Phase { samples_ms: vec![], timed_out: Some(format!("setup: {what} timed out")) };
            return Ok((load, change));
        }
        let mut change = Phase { samples_ms: Vec::with_capacity(changes), timed_out: None };
        let started = Instant::now();
        let file = dir.path().join("change");
        for j in 0..changes {
            if started.elapsed() >= CHANGE_BUDGET {
                break;
            }
            let s = changed_service(j, n);
            services[s].endpoints.push(new_endpoint(j));
            std::fs::write(&file, tool.partial(&services, s)).context("writing a change")?;
            let what = format!("{} change {j} at {n} Services", tool.peer());
            match kube_iptables::run_bounded(tool.apply(&file, true), &what, CHANGE_TIMEOUT) {
                Ok(t) => change.samples_ms.push(t.as_secs_f64() * 1e3),
                Err(e) => match timed_out(&e) {
                    Some(why) => {
                        change.timed_out = Some(why);
                        break;
                    }
                    None => return Err(e),
                },
            }
        }
        if let Err(e) = tool.teardown(dir.path()) {
            eprintln!("[bench] apply/peers: {} teardown at {n}: {e:#}", tool.peer());
        }
        Ok((load, change))
    })?;
    drop(ns);
    let loaded = load.timed_out.is_none();
    record(sink, full_row, &load)?;
    record(sink, change_row, &change)?;
    Ok(loaded)
}

/// Full load and one-change rows for every kube-proxy mode.
///
/// # Errors
/// If a tool fails (not on timeouts: those are rows), a namespace cannot
/// be made, or a row cannot be recorded.
pub fn run(opts: &Options, sink: &mut Sink) -> anyhow::Result<()> {
    let (sizes, changes): (&[usize], usize) =
        if opts.quick { (&[1_000], QUICK_CHANGES) } else { (&[10_000, 100_000], CHANGES) };
    for tool in Tool::ALL {
        let mut skip_from: Option<usize> = None;
        for &n in sizes {
            if let Some(smaller) = skip_from {
                let why = format!("not tried: loading {smaller} Services already timed out");
                for (table, case) in [
                    ("full load", format!("{n} Services × {BACKENDS} backends")),
                    ("one change", format!("add 1 backend to a {BACKENDS}-backend Service")),
                ] {
                    sink.record(
                        Record::new(table, case, tool.peer())
                            .param("services", n)
                            .param("backends", BACKENDS)
                            .outcome(Outcome::TimedOut(why.clone())),
                    )?;
                }
                continue;
            }
            if !run_case(tool, n, changes, sink)? {
                skip_from = Some(n);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vips_are_distinct_and_in_the_benchmark_range() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..100_000 {
            let v = vip(i);
            assert!(v.octets()[..2] == [198, 18] || v.octets()[..2] == [198, 19], "{v}");
            assert!(seen.insert(v), "VIP {v} twice");
        }
        for j in 0..CHANGES {
            assert!(!seen.contains(new_endpoint(j).ip()));
        }
    }

    #[test]
    fn changes_touch_distinct_services() {
        for n in [1_000, 10_000, 100_000] {
            let mut touched: Vec<usize> = (0..CHANGES).map(|j| changed_service(j, n)).collect();
            touched.sort_unstable();
            touched.dedup();
            assert_eq!(touched.len(), CHANGES);
        }
    }
}
