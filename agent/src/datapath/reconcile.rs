//! Desired Services → map writes, make-before-break.
//!
//! # Design
//! [`Table`] is the agent's view of what the kernel holds: Service ids,
//! backend ids with their generation, and each Service's current schedule.
//! [`Table::apply`] moves the kernel to a desired set of Services with this
//! order for every Service (DESIGN.md §3):
//!
//! 1. write new backends (a reused id gets its new generation while still
//!    REMOVED, and only then its final state) and state changes;
//! 2. write the new schedule into the Service's *other* epoch;
//! 3. replace the Service entry (one atomic hash update) so it names the new
//!    epoch and length;
//! 4. only then mark backends that left the Service REMOVED and free their ids.
//!
//! The previous epoch's slots stay in place until the next change of that
//! Service overwrites them, so a packet that read the old Service entry just
//! before step 3 still finds its slot. Every step is idempotent; applying the
//! same desired state twice writes nothing.
//!
//! Two entry points share that per-Service code: [`Table::apply`] takes the
//! complete desired set (standalone mode, the periodic full reconcile) and
//! diffs every Service, O(Services) of CPU time even when one changed;
//! [`Table::apply_changes`] takes only what changed (the control plane's
//! watch deltas), O(changed Services) — at 100k Services the full diff alone
//! costs far more than the map writes of one change.
//!
//! # Limitations
//! [`Table::apply`] treats the desired set as complete: a Service in the
//! kernel but not in the set is removed. Backend ids are per Service (the
//! same address in two Services uses two ids).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use berth_ebpf::abi::{
    AlgorithmCode, BERTH_SVC_F_AFFINITY, BackendId, BackendState, Protocol, ServiceId, berth_backend,
    berth_schedule_key, berth_service_key, berth_service_value,
};

use super::schedule::{self, Algorithm, MaglevTableSize, Weight};

/// A Service as the configuration (or later the control plane) wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredService {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub algorithm: Algorithm,
    pub maglev_table_size: MaglevTableSize,
    /// ClientIP session affinity timeout; `None` = no affinity.
    pub affinity_timeout_s: Option<u32>,
    pub backends: Vec<DesiredBackend>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DesiredBackend {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub weight: Weight,
    pub terminating: bool,
}

/// {VIP, port, protocol}: a Service's identity in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceAddr {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
}

impl DesiredService {
    pub fn addr(&self) -> ServiceAddr {
        ServiceAddr { vip: self.vip, port: self.port, protocol: self.protocol }
    }
}

impl std::fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.vip, self.port, self.protocol.as_str())
    }
}

/// The map operations the update protocol needs. The kernel implementation
/// writes the pinned maps; tests use a recording fake to check the order.
pub trait MapWriter {
    type Error: std::error::Error + Send + Sync + 'static;
    fn put_backend(&mut self, id: BackendId, value: &berth_backend) -> Result<(), Self::Error>;
    fn put_slot(&mut self, key: &berth_schedule_key, backend: BackendId) -> Result<(), Self::Error>;
    fn delete_slot(&mut self, key: &berth_schedule_key) -> Result<(), Self::Error>;
    fn put_service(&mut self, key: &berth_service_key, value: &berth_service_value) -> Result<(), Self::Error>;
    fn delete_service(&mut self, key: &berth_service_key) -> Result<(), Self::Error>;
    /// Zero the per-CPU counters (and WRR cursor) of a freshly allocated id.
    fn reset_service_counters(&mut self, id: ServiceId) -> Result<(), Self::Error>;
    /// Zero the per-CPU counters of a reused backend id (never-used ids'
    /// counters are still zero and are not reset).
    fn reset_backend_counters(&mut self, id: BackendId) -> Result<(), Self::Error>;
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("no free Service id: the services map holds {limit} (raise limits.services)")]
    ServicesFull { limit: u32 },
    #[error("no free backend id: the backends map holds {limit} (raise limits.backends)")]
    BackendsFull { limit: u32 },
    #[error("Service {service}: schedule of {need} slots does not fit (limits.schedule_slots = {limit})")]
    ScheduleFull { service: String, need: u64, limit: u32 },
    #[error("Service {service}: writing the kernel maps")]
    Write {
        service: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// One backend as the kernel holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendSlot {
    pub id: BackendId,
    pub generation: u32,
    pub state: BackendState,
    pub weight: Weight,
}

