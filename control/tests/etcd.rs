//! The etcd store backend and leader election against a real etcd server:
//! Debian's etcd-server (`/usr/bin/etcd`, which `cargo xtask setup`
//! installs; `BERTH_TEST_ETCD` names another binary). Each test starts its
//! own etcd on loopback ports with a temporary data directory and kills it
//! (that process only) when it ends, also on panic.
//!
//! The store checks follow the redb/mem ones in `src/store/tests.rs`, with
//! revisions counted from the etcd's revision at the start (a fresh etcd is
//! at revision 1, and nothing else writes to it) and waiting for watch
//! events, which etcd delivers asynchronously.
#![allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]

mod common;

use common::TEST_IP;
use common::etcd::{EtcdServer, free_ports};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use berth_control::leader::{Elector, Leadership, Lost};
use berth_control::store::{
    EtcdOptions, EtcdStore, Event, EventKind, Fence, Op, Revision, Store, StoreError, Versioned, Watch,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// How long a test waits for something etcd will do.
const WAIT: Duration = Duration::from_secs(10);

/// Lease TTL of the election tests: etcd's minimum with default timings.
const TTL: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Harness

/// The next event, or the error the watch ended with; waits up to [`WAIT`].
fn recv(watch: &mut Watch) -> Result<Event, StoreError> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(event) = watch.try_recv()? {
            return Ok(event);
        }
        assert!(Instant::now() < deadline, "no event on {:?} within {WAIT:?}", watch.prefix());
        thread::sleep(Duration::from_millis(2));
    }
}

/// The next `n` events.
fn next(watch: &mut Watch, n: usize) -> Vec<Event> {
    (0..n).map(|_| recv(watch).unwrap()).collect()
}

/// Events until the one for `key` (excluded).
fn until(watch: &mut Watch, key: &str) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        let event = recv(watch).unwrap();
        if event.key == key {
            return events;
        }
        events.push(event);
    }
}

/// No event arrives for a while. Only a hint: a late event could still
/// come; the sentinel writes of other tests are the exact check.
fn quiet(watch: &mut Watch) {
    thread::sleep(Duration::from_millis(200));
    assert_eq!(watch.try_recv().unwrap(), None);
}

fn ev(kind: EventKind, key: &str, value: &[u8], revision: Revision) -> Event {
    Event { kind, key: key.to_owned(), value: value.to_vec(), revision }
}

fn create(key: &str, value: &[u8]) -> Op {
    Op::Create { key: key.to_owned(), value: value.to_vec() }
}

fn update(key: &str, value: &[u8], expected: Option<Revision>) -> Op {
    Op::Update { key: key.to_owned(), value: value.to_vec(), expected }
}

fn revisions(events: &[Event]) -> Vec<Revision> {
    events.iter().map(|e| e.revision).collect()
}

// ---------------------------------------------------------------------------
// Store

#[test]
fn crud_round_trip() {
    common::isolate();
    let etcd = EtcdServer::start();
    let s = etcd.store("/berth");
    let b = s.current_revision().unwrap();
    assert_eq!(b, 1, "a fresh etcd is at revision 1");
    assert_eq!(s.get("/pods/a").unwrap(), None);

    assert_eq!(s.create("/pods/a", b"1").unwrap(), b + 1);
    assert_eq!(
        s.get("/pods/a").unwrap(),
        Some(Versioned { value: b"1".to_vec(), revision: b + 1, create_revision: b + 1 })
    );
    let e = s.create("/pods/a", b"again").unwrap_err();
    assert!(
        matches!(e, StoreError::AlreadyExists { ref key, revision } if key == "/pods/a" && revision == b + 1),
        "{e:?}"
    );

    assert_eq!(s.update("/pods/a", b"2", None).unwrap(), b + 2);
    assert_eq!(s.update("/pods/a", b"3", Some(b + 2)).unwrap(), b + 3);
    assert_eq!(
        s.get("/pods/a").unwrap(),
        Some(Versioned { value: b"3".to_vec(), revision: b + 3, create_revision: b + 1 })
    );
    let e = s.update("/pods/missing", b"x", None).unwrap_err();
    assert!(matches!(e, StoreError::NotFound { ref key } if key == "/pods/missing"), "{e:?}");
    // A missing key has etcd mod_revision 0: `expected: 0` must not create it.
    let e = s.update("/pods/missing", b"x", Some(0)).unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e:?}");
    let e = s.update("/pods/a", b"x", Some(0)).unwrap_err();
    assert!(matches!(e, StoreError::Conflict { expected: 0, current, .. } if current == b + 3), "{e:?}");
    assert_eq!(s.get("/pods/missing").unwrap(), None);

    let (revision, last) = s.delete("/pods/a", Some(b + 3)).unwrap();
    assert_eq!(revision, b + 4);
    assert_eq!(last, Versioned { value: b"3".to_vec(), revision: b + 3, create_revision: b + 1 });
    assert_eq!(s.get("/pods/a").unwrap(), None);
    assert!(matches!(s.delete("/pods/a", None).unwrap_err(), StoreError::NotFound { .. }));

    // A key created again starts a new life.
    assert_eq!(s.create("/pods/a", b"4").unwrap(), b + 5);
    assert_eq!(s.get("/pods/a").unwrap().unwrap().create_revision, b + 5);

    let e = s.create("", b"x").unwrap_err();
    assert!(matches!(e, StoreError::InvalidKey { .. }), "{e:?}");
    // This backend's keys start with '/', so that roots never overlap.
    let e = s.create("pods/b", b"x").unwrap_err();
    assert!(matches!(e, StoreError::InvalidKey { .. }), "{e:?}");
    assert_eq!(s.current_revision().unwrap(), b + 5);
}

