//! The control plane: scheduler throughput, API apply latency (MemStore,
//! RedbStore and EtcdStore, each beside its floor) and watch fan-out, in one
//! run.
//!
//! # Design
//! - **Scheduler**: `berth_control::scheduler::bench_place` (a
//!   synthetic cluster and workload; only the placement loop is timed),
//!   [`Options::pods`] pods on [`Options::nodes`] nodes, repeated
//!   [`Options::reps`] times with the same seed; the median pods/s is
//!   reported against the goal of issue 6 (≥ 5,000 pods/s for 10,000 pods
//!   on 1,000 nodes).
//! - **API apply**: a real `ApiServer` (HTTPS, a token user in
//!   `system:masters`, berth's `Resources` admission) over a `MemStore`, a
//!   `RedbStore` (fsync per commit) and an `EtcdStore`, one after the other;
//!   a manifest of [`APPLY_OBJECTS`] generated objects (half Services, half
//!   Deployments) is POSTed one object at a time through `ApiClient` (which
//!   opens a TLS connection per request, as `berth apply` does), in
//!   [`APPLY_ROUNDS`] rounds of fresh names on one server. Per-object
//!   p50/p90/p99/mean over all rounds (so the p99 is not one sample), and
//!   the median round's total (the sum of its per-object times). The etcd
//!   row's p99 includes etcd's own pauses: its Go garbage collector and its
//!   100 ms backend commit stall whichever request is in flight by 1–2.7 ms,
//!   about 3–5 POSTs in 100 (measured with `GOGC=off` and a long
//!   `--backend-batch-interval`, which remove them; berth's hop onto the
//!   store's runtime costs ~2 µs). A Service POST makes two etcd requests
//!   (the ClusterIP records' list, then the transaction), so it meets them
//!   more often than the one-put floor.
//!   The EtcdStore case starts its own etcd (Debian's `/usr/bin/etcd`, or
//!   `BERTH_BENCH_ETCD`) on two free ports of [`BENCH_IP`] with a temp data
//!   dir, and kills that process when the case ends; a missing etcd is a
//!   Failed row, never a skip.
//! - **Apply floors and peers**, each interleaved with its case (one sample
//!   right before each POST, so both see the same machine state):
//!   `GET /healthz` through the same client to the MemStore server (a fresh
//!   TLS connection and a request that reaches neither the store nor
//!   admission); `RedbStore::create` of the same bytes on a redb file of its
//!   own on the same file system (timed inside the blocking task: the commit
//!   alone); an etcd KV put of the same bytes under a fresh key on a direct
//!   etcd-client connection to the same etcd. A second table divides each
//!   berth p50 by its floor's p50 (and gives the difference in ms): MemStore
//!   by TLS + `/healthz`, RedbStore by the redb commit, EtcdStore by the
//!   etcd put, and the two durable stores also by TLS + `/healthz` plus
//!   their store's p50.
//! - **Watch fan-out**: [`Options::watchers`] watches of
//!   `/api/v1/namespaces/default/services?watch=1`, each on its own TLS
//!   connection (raw HTTP/1.1, the chunked body read line by line), then
//!   [`WATCH_EVENTS`] Service creates, one at a time; for every watcher ×
//!   event, the time from the create's reply (acknowledged) to the watcher
//!   reading the event. The event can reach a watcher before the creating
//!   client has read its reply, so the figures from acknowledgement can be
//!   negative; the same latencies from the create's request start are
//!   reported beside them.
//!
//! Everything networked runs in a network namespace this bench creates
//! (`unshare(CLONE_NEWNET)` on a thread of its own, `lo` up, address
//! [`BENCH_IP`] from the benchmarking range), the same way the control
//! plane's integration tests run; the runtime is built inside it.
//!
//! # Limitations
//! Client and server share the machine (and, in the watch case, the tokio
//! runtime of two workers with all the watchers; etcd runs on the same two
//! cores). Per-object apply latency includes a TLS handshake per request.
//! The redb commit and the etcd put leave out the TLS request that berth's
//! rows include, so those two ratios overstate berth's own work; the rows
//! against TLS + `/healthz` plus the store's p50 (a sum of medians from two
//! cases, not a measured request) bracket it from the other side.
//! `/healthz` is public, so that floor skips the token check (a map lookup).
//! The etcd put is a plain put, where `EtcdStore` writes a transaction
//! comparing `create_revision`. etcd's and redb's data live in the temp
//! dir, so both fsync to the same device. The scheduler floor of issue 6 (a
//! filter-only loop) is not measured yet. Quick mode (1,000 pods on 100
//! nodes, 10 watchers) checks that every row has a figure, not the speed.

mod api;
mod etcd;

