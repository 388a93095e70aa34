//! berth under test: its XDP program loaded twice against one set of maps
//! in a private pin directory, with per-CPU counters on and compiled out.

use std::path::Path;

use anyhow::Context;
use aya::programs::Xdp;
use berth_agent::datapath::{Datapath, DatapathOptions, DesiredService, MapLimits, Maps, PinDir, maps::ConntrackMap};
use berth_ebpf::programs::XDP_LB;

/// Where the benchmark pins berth's maps: `<this>/<unique instance>/`.
const BPFFS_ROOT: &str = "/sys/fs/bpf/berth-bench";

/// Map sizes for up to 100k Services with [`super::flows::BACKENDS_PER_SERVICE`]
/// backends each (WRR: one slot per backend, two epochs).
pub fn limits() -> MapLimits {
    MapLimits { services: 131_072, backends: 524_288, schedule_slots: 1 << 20, ..MapLimits::default() }
}

/// Per-CPU traffic counters: the global `berth_cfg_stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counters {
    On,
    Off,
}

/// Removes the pin directory (and with it every pinned map) on drop, also
/// when the benchmark fails half-way.
struct PinGuard(PinDir);

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.remove_all() {
            eprintln!("[bench] cleanup of {}: {e}", self.0.path().display());
        }
        // Shared by concurrent runs: removed only when empty.
        let _ = std::fs::remove_dir(BPFFS_ROOT);
    }
}

pub struct Berth {
    on: Datapath,
    off: Datapath,
    /// Our own handle on `berth_ct_v1` (the Datapath's handles are shared).
    pub ct: ConntrackMap,
    // Last: dropped after the objects that use the pins.
    _pins: PinGuard,
}

impl Berth {
    /// Loads both variants (verifying them) into a fresh pin directory.
    ///
    /// # Errors
    /// No bpffs, or a load/verifier failure.
    pub fn load() -> anyhow::Result<Self> {
        let instance = format!("packet-{}-{}", std::process::id(), berth_tests::short_id());
        let pins = PinDir::new(Path::new(BPFFS_ROOT), &instance);
        let guard = PinGuard(pins.clone());
        let options = |stats| DatapathOptions {
            pins: pins.clone(),
            limits: limits(),
            uplink: None,
            socket_lb_cgroup: None,
            stats,
        };
        let on = Datapath::load(options(true)).context("loading berth (stats on)")?;
        // Same pins: the second copy of the programs shares every map.
        let off = Datapath::load(options(false)).context("loading berth (stats off)")?;
        let ct = Maps::open(&pins).context("opening berth's maps")?.conntrack;
        Ok(Self { on, off, ct, _pins: guard })
    }

    /// Programs exactly `services` (through the stats-on copy; the maps are
    /// shared).
    ///
    /// # Errors
    /// A full map or a failed write.
    pub fn apply(&mut self, services: &[DesiredService]) -> anyhow::Result<()> {
        self.on.apply(services).context("programming Services")?;
        Ok(())
    }

    /// # Errors
    /// If the program is missing (cannot happen after [`Berth::load`]).
    pub fn program(&mut self, counters: Counters) -> anyhow::Result<&Xdp> {
        let dp = match counters {
            Counters::On => &mut self.on,
            Counters::Off => &mut self.off,
        };
        Ok(dp.objects_mut().xdp.program(XDP_LB).context("berth_xdp_lb missing")?.try_into()?)
    }

    /// Verified instruction counts of every berth program (stats on), plus
    /// the XDP program with counters compiled out.
    pub fn verified_counts(&self) -> Vec<(String, u32)> {
        let mut counts: Vec<(String, u32)> =
            self.on.instruction_counts().iter().map(|(name, n)| ((*name).to_owned(), *n)).collect();
        for (name, n) in self.off.instruction_counts() {
            if *name == XDP_LB {
                counts.push((format!("{name} (stats off)"), *n));
            }
        }
        counts
    }

    /// (translated instructions, JIT bytes) of the XDP program.
    ///
    /// # Errors
    /// If the kernel does not report program info.
    pub fn xdp_size(&mut self, counters: Counters) -> anyhow::Result<(u32, u32)> {
        let info = self.program(counters)?.info()?;
        Ok((info.size_translated().unwrap_or(0) / 8, info.size_jitted()))
    }
}
