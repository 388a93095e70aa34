//! Per-packet cost of berth's XDP program, through BPF_PROG_TEST_RUN, as a
//! ratio to floor programs measured the same way in the same run.
//!
//! # Design
//! Every call runs one program once (`repeat = 1`) on a fresh kernel copy
//! of the packet, so a rewriting program never sees its own output, and the
//! kernel-reported duration of that one run is the sample. The floors
//! (`bench/bpf/floors.c`: XDP_PASS; parse + Service lookup + XDP_TX; + LRU
//! hit; + LRU insert) get exactly the same treatment, and berth is reported
//! as median / floor median: established flows against the LRU-hit floor,
//! new flows against the LRU-insert floor, non-Service packets against the
//! lookup floor. The fixed cost of a test run (timer reads, the indirect
//! call) is in both, so the ratio is conservative.
//!
//! A *configuration* is a Service count (1, 10k, 100k), a conntrack state
//! (empty, or 65,536 existing flows) and a protocol. Its programs are
//! measured interleaved: in rounds, each program runs a batch of calls in
//! turn (in a new random order every round), so berth, its floor and berth
//! with counters compiled out share whatever noise the machine has.
//!
//! - New flows: every call has a 5-tuple never seen before. After each batch
//!   (untimed) the entries it created are deleted, so conntrack stays where
//!   the configuration put it; a missing entry counts as a failed call.
//! - Existing flows are made the way traffic makes them: first packets run
//!   through berth (and through the insert floor, for the floor's LRU), the
//!   flows spread over every CPU as RSS would, because conntrack's LRU lists
//!   are per CPU (BPF_F_NO_COMMON_LRU).
//! - Established cases repeat one established flow.
//! - Conntrack is aged once before the first measurement (filled and
//!   emptied), so every configuration finds the LRU's free lists in the
//!   same, used, order (see `Bench::age`).
//! - The benchmark thread is pinned to one CPU (sched_setaffinity) while it
//!   measures, so per-CPU maps (WRR cursor, counters, the LRU's local list)
//!   behave as on one core.
//!
//! For new flows, a diagnostic program (`diag_lru_insert2`, the insert
//! floor with a second insert, berth's shape of a new flow) is measured
//! alongside, to split berth's cost into the second conntrack entry and the
//! rest; it is never used as a floor.
//!
//! berth's program is loaded twice against the same maps: with per-CPU
//! counters and with them compiled out (`berth_cfg_stats = 0`), which prices
//! the metrics. Loop mode (`repeat` > 1, one call) is reported separately
//! and only for programs that do not rewrite the packet.
//!
//! # Limitations
//! BPF_PROG_TEST_RUN runs the program on an skb-less `xdp_buff` without a
//! driver: no DMA, no page pool, no real cache pressure from other traffic.
//! The established case repeats one flow, so its conntrack bucket is hot
//! whatever the table size. Figures move with the machine's load; ratios
//! within one run are what to compare.

mod floors;
mod flows;
mod measure;
mod target;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_ebpf::abi::berth_ct_key;

use crate::report::{Outcome, Record, Sink, Stats};
use floors::{Floor, Floors};
use flows::{Clients, Proto};
use measure::{XDP_PASS, XDP_TX};
use target::{Berth, Counters};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// N = 1 and 1k only, few calls: checks the harness, not the speed.
    #[arg(long)]
    pub quick: bool,
    /// Measure on this CPU (default: the last one the process may use).
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Calls per case and program (default 100000; quick 5000).
    #[arg(long)]
    pub calls: Option<usize>,
    /// Service counts, comma-separated (default 1,10000,100000; quick 1,1000).
    #[arg(long, value_delimiter = ',')]
    pub services: Option<Vec<u32>>,
}

impl Options {
    pub fn quick() -> Self {
        Self { quick: true, cpu: None, calls: None, services: None }
    }

    fn calls(&self) -> usize {
        self.calls.unwrap_or(if self.quick { 5_000 } else { 100_000 })
    }

