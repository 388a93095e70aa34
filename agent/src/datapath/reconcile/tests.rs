//! The update protocol against a fake that checks, after every single write,
//! the invariant a concurrent packet relies on: the Service entry's current
//! epoch names only slots that exist and backends that are usable.

use std::collections::BTreeMap;

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Backend(u32, u8),
    Slot(u32, u8, u32),
    DelSlot(u32, u8, u32),
    Service(u32, u8, u32),
    DelService,
}

#[derive(Debug, Default)]
struct Fake {
    backends: BTreeMap<u32, berth_backend>,
    slots: BTreeMap<(u32, u8, u32), u32>,
    services: BTreeMap<(u32, u16, u8), berth_service_value>,
    ops: Vec<Op>,
    /// Counter resets (not in `ops`: they change nothing a packet reads).
    resets: usize,
    backend_resets: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
#[error("fake write failure")]
struct FakeError;

impl Fake {
    /// What a packet arriving now would see must be usable.
    fn check_consistent(&self) {
        for v in self.services.values() {
            for slot in 0..v.sched_len {
                let backend = self.slots.get(&(v.svc_id, v.epoch, slot)).unwrap_or_else(|| {
                    panic!("svc {} epoch {} slot {slot} missing after {:?}", v.svc_id, v.epoch, self.ops.last())
                });
                let be = self.backends.get(backend).expect("slot names an unwritten backend");
                assert!(
                    matches!(be.backend_state(), BackendState::Active | BackendState::Terminating),
                    "slot names backend {backend} in state {:?}",
                    be.backend_state()
                );
            }
        }
    }
}

impl MapWriter for Fake {
    type Error = FakeError;

    fn put_backend(&mut self, id: BackendId, value: &berth_backend) -> Result<(), FakeError> {
        self.backends.insert(id.0, *value);
        self.ops.push(Op::Backend(id.0, value.state));
        self.check_consistent();
        Ok(())
    }

    fn put_slot(&mut self, key: &berth_schedule_key, backend: BackendId) -> Result<(), FakeError> {
        self.slots.insert((key.svc_id, key.epoch, key.slot), backend.0);
        self.ops.push(Op::Slot(key.svc_id, key.epoch, key.slot));
        self.check_consistent();
        Ok(())
    }

    fn delete_slot(&mut self, key: &berth_schedule_key) -> Result<(), FakeError> {
        self.slots.remove(&(key.svc_id, key.epoch, key.slot));
        self.ops.push(Op::DelSlot(key.svc_id, key.epoch, key.slot));
        self.check_consistent();
        Ok(())
    }

    fn put_service(&mut self, key: &berth_service_key, value: &berth_service_value) -> Result<(), FakeError> {
        self.services.insert((key.vip, key.port, key.proto), *value);
        self.ops.push(Op::Service(value.svc_id, value.epoch, value.sched_len));
        self.check_consistent();
        Ok(())
    }

    fn delete_service(&mut self, key: &berth_service_key) -> Result<(), FakeError> {
        self.services.remove(&(key.vip, key.port, key.proto));
        self.ops.push(Op::DelService);
        self.check_consistent();
        Ok(())
    }

    fn reset_service_counters(&mut self, _: ServiceId) -> Result<(), FakeError> {
        self.resets += 1;
        Ok(())
    }