/// One Service as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub name: String,
    pub id: ServiceId,
    pub value: berth_service_value,
    /// The current epoch's slots, as backend ids.
    pub schedule: Vec<BackendId>,
    /// Slots still present in the other epoch (from two generations ago).
    pub other_epoch_len: u32,
    pub backends: BTreeMap<(Ipv4Addr, u16), BackendSlot>,
}

/// What an apply changed, for logs and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub services_added: usize,
    pub services_updated: usize,
    pub services_removed: usize,
    pub backends_added: usize,
    pub backends_removed: usize,
    pub slots_written: usize,
    /// [`MapWriter`] calls made: one map syscall each, except the counter
    /// resets (one per per-CPU map they zero).
    pub map_writes: usize,
}

impl ApplyReport {
    pub fn changed(&self) -> bool {
        *self != ApplyReport::default()
    }
}

/// Id allocator: lowest free id first, so ids stay dense and small.
#[derive(Debug, Clone, Default)]
struct Ids {
    free: BTreeSet<u32>,
    next: u32,
    limit: u32,
}

impl Ids {
    fn new(limit: u32) -> Self {
        Self { free: BTreeSet::new(), next: 0, limit }
    }

    fn take(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop_first() {
            return Some(id);
        }
        (self.next < self.limit).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    fn release(&mut self, id: u32) {
        self.free.insert(id);
    }

    /// Marks `id` used (recovery from pinned maps).
    fn claim(&mut self, id: u32) {
        while self.next <= id {
            self.free.insert(self.next);
            self.next += 1;
        }
        self.free.remove(&id);
    }
}

/// The agent's view of the kernel's Service tables.
#[derive(Debug, Clone)]
pub struct Table {
    services: BTreeMap<ServiceAddr, ServiceEntry>,
    service_ids: Ids,
    backend_ids: Ids,
    /// Last generation written to each backend id (ids never used: absent).
    generations: BTreeMap<u32, u32>,
    schedule_limit: u32,
    slots_in_use: u64,
}

/// What recovery read back from pinned maps.
#[derive(Debug, Default, Clone)]
pub struct Recovered {
    pub services: Vec<(berth_service_key, berth_service_value)>,
    /// (id, value) of every backend slot ever used (state != FREE or gen > 0).
    pub backends: Vec<(u32, berth_backend)>,
    /// Every schedule slot present.
    pub slots: Vec<(berth_schedule_key, u32)>,
}

/// Stale kernel state found during recovery, to delete before applying.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryGarbage {
    pub slots: Vec<berth_schedule_key>,
    pub services: Vec<berth_service_key>,
}

impl Table {
    pub fn new(max_services: u32, max_backends: u32, max_slots: u32) -> Self {
        Self {
            services: BTreeMap::new(),
            service_ids: Ids::new(max_services),
            backend_ids: Ids::new(max_backends),
            generations: BTreeMap::new(),
            schedule_limit: max_slots,
            slots_in_use: 0,
        }
    }

