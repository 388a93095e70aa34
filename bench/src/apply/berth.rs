//! berth's programming time: the agent's own reconciler writing real pinned
//! maps, timed from the change being handed to it to the maps written.
//!
//! # Design
//! Each scale loads berth with [`Datapath::load`] (programs verified, maps
//! created and pinned, nothing attached) in a private pin directory under
//! `/sys/fs/bpf/berth-bench/`, removed on drop (also on error), with map
//! limits sized to the scale so that the kernel's memory figures are what a
//! node would pay. Then:
//!
//! - **full load**: every Service × 4 backends in one [`Datapath::apply`] on
//!   fresh maps, repeated on fresh maps;
//! - **one change**: one backend added to a 4-backend WRR Service, through
//!   the complete desired set ([`Datapath::apply`], what standalone mode and
//!   the periodic reconcile do: it diffs every Service) and through
//!   [`Datapath::upsert`] (what the control plane's watch deltas use), each
//!   on a different, untouched Service, `Instant` around the one call;
//! - **map memory**: `memlock` of each map from `/proc/self/fdinfo`, per map,
//!   per Service and per backend stored;
//! - **write cost**: the price of each kind of map syscall the reconciler
//!   makes, timed one by one on keys no Service uses, and from it where a
//!   full load's and a change's time goes (syscalls × their cost, the rest
//!   is userspace).
//!
//! # Limitations
//! Timings include whatever else the machine is doing; the p99 of 100
//! changes is the second-worst of them, so one preemption shows. Per-CPU
//! maps' memory grows with the CPU count (reported as `cpus`).

use std::{
    fs,
    net::Ipv4Addr,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    time::Instant,
};

use anyhow::{Context, ensure};
use aya::maps::{MapData, PerCpuValues};
use berth_agent::datapath::{
    ApplyReport, Datapath, DatapathOptions, DesiredBackend, DesiredService, MapLimits, Maps, PinDir,
    schedule::{Algorithm, MaglevTableSize, Weight},
};
use berth_ebpf::abi::{Protocol, berth_backend, berth_schedule_key, berth_service_key, berth_service_value};

use super::Options;
use crate::report::{Record, Sink, Stats};

/// Pin directories of benchmark runs live under this bpffs directory.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf/berth-bench";

const PEER: &str = "berth";
const BACKENDS: usize = 4;

/// One scale of the benchmark.
#[derive(Debug, Clone, Copy)]
struct Scale {
    services: usize,
    /// Full loads, each on fresh maps.
    full_loads: usize,
    /// Changes per API.
    changes: usize,
    /// Whether the goals hold at this scale (quick mode has none).
    goals: bool,
}

fn scales(opts: &Options) -> Vec<Scale> {
    if opts.quick {
        vec![Scale { services: 1_000, full_loads: 2, changes: 10, goals: false }]
    } else {
        vec![
            Scale { services: 10_000, full_loads: 5, changes: 100, goals: true },
            Scale { services: 100_000, full_loads: 3, changes: 100, goals: true },
        ]
    }
}

/// Runs every scale; see the module docs.
///
/// # Errors
/// Loading berth, a failed map write, or a result that makes no sense (a
/// change that did not write what it should).
pub fn run(opts: &Options, sink: &mut Sink) -> anyhow::Result<()> {
    let costs_samples = if opts.quick { 200 } else { 2_000 };
    for scale in scales(opts) {
        run_scale(scale, costs_samples, sink).with_context(|| format!("berth at {} Services", scale.services))?;
    }
    Ok(())
}