#[test]
fn revision_grows_by_one_per_write_and_not_on_failures() {
    common::isolate();
    let etcd = EtcdServer::start();
    let s = etcd.store("/berth");
    let mut last = s.current_revision().unwrap();
    let first = last;
    for i in 0..20u8 {
        let key = format!("/k/{}", i % 4);
        let result = match i % 3 {
            0 => s.create(&key, &[i]),
            1 => s.update(&key, &[i], None),
            _ => s.delete(&key, None).map(|(r, _)| r),
        };
        let now = s.current_revision().unwrap();
        match result {
            Ok(revision) => {
                assert_eq!(revision, last + 1);
                assert_eq!(now, revision);
            }
            Err(_) => assert_eq!(now, last, "a failed write must not take a revision"),
        }
        last = now;
    }
    assert!(last > first + 5);
}

#[test]
fn stale_update_and_delete_report_both_revisions() {
    common::isolate();
    let etcd = EtcdServer::start();
    let s = etcd.store("/berth");
    let first = s.create("/svc/web", b"v1").unwrap();
    let second = s.update("/svc/web", b"v2", Some(first)).unwrap();
    let e = s.update("/svc/web", b"v3", Some(first)).unwrap_err();
    match &e {
        StoreError::Conflict { key, expected, current } => {
            assert_eq!((key.as_str(), *expected, *current), ("/svc/web", first, second));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(e.to_string(), format!("\"/svc/web\" was modified: expected revision {first}, current {second}"));
    let e = s.delete("/svc/web", Some(first)).unwrap_err();
    assert!(matches!(e, StoreError::Conflict { expected, current, .. } if (expected, current) == (first, second)));
    assert_eq!(s.get("/svc/web").unwrap().unwrap().value, b"v2");
}

#[test]
fn txn_is_all_or_nothing_with_one_revision() {
    common::isolate();
    let etcd = EtcdServer::start();
    let s = etcd.store("/berth");
    let b = s.current_revision().unwrap();
    s.create("/b", b"b1").unwrap();
    s.create("/c", b"c1").unwrap();
    let mut watch = s.watch("", b + 2).unwrap();

    // The last op fails: nothing of the first two is written.
    let ops = [create("/a", b"a1"), update("/b", b"b2", Some(b + 1)), update("/c", b"c2", Some(b + 1))];
    let e = s.txn(&ops).unwrap_err();
    assert!(
        matches!(e, StoreError::Conflict { ref key, expected, current } if key == "/c" && (expected, current) == (b + 1, b + 2)),
        "{e:?}"
    );
    assert_eq!(s.get("/a").unwrap(), None);
    assert_eq!(s.get("/b").unwrap().unwrap().value, b"b1");
    assert_eq!(s.current_revision().unwrap(), b + 2);
    // Several failing ops: the first one is reported.
    let e = s.txn(&[create("/b", b"x"), update("/missing", b"x", None)]).unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { ref key, revision } if key == "/b" && revision == b + 1), "{e:?}");

    let e = s.txn(&[create("/d", b"1"), Op::Delete { key: "/d".into(), expected: None }]).unwrap_err();
    assert!(matches!(e, StoreError::DuplicateKey { ref key } if key == "/d"), "{e:?}");
    assert_eq!(s.txn(&[]).unwrap(), b + 2);

    // All succeed: one revision for all, events in op order, and they are
    // the first events the watch gets: the failed transactions sent none.
    let ops =
        [create("/a", b"a1"), update("/b", b"b2", Some(b + 1)), Op::Delete { key: "/c".into(), expected: Some(b + 2) }];
    assert_eq!(s.txn(&ops).unwrap(), b + 3);
    assert_eq!(s.current_revision().unwrap(), b + 3);
    assert_eq!(s.get("/a").unwrap().unwrap().revision, b + 3);
    assert_eq!(
        s.get("/b").unwrap().unwrap(),
        Versioned { value: b"b2".to_vec(), revision: b + 3, create_revision: b + 1 }
    );
    assert_eq!(s.get("/c").unwrap(), None);
    assert_eq!(
        next(&mut watch, 3),
        vec![
            ev(EventKind::Added, "/a", b"a1", b + 3),
            ev(EventKind::Modified, "/b", b"b2", b + 3),
            ev(EventKind::Deleted, "/c", b"c1", b + 3),
        ]
    );
}

#[test]
fn list_is_sorted_prefix_scoped_paginated_and_carries_the_revision() {
    common::isolate();
    let etcd = EtcdServer::start();
    let s = etcd.store("/berth");
    let b = s.current_revision().unwrap();
    for key in ["/pods/ns1/b", "/pods/ns1/a", "/pods/ns10/a", "/podsx", "/services/ns1/a"] {
        s.create(key, key.as_bytes()).unwrap();
    }
    let (items, revision) = s.list("/pods/ns1/").unwrap();
    let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["/pods/ns1/a", "/pods/ns1/b"]);
    assert_eq!(items[0].1.revision, b + 2);
    assert_eq!(revision, b + 5);
    assert_eq!(s.list("/pods/").unwrap().0.len(), 3);
    assert_eq!(s.list("").unwrap().0.len(), 5);
    assert_eq!(s.list("/nothing/").unwrap(), (vec![], b + 5));

    // More keys than one page (500), values of 4 KiB: 1,200 objects are
    // ~5 MiB, more than one gRPC message by default.
    let value = vec![b'x'; 4096];
    for chunk in 0..12 {
        let ops: Vec<Op> = (0..100).map(|i| create(&format!("/big/{:05}", chunk * 100 + i), &value)).collect();
        s.txn(&ops).unwrap();
    }
    let (items, revision) = s.list("/big/").unwrap();
    assert_eq!(revision, s.current_revision().unwrap());
    let keys: Vec<String> = items.iter().map(|(k, _)| k.clone()).collect();
    let expected: Vec<String> = (0..1200).map(|i| format!("/big/{i:05}")).collect();
    assert_eq!(keys, expected);
}