    fn service_counts(&self) -> Vec<u32> {
        let mut counts =
            self.services.clone().unwrap_or_else(|| if self.quick { vec![1, 1_000] } else { vec![1, 10_000, 100_000] });
        counts.sort_unstable();
        counts.dedup();
        counts
    }

    /// Time bound of one configuration (all its programs together).
    fn bound(&self) -> Duration {
        Duration::from_secs(if self.quick { 20 } else { 300 })
    }

    /// Calls in a row per program before the next one's turn.
    fn batch(&self) -> usize {
        if self.quick { 100 } else { 250 }
    }

    /// Loop-mode calls (each `LOOP_REPEAT` runs) per program.
    fn loop_calls(&self) -> usize {
        if self.quick { 20 } else { 200 }
    }
}

/// Existing flows in the "65k flows" conntrack state (two berth entries
/// each, one floor entry each).
const PREFILL_FLOWS: u32 = 65_536;
const LOOP_REPEAT: u32 = 1_000;

const T_SETUP: &str = "setup";
const T_CASES: &str = "per packet: berth vs its floor (repeat = 1, fresh packet per call)";
const T_FLOORS: &str = "floors (repeat = 1, fresh packet per call)";
const T_STATS: &str = "price of the per-CPU counters (berth_cfg_stats = 0 compiles them out)";
const T_NEW: &str = "where a new flow's time goes (means ≤ p99)";
const T_SCALE: &str = "scale: the most Services vs 1";
const T_INSNS: &str = "program size";
const T_LOOP: &str =
    "loop mode (repeat = 1000 on one buffer: non-rewriting programs only, not comparable with repeat = 1)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conntrack {
    Empty,
    Flows(u32),
}