fn run_scale(scale: Scale, cost_samples: usize, sink: &mut Sink) -> anyhow::Result<()> {
    let n = scale.services;
    let mut desired: Vec<DesiredService> = (0..n).map(|i| service(i, BACKENDS)).collect();

    // Full load, each time on fresh maps.
    let (mut loads, mut load_cpu) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..scale.full_loads {
        let mut bench = Bench::load(n)?;
        let (start, cpu_start) = (Instant::now(), thread_cpu_ms()?);
        let report = bench.dp.apply(&desired)?;
        loads.push(start.elapsed().as_secs_f64() * 1e3);
        load_cpu.push(thread_cpu_ms()? - cpu_start);
        ensure!(report.services_added == n && report.backends_added == n * BACKENDS, "full load programmed {report:?}");
        last = Some((bench, report));
    }
    let (mut bench, load_report) = last.context("no full load ran")?;
    let load = Stats::of(&mut loads).context("no full load timed")?;
    let load_cpu = Stats::of(&mut load_cpu).context("no full load timed")?;
    let mut row = Record::new("full load", format!("{n} Services × {BACKENDS} backends"), PEER)
        .param("services", n)
        .param("backends", BACKENDS)
        .figure("median_ms", load.median, "ms")
        .figure("p99_ms", load.p99, "ms")
        .figure("n", load.n as f64, "")
        .figure("cpu_ms", load_cpu.median, "ms")
        .figure("writes", load_report.map_writes as f64, "")
        .figure("per_write_us", load_cpu.median * 1e3 / load_report.map_writes as f64, "µs");
    if scale.goals && n == 10_000 {
        row = row.goal("≤ 1 s", load.p99 <= 1_000.0);
    }
    sink.record(row)?;

    memory(&bench, n, sink)?;

    // One change through the complete desired set, then through upsert, each
    // adding a fifth backend to a Service no earlier change touched.
    let stride = (n / (2 * scale.changes)).max(1);
    let mut upsert = None;
    for api in [Api::FullSet, Api::Upsert] {
        let mut times = Vec::with_capacity(scale.changes);
        let mut writes = Vec::with_capacity(scale.changes);
        let mut last_report = ApplyReport::default();
        for c in 0..scale.changes {
            let k = (2 * c + usize::from(api == Api::Upsert)) * stride % n;
            desired[k].backends.push(backend(k, BACKENDS));
            let start = Instant::now();
            let report = match api {
                Api::FullSet => bench.dp.apply(&desired)?,
                Api::Upsert => bench.dp.upsert(&desired[k])?,
            };
            times.push(start.elapsed().as_secs_f64() * 1e3);
            ensure!(
                report.services_updated == 1 && report.backends_added == 1 && report.services_added == 0,
                "one change programmed {report:?}"
            );
            writes.push(report.map_writes as f64);
            last_report = report;
        }
        let t = Stats::of(&mut times).context("no change timed")?;
        let w = Stats::of(&mut writes).context("no change counted")?;
        let mut row = Record::new("one change", format!("add 1 backend to a {BACKENDS}-backend Service"), PEER)
            .param("services", n)
            .param("backends", BACKENDS)
            .param("api", api.name())
            .figure("median_ms", t.median, "ms")
            .figure("p99_ms", t.p99, "ms")
            .figure("n", t.n as f64, "")
            .figure("writes", w.median, "");
        if scale.goals {
            row = row.goal("≤ 1 ms p99", t.p99 <= 1.0);
        }
        sink.record(row)?;
        if api == Api::Upsert {
            upsert = Some((last_report, t));
        }
    }

    let costs = WriteCosts::measure(&bench.pins.0, n, cost_samples)?;
    costs.record(n, sink)?;
    breakdown(n, "full load", &load_report, load_cpu.median, &costs, sink)?;
    if let Some((report, t)) = upsert {
        breakdown(n, "one change (upsert)", &report, t.median, &costs, sink)?;
    }
    Ok(())
}

/// CPU time of this thread: unlike wall time, not inflated while other
/// processes have the CPU (the machine is shared during development).
fn thread_cpu_ms() -> anyhow::Result<f64> {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    ensure!(rc == 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID): {}", std::io::Error::last_os_error());
    Ok(t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// [`Datapath::apply`] with every Service.
    FullSet,
    /// [`Datapath::upsert`] with the changed Service.
    Upsert,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::FullSet => "apply (full set)",
            Api::Upsert => "upsert (incremental)",
        }
    }
}