/// A writer keeps two keys equal through transactions; every list sees them
/// equal and no newer than the revision it reports.
#[test]
fn list_is_a_consistent_snapshot_under_writes() {
    common::isolate();
    let etcd = EtcdServer::start();
    let s = etcd.store("/berth");
    s.txn(&[create("/pair/a", b"0"), create("/pair/b", b"0")]).unwrap();
    thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for i in 1..=40u32 {
                let v = i.to_string();
                s.txn(&[update("/pair/a", v.as_bytes(), None), update("/pair/b", v.as_bytes(), None)]).unwrap();
            }
        });
        let mut lists = 0;
        while !writer.is_finished() || lists == 0 {
            let (items, revision) = s.list("/pair/").unwrap();
            assert_eq!(items.len(), 2);
            assert_eq!(items[0].1.value, items[1].1.value, "torn read at revision {revision}");
            assert!(items.iter().all(|(_, v)| v.revision <= revision), "{items:?} at {revision}");
            lists += 1;
        }
    });
}

#[test]
fn a_fenced_store_writes_only_while_its_leadership_holds() {
    common::isolate();
    let etcd = EtcdServer::start();
    let controllers = etcd.store("/berth");
    let api = etcd.store("/berth");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let leadership = runtime.block_on(controllers.elector("controllers", "a", TTL).campaign()).unwrap();
    controllers
        .set_fence(Some(Fence { key: leadership.key().unwrap().to_owned(), lease: leadership.lease_id().unwrap() }));
    // While it leads: every kind of write goes through.
    let created = controllers.create("/pods/a", b"1").unwrap();
    controllers.update("/pods/a", b"2", Some(created)).unwrap();
    controllers.txn(&[create("/pods/b", b"1")]).unwrap();
    controllers.delete("/pods/b", None).unwrap();

    // The lease ends (as when the process stalled past it): the next write
    // is refused by etcd itself, whatever the store's own conditions say.
    runtime.block_on(leadership.resign()).unwrap();
    let revision = api.current_revision().unwrap();
    let refused = controllers.update("/pods/a", b"3", None);
    assert!(matches!(refused, Err(StoreError::Fenced { .. })), "{refused:?}");
    assert!(matches!(controllers.create("/pods/c", b"1"), Err(StoreError::Fenced { .. })));
    // A failing condition of its own is still reported as such.
    assert!(matches!(controllers.create("/pods/a", b"1"), Err(StoreError::AlreadyExists { .. })));
    assert_eq!(api.current_revision().unwrap(), revision, "nothing written");
    assert_eq!(api.get("/pods/a").unwrap().unwrap().value, b"2");
    // Reads are not fenced, and the unfenced store writes.
    assert!(controllers.get("/pods/a").unwrap().is_some());
    api.create("/pods/c", b"1").unwrap();
    controllers.set_fence(None);
    controllers.create("/pods/d", b"1").unwrap();
}

#[test]
fn roots_keep_clusters_apart() {
    common::isolate();
    let etcd = EtcdServer::start();
    let berth = etcd.store("/berth/");
    assert_eq!(berth.root(), "/berth");
    let other = etcd.store("/berth2");
    let x = etcd.store("/berthx");
    berth.create("/pods/a", b"1").unwrap();
    other.create("/pods/a", b"2").unwrap();
    x.create("/a", b"3").unwrap();
    let mut watch = berth.watch("", berth.current_revision().unwrap()).unwrap();
    other.create("/pods/b", b"2").unwrap();
    berth.create("/pods/c", b"1").unwrap();

    let (items, _) = berth.list("").unwrap();
    assert_eq!(items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["/pods/a", "/pods/c"]);
    assert_eq!(other.list("").unwrap().0.len(), 2);
    assert_eq!(berth.get("/pods/a").unwrap().unwrap().value, b"1");
    assert_eq!(next(&mut watch, 1)[0].key, "/pods/c");
    quiet(&mut watch);
    // The election keys of a store's cluster are outside its keys.
    let elector = berth.elector("controllers", "a", TTL);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let leadership = runtime.block_on(elector.campaign()).unwrap();
    assert!(leadership.key().unwrap().starts_with("/berth.elections/controllers/"), "{leadership:?}");
    assert_eq!(berth.list("").unwrap().0.len(), 2);
    runtime.block_on(leadership.resign()).unwrap();

    // Keys and prefixes without a leading '/' would reach into other roots.
    assert!(matches!(berth.list("pods"), Err(StoreError::InvalidKey { .. })));
    assert!(matches!(berth.watch("x", 0), Err(StoreError::InvalidKey { .. })));
    assert!(matches!(berth.get("x"), Err(StoreError::InvalidKey { .. })));
}

