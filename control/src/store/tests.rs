#![allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

/// A store under test and what keeps its file alive.
struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

fn redb(options: StoreOptions) -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RedbStore::open(&dir.path().join("store.redb"), options).expect("open redb store");
    Backend { name: "redb", store: Arc::new(store), _dir: Some(dir) }
}

fn mem(options: StoreOptions) -> Backend {
    Backend { name: "mem", store: Arc::new(MemStore::new(options)), _dir: None }
}

/// Run `check` against both backends, each fresh, with `options`.
fn each_backend(options: StoreOptions, check: impl Fn(&dyn Store)) {
    for backend in [mem(options.clone()), redb(options.clone())] {
        eprintln!("backend: {}", backend.name);
        check(backend.store.as_ref());
    }
}

fn each(check: impl Fn(&dyn Store)) {
    each_backend(StoreOptions::default(), check);
}

/// Every event the watch has ready now.
fn drain(watch: &mut Watch) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(event) = watch.try_recv().expect("watch ended") {
        events.push(event);
    }
    events
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

#[test]
fn crud_round_trip() {
    each(|s| {
        assert_eq!(s.current_revision().unwrap(), 0);
        assert_eq!(s.get("/pods/a").unwrap(), None);

        assert_eq!(s.create("/pods/a", b"1").unwrap(), 1);
        assert_eq!(
            s.get("/pods/a").unwrap(),
            Some(Versioned { value: b"1".to_vec(), revision: 1, create_revision: 1 })
        );
        let e = s.create("/pods/a", b"again").unwrap_err();
        assert!(matches!(e, StoreError::AlreadyExists { ref key, revision: 1 } if key == "/pods/a"), "{e:?}");

        assert_eq!(s.update("/pods/a", b"2", None).unwrap(), 2);
        assert_eq!(s.update("/pods/a", b"3", Some(2)).unwrap(), 3);
        assert_eq!(
            s.get("/pods/a").unwrap(),
            Some(Versioned { value: b"3".to_vec(), revision: 3, create_revision: 1 })
        );
        let e = s.update("/pods/missing", b"x", None).unwrap_err();
        assert!(matches!(e, StoreError::NotFound { ref key } if key == "/pods/missing"), "{e:?}");

        let (revision, last) = s.delete("/pods/a", Some(3)).unwrap();
        assert_eq!(revision, 4);
        assert_eq!(last, Versioned { value: b"3".to_vec(), revision: 3, create_revision: 1 });
        assert_eq!(s.get("/pods/a").unwrap(), None);
        assert!(matches!(s.delete("/pods/a", None).unwrap_err(), StoreError::NotFound { .. }));

        // A key created again starts a new life.
        assert_eq!(s.create("/pods/a", b"4").unwrap(), 5);
        assert_eq!(s.get("/pods/a").unwrap().unwrap().create_revision, 5);

        let e = s.create("", b"x").unwrap_err();
        assert!(matches!(e, StoreError::InvalidKey { .. }), "{e:?}");
        assert_eq!(s.current_revision().unwrap(), 5);
    });
}

#[test]
fn revision_grows_by_one_per_write_and_not_on_failures() {
    each(|s| {
        let mut last = s.current_revision().unwrap();
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
        assert!(last > 5);
    });
}

#[test]
fn stale_update_and_delete_report_both_revisions() {
    each(|s| {
        let first = s.create("/svc/web", b"v1").unwrap();
        let second = s.update("/svc/web", b"v2", Some(first)).unwrap();
        let e = s.update("/svc/web", b"v3", Some(first)).unwrap_err();
        match &e {
            StoreError::Conflict { key, expected, current } => {
                assert_eq!((key.as_str(), *expected, *current), ("/svc/web", first, second));
            }
            other => panic!("expected Conflict, got {other:?}"),
        }
        assert_eq!(e.to_string(), "\"/svc/web\" was modified: expected revision 1, current 2");
        let e = s.delete("/svc/web", Some(first)).unwrap_err();
        assert!(matches!(e, StoreError::Conflict { expected: 1, current: 2, .. }), "{e:?}");
        assert_eq!(s.get("/svc/web").unwrap().unwrap().value, b"v2");
    });
}