    /// Rebuilds the view from what pinned maps hold, so a restarted agent
    /// changes only what differs. Service names are unknown until the next
    /// apply. Returns kernel garbage (slots of unknown Services, entries that
    /// cannot be interpreted) for the caller to delete.
    pub fn recover(max_services: u32, max_backends: u32, max_slots: u32, from: Recovered) -> (Self, RecoveryGarbage) {
        let mut table = Table::new(max_services, max_backends, max_slots);
        let mut garbage = RecoveryGarbage::default();
        let mut by_id: BTreeMap<u32, ServiceAddr> = BTreeMap::new();
        for (key, value) in from.services {
            let Some(protocol) = key.protocol() else {
                garbage.services.push(key);
                continue;
            };
            if value.svc_id >= max_services || by_id.contains_key(&value.svc_id) {
                garbage.services.push(key);
                continue;
            }
            let addr = ServiceAddr { vip: key.vip(), port: key.port(), protocol };
            table.service_ids.claim(value.svc_id);
            by_id.insert(value.svc_id, addr);
            table.services.insert(
                addr,
                ServiceEntry {
                    name: String::new(),
                    id: ServiceId(value.svc_id),
                    value,
                    schedule: Vec::new(),
                    other_epoch_len: 0,
                    backends: BTreeMap::new(),
                },
            );
        }
        for (id, be) in from.backends {
            if id >= max_backends {
                continue;
            }
            table.generations.insert(id, be.generation);
            let state = be.backend_state();
            let owner = by_id.get(&be.svc_id).and_then(|addr| table.services.get_mut(addr));
            match (state, owner) {
                (BackendState::Active | BackendState::Terminating, Some(entry)) => {
                    table.backend_ids.claim(id);
                    entry.backends.insert(
                        (be.addr(), be.port()),
                        // The weight is not in the kernel; the next apply
                        // rebuilds the schedule from the desired weights.
                        BackendSlot { id: BackendId(id), generation: be.generation, state, weight: Weight::ONE },
                    );
                }
                // A slot whose owner is gone is left for the next apply: it
                // is claimed and freed so its next user bumps the gen.
                _ => {
                    table.backend_ids.claim(id);
                    table.backend_ids.release(id);
                }
            }
        }
        let mut slots: BTreeMap<(u32, u8), Vec<(u32, u32)>> = BTreeMap::new();
        for (key, backend) in from.slots {
            match by_id.get(&key.svc_id) {
                Some(_) if key.epoch <= 1 => {
                    slots.entry((key.svc_id, key.epoch)).or_default().push((key.slot, backend))
                }
                _ => garbage.slots.push(key),
            }
        }
        for ((svc_id, epoch), mut list) in slots {
            let Some(entry) = by_id.get(&svc_id).and_then(|addr| table.services.get_mut(addr)) else { continue };
            list.sort_unstable();
            let len = list.last().map_or(0, |(slot, _)| slot + 1);
            table.slots_in_use += list.len() as u64;
            if epoch == entry.value.epoch {
                // A hole in the current schedule is unusable: rewrite it.
                let dense = list.len() as u32 == len && len == entry.value.sched_len;
                entry.schedule = if dense { list.into_iter().map(|(_, b)| BackendId(b)).collect() } else { Vec::new() };
                if !dense {
                    entry.value.sched_len = u32::MAX; // forces a rewrite
                }
            } else {
                entry.other_epoch_len = len;
            }
        }
        (table, garbage)
    }

    pub fn services(&self) -> impl Iterator<Item = (&ServiceAddr, &ServiceEntry)> {
        self.services.iter()
    }

    pub fn service(&self, addr: &ServiceAddr) -> Option<&ServiceEntry> {
        self.services.get(addr)
    }

    /// Moves the kernel to `desired` (the complete set). Services are applied
    /// one by one; on error the ones before stay applied and the Table still
    /// describes the kernel exactly, so the next apply continues from there.
    ///
    /// # Errors
    /// A full map (ids or schedule slots) or a failed map write.
    pub fn apply<W: MapWriter>(&mut self, maps: &mut W, desired: &[DesiredService]) -> Result<ApplyReport, ApplyError> {
        let wanted: BTreeSet<ServiceAddr> = desired.iter().map(DesiredService::addr).collect();
        // Removals first: they free ids and slots the additions may need.
        let gone: Vec<ServiceAddr> = self.services.keys().filter(|a| !wanted.contains(a)).copied().collect();
        self.apply_changes(maps, &gone, desired)
    }

    /// Applies changes to some Services and leaves every other Service as it
    /// is: `removed` are deleted (absent ones are ignored), then each of
    /// `upserted` is created or moved to its desired state, make-before-break
    /// exactly as in [`Table::apply`] (the same per-Service code). A Service
    /// both removed and upserted ends up as upserted, with a fresh id. Cost
    /// is O(changed Services × log Services), whatever the table size.
    ///
    /// On error the changes before stay applied and the Table still
    /// describes the kernel exactly.
    ///
    /// # Errors
    /// A full map (ids or schedule slots) or a failed map write.
    pub fn apply_changes<W: MapWriter>(
        &mut self,
        maps: &mut W,
        removed: &[ServiceAddr],
        upserted: &[DesiredService],
    ) -> Result<ApplyReport, ApplyError> {
        let mut report = ApplyReport::default();
        let mut maps = Counting { inner: maps, writes: 0 };
        let result = self.changes(&mut maps, removed, upserted, &mut report);
        report.map_writes = maps.writes;
        result.map(|()| report)
    }