#[test]
fn watch_replays_from_a_revision_then_goes_live() {
    common::isolate();
    let etcd = EtcdServer::start();
    let s = etcd.store("/berth");
    let b = s.current_revision().unwrap();
    s.create("/pods/a", b"a1").unwrap();
    s.create("/services/x", b"x1").unwrap();
    s.update("/pods/a", b"a2", None).unwrap();
    // From 0: the whole history (nothing is compacted yet).
    let mut from_zero = s.watch("/pods/", 0).unwrap();
    let mut watch = s.watch("/pods/", b).unwrap();
    let replay = vec![ev(EventKind::Added, "/pods/a", b"a1", b + 1), ev(EventKind::Modified, "/pods/a", b"a2", b + 3)];
    assert_eq!(next(&mut watch, 2), replay);
    assert_eq!(next(&mut from_zero, 2), replay);
    s.delete("/pods/a", None).unwrap();
    s.create("/services/y", b"y1").unwrap();
    s.create("/pods/b", b"b1").unwrap();
    let live = vec![ev(EventKind::Deleted, "/pods/a", b"a2", b + 4), ev(EventKind::Added, "/pods/b", b"b1", b + 6)];
    assert_eq!(next(&mut watch, 2), live);
    assert_eq!(next(&mut from_zero, 2), live);
    quiet(&mut watch);
}

#[test]
fn watch_from_a_middle_revision_and_from_the_future() {
    common::isolate();
    let etcd = EtcdServer::start();
    let s = etcd.store("/berth");
    let b = s.current_revision().unwrap();
    for i in 1..=5u8 {
        s.create(&format!("/k/{i}"), &[i]).unwrap();
    }
    let mut middle = s.watch("/k/", b + 3).unwrap();
    assert_eq!(revisions(&next(&mut middle, 2)), [b + 4, b + 5]);

    // From the current revision: nothing old, everything new.
    let mut now = s.watch("/k/", b + 5).unwrap();
    // From a revision not yet written: only what comes after it.
    let mut future = s.watch("/k/", b + 7).unwrap();
    quiet(&mut now);
    for i in 6..=8u8 {
        s.create(&format!("/k/{i}"), &[i]).unwrap();
    }
    assert_eq!(revisions(&next(&mut now, 3)), [b + 6, b + 7, b + 8]);
    assert_eq!(revisions(&next(&mut middle, 3)), [b + 6, b + 7, b + 8]);
    assert_eq!(revisions(&next(&mut future, 1)), [b + 8]);
}

/// The documented way to use the store from async code: every call in
/// `spawn_blocking`, watches read with `recv().await`, and the store
/// dropped on a worker thread.
#[test]
fn async_callers_use_spawn_blocking() {
    common::run(async {
        let etcd = EtcdServer::start();
        let options = etcd.options("/berth");
        let store: Arc<dyn Store> =
            Arc::new(tokio::task::spawn_blocking(move || EtcdStore::connect(options)).await.unwrap().unwrap());
        let s = Arc::clone(&store);
        let (b, mut watch) = tokio::task::spawn_blocking(move || {
            let b = s.current_revision().unwrap();
            (b, s.watch("/pods/", b).unwrap())
        })
        .await
        .unwrap();
        let s = Arc::clone(&store);
        let writer = tokio::task::spawn_blocking(move || {
            for i in 0..3u8 {
                s.create(&format!("/pods/{i}"), &[i]).unwrap();
            }
        });
        for i in 0..3u8 {
            let event = tokio::time::timeout(WAIT, watch.recv()).await.unwrap().unwrap();
            assert_eq!(event, ev(EventKind::Added, &format!("/pods/{i}"), &[i], b + 1 + u64::from(i)));
        }
        writer.await.unwrap();
        drop(store);
        let e = tokio::time::timeout(WAIT, watch.recv()).await.unwrap().unwrap_err();
        assert!(matches!(e, StoreError::WatchClosed { .. }), "{e:?}");
    })
}

/// Several threads write while watchers keep starting, from the start and
/// from the revision of the moment. Each watcher sees every revision of its
/// range exactly once, in order.
#[test]
fn concurrent_writers_leave_no_gaps_or_duplicates() {
    common::isolate();
    const WRITERS: u64 = 4;
    const PER_WRITER: u64 = 40;
    let etcd = EtcdServer::start();
    // Room for every event, so that no watcher is cut off for lagging.
    let s = EtcdStore::connect(EtcdOptions { watch_capacity: 4096, ..etcd.options("/berth") }).unwrap();
    let b = s.current_revision().unwrap();
    let last = b + WRITERS * PER_WRITER;
    let start = Barrier::new(WRITERS as usize + 1);
    let mut watches = vec![(b, s.watch("/c/", b).unwrap())];
    thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (start, s) = (&start, &s);
                scope.spawn(move || {
                    start.wait();
                    for i in 0..PER_WRITER {
                        let key = format!("/c/{w}/{}", i / 2);
                        if i % 2 == 0 {
                            s.create(&key, b"new").unwrap();
                        } else {
                            s.update(&key, b"changed", None).unwrap();
                        }
                    }
                })
            })
            .collect();
        start.wait();
        // One etcd watch stream each: fewer watchers than the redb test.
        while writers.iter().any(|w| !w.is_finished()) && watches.len() < 60 {
            let from = if watches.len() % 2 == 0 { b } else { s.current_revision().unwrap() };
            watches.push((from, s.watch("/c/", from).unwrap()));
            thread::sleep(Duration::from_millis(5));
        }
    });
    assert_eq!(s.current_revision().unwrap(), last);
    let mid_run = watches.iter().filter(|(from, _)| (b + 1..last).contains(from)).count();
    eprintln!("{} watchers, {mid_run} started mid-run", watches.len());
    for (from, mut watch) in watches {
        let got = revisions(&next(&mut watch, usize::try_from(last - from).unwrap()));
        assert_eq!(got, (from + 1..=last).collect::<Vec<_>>(), "watch from {from}");
    }
}