#[test]
fn txn_is_all_or_nothing_with_one_revision() {
    each(|s| {
        s.create("/b", b"b1").unwrap();
        s.create("/c", b"c1").unwrap();
        let mut watch = s.watch("", 2).unwrap();

        // The last op fails: nothing of the first two is written.
        let ops = [create("/a", b"a1"), update("/b", b"b2", Some(1)), update("/c", b"c2", Some(1))];
        let e = s.txn(&ops).unwrap_err();
        assert!(matches!(e, StoreError::Conflict { ref key, expected: 1, current: 2 } if key == "/c"), "{e:?}");
        assert_eq!(s.get("/a").unwrap(), None);
        assert_eq!(s.get("/b").unwrap().unwrap().value, b"b1");
        assert_eq!(s.current_revision().unwrap(), 2);
        assert_eq!(drain(&mut watch), vec![]);

        let e = s.txn(&[create("/d", b"1"), Op::Delete { key: "/d".into(), expected: None }]).unwrap_err();
        assert!(matches!(e, StoreError::DuplicateKey { ref key } if key == "/d"), "{e:?}");
        assert_eq!(s.txn(&[]).unwrap(), 2);

        // All succeed: one revision for all, events in op order.
        let ops =
            [create("/a", b"a1"), update("/b", b"b2", Some(1)), Op::Delete { key: "/c".into(), expected: Some(2) }];
        assert_eq!(s.txn(&ops).unwrap(), 3);
        assert_eq!(s.current_revision().unwrap(), 3);
        assert_eq!(s.get("/a").unwrap().unwrap().revision, 3);
        assert_eq!(s.get("/b").unwrap().unwrap(), Versioned { value: b"b2".to_vec(), revision: 3, create_revision: 1 });
        assert_eq!(s.get("/c").unwrap(), None);
        assert_eq!(
            drain(&mut watch),
            vec![
                ev(EventKind::Added, "/a", b"a1", 3),
                ev(EventKind::Modified, "/b", b"b2", 3),
                ev(EventKind::Deleted, "/c", b"c1", 3),
            ]
        );
    });
}

#[test]
fn list_is_sorted_prefix_scoped_and_carries_the_revision() {
    each(|s| {
        for key in ["/pods/ns1/b", "/pods/ns1/a", "/pods/ns10/a", "/podsx", "/services/ns1/a"] {
            s.create(key, key.as_bytes()).unwrap();
        }
        let (items, revision) = s.list("/pods/ns1/").unwrap();
        let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["/pods/ns1/a", "/pods/ns1/b"]);
        assert_eq!(items[0].1.revision, 2);
        assert_eq!(revision, 5);
        assert_eq!(s.list("/pods/").unwrap().0.len(), 3);
        assert_eq!(s.list("").unwrap().0.len(), 5);
        assert_eq!(s.list("/nothing/").unwrap(), (vec![], 5));
    });
}

/// A writer keeps two keys equal through transactions; every list sees them
/// equal and no newer than the revision it reports.
#[test]
fn list_is_a_consistent_snapshot_under_writes() {
    each(|s| {
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
                assert!(items.iter().all(|(_, v)| v.revision == revision), "{items:?} at {revision}");
                lists += 1;
            }
        });
    });
}

#[test]
fn watch_replays_from_zero_then_goes_live() {
    each(|s| {
        s.create("/pods/a", b"a1").unwrap();
        s.create("/services/x", b"x1").unwrap();
        s.update("/pods/a", b"a2", None).unwrap();
        let mut watch = s.watch("/pods/", 0).unwrap();
        assert_eq!(
            drain(&mut watch),
            vec![ev(EventKind::Added, "/pods/a", b"a1", 1), ev(EventKind::Modified, "/pods/a", b"a2", 3)]
        );
        s.delete("/pods/a", None).unwrap();
        s.create("/services/y", b"y1").unwrap();
        s.create("/pods/b", b"b1").unwrap();
        assert_eq!(
            drain(&mut watch),
            vec![ev(EventKind::Deleted, "/pods/a", b"a2", 4), ev(EventKind::Added, "/pods/b", b"b1", 6)]
        );
    });
}