/// Service `i`: VIP 10.96.0.0/12 + i, port 80/TCP, WRR.
fn service(i: usize, backends: usize) -> DesiredService {
    DesiredService {
        name: format!("bench/svc-{i}"),
        vip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i as u32),
        port: 80,
        protocol: Protocol::Tcp,
        algorithm: Algorithm::Wrr,
        maglev_table_size: MaglevTableSize::DEFAULT,
        affinity_timeout_s: None,
        backends: (0..backends).map(|j| backend(i, j)).collect(),
    }
}

/// Backend `j` of Service `i`: 172.16.0.0/12 + 8i + j, port 8080.
fn backend(i: usize, j: usize) -> DesiredBackend {
    DesiredBackend {
        addr: Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + (8 * i + j) as u32),
        port: 8080,
        weight: Weight::ONE,
        terminating: false,
    }
}

/// Map sizes for `n` Services of up to 5 backends: a little headroom, so
/// that the memory of preallocated maps is close to what is stored.
fn limits(n: usize) -> MapLimits {
    let n = n as u32;
    MapLimits {
        services: n + n / 64 + 64,
        backends: (BACKENDS as u32) * n + n / 8 + 1024,
        // Not preallocated: the limit costs nothing. Two epochs of up to 5.
        schedule_slots: 10 * n + 4096,
        // Not what this benchmark programs; small and fixed.
        conntrack: 4096,
        affinity: 1024,
        sock_rev: 1024,
    }
}

/// Unpins (and so frees) a benchmark's maps on drop.
struct Pins(PinDir);

impl Drop for Pins {
    fn drop(&mut self) {
        if let Err(e) = self.0.remove_all() {
            eprintln!("berth-bench: cleanup of {}: {e}", self.0.path().display());
        }
        // Only if empty: concurrent runs have their own directories.
        let _ = fs::remove_dir(BPFFS_ROOT);
    }
}

/// A loaded berth; the datapath drops (closing its maps) before the pins.
struct Bench {
    dp: Datapath,
    pins: Pins,
}

impl Bench {
    fn load(n: usize) -> anyhow::Result<Self> {
        let pins = Pins(PinDir::new(Path::new(BPFFS_ROOT), &berth_tests::unique_name("apply")));
        let dp = Datapath::load(DatapathOptions {
            pins: pins.0.clone(),
            limits: limits(n),
            uplink: None,
            socket_lb_cgroup: None,
            stats: true,
        })
        .context("loading berth (needs root and bpffs)")?;
        Ok(Self { dp, pins })
    }
}

/// The maps a Service's programming writes: (name, keyed by Services?).
const SERVICE_MAPS: [(&str, Per); 6] = [
    ("berth_services_v1", Per::Service),
    ("berth_svc_stats_v1", Per::Service),
    ("berth_wrr_cursor_v1", Per::Service),
    ("berth_backends_v1", Per::Backend),
    ("berth_backend_stats_v1", Per::Backend),
    ("berth_schedule_v1", Per::Slot),
];

/// Flow state: sized by limits, not by the number of Services.
const STATE_MAPS: [&str; 4] = ["berth_ct_v1", "berth_affinity_v1", "berth_sock_rev_v1", "berth_reasons_v1"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Per {
    Service,
    Backend,
    Slot,
}

/// `memlock` and `max_entries` of a pinned map, as the kernel reports them.
fn map_memory(pins: &PinDir, name: &str) -> anyhow::Result<(u64, u32)> {
    let path = pins.map(name);
    let map = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let max_entries = map.info().with_context(|| format!("info of {name}"))?.max_entries();
    let fd = map.fd().as_fd().as_raw_fd();
    let fdinfo = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).context("reading fdinfo")?;
    let memlock = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .with_context(|| format!("no memlock in the fdinfo of {name}"))?
        .trim()
        .parse()
        .context("parsing memlock")?;
    Ok((memlock, max_entries))
}