#[test]
fn slow_watcher_is_cut_off_with_the_revision_to_resume_from() {
    common::isolate();
    let etcd = EtcdServer::start();
    let s = EtcdStore::connect(EtcdOptions { watch_capacity: 4, ..etcd.options("/berth") }).unwrap();
    let b = s.current_revision().unwrap();
    let mut slow = s.watch("/k/", b).unwrap();
    for i in 1..=3u8 {
        s.create(&format!("/k/{i}"), &[i]).unwrap();
    }
    // Two events at one revision do not fit in the one free slot: the
    // watcher is cut off before that revision, not in the middle of it.
    s.txn(&[create("/k/4a", b"4"), create("/k/4b", b"4")]).unwrap();
    s.create("/k/5", b"5").unwrap();
    assert_eq!(revisions(&next(&mut slow, 3)), [b + 1, b + 2, b + 3]);
    let e = recv(&mut slow).unwrap_err();
    let StoreError::WatchLagged { revision, capacity: 4, .. } = e else { panic!("expected WatchLagged, got {e:?}") };
    assert_eq!(revision, b + 3);
    assert!(matches!(slow.try_recv(), Err(StoreError::WatchLagged { .. })));
    // Writers were never blocked, and the watcher resumes where it was.
    let mut resumed = s.watch("/k/", revision).unwrap();
    let rest: Vec<(Revision, String)> = next(&mut resumed, 3).into_iter().map(|e| (e.revision, e.key)).collect();
    let expected = [(b + 4, "/k/4a"), (b + 4, "/k/4b"), (b + 5, "/k/5")].map(|(r, k)| (r, k.to_owned()));
    assert_eq!(rest, expected);
}

#[test]
fn compaction_makes_old_revisions_too_old() {
    common::isolate();
    let etcd = EtcdServer::start();
    let s = etcd.store("/berth");
    let b = s.current_revision().unwrap();
    for i in 1..=10u8 {
        s.create(&format!("/k/{i}"), &[i]).unwrap();
    }
    s.compact(b + 8).unwrap();
    let e = s.watch("/k/", b + 7).unwrap_err();
    assert!(matches!(e, StoreError::TooOld { requested, oldest } if (requested, oldest) == (b + 7, b + 8)), "{e:?}");
    assert_eq!(e.to_string(), format!("too old resource version: {} (oldest is {})", b + 7, b + 8));
    assert!(matches!(s.watch("", 0), Err(StoreError::TooOld { requested: 0, oldest }) if oldest == b + 8));
    let mut w = s.watch("/k/", b + 8).unwrap();
    assert_eq!(revisions(&next(&mut w, 2)), [b + 9, b + 10]);
    // Also a prefix with no event since the compaction is too old.
    assert!(matches!(s.watch("/nothing/", b + 2), Err(StoreError::TooOld { .. })));

    // Compacting backwards does nothing; into the future is refused.
    s.compact(b + 3).unwrap();
    assert!(matches!(s.watch("/k/", b + 7), Err(StoreError::TooOld { oldest, .. }) if oldest == b + 8));
    let e = s.compact(b + 11).unwrap_err();
    assert!(
        matches!(e, StoreError::FutureRevision { requested, current } if (requested, current) == (b + 11, b + 10)),
        "{e:?}"
    );
    // Objects are untouched by compaction.
    assert_eq!(s.list("/k/").unwrap().0.len(), 10);
    // Compacting to the current revision is allowed.
    s.compact(b + 10).unwrap();
    assert!(matches!(s.watch("/k/", b + 9), Err(StoreError::TooOld { oldest, .. }) if oldest == b + 10));
    let mut w = s.watch("/k/", b + 10).unwrap();
    s.create("/k/11", b"11").unwrap();
    assert_eq!(revisions(&next(&mut w, 1)), [b + 11]);
}

/// etcd's compaction at revision C drops a deletion made at C from the
/// watch history (the tombstone goes with the key), although it accepts a
/// watch from C. The store compacts at `keep_after` and watches from
/// `from`, so a deletion just above the compaction is replayed.
#[test]
fn a_deletion_just_above_the_compaction_is_replayed() {
    common::isolate();
    let etcd = EtcdServer::start();
    let s = etcd.store("/berth");
    let created = s.create("/d", b"v").unwrap();
    let (deleted, _) = s.delete("/d", None).unwrap();
    s.create("/e", b"v").unwrap();
    s.compact(created).unwrap();
    let mut w = s.watch("", created).unwrap();
    let events = next(&mut w, 2);
    assert_eq!(events[0], ev(EventKind::Deleted, "/d", b"v", deleted));
    assert_eq!(events[1].key, "/e");
}