#[test]
fn watch_from_a_middle_revision_and_from_the_future() {
    each(|s| {
        for i in 1..=5u8 {
            s.create(&format!("/k/{i}"), &[i]).unwrap();
        }
        let mut middle = s.watch("/k/", 3).unwrap();
        let revisions: Vec<Revision> = drain(&mut middle).iter().map(|e| e.revision).collect();
        assert_eq!(revisions, [4, 5]);

        // From the current revision: nothing old, everything new.
        let mut now = s.watch("/k/", 5).unwrap();
        assert_eq!(drain(&mut now), vec![]);
        // From a revision not yet written: only what comes after it.
        let mut future = s.watch("/k/", 7).unwrap();
        for i in 6..=8u8 {
            s.create(&format!("/k/{i}"), &[i]).unwrap();
        }
        assert_eq!(drain(&mut now).iter().map(|e| e.revision).collect::<Vec<_>>(), [6, 7, 8]);
        assert_eq!(drain(&mut middle).iter().map(|e| e.revision).collect::<Vec<_>>(), [6, 7, 8]);
        assert_eq!(drain(&mut future).iter().map(|e| e.revision).collect::<Vec<_>>(), [8]);
    });
}

#[tokio::test]
async fn watch_delivers_live_events_to_async_receivers() {
    let backend = redb(StoreOptions::default());
    let store = Arc::clone(&backend.store);
    let mut watch = store.watch("/pods/", store.current_revision().unwrap()).unwrap();
    let writer = tokio::task::spawn_blocking(move || {
        for i in 0..3u8 {
            store.create(&format!("/pods/{i}"), &[i]).unwrap();
        }
    });
    for i in 0..3u8 {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.recv()).await.unwrap().unwrap();
        assert_eq!(event, ev(EventKind::Added, &format!("/pods/{i}"), &[i], u64::from(i) + 1));
    }
    writer.await.unwrap();
}

/// Several threads write while watchers keep starting, from 0 (replay, then
/// live) and from the revision of the moment: the replay/live hand-over
/// races with commits all the time. Each watcher sees every revision of its
/// range exactly once, in order.
#[test]
fn concurrent_writers_leave_no_gaps_or_duplicates() {
    const WRITERS: u64 = 4;
    const PER_WRITER: u64 = 40;
    const TOTAL: u64 = WRITERS * PER_WRITER;
    // Room for every event, so that no watcher is cut off for lagging.
    let options = StoreOptions { watch_capacity: 4096, ..StoreOptions::default() };
    each_backend(options, |s| {
        let start = Barrier::new(WRITERS as usize + 1);
        let mut watches = vec![(0, s.watch("/c/", 0).unwrap())];
        thread::scope(|scope| {
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let start = &start;
                    scope.spawn(move || {
                        start.wait();
                        for i in 0..PER_WRITER {
                            let key = format!("/c/{w}/{}", i / 2);
                            if i % 2 == 0 {
                                s.create(&key, b"new").unwrap();
                            } else {
                                s.update(&key, b"changed", None).unwrap();
                            }
                            // Let the watchers' registrations interleave,
                            // also with the in-memory store.
                            thread::sleep(Duration::from_micros(50));
                        }
                    })
                })
                .collect();
            start.wait();
            while writers.iter().any(|w| !w.is_finished()) && watches.len() < 1000 {
                let from = if watches.len() % 2 == 0 { 0 } else { s.current_revision().unwrap() };
                watches.push((from, s.watch("/c/", from).unwrap()));
                thread::sleep(Duration::from_micros(100));
            }
        });
        assert_eq!(s.current_revision().unwrap(), TOTAL);
        let mid_run = watches.iter().filter(|(from, _)| (1..TOTAL).contains(from)).count();
        eprintln!("{} watchers, {mid_run} started mid-run from a non-zero revision", watches.len());
        for (from, mut watch) in watches {
            let revisions: Vec<Revision> = drain(&mut watch).iter().map(|e| e.revision).collect();
            let expected: Vec<Revision> = (from + 1..=TOTAL).collect();
            assert_eq!(revisions, expected, "watch from {from}");
        }
    });
}

#[test]
fn slow_watcher_is_cut_off_with_the_revision_to_resume_from() {
    let options = StoreOptions { watch_capacity: 4, ..StoreOptions::default() };
    each_backend(options, |s| {
        let mut slow = s.watch("/k/", 0).unwrap();
        for i in 1..=3u8 {
            s.create(&format!("/k/{i}"), &[i]).unwrap();
        }
        // Two events at revision 4 do not fit in the one free slot: the
        // watcher is cut off before revision 4, not in the middle of it.
        s.txn(&[create("/k/4a", b"4"), create("/k/4b", b"4")]).unwrap();
        s.create("/k/5", b"5").unwrap();
        let got: Vec<Revision> = (0..3).map(|_| slow.blocking_recv().unwrap().revision).collect();
        assert_eq!(got, [1, 2, 3]);
        let e = slow.blocking_recv().unwrap_err();
        let StoreError::WatchLagged { revision, capacity: 4, .. } = e else {
            panic!("expected WatchLagged, got {e:?}")
        };
        assert_eq!(revision, 3);
        assert!(matches!(slow.try_recv(), Err(StoreError::WatchLagged { .. })));
        // Writers were never blocked, and the watcher resumes where it was.
        let mut resumed = s.watch("/k/", revision).unwrap();
        let rest: Vec<(Revision, String)> = drain(&mut resumed).into_iter().map(|e| (e.revision, e.key)).collect();
        let expected: Vec<(Revision, String)> =
            [(4, "/k/4a"), (4, "/k/4b"), (5, "/k/5")].iter().map(|(r, k)| (*r, k.to_string())).collect();
        assert_eq!(rest, expected);
    });
}