impl Conntrack {
    fn label(self) -> String {
        match self {
            Conntrack::Empty => "empty".to_owned(),
            Conntrack::Flows(n) => format!("{}k flows", n / 1000),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    NonService,
    TcpNew,
    TcpEstablished,
    UdpNew,
    UdpEstablished,
}

impl Case {
    const ALL: [Case; 5] = [Case::NonService, Case::TcpNew, Case::TcpEstablished, Case::UdpNew, Case::UdpEstablished];

    fn name(self) -> &'static str {
        match self {
            Case::NonService => "non-Service (TCP ACK to the node)",
            Case::TcpNew => "TCP SYN, new flow",
            Case::TcpEstablished => "TCP ACK, established",
            Case::UdpNew => "UDP, new flow",
            Case::UdpEstablished => "UDP, established",
        }
    }

    fn proto(self) -> Proto {
        match self {
            Case::NonService | Case::TcpNew | Case::TcpEstablished => Proto::Tcp,
            Case::UdpNew | Case::UdpEstablished => Proto::Udp,
        }
    }

    fn new_flow(self) -> bool {
        matches!(self, Case::TcpNew | Case::UdpNew)
    }

    fn floor(self) -> Floor {
        match self {
            Case::NonService => Floor::Lookup,
            Case::TcpNew | Case::UdpNew => Floor::LruInsert,
            Case::TcpEstablished | Case::UdpEstablished => Floor::LruHit,
        }
    }

    /// The goal: berth's median at most this many times its floor's.
    fn limit(self) -> f64 {
        match self {
            Case::NonService => 1.05,
            _ => 1.15,
        }
    }

    fn goal(self) -> String {
        let floor = match self.floor() {
            Floor::Lookup => "lookup",
            Floor::LruHit => "LRU-hit",
            Floor::LruInsert | Floor::LruInsert2 | Floor::Pass => "LRU-insert",
        };
        format!("≤ {:.2}× {floor} floor", self.limit())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Berth(Counters),
    Floor(Floor),
}

/// One program fed one kind of packet, within one configuration.
struct Runner {
    case: Case,
    peer: Peer,
    samples: Vec<f64>,
    bad: u64,
    first_bad: Option<String>,
}

impl Runner {
    fn new(case: Case, peer: Peer) -> Self {
        Self { case, peer, samples: Vec::new(), bad: 0, first_bad: None }
    }

    fn fail(&mut self, why: String) {
        self.bad += 1;
        self.first_bad.get_or_insert(why);
    }

    fn stats(&self) -> Option<Stats> {
        Stats::of(&mut self.samples.clone())
    }

    /// The mean of the samples up to p99. The clock behind the kernel's
    /// durations may tick coarsely (10 ns under this VM's TSC), which
    /// quantizes medians; the mean of many calls resolves below one tick
    /// because calls start at random phases of it. The top 1% (interrupts)
    /// is dropped so one outlier cannot move it.
    fn trimmed_mean(&self) -> Option<f64> {
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        let keep = (v.len() * 99).div_ceil(100);
        (keep > 0).then(|| v[..keep].iter().sum::<f64>() / keep as f64)
    }

    fn outcome(&self, wanted: usize) -> Outcome {
        if let Some(why) = &self.first_bad {
            Outcome::Failed(format!("{} of {} calls wrong, first: {why}", self.bad, self.samples.len()))
        } else if self.samples.is_empty() {
            Outcome::Failed("no call was measured".to_owned())
        } else if self.samples.len() < wanted {
            Outcome::TimedOut(format!("{} of {wanted} calls within the time bound", self.samples.len()))
        } else {
            Outcome::Measured
        }
    }
}

/// A finished runner, kept for the tables built across configurations.
struct Measured {
    case: Case,
    peer: Peer,
    services: u32,
    conntrack: Conntrack,
    stats: Option<Stats>,
    outcome: Outcome,
}

/// The packets of one configuration that are the same for every call.
struct Fixed {
    non_service: Vec<u8>,
    established: Vec<u8>,
}

/// Everything the measurements touch.
struct Bench {
    berth: Berth,
    floors: Floors,
    clients: Clients,
    /// The CPU measurements run on.
    cpu: usize,
    /// Every CPU the process may use (existing flows are spread over them).
    cpus: Vec<usize>,
}

/// # Errors
/// A load, map or syscall failure (the harness is broken, not slow). Slow
/// cases are reported as missed goals, never as errors.
pub fn run(opts: &Options, sink: &mut Sink) -> anyhow::Result<()> {
    let _affinity = measure::AffinityGuard::save()?;
    let cpus = measure::allowed_cpus()?;
    let cpu = match opts.cpu {
        Some(c) if cpus.contains(&c) => c,
        Some(c) => bail!("--cpu {c}: not one of the CPUs this process may use ({cpus:?})"),
        None => *cpus.last().context("no CPU in the affinity mask")?,
    };
    measure::pin_to(cpu)?;

    let limits = target::limits();
    eprintln!("[bench] loading berth (stats on and off) and the floors");
    let mut bench = Bench {
        berth: Berth::load()?,
        floors: Floors::load(limits.services, limits.conntrack)?,
        clients: Clients::default(),
        cpu,
        cpus,
    };
    let counts = opts.service_counts();
    if counts.first().is_none_or(|n| *n == 0) || counts.last().is_some_and(|n| *n >= limits.services) {
        bail!("--services: each count must be between 1 and {}", limits.services - 1);
    }
    sink.record(
        Record::new(T_SETUP, "BPF_PROG_TEST_RUN, one call per packet", "all")
            .param("cpu", cpu)
            .param("calls per case", opts.calls())
            .param("batch", opts.batch())
            .param("backends per Service", flows::BACKENDS_PER_SERVICE)
            .param("conntrack size", limits.conntrack)
            .param("existing flows", PREFILL_FLOWS),
    )?;

    bench.age(counts[0])?;

    let mut done: Vec<Measured> = Vec::new();
    for &n in &counts {
        for conntrack in [Conntrack::Empty, Conntrack::Flows(PREFILL_FLOWS)] {
            for proto in [Proto::Tcp, Proto::Udp] {
                let cases: Vec<Case> = Case::ALL.into_iter().filter(|c| c.proto() == proto).collect();
                let fixed = bench.configure(n, conntrack, proto)?;
                let mut runners = Vec::new();
                if proto == Proto::Tcp {
                    runners.push(Runner::new(Case::TcpEstablished, Peer::Floor(Floor::Pass)));
                }
                for &case in &cases {
                    runners.push(Runner::new(case, Peer::Berth(Counters::On)));
                    runners.push(Runner::new(case, Peer::Berth(Counters::Off)));
                    runners.push(Runner::new(case, Peer::Floor(case.floor())));
                    if case.new_flow() {
                        runners.push(Runner::new(case, Peer::Floor(Floor::LruInsert2)));
                    }
                }
                eprintln!(
                    "[bench] measuring {n} Services, conntrack {}, {proto:?}: {} programs × {} calls",
                    conntrack.label(),
                    runners.len(),
                    opts.calls()
                );
                let started = Instant::now();
                bench.measure(&mut runners, &fixed, opts)?;
                eprintln!("[bench] … {:.1} s", started.elapsed().as_secs_f64());
                record_config(sink, &runners, n, conntrack, opts.calls())?;
                if conntrack == Conntrack::Empty && proto == Proto::Tcp {
                    bench.loop_mode(sink, &fixed, n, conntrack, &runners, opts)?;
                }
                done.extend(runners.into_iter().map(|r| Measured {
                    case: r.case,
                    peer: r.peer,
                    services: n,
                    conntrack,
                    stats: r.stats(),
                    outcome: r.outcome(opts.calls()),
                }));
            }
        }
    }
    record_scale(sink, &done, &counts)?;
    bench.record_sizes(sink)?;
    Ok(())
}

impl Bench {
    /// Fills and empties both conntrack maps once before anything is
    /// measured. A fresh LRU hands out its preallocated nodes in memory
    /// order, which makes its list walks cache-friendly; after entries were
    /// deleted (as on any node that has seen traffic, and as this benchmark
    /// does between configurations) the free lists are in hash order. Without
    /// this, the first configuration alone would see the fresh order.
    fn age(&mut self, n: u32) -> anyhow::Result<()> {
        self.configure(n, Conntrack::Flows(PREFILL_FLOWS), Proto::Tcp)?;
        floors::clear_ct(&mut self.berth.ct)?;
        floors::clear_ct(&mut self.floors.ct)?;
        Ok(())
    }

    /// Puts berth and the floors into one configuration: `n` Services, the
    /// conntrack state, one established flow of `proto`.
    fn configure(&mut self, n: u32, conntrack: Conntrack, proto: Proto) -> anyhow::Result<Fixed> {
        let services = flows::services(n, proto);
        let t = Instant::now();
        self.berth.apply(&services)?;
        self.floors.set_services(&flows::service_keys(&services))?;
        let applied = t.elapsed();
        if applied > Duration::from_secs(1) {
            eprintln!("[bench] programmed {n} Services in {:.1} s", applied.as_secs_f64());
        }
        floors::clear_ct(&mut self.berth.ct)?;
        floors::clear_ct(&mut self.floors.ct)?;
        if let Conntrack::Flows(flows) = conntrack {
            self.prefill(proto, flows)?;
        }
        // The established flow: its first packet through berth and through
        // the insert floor (which fills the floors' LRU for the hit floor).
        let client = self.clients.next();
        let first = flows::first_packet(proto, client);
        self.first_packets(&first)?;
        Ok(Fixed { non_service: flows::non_service_packet(), established: flows::later_packet(proto, client) })
    }

    /// Runs a flow's first packet through berth (stats on) and the insert
    /// floor, checking both created state.
    fn first_packets(&mut self, packet: &[u8]) -> anyhow::Result<()> {
        let mut out = vec![0u8; packet.len() + 256];
        let b = measure::once(self.berth.program(Counters::On)?, packet, &mut out)?;
        let dst = flows::destination(&out[..b.out_len.min(out.len())]);
        if b.verdict != XDP_PASS || dst.is_none_or(|(addr, _)| addr == flows::TARGET_VIP) {
            bail!("berth did not translate a first packet (verdict {}, destination {dst:?})", b.verdict);
        }
        let f = measure::once(self.floors.program(Floor::LruInsert)?, packet, &mut out)?;
        if f.verdict != XDP_TX {
            bail!("the insert floor did not insert a first packet (verdict {})", f.verdict);
        }
        Ok(())
    }

    /// `flows` existing flows to the target Service, created by their first
    /// packets, spread over every CPU (the LRU lists are per CPU).
    fn prefill(&mut self, proto: Proto, flows: u32) -> anyhow::Result<()> {
        let t = Instant::now();
        let clients: Vec<flows::Client> = (0..flows).map(|_| self.clients.next()).collect();
        let cpus = self.cpus.clone();
        for (k, &cpu) in cpus.iter().enumerate() {
            measure::pin_to(cpu)?;
            for c in clients.iter().skip(k).step_by(cpus.len()) {
                self.first_packets(&flows::first_packet(proto, *c))?;
            }
        }
        measure::pin_to(self.cpu)?;
        let berth_entries = self.berth.ct.keys().count();
        let floor_entries = self.floors.ct.keys().count();
        if berth_entries != 2 * flows as usize || floor_entries != flows as usize {
            bail!(
                "prefilling {flows} flows left {berth_entries} berth and {floor_entries} floor conntrack entries \
                 (LRU evictions? conntrack too small)"
            );
        }
        eprintln!("[bench] prefilled {flows} flows over CPUs {cpus:?} in {:.1} s", t.elapsed().as_secs_f64());
        Ok(())
    }

    /// Rounds of batches until every runner has `opts.calls()` samples or
    /// the configuration's time bound passes.
    fn measure(&mut self, runners: &mut [Runner], fixed: &Fixed, opts: &Options) -> anyhow::Result<()> {
        let started = Instant::now();
        let wanted = opts.calls();
        let mut order: Vec<usize> = (0..runners.len()).collect();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        loop {
            // A fresh order every round: a runner that follows another one
            // using the same conntrack map gets the nodes that one just
            // freed, cache-hot. A fixed order would hand that advantage to
            // the same runners every round.
            rng.shuffle(&mut order);
            let mut pending = false;
            for &i in &order {
                let r = &mut runners[i];
                let left = wanted.saturating_sub(r.samples.len());
                if left > 0 {
                    pending = true;
                    self.batch(r, left.min(opts.batch()), fixed)?;
                }
            }
            if !pending || started.elapsed() > opts.bound() {
                break;
            }
        }
        Ok(())
    }

    /// `calls` timed calls of one runner, then (untimed) the deletion of the
    /// conntrack entries its new flows created.
    fn batch(&mut self, r: &mut Runner, calls: usize, fixed: &Fixed) -> anyhow::Result<()> {
        let proto = r.case.proto();
        let mut out = vec![0u8; 2048];
        let mut created: Vec<berth_ct_key> = Vec::new();
        {
            let prog = match r.peer {
                Peer::Berth(c) => self.berth.program(c)?,
                Peer::Floor(f) => self.floors.program(f)?,
            };
            for _ in 0..calls {
                let client = r.case.new_flow().then(|| self.clients.next());
                let fresh;
                let input: &[u8] = match (r.case, client) {
                    (Case::NonService, _) => &fixed.non_service,
                    (_, Some(c)) => {
                        fresh = flows::first_packet(proto, c);
                        &fresh
                    }
                    (_, None) => &fixed.established,
                };
                let call = measure::once(prog, input, &mut out)?;
                r.samples.push(f64::from(call.ns));
                let output = &out[..call.out_len.min(out.len())];
                if let Err(why) = check(r.case, r.peer, input, output, call.verdict) {
                    r.fail(why);
                }
                if let Some(c) = client {
                    created.push(flows::forward_key(proto, c));
                    match (r.peer, flows::destination(output)) {
                        (Peer::Berth(_), Some(dst)) => created.push(flows::reverse_key(proto, c, dst)),
                        (Peer::Floor(Floor::LruInsert2), _) => {
                            created.push(flows::reverse_key(proto, c, (flows::TARGET_VIP, proto.target_port())));
                        }
                        _ => {}
                    }
                }
            }
        }
        let ct = match r.peer {
            Peer::Berth(_) => &mut self.berth.ct,
            Peer::Floor(_) => &mut self.floors.ct,
        };
        for key in &created {
            if ct.remove(key).is_err() {
                r.fail(format!("a new flow left no conntrack entry {}:{}", key.saddr(), key.sport()));
            }
        }
        Ok(())
    }

    /// The non-rewriting programs in loop mode, next to their repeat = 1
    /// figures from `runners`: shows the fixed cost of a single-run call.
    fn loop_mode(
        &mut self,
        sink: &mut Sink,
        fixed: &Fixed,
        n: u32,
        conntrack: Conntrack,
        runners: &[Runner],
        opts: &Options,
    ) -> anyhow::Result<()> {
        let programs = [
            (Case::TcpEstablished, Peer::Floor(Floor::Pass)),
            (Case::NonService, Peer::Floor(Floor::Lookup)),
            (Case::TcpEstablished, Peer::Floor(Floor::LruHit)),
            (Case::NonService, Peer::Berth(Counters::On)),
            (Case::NonService, Peer::Berth(Counters::Off)),
        ];
        let mut out = vec![0u8; 2048];
        for (case, peer) in programs {
            let input = if case == Case::NonService { &fixed.non_service } else { &fixed.established };
            let prog = match peer {
                Peer::Berth(c) => self.berth.program(c)?,
                Peer::Floor(f) => self.floors.program(f)?,
            };
            let mut samples = Vec::with_capacity(opts.loop_calls());
            let mut wrong = None;
            for _ in 0..opts.loop_calls() {
                let call = measure::looped(prog, input, &mut out, LOOP_REPEAT)?;
                samples.push(f64::from(call.ns));
                if let Err(why) = check(case, peer, input, &out[..call.out_len.min(out.len())], call.verdict) {
                    wrong.get_or_insert(why);
                }
            }
            let single = runners.iter().find(|r| r.case == case && r.peer == peer).and_then(Runner::stats);
            let mut rec = Record::new(T_LOOP, peer_label(peer), peer_name(peer))
                .param("services", n)
                .param("conntrack", conntrack.label())
                .param("packet", case.name());
            if let Some(s) = Stats::of(&mut samples) {
                rec = rec.figure("median", s.median, "ns").figure("p90", s.p90, "ns");
            }
            if let Some(s) = single {
                rec = rec.figure("median, repeat = 1", s.median, "ns");
            }
            rec = rec.figure("calls", opts.loop_calls() as f64, "").figure("repeat", f64::from(LOOP_REPEAT), "");
            if let Some(why) = wrong {
                rec = rec.outcome(Outcome::Failed(why));
            }
            sink.record(rec)?;
        }
        Ok(())
    }

    fn record_sizes(&mut self, sink: &mut Sink) -> anyhow::Result<()> {
        for (program, verified) in self.berth.verified_counts() {
            let mut rec =
                Record::new(T_INSNS, program.as_str(), "berth").figure("verified", f64::from(verified), "insns");
            if program == berth_ebpf::programs::XDP_LB {
                let (xlated, jited) = self.berth.xdp_size(Counters::On)?;
                rec = rec.figure("translated", f64::from(xlated), "insns").figure("JIT", f64::from(jited), "B");
            } else if program.starts_with(berth_ebpf::programs::XDP_LB) {
                let (xlated, jited) = self.berth.xdp_size(Counters::Off)?;
                rec = rec.figure("translated", f64::from(xlated), "insns").figure("JIT", f64::from(jited), "B");
            }
            sink.record(rec)?;
        }
        for (program, verified, xlated, jited) in self.floors.instruction_counts()? {
            sink.record(
                Record::new(T_INSNS, program, "floor")
                    .figure("verified", f64::from(verified), "insns")
                    .figure("translated", f64::from(xlated), "insns")
                    .figure("JIT", f64::from(jited), "B"),
            )?;
        }
        Ok(())
    }
}

/// xorshift64: a reproducible shuffle without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn shuffle(&mut self, v: &mut [usize]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Whether one call did what the program must do with that packet: the
/// benchmark must not time a path that is not the one it names.
fn check(case: Case, peer: Peer, input: &[u8], output: &[u8], verdict: u32) -> Result<(), String> {
    match peer {
        Peer::Floor(floor) => {
            let want = match floor {
                Floor::Pass => XDP_PASS,
                Floor::Lookup if case == Case::NonService => XDP_PASS,
                Floor::Lookup | Floor::LruHit | Floor::LruInsert | Floor::LruInsert2 => XDP_TX,
            };
            if verdict != want {
                return Err(format!("{} returned {verdict}, expected {want}", floor.program()));
            }
        }
        Peer::Berth(_) => {
            if verdict != XDP_PASS {
                return Err(format!("berth returned {verdict}, expected XDP_PASS"));
            }
            if case == Case::NonService {
                if output != input {
                    return Err("berth changed a non-Service packet".to_owned());
                }
            } else {
                match flows::destination(output) {
                    Some((addr, port)) if addr != flows::TARGET_VIP && port == flows::BACKEND_PORT => {}
                    other => return Err(format!("berth did not translate the packet (destination {other:?})")),
                }
            }
        }
    }
    Ok(())
}

fn peer_name(peer: Peer) -> &'static str {
    match peer {
        Peer::Berth(Counters::On) => "berth-xdp",
        Peer::Berth(Counters::Off) => "berth-xdp (stats off)",
        Peer::Floor(f) => f.peer(),
    }
}

fn peer_label(peer: Peer) -> &'static str {
    match peer {
        Peer::Berth(_) => "berth, non-Service packet",
        Peer::Floor(f) => f.describe(),
    }
}