#[test]
fn dropping_the_store_ends_its_watches() {
    common::isolate();
    let etcd = EtcdServer::start();
    let store = etcd.store("/berth");
    let b = store.current_revision().unwrap();
    let mut watch = store.watch("/k/", b).unwrap();
    store.create("/k/1", b"1").unwrap();
    // Wait for the event before dropping: delivery is asynchronous.
    assert_eq!(recv(&mut watch).unwrap().revision, b + 1);
    drop(store);
    let e = recv(&mut watch).unwrap_err();
    assert!(matches!(e, StoreError::WatchClosed { ref prefix } if prefix == "/k/"), "{e:?}");
}

#[test]
fn unreachable_etcd_fails_to_connect() {
    common::isolate();
    let (port, _) = free_ports();
    let options = EtcdOptions {
        request_timeout: Duration::from_secs(1),
        ..EtcdOptions::new([format!("http://{TEST_IP}:{port}")])
    };
    let started = Instant::now();
    let e = EtcdStore::connect(options).unwrap_err();
    assert!(matches!(e, StoreError::Etcd { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("{TEST_IP}:{port}")), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// Model-based property test, as for redb and mem, with revisions counted
// from the etcd's revision at the start of each case.

const KEYS: [&str; 4] = ["/a", "/a/x", "/b", "/c"];

#[derive(Clone, Debug)]
enum Expect {
    Any,
    Current,
    Stale,
}

#[derive(Clone, Debug)]
enum Step {
    Create(usize, u8),
    Update(usize, u8, Expect),
    Delete(usize, Expect),
    Txn(Vec<Step>),
    Compact,
}

fn leaf() -> impl Strategy<Value = Step> {
    let key = 0..KEYS.len();
    let expect = prop_oneof![Just(Expect::Any), Just(Expect::Current), Just(Expect::Stale)];
    prop_oneof![
        (key.clone(), any::<u8>()).prop_map(|(k, v)| Step::Create(k, v)),
        (key.clone(), any::<u8>(), expect.clone()).prop_map(|(k, v, e)| Step::Update(k, v, e)),
        (key, expect).prop_map(|(k, e)| Step::Delete(k, e)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => leaf(),
        2 => prop::collection::vec(leaf(), 0..4).prop_map(Step::Txn),
        1 => Just(Step::Compact),
    ]
}

/// The reference: a map and an event log.
struct Model {
    objects: BTreeMap<String, Versioned>,
    base: Revision,
    revision: Revision,
    compacted: Revision,
    events: Vec<Event>,
}

impl Model {
    fn expected(&self, key: &str, how: &Expect) -> Option<Revision> {
        let current = self.objects.get(key).map_or(0, |v| v.revision);
        match how {
            Expect::Any => None,
            Expect::Current => Some(current),
            Expect::Stale => Some(current + 1),
        }
    }

    fn op(&self, step: &Step) -> Op {
        match step {
            Step::Create(k, v) => create(KEYS[*k], &[*v]),
            Step::Update(k, v, e) => update(KEYS[*k], &[*v], self.expected(KEYS[*k], e)),
            Step::Delete(k, e) => Op::Delete { key: KEYS[*k].to_owned(), expected: self.expected(KEYS[*k], e) },
            Step::Txn(_) | Step::Compact => unreachable!("not a single op"),
        }
    }

    /// Apply `ops` as one write; the Display text of the error otherwise.
    fn write(&mut self, ops: &[Op]) -> Result<Revision, String> {
        let keys: Vec<&str> = ops.iter().map(Op::key).collect();
        let unique: BTreeSet<&str> = keys.iter().copied().collect();
        if unique.len() != keys.len() {
            let dup = keys.iter().enumerate().find(|(i, k)| keys[..*i].contains(k)).map(|(_, k)| *k).unwrap();
            return Err(format!("transaction writes {dup:?} more than once"));
        }
        if ops.is_empty() {
            return Ok(self.revision);
        }
        let revision = self.revision + 1;
        let mut next = self.objects.clone();
        let mut events = Vec::new();
        for op in ops {
            let key = op.key().to_owned();
            let current = self.objects.get(&key);
            let stale = |expected: &Option<Revision>, current: &Versioned| {
                expected
                    .filter(|e| *e != current.revision)
                    .map(|e| format!("{key:?} was modified: expected revision {e}, current {}", current.revision))
            };
            match (op, current) {
                (Op::Create { .. }, Some(c)) => {
                    return Err(format!("{key:?} already exists (revision {})", c.revision));
                }
                (Op::Create { value, .. }, None) => {
                    next.insert(key.clone(), Versioned { value: value.clone(), revision, create_revision: revision });
                    events.push(ev(EventKind::Added, &key, value, revision));
                }
                (Op::Update { .. } | Op::Delete { .. }, None) => return Err(format!("{key:?} not found")),
                (Op::Update { value, expected, .. }, Some(c)) => {
                    if let Some(e) = stale(expected, c) {
                        return Err(e);
                    }
                    let create_revision = c.create_revision;
                    next.insert(key.clone(), Versioned { value: value.clone(), revision, create_revision });
                    events.push(ev(EventKind::Modified, &key, value, revision));
                }
                (Op::Delete { expected, .. }, Some(c)) => {
                    if let Some(e) = stale(expected, c) {
                        return Err(e);
                    }
                    events.push(ev(EventKind::Deleted, &key, &c.value, revision));
                    next.remove(&key);
                }
            }
        }
        self.objects = next;
        self.revision = revision;
        self.events.extend(events);
        Ok(revision)
    }
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn check_against_model(store: &EtcdStore, steps: &[Step]) -> Result<(), TestCaseError> {
    // A watcher that follows the whole run live, next to the final replay.
    let mut live = store.watch("/a", store.current_revision().map_err(fail)?).map_err(fail)?;
    // etcd moves a new watcher into its "synced" group once it has caught up
    // (a background pass every 100 ms); a compaction past its start before
    // that cancels it. Wait until it has seen a write (made and undone) so
    // the compactions of the run leave it alone.
    const SYNC: &str = "/a~sync";
    store.create(SYNC, b"").map_err(fail)?;
    store.delete(SYNC, None).map_err(fail)?;
    let synced: Vec<String> = next(&mut live, 2).into_iter().map(|e| e.key).collect();
    prop_assert_eq!(synced, [SYNC, SYNC]);
    let base = store.current_revision().map_err(fail)?;
    let mut model = Model { objects: BTreeMap::new(), base, revision: base, compacted: base, events: Vec::new() };
    for step in steps {
        match step {
            Step::Compact => {
                let to = model.base + (model.revision - model.base) / 2;
                store.compact(to).map_err(fail)?;
                model.compacted = model.compacted.max(to);
            }
            Step::Txn(inner) => {
                let ops: Vec<Op> = inner.iter().map(|s| model.op(s)).collect();
                let got = store.txn(&ops).map_err(|e| e.to_string());
                prop_assert_eq!(got, model.write(&ops), "txn {:?}", ops);
            }
            single => {
                let op = model.op(single);
                let got = match &op {
                    Op::Create { key, value } => store.create(key, value),
                    Op::Update { key, value, expected } => store.update(key, value, *expected),
                    Op::Delete { key, expected } => {
                        let before = model.objects.get(key).cloned();
                        store.delete(key, *expected).map(|(revision, last)| {
                            assert_eq!(Some(last), before, "delete returns the removed value");
                            revision
                        })
                    }
                }
                .map_err(|e| e.to_string());
                prop_assert_eq!(got, model.write(std::slice::from_ref(&op)), "{:?}", op);
            }
        }
        prop_assert_eq!(store.current_revision().map_err(|e| e.to_string()), Ok(model.revision));
    }
    for prefix in ["", "/a", "/a/", "/b", "/d"] {
        let (items, revision) = store.list(prefix).map_err(fail)?;
        let expected: Vec<(String, Versioned)> =
            model.objects.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.clone())).collect();
        prop_assert_eq!(items, expected, "list {:?}", prefix);
        prop_assert_eq!(revision, model.revision);
    }
    let mut replay = store.watch("", model.compacted).map_err(fail)?;
    // A last write marks the end of both streams.
    const END: &str = "/a~end";
    store.create(END, b"").map_err(fail)?;
    let after: Vec<Event> = model.events.iter().filter(|e| e.revision > model.compacted).cloned().collect();
    prop_assert_eq!(until(&mut replay, END), after);
    let under_a: Vec<Event> = model.events.iter().filter(|e| e.key.starts_with("/a")).cloned().collect();
    prop_assert_eq!(until(&mut live, END), under_a);
    Ok(())
}

#[test]
fn etcd_store_matches_the_model() {
    common::isolate();
    let etcd = EtcdServer::start();
    let mut runner = TestRunner::new(Config { cases: 32, failure_persistence: None, ..Config::default() });
    let case = Mutex::new(0u32);
    let started = Instant::now();
    runner
        .run(&prop::collection::vec(step(), 0..40), |steps| {
            // A root per case: each starts with no keys.
            let n = {
                let mut case = case.lock().unwrap();
                *case += 1;
                *case
            };
            let store = etcd.store(&format!("/case{n}"));
            check_against_model(&store, &steps)
        })
        .unwrap();
    eprintln!("{} cases in {:?}", case.lock().unwrap(), started.elapsed());
}

// ---------------------------------------------------------------------------
// Leader election

#[test]
fn single_is_always_the_leader() {
    common::run(async {
        let elector = Elector::single();
        let leadership = elector.campaign().await.unwrap();
        assert!(leadership.is_leader());
        assert_eq!(leadership.key(), None);
        assert!(tokio::time::timeout(Duration::from_millis(100), leadership.lost()).await.is_err());
        assert_eq!(elector.leader().await.unwrap(), None);
        leadership.resign().await.unwrap();
    })
}

/// Campaign in the background; the leadership and when it began.
fn campaign(elector: Arc<Elector>) -> tokio::task::JoinHandle<(Leadership, Instant)> {
    tokio::spawn(async move {
        let leadership = elector.campaign().await.unwrap();
        (leadership, Instant::now())
    })
}

async fn winner(
    tasks: &mut Vec<(&'static str, tokio::task::JoinHandle<(Leadership, Instant)>)>,
) -> (&'static str, Leadership, Instant) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(i) = tasks.iter().position(|(_, t)| t.is_finished()) {
            let (name, task) = tasks.remove(i);
            let (leadership, at) = task.await.unwrap();
            return (name, leadership, at);
        }
        assert!(Instant::now() < deadline, "nobody became leader within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Three candidates, one of them on an `EtcdStore`'s connection (driven by
/// the store's runtime, used from this one): exactly one leads at a time;
/// a resignation hands over at once, a crash (the leadership dropped,
/// nothing renews its lease) within the TTL + 1 s.
#[test]
fn exactly_one_leader_and_handover() {
    common::run(async {
        let etcd = EtcdServer::start();
        let options = etcd.options("/berth");
        let store = tokio::task::spawn_blocking(move || EtcdStore::connect(options)).await.unwrap().unwrap();
        let election = "/berth.elections/controllers";
        let electors = [
            ("a", Arc::new(store.elector("controllers", "a", TTL))),
            ("b", Arc::new(Elector::etcd(etcd.client().await, election, "b", TTL))),
            ("c", Arc::new(Elector::etcd(etcd.client().await, election, "c", TTL))),
        ];
        let mut tasks: Vec<_> = electors.iter().map(|(name, e)| (*name, campaign(Arc::clone(e)))).collect();

        let (first, leadership, _) = winner(&mut tasks).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(tasks.iter().all(|(_, t)| !t.is_finished()), "a second leader next to {first}");
        assert!(leadership.is_leader());
        assert_eq!(electors[0].1.leader().await.unwrap().as_deref(), Some(first));

        // Resigning hands over at once.
        let resigned = Instant::now();
        leadership.resign().await.unwrap();
        let (second, leadership, at) = winner(&mut tasks).await;
        eprintln!("{first} resigned, {second} leads after {:?}", at - resigned);
        assert!(at - resigned < Duration::from_secs(1), "{:?}", at - resigned);
        assert_ne!(first, second);
        assert_eq!(electors[1].1.leader().await.unwrap().as_deref(), Some(second));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(tasks.iter().all(|(_, t)| !t.is_finished()));

        // A crash: nobody renews the lease; the last candidate takes over once
        // it expires.
        let crashed = Instant::now();
        drop(leadership);
        let (third, leadership, at) = winner(&mut tasks).await;
        eprintln!("{second} crashed, {third} leads after {:?}", at - crashed);
        assert!(at - crashed < TTL + Duration::from_secs(1), "{:?}", at - crashed);
        assert_eq!(electors[2].1.leader().await.unwrap().as_deref(), Some(third));
        assert!(leadership.is_leader());

        // Deleting the leader's key from outside ends the leadership.
        let key = leadership.key().unwrap().to_owned();
        etcd.client().await.delete(key, None).await.unwrap();
        let lost = tokio::time::timeout(WAIT, leadership.lost()).await.unwrap();
        assert_eq!(lost, Lost::KeyDeleted);
        assert!(!leadership.is_leader());
        assert_eq!(electors[0].1.leader().await.unwrap(), None);
        tokio::task::spawn_blocking(move || drop(store)).await.unwrap();
    })
}

/// A TCP relay between an etcd client and etcd that can stall: it stops
/// forwarding but keeps the connections open, so the client's requests go
/// unanswered without any error, as behind a network partition.
struct Relay {
    addr: SocketAddr,
    stall: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind(format!("{TEST_IP}:0")).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stall, stalled) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut stalled = stalled.clone();
                tokio::spawn(async move {
                    let stalled_now = *stalled.borrow();
                    if stalled_now {
                        std::future::pending::<()>().await;
                    }
                    let mut outbound = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    let stall = async {
                        let _ = stalled.wait_for(|s| *s).await;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = stall => std::future::pending::<()>().await,
                    }
                });
            }
        });
        Relay { addr, stall }
    }
}