#[test]
fn history_limit_and_compaction_make_old_revisions_too_old() {
    let options = StoreOptions { history_limit: 5, ..StoreOptions::default() };
    each_backend(options, |s| {
        for i in 1..=10u8 {
            s.create(&format!("/k/{i}"), &[i]).unwrap();
        }
        // The last 5 revisions (6..=10) are kept: watching from 5 works.
        let e = s.watch("/k/", 4).unwrap_err();
        assert!(matches!(e, StoreError::TooOld { requested: 4, oldest: 5 }), "{e:?}");
        assert_eq!(e.to_string(), "too old resource version: 4 (oldest is 5)");
        assert!(matches!(s.watch("", 0), Err(StoreError::TooOld { requested: 0, .. })));
        let mut w = s.watch("/k/", 5).unwrap();
        assert_eq!(drain(&mut w).iter().map(|e| e.revision).collect::<Vec<_>>(), [6, 7, 8, 9, 10]);

        s.compact(8).unwrap();
        assert!(matches!(s.watch("/k/", 7), Err(StoreError::TooOld { requested: 7, oldest: 8 })));
        let mut w = s.watch("/k/", 8).unwrap();
        assert_eq!(drain(&mut w).iter().map(|e| e.revision).collect::<Vec<_>>(), [9, 10]);
        // Compacting backwards does nothing; into the future is refused.
        s.compact(3).unwrap();
        assert!(matches!(s.watch("/k/", 7), Err(StoreError::TooOld { oldest: 8, .. })));
        let e = s.compact(11).unwrap_err();
        assert!(matches!(e, StoreError::FutureRevision { requested: 11, current: 10 }), "{e:?}");
        // Objects are untouched by compaction.
        assert_eq!(s.list("/k/").unwrap().0.len(), 10);
    });
}

#[test]
fn dropping_the_store_ends_its_watches() {
    for backend in [mem(StoreOptions::default()), redb(StoreOptions::default())] {
        let Backend { store, _dir, .. } = backend;
        let mut watch = store.watch("/k/", 0).unwrap();
        store.create("/k/1", b"1").unwrap();
        drop(store);
        assert_eq!(watch.blocking_recv().unwrap().revision, 1);
        let e = watch.blocking_recv().unwrap_err();
        assert!(matches!(e, StoreError::WatchClosed { ref prefix } if prefix == "/k/"), "{e:?}");
    }
}

#[test]
fn redb_reopen_keeps_objects_revision_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let s = RedbStore::open(&path, StoreOptions::default()).unwrap();
        s.create("/a", b"a1").unwrap();
        s.create("/b", b"b1").unwrap();
        s.update("/a", b"a2", Some(1)).unwrap();
        s.delete("/b", None).unwrap();
    }
    let s = RedbStore::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(s.current_revision().unwrap(), 4);
    assert_eq!(s.get("/a").unwrap(), Some(Versioned { value: b"a2".to_vec(), revision: 3, create_revision: 1 }));
    assert_eq!(s.get("/b").unwrap(), None);
    let mut watch = s.watch("", 0).unwrap();
    assert_eq!(
        drain(&mut watch).iter().map(|e| (e.kind, e.revision)).collect::<Vec<_>>(),
        [(EventKind::Added, 1), (EventKind::Added, 2), (EventKind::Modified, 3), (EventKind::Deleted, 4)]
    );
    assert_eq!(s.create("/c", b"c1").unwrap(), 5);
    assert_eq!(watch.try_recv().unwrap().unwrap().revision, 5);
}