    fn changes<W: MapWriter>(
        &mut self,
        maps: &mut W,
        removed: &[ServiceAddr],
        upserted: &[DesiredService],
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        for addr in removed {
            self.remove_service(maps, addr, report)?;
        }
        for svc in upserted {
            self.apply_service(maps, svc, report)?;
        }
        Ok(())
    }

    fn apply_service<W: MapWriter>(
        &mut self,
        maps: &mut W,
        want: &DesiredService,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let addr = want.addr();
        let write_err = |source: W::Error| ApplyError::Write { service: want.name.clone(), source: Box::new(source) };
        let is_new = !self.services.contains_key(&addr);
        if is_new {
            let id = self.service_ids.take().ok_or(ApplyError::ServicesFull { limit: self.service_ids.limit })?;
            if let Err(e) = maps.reset_service_counters(ServiceId(id)) {
                self.service_ids.release(id);
                return Err(write_err(e));
            }
            self.services.insert(
                addr,
                ServiceEntry {
                    name: want.name.clone(),
                    id: ServiceId(id),
                    value: berth_service_value { svc_id: id, epoch: 1, ..Default::default() },
                    schedule: Vec::new(),
                    other_epoch_len: 0,
                    backends: BTreeMap::new(),
                },
            );
        }
        // Split borrows: the entry and the allocators are separate fields.
        let Table { services, backend_ids, generations, schedule_limit, slots_in_use, .. } = self;
        let entry = services.get_mut(&addr).ok_or(ApplyError::ServicesFull { limit: 0 })?;
        entry.name.clone_from(&want.name);
        let mut changed = is_new;

        // 1. Backends: new ones and state changes, before any schedule names them.
        for b in &want.backends {
            let state = if b.terminating { BackendState::Terminating } else { BackendState::Active };
            match entry.backends.get_mut(&(b.addr, b.port)) {
                Some(slot) => {
                    if slot.state != state {
                        let value = berth_backend::new(b.addr, b.port, state, slot.generation, entry.id);
                        maps.put_backend(slot.id, &value).map_err(write_err)?;
                        slot.state = state;
                        changed = true;
                    }
                    slot.weight = b.weight;
                }
                None => {
                    let id = backend_ids.take().ok_or(ApplyError::BackendsFull { limit: backend_ids.limit })?;
                    let previous = generations.get(&id).copied();
                    let generation = previous.map_or(0, |g| g.wrapping_add(1));
                    // A reused id first gets its new generation while still
                    // REMOVED: a flow that remembers the old generation can
                    // never read the new address with a valid state.
                    //
                    // Only a reused id needs its counters zeroed: a never-used
                    // one's are still zero (the kernel zero-fills arrays and
                    // counts only for ids a schedule or conntrack entry named,
                    // which were written first, so recovery knows them). That
                    // saves a syscall per new backend: 4 of the 14 writes of a
                    // new 4-backend Service.
                    let mut result = Ok(());
                    if previous.is_some() {
                        let parked = berth_backend::new(b.addr, b.port, BackendState::Removed, generation, entry.id);
                        result = maps
                            .put_backend(BackendId(id), &parked)
                            .and_then(|()| maps.reset_backend_counters(BackendId(id)));
                    }
                    let value = berth_backend::new(b.addr, b.port, state, generation, entry.id);
                    result = result.and_then(|()| maps.put_backend(BackendId(id), &value));
                    if let Err(e) = result {
                        generations.insert(id, generation);
                        backend_ids.release(id);
                        return Err(write_err(e));
                    }
                    generations.insert(id, generation);
                    entry.backends.insert(
                        (b.addr, b.port),
                        BackendSlot { id: BackendId(id), generation, state, weight: b.weight },
                    );
                    report.backends_added += 1;
                    changed = true;
                }
            }
        }

        // 2. The schedule over the backends eligible for new flows. With no
        // active backend, terminating ones serve (kube-proxy's
        // ProxyTerminatingEndpoints): better a draining pod than a drop.
        let wanted_keys: BTreeSet<(Ipv4Addr, u16)> = want.backends.iter().map(|b| (b.addr, b.port)).collect();
        let eligible = |state: BackendState| -> Vec<(&(Ipv4Addr, u16), &BackendSlot)> {
            entry.backends.iter().filter(|(k, s)| wanted_keys.contains(k) && s.state == state).collect()
        };
        let mut pool = eligible(BackendState::Active);
        if pool.is_empty() {
            pool = eligible(BackendState::Terminating);
        }
        let members: Vec<schedule::Member> = pool
            .iter()
            .map(|((addr, port), slot)| schedule::Member { addr: *addr, port: *port, weight: slot.weight })
            .collect();
        let indices = schedule::build(want.algorithm, &members, want.maglev_table_size);
        let new_schedule: Vec<BackendId> = indices.iter().map(|&i| pool[i].1.id).collect();
        let active =
            entry.backends.iter().filter(|(k, s)| wanted_keys.contains(k) && s.state == BackendState::Active).count();
        let terminating = entry
            .backends
            .iter()
            .filter(|(k, s)| wanted_keys.contains(k) && s.state == BackendState::Terminating)
            .count();
        let (flags, affinity_timeout_s) = match want.affinity_timeout_s {
            Some(t) => (BERTH_SVC_F_AFFINITY as u16, t),
            None => (0, 0),
        };
        let schedule_changed = new_schedule != entry.schedule || entry.value.sched_len != new_schedule.len() as u32;
        let target = berth_service_value {
            svc_id: entry.id.0,
            sched_len: new_schedule.len() as u32,
            active: active as u32,
            terminating: terminating as u32,
            affinity_timeout_s,
            algorithm: AlgorithmCode::from(want.algorithm).code(),
            epoch: if schedule_changed { 1 - entry.value.epoch.min(1) } else { entry.value.epoch },
            flags,
        };

        if schedule_changed {
            let new_len = new_schedule.len() as u32;
            // Both epochs count: after the switch the current one becomes
            // the other, and the other's leftovers are overwritten in place.
            let before = entry.schedule.len() as u64 + u64::from(entry.other_epoch_len);
            let after = u64::from(new_len) + entry.schedule.len() as u64;
            let need = *slots_in_use - before + after;
            if need > u64::from(*schedule_limit) {
                return Err(ApplyError::ScheduleFull { service: want.name.clone(), need, limit: *schedule_limit });
            }
            for (slot, backend) in new_schedule.iter().enumerate() {
                let key =
                    berth_schedule_key { svc_id: entry.id.0, slot: slot as u32, epoch: target.epoch, pad: [0; 3] };
                if let Err(e) = maps.put_slot(&key, *backend) {
                    // Keep the view exact: the other epoch now holds at least
                    // the slots written so far.
                    entry.other_epoch_len = entry.other_epoch_len.max(slot as u32);
                    return Err(write_err(e));
                }
            }
            report.slots_written += new_schedule.len();
            for slot in new_len..entry.other_epoch_len {
                let key = berth_schedule_key { svc_id: entry.id.0, slot, epoch: target.epoch, pad: [0; 3] };
                maps.delete_slot(&key).map_err(write_err)?;
            }
            *slots_in_use = need;
        }

        // 3. The Service entry: one atomic replace switches to the new epoch.
        // A new Service is always written, even with nothing to schedule: its
        // VIP must answer (drop, counted) rather than fall through.
        if is_new || target != entry.value {
            maps.put_service(&berth_service_key::new(addr.vip, addr.port, addr.protocol), &target)
                .map_err(write_err)?;
            if schedule_changed {
                entry.other_epoch_len = entry.schedule.len() as u32;
                entry.schedule = new_schedule;
            }
            entry.value = target;
            changed = true;
        }

        // 4. Backends that left the Service: REMOVED only now that no
        // schedule names them. Their flows are re-balanced by the kernel.
        let leaving: Vec<(Ipv4Addr, u16)> =
            entry.backends.keys().filter(|k| !wanted_keys.contains(k)).copied().collect();
        for key in leaving {
            if let Some(slot) = entry.backends.get(&key) {
                let value = berth_backend::new(key.0, key.1, BackendState::Removed, slot.generation, entry.id);
                maps.put_backend(slot.id, &value).map_err(write_err)?;
                backend_ids.release(slot.id.0);
                entry.backends.remove(&key);
                report.backends_removed += 1;
                changed = true;
            }
        }

        if is_new {
            report.services_added += 1;
        } else if changed {
            report.services_updated += 1;
        }
        Ok(())
    }