/// The leader loses etcd without any error (its packets vanish): it steps
/// down when its deadline passes, before etcd expires its lease and the
/// other candidate takes over, which happens within the TTL + 1 s. Both
/// are sampled all along: never both leaders.
#[test]
fn a_partitioned_leader_steps_down_before_the_next_one_leads() {
    common::run(async {
        let etcd = EtcdServer::start();
        let relay = Relay::start(etcd.addr()).await;
        let behind_relay = etcd_client::Client::connect([format!("http://{}", relay.addr)], None).await.unwrap();
        let election = "/berth.elections/controllers";
        let a = Elector::etcd(behind_relay, election, "a", TTL);
        let b = Arc::new(Elector::etcd(etcd.client().await, election, "b", TTL));
        let a = a.campaign().await.unwrap();
        let mut b_campaign = campaign(Arc::clone(&b));
        // Let a renew a few times.
        tokio::time::sleep(TTL).await;
        assert!(a.is_leader());
        assert!(!b_campaign.is_finished());

        let cut = Instant::now();
        relay.stall.send(true).unwrap();
        let mut a_stepped_down = None;
        let mut samples = 0u32;
        let (b_leads, at) = loop {
            let a_leads = a.is_leader();
            if !a_leads && a_stepped_down.is_none() {
                a_stepped_down = Some(Instant::now());
            }
            if b_campaign.is_finished() {
                let (leadership, at) = (&mut b_campaign).await.unwrap();
                break (leadership, at);
            }
            assert!(cut.elapsed() < WAIT, "b did not take over");
            samples += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let a_stepped_down = a_stepped_down.expect("a still believed it led when b took over");
        assert!(!a.is_leader());
        assert_eq!(tokio::time::timeout(Duration::from_millis(100), a.lost()).await.unwrap(), Lost::LeaseExpired);
        eprintln!(
            "partition: a stepped down after {:?}, b leads after {:?} ({samples} samples)",
            a_stepped_down - cut,
            at - cut
        );
        assert!(a_stepped_down < at, "a stepped down at {a_stepped_down:?}, after b led at {at:?}");
        assert!(at - cut < TTL + Duration::from_secs(1), "{:?}", at - cut);
        assert!(b_leads.is_leader());
        assert_eq!(b.leader().await.unwrap().as_deref(), Some("b"));
    })
}