fn find(runners: &[Runner], case: Case, peer: Peer) -> Option<&Runner> {
    runners.iter().find(|r| r.case == case && r.peer == peer)
}

/// The rows of one configuration: berth against its floor, the floors, and
/// the price of the counters.
fn record_config(
    sink: &mut Sink,
    runners: &[Runner],
    n: u32,
    conntrack: Conntrack,
    wanted: usize,
) -> anyhow::Result<()> {
    let mut cases: Vec<Case> = Vec::new();
    for r in runners {
        if matches!(r.peer, Peer::Berth(_)) && !cases.contains(&r.case) {
            cases.push(r.case);
        }
    }
    for &case in &cases {
        let (Some(on), Some(floor)) =
            (find(runners, case, Peer::Berth(Counters::On)), find(runners, case, Peer::Floor(case.floor())))
        else {
            continue;
        };
        let mut rec = Record::new(T_CASES, case.name(), peer_name(Peer::Berth(Counters::On)))
            .param("services", n)
            .param("conntrack", conntrack.label())
            .param("floor", case.floor().peer());
        let mut outcome = on.outcome(wanted);
        if let (Some(b), Some(f), Some(bm), Some(fm)) =
            (on.stats(), floor.stats(), on.trimmed_mean(), floor.trimmed_mean())
        {
            let ratio = b.median / f.median;
            rec = rec
                .figure("median", b.median, "ns")
                .figure("p90", b.p90, "ns")
                .figure("floor median", f.median, "ns")
                .figure("floor p90", f.p90, "ns")
                .figure("ratio", ratio, "x")
                .figure("ratio of means ≤ p99", bm / fm, "x")
                .figure("calls", b.n as f64, "")
                .goal(case.goal(), ratio <= case.limit());
        }
        if let (Outcome::Measured | Outcome::TimedOut(_), Outcome::Failed(why)) = (&outcome, floor.outcome(wanted)) {
            outcome = Outcome::Failed(format!("its floor failed: {why}"));
        }
        sink.record(rec.outcome(outcome))?;
    }
    for r in runners.iter().filter(|r| matches!(r.peer, Peer::Floor(_))) {
        let Peer::Floor(f) = r.peer else { continue };
        let mut rec = Record::new(T_FLOORS, f.describe(), f.peer())
            .param("services", n)
            .param("conntrack", conntrack.label())
            .param("packet", r.case.name());
        if let (Some(s), Some(mean)) = (r.stats(), r.trimmed_mean()) {
            rec = rec
                .figure("median", s.median, "ns")
                .figure("p90", s.p90, "ns")
                .figure("mean ≤ p99", mean, "ns")
                .figure("calls", s.n as f64, "");
        }
        sink.record(rec.outcome(r.outcome(wanted)))?;
    }
    for &case in &cases {
        let (Some(on), Some(off)) =
            (find(runners, case, Peer::Berth(Counters::On)), find(runners, case, Peer::Berth(Counters::Off)))
        else {
            continue;
        };
        let mut rec =
            Record::new(T_STATS, case.name(), "berth-xdp").param("services", n).param("conntrack", conntrack.label());
        if let (Some(a), Some(b), Some(am), Some(bm)) = (on.stats(), off.stats(), on.trimmed_mean(), off.trimmed_mean())
        {
            rec = rec
                .figure("median on", a.median, "ns")
                .figure("median off", b.median, "ns")
                .figure("mean on", am, "ns")
                .figure("mean off", bm, "ns")
                .figure("price (means)", am - bm, "ns")
                .figure("price share", 100.0 * (am - bm) / am, "%");
        }
        sink.record(rec.outcome(off.outcome(wanted)))?;
    }
    for &case in cases.iter().filter(|c| c.new_flow()) {
        let mean = |peer| find(runners, case, peer).and_then(Runner::trimmed_mean);
        let (Some(one), Some(two), Some(on), Some(off)) = (
            mean(Peer::Floor(Floor::LruInsert)),
            mean(Peer::Floor(Floor::LruInsert2)),
            mean(Peer::Berth(Counters::On)),
            mean(Peer::Berth(Counters::Off)),
        ) else {
            continue;
        };
        sink.record(
            Record::new(T_NEW, case.name(), "berth-xdp")
                .param("services", n)
                .param("conntrack", conntrack.label())
                .figure("floor: 1 insert", one, "ns")
                .figure("diag: 2 inserts", two, "ns")
                .figure("berth, stats off", off, "ns")
                .figure("berth", on, "ns")
                .figure("2nd insert", two - one, "ns")
                .figure("rest of berth", off - two, "ns")
                .figure("counters", on - off, "ns")
                .figure("berth / 2-insert diag", on / two, "x"),
        )?;
    }
    Ok(())
}

