//! The data plane: load berth's kernel programs, keep them attached through
//! pinned links, and program the Service maps.
//!
//! # Design
//! One owner for kernel state: a [`Datapath`] holds the loaded objects, the
//! map handles and the [`reconcile::Table`]; callers hand it complete desired
//! states ([`Datapath::apply`]) or changes to single Services
//! ([`Datapath::upsert`], [`Datapath::remove`], [`Datapath::apply_changes`]). It runs on a dedicated thread in the agent
//! (map writes are blocking syscalls). Start-up is: load objects against the
//! pinned maps → recover the table from the maps → attach (swapping programs
//! into existing links) → apply. Forwarding never stops across a restart:
//! the links and maps outlive the process.
//!
//! # Limitations
//! IPv4 TCP/UDP only. Map sizes are fixed at first load (see
//! [`loader::MapLimits`]). See docs/dataplane.md for the full list.

pub mod loader;
pub mod maps;
pub mod reconcile;
pub mod schedule;
mod sys;

use std::path::PathBuf;

use aya::maps::MapError;
use berth_ebpf::abi::{
    BackendId, ServiceId, berth_backend, berth_schedule_key, berth_service_key, berth_service_value,
};

pub use loader::{AttachOutcome, AttachPoint, LoadError, MapLimits, PinDir};
pub use maps::{Maps, MapsError};
pub use reconcile::{ApplyError, ApplyReport, DesiredBackend, DesiredService, ServiceAddr, Table};

/// Everything needed to bring the data plane up.
#[derive(Debug, Clone)]
pub struct DatapathOptions {
    pub pins: PinDir,
    pub limits: MapLimits,
    /// Attach XDP (ingress) and reverse NAT (tc egress) here.
    pub uplink: Option<String>,
    /// Attach the socket-LB hooks to this cgroup2 directory.
    pub socket_lb_cgroup: Option<PathBuf>,
    pub stats: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// The loaded, attached data plane of one berth instance.
pub struct Datapath {
    options: DatapathOptions,
    loaded: loader::Loaded,
    maps: Maps,
    table: Table,
    attached: Vec<(AttachPoint, AttachOutcome)>,
    /// Possible CPUs: the length of every per-CPU value.
    ncpus: usize,
    instruction_counts: Vec<(&'static str, u32)>,
}

impl Datapath {
    /// Loads the programs against the pinned maps, rebuilds the table from
    /// what the maps hold, and attaches every configured hook (replacing the
    /// programs of existing pinned links atomically).
    ///
    /// # Errors
    /// See [`DatapathError`]; a verifier rejection carries its log.
    pub fn start(options: DatapathOptions) -> Result<Self, DatapathError> {
        let mut dp = Self::load(options)?;
        let points = loader::attach_points(dp.options.uplink.as_deref(), dp.options.socket_lb_cgroup.as_deref());
        dp.attached = loader::attach_all(&mut dp.loaded, &dp.options.pins, &points)?;
        Ok(dp)
    }

    /// Like [`Datapath::start`] but attaches nothing: for BPF_PROG_TEST_RUN
    /// tests and benchmarks.
    ///
    /// # Errors
    /// See [`DatapathError`].
    pub fn load(options: DatapathOptions) -> Result<Self, DatapathError> {
        let mut loaded = loader::load(&loader::LoadOptions {
            pins: options.pins.clone(),
            limits: options.limits,
            stats: options.stats,
        })?;
        // Verify every program before touching any map or hook: a verifier
        // rejection must leave the running data plane as it was.
        let instruction_counts = loader::verify_all(&mut loaded)?;
        let mut maps = Maps::open(&options.pins)?;
        let recovered = read_recovered(&maps, options.limits.backends)?;
        let limits = options.limits;
        let (table, garbage) = Table::recover(limits.services, limits.backends, limits.schedule_slots, recovered);
        for key in &garbage.slots {
            remove_ignoring_missing(maps.schedule.remove(key))
                .map_err(|source| map_op("berth_schedule_v1", "delete stale slot", source))?;
        }
        for key in &garbage.services {
            remove_ignoring_missing(maps.services.remove(key))
                .map_err(|source| map_op("berth_services_v1", "delete stale service", source))?;
        }
        let ncpus = aya::util::nr_cpus().map_err(|(_, io_error)| {
            map_op(
                "berth_svc_stats_v1",
                "count CPUs",
                MapError::SyscallError(aya::sys::SyscallError { call: "nr_cpus", io_error }),
            )
        })?;
        Ok(Self { options, loaded, maps, table, attached: Vec::new(), ncpus, instruction_counts })
    }

    /// Programs the kernel to serve exactly `desired`.
    ///
    /// # Errors
    /// A full map or a failed write; the kernel keeps serving what it had
    /// for every Service not yet reached.
    pub fn apply(&mut self, desired: &[DesiredService]) -> Result<ApplyReport, DatapathError> {
        let mut writer = KernelMaps { maps: &mut self.maps, ncpus: self.ncpus };
        Ok(self.table.apply(&mut writer, desired)?)
    }