fn memory(bench: &Bench, n: usize, sink: &mut Sink) -> anyhow::Result<()> {
    let table = bench.dp.table();
    let backends: usize = table.services().map(|(_, s)| s.backends.len()).sum();
    let slots: usize = table.services().map(|(_, s)| s.schedule.len() + s.other_epoch_len as usize).sum();
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e).context("counting CPUs")?;
    let (mut per_service, mut per_backend, mut total) = (0u64, 0u64, 0u64);
    for (name, per) in SERVICE_MAPS {
        let (memlock, max_entries) = map_memory(&bench.pins.0, name)?;
        let stored = match per {
            Per::Service => n,
            Per::Backend => backends,
            Per::Slot => slots,
        };
        match per {
            Per::Service => per_service += memlock,
            // One slot per backend of equal weight: the schedule is part of
            // a backend's cost.
            Per::Backend | Per::Slot => per_backend += memlock,
        }
        total += memlock;
        sink.record(
            Record::new("map memory", name, PEER)
                .param("services", n)
                .param("cpus", cpus)
                .figure("memlock", memlock as f64 / 1024.0, "KiB")
                .figure("max_entries", f64::from(max_entries), "")
                .figure("stored", stored as f64, "")
                .figure("per_stored", memlock as f64 / stored.max(1) as f64, "B")
                .figure("per_capacity", memlock as f64 / f64::from(max_entries.max(1)), "B"),
        )?;
    }
    let mut state = 0u64;
    for name in STATE_MAPS {
        state += map_memory(&bench.pins.0, name)?.0;
    }
    sink.record(
        Record::new("map memory", "per Service (services, svc_stats, wrr_cursor)", PEER)
            .param("services", n)
            .param("cpus", cpus)
            .figure("stored", n as f64, "")
            .figure("per_stored", per_service as f64 / n as f64, "B"),
    )?;
    sink.record(
        Record::new("map memory", "per backend (backends, backend_stats, schedule)", PEER)
            .param("services", n)
            .param("cpus", cpus)
            .figure("stored", backends as f64, "")
            .figure("per_stored", per_backend as f64 / backends.max(1) as f64, "B"),
    )?;
    sink.record(
        Record::new("map memory", "total of the Service maps", PEER).param("services", n).param("cpus", cpus).figure(
            "memlock",
            total as f64 / 1024.0,
            "KiB",
        ),
    )?;
    sink.record(
        Record::new("map memory", "flow state maps at the bench's small limits (not per Service)", PEER)
            .param("services", n)
            .param("cpus", cpus)
            .figure("memlock", state as f64 / 1024.0, "KiB"),
    )?;
    Ok(())
}

/// Median cost of each kind of map syscall the reconciler makes, in ns.
#[derive(Debug, Clone, Copy)]
struct WriteCosts {
    backend_put: f64,
    per_cpu_zero: f64,
    slot_insert: f64,
    slot_update: f64,
    slot_delete: f64,
    service_insert: f64,
    service_update: f64,
    service_delete: f64,
}