    fn remove_service<W: MapWriter>(
        &mut self,
        maps: &mut W,
        addr: &ServiceAddr,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let Some(entry) = self.services.get(addr) else { return Ok(()) };
        let name = if entry.name.is_empty() { addr.to_string() } else { entry.name.clone() };
        let write_err = |source: W::Error| ApplyError::Write { service: name.clone(), source: Box::new(source) };
        // The Service entry first: no new lookup can reach its slots after.
        maps.delete_service(&berth_service_key::new(addr.vip, addr.port, addr.protocol)).map_err(write_err)?;
        let (id, current_epoch) = (entry.id.0, entry.value.epoch);
        let lens = [(current_epoch, entry.schedule.len() as u32), (1 - current_epoch.min(1), entry.other_epoch_len)];
        for (epoch, len) in lens {
            for slot in 0..len {
                let key = berth_schedule_key { svc_id: id, slot, epoch, pad: [0; 3] };
                maps.delete_slot(&key).map_err(write_err)?;
            }
            self.slots_in_use = self.slots_in_use.saturating_sub(u64::from(len));
        }
        for ((a, p), slot) in &entry.backends {
            let value = berth_backend::new(*a, *p, BackendState::Removed, slot.generation, entry.id);
            maps.put_backend(slot.id, &value).map_err(write_err)?;
            self.backend_ids.release(slot.id.0);
            report.backends_removed += 1;
        }
        self.service_ids.release(id);
        self.services.remove(addr);
        report.services_removed += 1;
        Ok(())
    }
}