    /// Programs the changes to some Services (see [`Table::apply_changes`]);
    /// every other Service stays as it is. The cost does not grow with the
    /// number of Services, unlike [`Datapath::apply`].
    ///
    /// # Errors
    /// As [`Datapath::apply`].
    pub fn apply_changes(
        &mut self,
        removed: &[ServiceAddr],
        upserted: &[DesiredService],
    ) -> Result<ApplyReport, DatapathError> {
        let mut writer = KernelMaps { maps: &mut self.maps, ncpus: self.ncpus };
        Ok(self.table.apply_changes(&mut writer, removed, upserted)?)
    }

    /// Creates or updates one Service, leaving the others alone.
    ///
    /// # Errors
    /// As [`Datapath::apply`].
    pub fn upsert(&mut self, service: &DesiredService) -> Result<ApplyReport, DatapathError> {
        self.apply_changes(&[], std::slice::from_ref(service))
    }

    /// Removes one Service (nothing if it is not programmed).
    ///
    /// # Errors
    /// As [`Datapath::apply`].
    pub fn remove(&mut self, service: ServiceAddr) -> Result<ApplyReport, DatapathError> {
        self.apply_changes(&[service], &[])
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    pub fn attached(&self) -> &[(AttachPoint, AttachOutcome)] {
        &self.attached
    }

    pub fn options(&self) -> &DatapathOptions {
        &self.options
    }

    /// The loaded objects (for BPF_PROG_TEST_RUN in tests and benchmarks).
    pub fn objects_mut(&mut self) -> &mut loader::Loaded {
        &mut self.loaded
    }

    /// Verified instruction count of every program (as the kernel reports
    /// it after loading).
    pub fn instruction_counts(&self) -> &[(&'static str, u32)] {
        &self.instruction_counts
    }
}

fn map_op(name: &'static str, op: &str, source: MapError) -> MapsError {
    MapsError::Op { name, op: op.to_owned(), source }
}

fn remove_ignoring_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// Reads back what a previous agent left in the pinned maps.
fn read_recovered(maps: &Maps, max_backends: u32) -> Result<reconcile::Recovered, MapsError> {
    let mut rec = reconcile::Recovered::default();
    for item in maps.services.iter() {
        rec.services.push(item.map_err(|e| map_op("berth_services_v1", "iterate", e))?);
    }
    // An array scan: one syscall per slot, once per start.
    for id in 0..max_backends {
        let be: berth_backend = maps.backends.get(&id, 0).map_err(|e| map_op("berth_backends_v1", "read", e))?;
        if be.state != 0 || be.generation != 0 {
            rec.backends.push((id, be));
        }
    }
    for item in maps.schedule.iter() {
        rec.slots.push(item.map_err(|e| map_op("berth_schedule_v1", "iterate", e))?);
    }
    Ok(rec)
}

fn per_cpu_zero<T: aya::Pod + Default>(
    name: &'static str,
    ncpus: usize,
) -> Result<aya::maps::PerCpuValues<T>, MapsError> {
    aya::maps::PerCpuValues::try_from(vec![T::default(); ncpus]).map_err(|io_error| {
        map_op(name, "zero", MapError::SyscallError(aya::sys::SyscallError { call: "nr_cpus", io_error }))
    })
}

/// The kernel implementation of the update protocol's writes.
struct KernelMaps<'a> {
    maps: &'a mut Maps,
    ncpus: usize,
}

impl reconcile::MapWriter for KernelMaps<'_> {
    type Error = MapsError;

    fn put_backend(&mut self, id: BackendId, value: &berth_backend) -> Result<(), MapsError> {
        self.maps.backends.set(id.0, *value, 0).map_err(|e| map_op("berth_backends_v1", "write backend", e))
    }

    fn put_slot(&mut self, key: &berth_schedule_key, backend: BackendId) -> Result<(), MapsError> {
        self.maps.schedule.insert(key, backend.0, 0).map_err(|e| map_op("berth_schedule_v1", "write slot", e))
    }

    fn delete_slot(&mut self, key: &berth_schedule_key) -> Result<(), MapsError> {
        remove_ignoring_missing(self.maps.schedule.remove(key))
            .map_err(|e| map_op("berth_schedule_v1", "delete slot", e))
    }

    fn put_service(&mut self, key: &berth_service_key, value: &berth_service_value) -> Result<(), MapsError> {
        self.maps.services.insert(key, value, 0).map_err(|e| map_op("berth_services_v1", "write service", e))
    }

    fn delete_service(&mut self, key: &berth_service_key) -> Result<(), MapsError> {
        remove_ignoring_missing(self.maps.services.remove(key))
            .map_err(|e| map_op("berth_services_v1", "delete service", e))
    }

    fn reset_service_counters(&mut self, id: ServiceId) -> Result<(), MapsError> {
        let zero = per_cpu_zero("berth_svc_stats_v1", self.ncpus)?;
        self.maps.svc_stats.set(id.0, zero, 0).map_err(|e| map_op("berth_svc_stats_v1", "zero", e))?;
        let zero = per_cpu_zero("berth_wrr_cursor_v1", self.ncpus)?;
        self.maps.wrr_cursor.set(id.0, zero, 0).map_err(|e| map_op("berth_wrr_cursor_v1", "zero", e))
    }

    fn reset_backend_counters(&mut self, id: BackendId) -> Result<(), MapsError> {
        let zero = per_cpu_zero("berth_backend_stats_v1", self.ncpus)?;
        self.maps.backend_stats.set(id.0, zero, 0).map_err(|e| map_op("berth_backend_stats_v1", "zero", e))
    }
}