/// Each case at the most Services against 1 Service (berth, and its floor
/// for context).
fn record_scale(sink: &mut Sink, done: &[Measured], counts: &[u32]) -> anyhow::Result<()> {
    let (Some(&low), Some(&high)) = (counts.first(), counts.last()) else { return Ok(()) };
    if low == high {
        return Ok(());
    }
    let median = |case: Case, peer: Peer, n: u32, ct: Conntrack| {
        done.iter()
            .find(|m| m.case == case && m.peer == peer && m.services == n && m.conntrack == ct)
            .and_then(|m| if matches!(m.outcome, Outcome::Failed(_)) { None } else { m.stats.map(|s| s.median) })
    };
    for conntrack in [Conntrack::Empty, Conntrack::Flows(PREFILL_FLOWS)] {
        for case in Case::ALL {
            let berth = Peer::Berth(Counters::On);
            let floor = Peer::Floor(case.floor());
            let mut rec = Record::new(T_SCALE, case.name(), "berth-xdp")
                .param("conntrack", conntrack.label())
                .param("services", format!("{high} vs {low}"));
            match (median(case, berth, low, conntrack), median(case, berth, high, conntrack)) {
                (Some(a), Some(b)) => {
                    rec = rec
                        .figure(format!("median at {low}"), a, "ns")
                        .figure(format!("median at {high}"), b, "ns")
                        .figure("ratio", b / a, "x");
                    if let (Some(fa), Some(fb)) =
                        (median(case, floor, low, conntrack), median(case, floor, high, conntrack))
                    {
                        // The floor has no Service-count dependence beyond its
                        // one hash lookup: when it moves as much as berth, the
                        // machine or the LRU state moved, not berth's scaling.
                        rec = rec.figure("floor ratio", fb / fa, "x").figure(
                            "berth/floor ratio",
                            (b / fb) / (a / fa),
                            "x",
                        );
                    }
                    rec = rec.goal(format!("≤ 1.10× at {low} Service"), b / a <= 1.10);
                }
                _ => rec = rec.outcome(Outcome::Failed("no figure at one of the two Service counts".to_owned())),
            }
            sink.record(rec)?;
        }
    }
    Ok(())
}