use std::{process::Command, time::Duration};

use anyhow::{Context, bail};
use berth_control::scheduler::bench_place;
use nix::sched::{CloneFlags, unshare};

use crate::report::{Outcome, Record, Sink, median};

/// The bench's address on `lo` of its own namespace.
pub const BENCH_IP: &str = "198.18.255.1";
/// Objects in the applied manifest.
pub const APPLY_OBJECTS: usize = 100;
/// Times the manifest is applied (fresh names each round).
pub const APPLY_ROUNDS: usize = 5;
/// Service creates the watchers see.
pub const WATCH_EVENTS: usize = 100;
/// Goal of issue 6.
const GOAL_PODS_PER_SECOND: f64 = 5_000.0;
const SEED: u64 = 6;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// 1,000 pods on 100 nodes, 10 watchers: checks that every row has a
    /// figure, not the speed.
    #[arg(long)]
    pub quick: bool,
    /// Pods to schedule [default: 10000; quick: 1000].
    #[arg(long)]
    pub pods: Option<usize>,
    /// Nodes in the synthetic cluster [default: 1000; quick: 100].
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Repetitions of the scheduling loop [default: 3].
    #[arg(long)]
    pub reps: Option<usize>,
    /// Concurrent watchers [default: 100; quick: 10].
    #[arg(long)]
    pub watchers: Option<usize>,
}

impl Options {
    pub fn quick() -> Self {
        Self { quick: true, pods: None, nodes: None, reps: None, watchers: None }
    }

    pub fn pods(&self) -> usize {
        self.pods.unwrap_or(if self.quick { 1_000 } else { 10_000 }).max(1)
    }

    pub fn nodes(&self) -> usize {
        self.nodes.unwrap_or(if self.quick { 100 } else { 1_000 }).max(1)
    }

    pub fn reps(&self) -> usize {
        self.reps.unwrap_or(3).max(1)
    }

    pub fn watchers(&self) -> usize {
        self.watchers.unwrap_or(if self.quick { 10 } else { 100 }).max(1)
    }
}

/// Runs the benchmark.
///
/// # Errors
/// Namespace set-up or sink failures; a side that cannot be measured is a
/// Failed row.
pub fn run(opts: &Options, sink: &mut Sink) -> anyhow::Result<()> {
    scheduler(opts, sink)?;
    // The API cases run on a thread that moves into a fresh network
    // namespace; the caller's thread (and later benchmarks) stay where they
    // were.
    let results = std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<api::Results> {
            isolate()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("building the tokio runtime")?;
            Ok(rt.block_on(api::run(opts.watchers())))
        })
        .join()
    })
    .map_err(|_| anyhow::anyhow!("the API bench thread panicked"))??;
    api::record(&results, opts.watchers(), sink)
}

fn scheduler(opts: &Options, sink: &mut Sink) -> anyhow::Result<()> {
    const TABLE: &str = "Scheduler throughput";
    let (nodes, pods) = (opts.nodes(), opts.pods());
    let case = format!("{pods} pods on {nodes} nodes");
    let mut rates = Vec::new();
    let mut last = None;
    for _ in 0..opts.reps() {
        let stats = bench_place(nodes, pods, SEED);
        rates.push(stats.pods_per_second());
        last = Some(stats);
    }
    let (Some(rate), Some(stats)) = (median(&rates), last) else {
        return sink.record(
            Record::new(TABLE, &case, "berth (ClusterState::place)")
                .outcome(Outcome::Failed("no repetition ran".into())),
        );
    };
    let goal_applies = !opts.quick && pods >= 10_000 && nodes >= 1_000;
    let mut row = Record::new(TABLE, &case, "berth (ClusterState::place)")
        .param("pods", pods)
        .param("nodes", nodes)
        .figure("median", rate, "pods/s")
        .figure("placed", stats.placed as f64, "")
        .figure("unschedulable", stats.unschedulable as f64, "")
        .figure("n", rates.len() as f64, "");
    if goal_applies {
        row = row.goal("≥ 5,000 pods/s", rate >= GOAL_PODS_PER_SECOND);
    }
    sink.record(row)
}

/// Moves the calling thread into a new network namespace with `lo` up and
/// [`BENCH_IP`] on it.
fn isolate() -> anyhow::Result<()> {
    unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
    for args in [["link", "set", "lo", "up"].as_slice(), &["addr", "add", &format!("{BENCH_IP}/32"), "dev", "lo"]] {
        let status = Command::new("ip").args(args).status().context("running ip (iproute2; cargo xtask setup)")?;
        if !status.success() {
            bail!("ip {args:?} failed in the bench namespace");
        }
    }
    Ok(())
}

/// Milliseconds of a duration.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