#[test]
fn redb_refuses_a_second_open_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let _first = RedbStore::open(&path, StoreOptions::default()).unwrap();
    let e = RedbStore::open(&path, StoreOptions::default()).unwrap_err();
    assert!(matches!(e, StoreError::Open { .. }), "{e:?}");
    assert!(e.to_string().contains("store.redb"), "{e}");

    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"not a database, not at all, but long enough to be looked at by redb").unwrap();
    assert!(matches!(RedbStore::open(&junk, StoreOptions::default()), Err(StoreError::Open { .. })));
}

// ---------------------------------------------------------------------------
// Model-based property test

const KEYS: [&str; 4] = ["/a", "/a/x", "/b", "/c"];

/// How an operation picks its expected revision.
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

/// The reference: a map and an event log, written independently of `apply`.
#[derive(Default)]
struct Model {
    objects: BTreeMap<String, Versioned>,
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

/// Run `steps` against `store` and the model, comparing every answer, then
/// the lists and a full watch replay.
fn check_against_model(store: &dyn Store, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    // A watcher that follows the whole run live, next to the final replay.
    let mut live = store.watch("/a", 0).map_err(|e| TestCaseError::fail(e.to_string()))?;
    for step in steps {
        match step {
            Step::Compact => {
                let to = model.revision / 2;
                store.compact(to).map_err(|e| TestCaseError::fail(e.to_string()))?;
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
        let (items, revision) = store.list(prefix).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let expected: Vec<(String, Versioned)> =
            model.objects.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.clone())).collect();
        prop_assert_eq!(items, expected, "list {:?}", prefix);
        prop_assert_eq!(revision, model.revision);
    }
    let mut replay = store.watch("", model.compacted).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let after: Vec<Event> = model.events.iter().filter(|e| e.revision > model.compacted).cloned().collect();
    prop_assert_eq!(drain(&mut replay), after);
    let under_a: Vec<Event> = model.events.iter().filter(|e| e.key.starts_with("/a")).cloned().collect();
    prop_assert_eq!(drain(&mut live), under_a);
    Ok(())
}

proptest! {
    #[test]
    fn mem_store_matches_the_model(steps in prop::collection::vec(step(), 0..40)) {
        let store = MemStore::default();
        check_against_model(&store, &steps)?;
    }
}

proptest! {
    // Each case is a new file and each write an fsync: fewer cases.
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    #[test]
    fn redb_store_matches_the_model(steps in prop::collection::vec(step(), 0..40)) {
        let backend = redb(StoreOptions::default());
        check_against_model(backend.store.as_ref(), &steps)?;
    }
}

// ---------------------------------------------------------------------------
// kill -9 durability

/// Tells `kill9_child` which store to write to.
const KILL9_DB_ENV: &str = "BERTH_STORE_TEST_KILL9_DB";
/// Tells `kill9_child` the first object number to write.
const KILL9_BASE_ENV: &str = "BERTH_STORE_TEST_KILL9_BASE";

fn kill9_key(round: u64, i: u64) -> String {
    format!("/kill9/{round}/{i:08}")
}

fn kill9_value(key: &str) -> Vec<u8> {
    format!("{{\"key\":\"{key}\",\"padding\":\"{}\"}}", "x".repeat(200)).into_bytes()
}

/// Not a test: the child process of `redb_acked_writes_survive_kill_9`.
/// Writes objects until killed, printing `acked <revision> <key>` after
/// each write returned Ok.
#[test]
#[ignore = "helper process of redb_acked_writes_survive_kill_9"]
fn kill9_child() {
    let Some(path) = std::env::var_os(KILL9_DB_ENV) else { return };
    let round: u64 = std::env::var(KILL9_BASE_ENV).unwrap().parse().unwrap();
    let store = RedbStore::open(Path::new(&path), StoreOptions::default()).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let key = kill9_key(round, i);
        let revision = store.create(&key, &kill9_value(&key)).unwrap();
        writeln!(out, "acked {revision} {key}").unwrap();
        out.flush().unwrap();
    }
}