/// Counts the writes of one apply for [`ApplyReport::map_writes`].
struct Counting<'a, W> {
    inner: &'a mut W,
    writes: usize,
}

impl<W: MapWriter> MapWriter for Counting<'_, W> {
    type Error = W::Error;

    fn put_backend(&mut self, id: BackendId, value: &berth_backend) -> Result<(), W::Error> {
        self.writes += 1;
        self.inner.put_backend(id, value)
    }

    fn put_slot(&mut self, key: &berth_schedule_key, backend: BackendId) -> Result<(), W::Error> {
        self.writes += 1;
        self.inner.put_slot(key, backend)
    }

    fn delete_slot(&mut self, key: &berth_schedule_key) -> Result<(), W::Error> {
        self.writes += 1;
        self.inner.delete_slot(key)
    }

    fn put_service(&mut self, key: &berth_service_key, value: &berth_service_value) -> Result<(), W::Error> {
        self.writes += 1;
        self.inner.put_service(key, value)
    }

    fn delete_service(&mut self, key: &berth_service_key) -> Result<(), W::Error> {
        self.writes += 1;
        self.inner.delete_service(key)
    }

    fn reset_service_counters(&mut self, id: ServiceId) -> Result<(), W::Error> {
        self.writes += 1;
        self.inner.reset_service_counters(id)
    }

    fn reset_backend_counters(&mut self, id: BackendId) -> Result<(), W::Error> {
        self.writes += 1;
        self.inner.reset_backend_counters(id)
    }
}

impl From<Algorithm> for AlgorithmCode {
    fn from(a: Algorithm) -> Self {
        match a {
            Algorithm::Wrr => AlgorithmCode::Wrr,
            Algorithm::Maglev => AlgorithmCode::Maglev,
            Algorithm::Random => AlgorithmCode::Random,
        }
    }
}

#[cfg(test)]
mod tests;