    fn reset_backend_counters(&mut self, id: BackendId) -> Result<(), FakeError> {
        self.resets += 1;
        self.backend_resets.push(id.0);
        Ok(())
    }
}

fn backend(last: u8, weight: u32) -> DesiredBackend {
    DesiredBackend {
        addr: Ipv4Addr::new(198, 18, 1, last),
        port: 8080,
        weight: Weight::new(weight).expect("nonzero"),
        terminating: false,
    }
}

fn service(name: &str, backends: Vec<DesiredBackend>) -> DesiredService {
    DesiredService {
        name: name.into(),
        vip: Ipv4Addr::new(198, 19, 0, 10),
        port: 80,
        protocol: Protocol::Tcp,
        algorithm: Algorithm::Wrr,
        maglev_table_size: MaglevTableSize::DEFAULT,
        affinity_timeout_s: None,
        backends,
    }
}

fn table() -> Table {
    Table::new(16, 64, 100_000)
}

#[test]
fn first_apply_writes_backends_then_slots_then_service() {
    let mut fake = Fake::default();
    let mut t = table();
    let report =
        t.apply(&mut fake, &[service("web", vec![backend(2, 1), backend(3, 1), backend(4, 2)])]).expect("apply");
    assert_eq!(report.services_added, 1);
    assert_eq!(report.backends_added, 3);
    assert_eq!(report.slots_written, 4);
    let first_slot = fake.ops.iter().position(|o| matches!(o, Op::Slot(..))).expect("slots written");
    let last_backend = fake.ops.iter().rposition(|o| matches!(o, Op::Backend(..))).expect("backends written");
    let service_at = fake.ops.iter().position(|o| matches!(o, Op::Service(..))).expect("service written");
    assert!(last_backend < first_slot && first_slot < service_at, "{:?}", fake.ops);
    assert_eq!(fake.ops.last(), Some(&Op::Service(0, 0, 4)));
}

#[test]
fn applying_the_same_state_twice_writes_nothing() {
    let mut fake = Fake::default();
    let mut t = table();
    let want = [service("web", vec![backend(2, 1), backend(3, 1)])];
    t.apply(&mut fake, &want).expect("apply");
    let n = fake.ops.len();
    let report = t.apply(&mut fake, &want).expect("apply again");
    assert!(!report.changed(), "{report:?}");
    assert_eq!(fake.ops.len(), n);
}

#[test]
fn removing_a_backend_switches_schedule_before_marking_it_removed() {
    let mut fake = Fake::default();
    let mut t = table();
    t.apply(&mut fake, &[service("web", vec![backend(2, 1), backend(3, 1)])]).expect("apply");
    fake.ops.clear();
    let report = t.apply(&mut fake, &[service("web", vec![backend(2, 1)])]).expect("apply");
    assert_eq!(report.backends_removed, 1);
    let service_at = fake.ops.iter().position(|o| matches!(o, Op::Service(..))).expect("service rewritten");
    let removed_at = fake
        .ops
        .iter()
        .position(|o| matches!(o, Op::Backend(_, s) if u32::from(*s) == berth_ebpf::abi::BERTH_BACKEND_REMOVED))
        .expect("backend removed");
    assert!(service_at < removed_at, "{:?}", fake.ops);
    // The old epoch's slots are still there for packets that read the old entry.
    assert_eq!(fake.slots.keys().filter(|(_, e, _)| *e == 0).count(), 2);
    assert_eq!(fake.slots.keys().filter(|(_, e, _)| *e == 1).count(), 1);
}

#[test]
fn epochs_alternate_and_leftovers_are_trimmed() {
    let mut fake = Fake::default();
    let mut t = table();
    t.apply(&mut fake, &[service("web", vec![backend(2, 1), backend(3, 1), backend(4, 1)])]).expect("apply");
    t.apply(&mut fake, &[service("web", vec![backend(2, 1)])]).expect("apply");
    t.apply(&mut fake, &[service("web", vec![backend(2, 1), backend(3, 1)])]).expect("apply");
    // epoch 0: 2 slots (the third from the first generation trimmed); epoch 1: 1 slot.
    assert_eq!(fake.slots.keys().filter(|(_, e, _)| *e == 0).count(), 2);
    assert_eq!(fake.slots.keys().filter(|(_, e, _)| *e == 1).count(), 1);
    let v = fake.services.values().next().expect("service");
    assert_eq!((v.epoch, v.sched_len), (0, 2));
}

#[test]
fn terminating_backend_leaves_schedule_but_stays_usable() {
    let mut fake = Fake::default();
    let mut t = table();
    t.apply(&mut fake, &[service("web", vec![backend(2, 1), backend(3, 1)])]).expect("apply");
    let mut draining = backend(3, 1);
    draining.terminating = true;
    t.apply(&mut fake, &[service("web", vec![backend(2, 1), draining])]).expect("apply");
    let v = *fake.services.values().next().expect("service");
    assert_eq!((v.sched_len, v.active, v.terminating), (1, 1, 1));
    let id = t.services().next().expect("svc").1.backends[&(Ipv4Addr::new(198, 18, 1, 3), 8080)].id;
    assert_eq!(fake.backends[&id.0].backend_state(), BackendState::Terminating);
}

#[test]
fn only_terminating_backends_still_serve() {
    let mut fake = Fake::default();
    let mut t = table();
    let mut a = backend(2, 1);
    a.terminating = true;
    t.apply(&mut fake, &[service("web", vec![a])]).expect("apply");
    let v = *fake.services.values().next().expect("service");
    assert_eq!((v.sched_len, v.active, v.terminating), (1, 0, 1));
}

#[test]
fn reused_backend_id_gets_a_new_generation_while_parked() {
    let mut fake = Fake::default();
    let mut t = table();
    t.apply(&mut fake, &[service("web", vec![backend(2, 1), backend(3, 1)])]).expect("apply");
    t.apply(&mut fake, &[service("web", vec![backend(2, 1)])]).expect("apply");
    fake.ops.clear();
    t.apply(&mut fake, &[service("web", vec![backend(2, 1), backend(9, 1)])]).expect("apply");
    let removed = berth_ebpf::abi::BERTH_BACKEND_REMOVED as u8;
    let active = berth_ebpf::abi::BERTH_BACKEND_ACTIVE as u8;
    assert_eq!(fake.ops[0], Op::Backend(1, removed), "{:?}", fake.ops);
    assert_eq!(fake.ops[1], Op::Backend(1, active));
    assert_eq!(fake.backends[&1].generation, 1);
    assert_eq!(fake.backends[&1].addr(), Ipv4Addr::new(198, 18, 1, 9));
}

#[test]
fn removing_a_service_deletes_entry_first_and_frees_everything() {
    let mut fake = Fake::default();
    let mut t = table();
    t.apply(&mut fake, &[service("web", vec![backend(2, 1), backend(3, 1)])]).expect("apply");
    t.apply(&mut fake, &[service("web", vec![backend(2, 1)])]).expect("apply");
    fake.ops.clear();
    let report = t.apply(&mut fake, &[]).expect("apply");
    assert_eq!(report.services_removed, 1);
    assert_eq!(fake.ops[0], Op::DelService);
    assert!(fake.slots.is_empty(), "{:?}", fake.slots);
    assert!(fake.backends.values().all(|b| b.backend_state() == BackendState::Removed));
    assert_eq!(t.services().count(), 0);
}

#[test]
fn full_maps_are_reported_and_change_nothing_already_applied() {
    let mut fake = Fake::default();
    let mut t = Table::new(1, 64, 100);
    t.apply(&mut fake, &[service("a", vec![backend(2, 1)])]).expect("apply");
    let mut second = service("b", vec![backend(3, 1)]);
    second.port = 81;
    let err = t.apply(&mut fake, &[service("a", vec![backend(2, 1)]), second]).expect_err("only one service id");
    assert!(matches!(err, ApplyError::ServicesFull { limit: 1 }), "{err}");
    assert_eq!(fake.services.len(), 1);
}

#[test]
fn recovery_rebuilds_the_view_and_the_next_apply_is_a_no_op() {
    let mut fake = Fake::default();
    let mut t = table();
    let want = [service("web", vec![backend(2, 1), backend(3, 2)])];
    t.apply(&mut fake, &want).expect("apply");
    t.apply(&mut fake, &[service("web", vec![backend(2, 1), backend(3, 1)])]).expect("apply");
    let want = [service("web", vec![backend(2, 1), backend(3, 1)])];
    let recovered = Recovered {
        services: fake
            .services
            .iter()
            .map(|((vip, port, proto), v)| (berth_service_key { vip: *vip, port: *port, proto: *proto, pad: 0 }, *v))
            .collect(),
        backends: fake.backends.iter().map(|(id, b)| (*id, *b)).collect(),
        slots: fake
            .slots
            .iter()
            .map(|((svc_id, epoch, slot), b)| {
                (berth_schedule_key { svc_id: *svc_id, slot: *slot, epoch: *epoch, pad: [0; 3] }, *b)
            })
            .collect(),
    };
    let (mut t2, garbage) = Table::recover(16, 64, 100_000, recovered);
    assert_eq!(garbage, RecoveryGarbage::default());
    fake.ops.clear();
    let report = t2.apply(&mut fake, &want).expect("apply after recovery");
    assert!(fake.ops.is_empty(), "restart rewrote {:?}", fake.ops);
    assert_eq!(report.services_added, 0);
}

#[test]
fn a_new_service_without_backends_is_still_written() {
    let mut fake = Fake::default();
    let mut t = table();
    t.apply(&mut fake, &[service("empty", vec![])]).expect("apply");
    let v = fake.services.values().next().expect("service entry written");
    assert_eq!(v.sched_len, 0);
}

fn on_port(mut svc: DesiredService, port: u16) -> DesiredService {
    svc.name = format!("{}-{port}", svc.name);
    svc.port = port;
    svc
}

#[test]
fn a_change_touches_only_its_service() {
    let mut fake = Fake::default();
    let mut t = table();
    let a = on_port(service("a", vec![backend(2, 1), backend(3, 1)]), 80);
    let b = on_port(service("b", vec![backend(4, 1)]), 81);
    t.apply(&mut fake, &[a.clone(), b.clone()]).expect("apply");
    let b_before = t.service(&b.addr()).expect("b").clone();
    fake.ops.clear();
    let mut a2 = a.clone();
    a2.backends.push(backend(5, 1));
    let report = t.apply_changes(&mut fake, &[], std::slice::from_ref(&a2)).expect("change");
    assert_eq!((report.services_updated, report.backends_added, report.slots_written), (1, 1, 3), "{report:?}");
    let a_id = t.service(&a.addr()).expect("a").id.0;
    assert!(
        fake.ops.iter().all(|o| match o {
            Op::Slot(svc, ..) | Op::Service(svc, ..) => *svc == a_id,
            _ => true,
        }),
        "{:?}",
        fake.ops
    );
    assert_eq!(t.service(&b.addr()), Some(&b_before));
    // Backend write, then the new epoch's slots, then the Service entry last.
    assert!(matches!(fake.ops.first(), Some(Op::Backend(..))), "{:?}", fake.ops);
    assert_eq!(fake.ops.last(), Some(&Op::Service(a_id, 1, 3)));
}

#[test]
fn applying_changes_programs_what_a_full_apply_programs() {
    // The same history through both entry points: identical writes, in the
    // same order, and identical tables.
    let a = on_port(service("a", vec![backend(2, 1), backend(3, 2)]), 80);
    let b = on_port(service("b", vec![backend(4, 1)]), 81);
    let c = on_port(service("c", vec![backend(6, 1), backend(7, 1)]), 82);
    let mut a2 = a.clone();
    a2.backends[1].terminating = true;
    a2.backends.push(backend(8, 3));
    let mut b2 = b.clone();
    b2.backends = vec![backend(9, 1)];
    let full: Vec<Vec<DesiredService>> = vec![
        vec![a.clone(), b.clone()],
        vec![a2.clone(), b.clone()],
        vec![a2.clone(), b2.clone(), c.clone()],
        vec![b2.clone(), c.clone()],
        vec![b2.clone(), c.clone()],
    ];
    let deltas: Vec<(Vec<ServiceAddr>, Vec<DesiredService>)> = vec![
        (vec![], vec![a.clone(), b.clone()]),
        (vec![], vec![a2.clone()]),
        (vec![], vec![b2.clone(), c.clone()]),
        (vec![a.addr()], vec![]),
        (vec![a.addr()], vec![]), // removing what is gone: nothing
    ];
    let (mut full_fake, mut full_table) = (Fake::default(), table());
    let (mut delta_fake, mut delta_table) = (Fake::default(), table());
    for (want, (removed, upserted)) in full.iter().zip(&deltas) {
        full_fake.ops.clear();
        delta_fake.ops.clear();
        let r1 = full_table.apply(&mut full_fake, want).expect("full apply");
        let r2 = delta_table.apply_changes(&mut delta_fake, removed, upserted).expect("changes");
        assert_eq!(r1, r2);
        assert_eq!(full_fake.ops, delta_fake.ops);
        assert_eq!(r2.map_writes, delta_fake.ops.len() + delta_fake.resets);
        assert_eq!(full_fake.resets, delta_fake.resets);
        full_fake.resets = 0;
        delta_fake.resets = 0;
    }
    assert_eq!(full_fake.slots, delta_fake.slots);
    assert_eq!(full_fake.services, delta_fake.services);
    let view = |t: &Table| t.services().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    assert_eq!(view(&full_table), view(&delta_table));
}

#[test]
fn removed_and_upserted_in_one_change_ends_up_upserted() {
    let mut fake = Fake::default();
    let mut t = table();
    let a = service("a", vec![backend(2, 1)]);
    t.apply_changes(&mut fake, &[], std::slice::from_ref(&a)).expect("add");
    let mut a2 = a.clone();
    a2.backends = vec![backend(3, 1)];
    let report = t.apply_changes(&mut fake, &[a.addr()], std::slice::from_ref(&a2)).expect("replace");
    assert_eq!((report.services_removed, report.services_added), (1, 1), "{report:?}");
    assert_eq!(fake.services.len(), 1);
    let entry = t.service(&a.addr()).expect("upserted");
    assert_eq!(entry.backends.keys().copied().collect::<Vec<_>>(), vec![(Ipv4Addr::new(198, 18, 1, 3), 8080)]);
}

#[test]
fn map_writes_counts_every_write() {
    let mut fake = Fake::default();
    let mut t = table();
    let a = service("a", vec![backend(2, 1), backend(3, 1), backend(4, 1), backend(5, 1)]);
    let report = t.apply_changes(&mut fake, &[], std::slice::from_ref(&a)).expect("add");
    // 1 service counter reset, 4 backends (fresh ids: no counter reset), 4 slots, 1 service.
    assert_eq!(report.map_writes, 10);
    assert_eq!(report.map_writes, fake.ops.len() + fake.resets);
    let (ops, resets) = (fake.ops.len(), fake.resets);
    let mut a2 = a.clone();
    a2.backends.push(backend(6, 1));
    let report = t.apply_changes(&mut fake, &[], std::slice::from_ref(&a2)).expect("add a backend");
    // One backend added to a 4-backend WRR Service: backend, 5 slots, service.
    assert_eq!(report.map_writes, 7, "{:?}", &fake.ops[ops..]);
    assert_eq!(report.map_writes, fake.ops.len() - ops + fake.resets - resets);
}

#[test]
fn only_reused_backend_ids_get_their_counters_reset() {
    let mut fake = Fake::default();
    let mut t = table();
    t.apply(&mut fake, &[service("web", vec![backend(2, 1), backend(3, 1)])]).expect("apply");
    assert!(fake.backend_resets.is_empty(), "fresh ids reset: {:?}", fake.backend_resets);
    t.apply(&mut fake, &[service("web", vec![backend(2, 1)])]).expect("remove one");
    t.apply(&mut fake, &[service("web", vec![backend(2, 1), backend(9, 1), backend(10, 1)])]).expect("add two");
    // Id 1 is reused (reset, while parked), id 2 is fresh (not reset).
    assert_eq!(fake.backend_resets, vec![1]);
}

#[test]
fn recovered_backend_ids_count_as_used() {
    // A backend a previous agent wrote and removed: its counters may hold
    // counts, so the next user of the id resets them.
    let mut fake = Fake::default();
    let mut t = table();
    t.apply(&mut fake, &[service("web", vec![backend(2, 1), backend(3, 1)])]).expect("apply");
    t.apply(&mut fake, &[service("web", vec![backend(2, 1)])]).expect("remove one");
    let recovered = Recovered {
        services: fake
            .services
            .iter()
            .map(|((vip, port, proto), v)| (berth_service_key { vip: *vip, port: *port, proto: *proto, pad: 0 }, *v))
            .collect(),
        backends: fake.backends.iter().map(|(id, b)| (*id, *b)).collect(),
        slots: Vec::new(),
    };
    let (mut t2, _) = Table::recover(16, 64, 100_000, recovered);
    fake.backend_resets.clear();
    t2.apply(&mut fake, &[service("web", vec![backend(2, 1), backend(9, 1), backend(10, 1)])]).expect("apply");
    assert_eq!(fake.backend_resets, vec![1]);
}