/// A child writes and acknowledges objects; the parent SIGKILLs it mid-way,
/// reopens the file and finds every acknowledged object with its revision.
/// Three rounds on one file, so recovery also runs on a recovered file.
#[test]
fn redb_acked_writes_survive_kill_9() {
    use std::os::unix::process::ExitStatusExt;

    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("store.redb");
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeMap<String, Revision> = BTreeMap::new();
    // The store's revision before each round.
    let mut before: Revision = 0;
    for round in 0..3u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", "store::tests::kill9_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(KILL9_DB_ENV, &path)
            .env(KILL9_BASE_ENV, round.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let kill_after = 40 + 25 * round as usize;
        let mut in_round = Vec::new();
        let mut killed = false;
        // Every line read counts, also those printed between the kill
        // decision and the signal's arrival.
        for line in stdout.lines() {
            let line = line.unwrap();
            // With one test thread libtest prints "test <name> ... " before
            // running it, without a newline: the first ack shares its line.
            let Some(at) = line.find("acked ") else { continue };
            let rest = &line[at + "acked ".len()..];
            let (revision, key) = rest.split_once(' ').unwrap();
            in_round.push((key.to_owned(), revision.parse::<Revision>().unwrap()));
            if in_round.len() == kill_after && !killed {
                // Vary where in the next write the signal lands.
                thread::sleep(Duration::from_micros(250 * round));
                child.kill().unwrap();
                killed = true;
            }
        }
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        assert!(killed, "child stopped after {} acks: {status:?}\n{stderr}", in_round.len());
        assert_eq!(status.signal(), Some(9), "{stderr}");

        let reopening = Instant::now();
        let store = RedbStore::open(&path, StoreOptions::default()).unwrap();
        let reopen = reopening.elapsed();
        let revisions: Vec<Revision> = in_round.iter().map(|(_, r)| *r).collect();
        assert_eq!(revisions.first(), Some(&(before + 1)), "the first ack follows the previous round");
        assert!(revisions.windows(2).all(|w| w[1] == w[0] + 1), "acked revisions are consecutive: {revisions:?}");
        acked.extend(in_round.iter().cloned());
        for (key, revision) in &acked {
            let got = store.get(key).unwrap().unwrap_or_else(|| panic!("acked {key} at {revision} lost"));
            assert_eq!(got.revision, *revision, "{key}");
            assert_eq!(got.value, kill9_value(key));
        }
        // At most the one write in flight at the kill committed unacked.
        let (stored, revision) = store.list(&format!("/kill9/{round}/")).unwrap();
        let last_acked = *revisions.last().unwrap();
        assert!(stored.len() - in_round.len() <= 1, "{} stored, {} acked", stored.len(), in_round.len());
        assert!(revision == last_acked || revision == last_acked + 1, "store at {revision}, last ack {last_acked}");
        // The recovered store takes writes at the next revision.
        before = store.create(&format!("/after/{round}"), b"{}").unwrap();
        assert_eq!(before, revision + 1);
        // The history agrees with the objects.
        let mut watch = store.watch("/kill9/", 0).unwrap();
        let replayed: Vec<String> = drain(&mut watch).into_iter().map(|e| e.key).collect();
        let all: Vec<String> = store.list("/kill9/").unwrap().0.into_iter().map(|(k, _)| k).collect();
        assert_eq!(replayed, all);
        eprintln!(
            "round {round}: {} acked, {} stored, revision {revision}, reopen with repair {reopen:?}",
            in_round.len(),
            stored.len()
        );
    }
}

// ---------------------------------------------------------------------------
// Measurement, run by hand:
// cargo test -p berth-control --release -- --ignored --nocapture redb_write_rate

#[test]
#[ignore = "measurement; run by hand"]
fn redb_write_rate() {
    let n = 1000u32;
    let backend = redb(StoreOptions::default());
    let s = backend.store.as_ref();
    let value = kill9_value("/bench/x");

    let started = Instant::now();
    for i in 0..n {
        s.create(&format!("/bench/single/{i}"), &value).unwrap();
    }
    let single = started.elapsed();

    // Baseline in the same run: the same objects in 10 transactions, so 10
    // fsyncs instead of 1000.
    let started = Instant::now();
    for chunk in 0..10 {
        let ops: Vec<Op> = (0..n / 10).map(|i| create(&format!("/bench/txn/{chunk}/{i}"), &value)).collect();
        s.txn(&ops).unwrap();
    }
    let batched = started.elapsed();

    let mem = MemStore::default();
    let started = Instant::now();
    for i in 0..n {
        mem.create(&format!("/bench/single/{i}"), &value).unwrap();
    }
    let in_memory = started.elapsed();

    let rate = |d: Duration| f64::from(n) / d.as_secs_f64();
    eprintln!(
        "{n} creates: redb one per write {:.0}/s ({:.2} ms each); redb 100 per txn {:.0}/s; mem {:.0}/s",
        rate(single),
        single.as_secs_f64() * 1000.0 / f64::from(n),
        rate(batched),
        rate(in_memory)
    );
}