impl WriteCosts {
    /// Times each write one by one, on keys no Service uses (backend ids
    /// above the ones in use, written with what they hold; a schedule of a
    /// Service id that does not exist; VIPs outside the bench's range), all
    /// removed again.
    fn measure(pins: &PinDir, n: usize, samples: usize) -> anyhow::Result<Self> {
        let mut maps = Maps::open(pins)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e).context("counting CPUs")?;
        let max_backend = limits(n).backends;
        let samples = samples.min(max_backend as usize / 8);
        let t = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
            let start = Instant::now();
            f()?;
            Ok(start.elapsed().as_nanos() as f64)
        };
        let mut v: [Vec<f64>; 8] = Default::default();
        for j in 0..samples as u32 {
            let id = max_backend - 1 - j;
            v[0].push(t(&mut || Ok(maps.backends.set(id, berth_backend::default(), 0)?))?);
            // Built per call, as the agent does.
            v[1].push(t(&mut || {
                let zero = PerCpuValues::try_from(vec![berth_ebpf::abi::berth_traffic_stats::default(); cpus])?;
                Ok(maps.backend_stats.set(id, zero, 0)?)
            })?);
        }
        for j in 0..samples as u32 {
            let key = berth_schedule_key { svc_id: u32::MAX - 1, slot: j, epoch: 0, pad: [0; 3] };
            v[2].push(t(&mut || Ok(maps.schedule.insert(key, 0, 0)?))?);
            v[3].push(t(&mut || Ok(maps.schedule.insert(key, 1, 0)?))?);
        }
        for j in 0..samples as u32 {
            let key = berth_schedule_key { svc_id: u32::MAX - 1, slot: j, epoch: 0, pad: [0; 3] };
            v[4].push(t(&mut || Ok(maps.schedule.remove(&key)?))?);
        }
        for j in 0..samples as u32 {
            // 192.0.2.0/24 (TEST-NET-1), one at a time: the preallocated map
            // has little headroom.
            let key = berth_service_key::new(Ipv4Addr::new(192, 0, 2, (j % 250) as u8), 9, Protocol::Udp);
            let value = berth_service_value { svc_id: u32::MAX - 1, ..Default::default() };
            v[5].push(t(&mut || Ok(maps.services.insert(key, value, 0)?))?);
            v[6].push(t(&mut || Ok(maps.services.insert(key, value, 0)?))?);
            v[7].push(t(&mut || Ok(maps.services.remove(&key)?))?);
        }
        let med = v.map(|mut s| Stats::of(&mut s).map_or(f64::NAN, |s| s.median));
        Ok(Self {
            backend_put: med[0],
            per_cpu_zero: med[1],
            slot_insert: med[2],
            slot_update: med[3],
            slot_delete: med[4],
            service_insert: med[5],
            service_update: med[6],
            service_delete: med[7],
        })
    }

    fn record(&self, n: usize, sink: &mut Sink) -> anyhow::Result<()> {
        let rows = [
            ("backend write (array update)", self.backend_put),
            ("counter reset (per-CPU array update)", self.per_cpu_zero),
            ("schedule slot insert (hash, new key)", self.slot_insert),
            ("schedule slot overwrite (hash, existing key)", self.slot_update),
            ("schedule slot delete", self.slot_delete),
            ("Service insert (hash, new key)", self.service_insert),
            ("Service replace (hash, existing key)", self.service_update),
            ("Service delete", self.service_delete),
        ];
        for (case, ns) in rows {
            sink.record(Record::new("write cost", case, PEER).param("services", n).figure("median", ns / 1e3, "µs"))?;
        }
        Ok(())
    }
}

/// Where an apply's time goes: the syscalls its report implies, each at its
/// measured cost; what is left of `measured_ms` (CPU time for the full load,
/// wall time for one change) is userspace: diffing, schedules, allocation.
fn breakdown(
    n: usize,
    what: &str,
    report: &ApplyReport,
    measured_ms: f64,
    costs: &WriteCosts,
    sink: &mut Sink,
) -> anyhow::Result<()> {
    // A new Service: two counter resets (stats, WRR cursor) and an insert; an
    // updated one: a replace. A new backend: a write (its id was never used,
    // nothing is removed here, so its counters are still zero). Slots are new
    // keys (the other epoch was empty).
    let parts = [
        ("counter resets", (2 * report.services_added) as f64, costs.per_cpu_zero),
        ("backend writes", report.backends_added as f64, costs.backend_put),
        ("schedule slot inserts", report.slots_written as f64, costs.slot_insert),
        ("Service inserts", report.services_added as f64, costs.service_insert),
        ("Service replaces", report.services_updated as f64, costs.service_update),
    ];
    let mut syscalls_ms = 0.0;
    for (part, count, ns) in parts {
        if count == 0.0 {
            continue;
        }
        let ms = count * ns / 1e6;
        syscalls_ms += ms;
        sink.record(
            Record::new("where time goes", format!("{what}: {part}"), PEER)
                .param("services", n)
                .figure("count", count, "")
                .figure("ms", ms, "ms")
                .figure("share", 100.0 * ms / measured_ms, "%"),
        )?;
    }
    let rest = measured_ms - syscalls_ms;
    sink.record(
        Record::new("where time goes", format!("{what}: userspace (the rest)"), PEER)
            .param("services", n)
            .figure("ms", rest, "ms")
            .figure("share", 100.0 * rest / measured_ms, "%"),
    )?;
    Ok(())
}
