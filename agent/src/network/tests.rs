#![allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]

use std::{collections::HashMap, net::Ipv4Addr};

use proptest::prelude::*;

use super::{
    ipam::{Allocated, Ipam, IpamError, IpamState, Ipv4Net, ParseCidrError, STATE_FILE},
    *,
};

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

// ---- Ipv4Net ----

#[test]
fn cidr_parses_and_prints() {
    let n = net("198.18.0.0/24");
    assert_eq!(n.addr(), ip("198.18.0.0"));
    assert_eq!(n.prefix_len(), 24);
    assert_eq!(n.broadcast(), ip("198.18.0.255"));
    assert_eq!(n.size(), 256);
    assert_eq!(n.to_string(), "198.18.0.0/24");
    assert!(n.contains(ip("198.18.0.77")));
    assert!(!n.contains(ip("198.18.1.0")));
    assert_eq!(net("0.0.0.0/0").broadcast(), Ipv4Addr::BROADCAST);
    assert_eq!(net("198.18.0.7/32").broadcast(), ip("198.18.0.7"));
}

#[test]
fn cidr_errors_say_what_is_wrong() {
    let err = |s: &str| s.parse::<Ipv4Net>().unwrap_err();
    assert!(matches!(err("198.18.0.0"), ParseCidrError::MissingPrefix { .. }));
    assert!(matches!(err("198.18.0/24"), ParseCidrError::BadAddress { .. }));
    assert!(matches!(err("198.18.0.0/33"), ParseCidrError::BadPrefix { .. }));
    assert!(matches!(err("198.18.0.0/+4"), ParseCidrError::BadPrefix { .. }));
    assert!(matches!(err("198.18.0.0/"), ParseCidrError::BadPrefix { .. }));
    let e = err("198.18.0.5/24");
    assert!(matches!(e, ParseCidrError::HostBitsSet { .. }));
    assert!(e.to_string().contains("the network is 198.18.0.0/24"), "{e}");
}

#[test]
fn cidr_serde_is_a_string() {
    let n = net("198.18.4.0/22");
    assert_eq!(serde_json::to_string(&n).unwrap(), "\"198.18.4.0/22\"");
    assert_eq!(serde_json::from_str::<Ipv4Net>("\"198.18.4.0/22\"").unwrap(), n);
    assert!(serde_json::from_str::<Ipv4Net>("\"198.18.4.1/22\"").is_err());
}

// ---- IpamState (pure) ----

#[test]
fn allocation_order_skips_network_gateway_broadcast() {
    let mut s = IpamState::new(net("198.18.0.0/29")).unwrap();
    assert_eq!(s.gateway(), ip("198.18.0.1"));
    assert_eq!(s.pod_range(), (ip("198.18.0.2"), ip("198.18.0.6")));
    assert_eq!(s.capacity(), 5);
    let got: Vec<_> = (0..5).map(|i| s.allocate(&format!("p{i}")).unwrap().ip).collect();
    assert_eq!(got, ["198.18.0.2", "198.18.0.3", "198.18.0.4", "198.18.0.5", "198.18.0.6"].map(ip));
}

#[test]
fn allocation_is_idempotent_per_uid() {
    let mut s = IpamState::new(net("198.18.0.0/24")).unwrap();
    assert_eq!(s.allocate("a").unwrap(), Allocated { ip: ip("198.18.0.2"), new: true });
    assert_eq!(s.allocate("b").unwrap(), Allocated { ip: ip("198.18.0.3"), new: true });
    assert_eq!(s.allocate("a").unwrap(), Allocated { ip: ip("198.18.0.2"), new: false });
    assert_eq!(s.allocations().len(), 2);
    // Asking again does not move the cursor.
    assert_eq!(s.allocate("c").unwrap().ip, ip("198.18.0.4"));
}

#[test]
fn released_address_is_not_reused_until_the_range_wraps() {
    let mut s = IpamState::new(net("198.18.0.0/29")).unwrap();
    for uid in ["a", "b", "c"] {
        s.allocate(uid).unwrap();
    }
    assert_eq!(s.release("a"), Some(ip("198.18.0.2")));
    assert_eq!(s.release("a"), None);
    assert_eq!(s.get("a"), None);
    assert_eq!(s.allocate("d").unwrap().ip, ip("198.18.0.5"));
    assert_eq!(s.allocate("e").unwrap().ip, ip("198.18.0.6"));
    // Wrapped: .2 is free again, .3 and .4 are not.
    assert_eq!(s.allocate("f").unwrap().ip, ip("198.18.0.2"));
    assert_eq!(s.last(), Some(ip("198.18.0.2")));
}

#[test]
fn exhaustion_is_a_clear_error() {
    let mut s = IpamState::new(net("198.18.0.0/30")).unwrap();
    assert_eq!(s.capacity(), 1);
    assert_eq!(s.allocate("a").unwrap().ip, ip("198.18.0.2"));
    let e = s.allocate("b").unwrap_err();
    assert!(matches!(e, IpamError::Exhausted { capacity: 1, .. }), "{e}");
    assert!(e.to_string().contains("all 1 pod addresses of 198.18.0.0/30"), "{e}");
    assert!(e.to_string().contains("pod b"), "{e}");
    // The holder still gets its address; a release makes room.
    assert_eq!(s.allocate("a").unwrap().ip, ip("198.18.0.2"));
    s.release("a");
    assert_eq!(s.allocate("b").unwrap().ip, ip("198.18.0.2"));
}

#[test]
fn tiny_cidrs_are_refused() {
    for cidr in ["198.18.0.0/31", "198.18.0.0/32"] {
        let e = IpamState::new(net(cidr)).unwrap_err();
        assert!(matches!(e, IpamError::CidrTooSmall { .. }), "{e}");
    }
}

// ---- Ipam (persisted) ----

#[test]
fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cidr = net("198.18.0.0/24");
    {
        let ipam = Ipam::open(dir.path(), cidr).unwrap();
        assert!(ipam.allocations().is_empty());
        for uid in ["a", "b", "c"] {
            ipam.allocate(uid).unwrap();
        }
        ipam.release("b").unwrap();
    }
    let ipam = Ipam::open(dir.path(), cidr).unwrap();
    assert_eq!(ipam.allocations(), vec![(ip("198.18.0.2"), "a".to_owned()), (ip("198.18.0.4"), "c".to_owned())]);
    assert_eq!(ipam.allocate("a").unwrap(), Allocated { ip: ip("198.18.0.2"), new: false });
    // The cursor survived too: .3 (released before the restart) is skipped.
    assert_eq!(ipam.allocate("d").unwrap().ip, ip("198.18.0.5"));
    assert!(!dir.path().join(format!("{STATE_FILE}.tmp")).exists());
}

#[test]
fn two_handles_on_one_dir_never_share_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let cidr = net("198.18.0.0/24");
    let one = Ipam::open(dir.path(), cidr).unwrap();
    let two = Ipam::open(dir.path(), cidr).unwrap();
    let a = one.allocate("a").unwrap().ip;
    let b = two.allocate("b").unwrap().ip;
    let a_again = two.allocate("a").unwrap();
    assert_ne!(a, b);
    assert_eq!(a_again, Allocated { ip: a, new: false });
    assert_eq!(one.reload().unwrap().len(), 2);
}

#[test]
fn parallel_allocations_from_threads_are_unique() {
    let dir = tempfile::tempdir().unwrap();
    let cidr = net("198.18.0.0/26");
    let handles: Vec<_> = (0..4).map(|_| Ipam::open(dir.path(), cidr).unwrap()).collect();
    let got: Vec<Ipv4Addr> = std::thread::scope(|s| {
        let workers: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(t, ipam)| {
                s.spawn(move || (0..10).map(|i| ipam.allocate(&format!("t{t}-{i}")).unwrap().ip).collect::<Vec<_>>())
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let unique: HashSet<_> = got.iter().collect();
    assert_eq!(unique.len(), 40, "{got:?}");
}

#[test]
fn corrupt_state_is_an_error_and_is_left_alone() {
    let cidr = net("198.18.0.0/24");
    let cases = [
        ("{not json", "not valid JSON"),
        (
            r#"{"version":1,"cidr":"198.18.0.0/24","last_allocated":null,"allocations":[{"ip":"198.18.0.1","pod_uid":"a"}]}"#,
            "198.18.0.1 (pod a) is not a pod address",
        ),
        (
            r#"{"version":1,"cidr":"198.18.0.0/24","last_allocated":null,"allocations":[{"ip":"198.18.0.2","pod_uid":"a"},{"ip":"198.18.0.2","pod_uid":"b"}]}"#,
            "allocated twice",
        ),
        (
            r#"{"version":1,"cidr":"198.18.0.0/24","last_allocated":null,"allocations":[{"ip":"198.18.0.2","pod_uid":"a"},{"ip":"198.18.0.3","pod_uid":"a"}]}"#,
            "holds two addresses",
        ),
        (
            r#"{"version":1,"cidr":"198.18.0.0/24","last_allocated":"198.18.0.255","allocations":[]}"#,
            "last_allocated 198.18.0.255",
        ),
        (r#"{"version":2,"cidr":"198.18.0.0/24","last_allocated":null,"allocations":[]}"#, "format version 2"),
        (
            r#"{"version":1,"cidr":"198.18.1.0/24","last_allocated":null,"allocations":[]}"#,
            "configured with 198.18.0.0/24",
        ),
        (r#"{"version":1,"cidr":"198.18.0.0/24","last_allocated":null}"#, "missing field `allocations`"),
        (r#"{"version":1,"cidr":"198.18.0.0/24","last_allocated":null,"allocations":[],"x":1}"#, "unknown field `x`"),
        ("", "not valid JSON"),
    ];
    for (text, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::write(&path, text).unwrap();
        let e = Ipam::open(dir.path(), cidr).unwrap_err();
        assert!(e.to_string().contains(expected), "{text}: {e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "state file was changed");
    }
}

#[test]
fn corruption_after_open_fails_operations_without_overwriting() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = Ipam::open(dir.path(), net("198.18.0.0/24")).unwrap();
    ipam.allocate("a").unwrap();
    let path = dir.path().join(STATE_FILE);
    std::fs::write(&path, "garbage").unwrap();
    assert!(matches!(ipam.allocate("b").unwrap_err(), IpamError::Parse { .. }));
    assert!(matches!(ipam.release("a").unwrap_err(), IpamError::Parse { .. }));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "garbage");
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(ipam.allocate("b").unwrap_err(), IpamError::StateMissing { .. }));
    assert!(!path.exists());
}

// ---- property: random allocate/release sequences against a model ----

/// The specification, written as plainly as possible: slots in address
/// order, a cursor, and "first free slot after the cursor".
#[derive(Debug, Default)]
struct Model {
    slots: Vec<Option<String>>,
    cursor: Option<usize>,
}

impl Model {
    fn new(capacity: usize) -> Self {
        Self { slots: vec![None; capacity], cursor: None }
    }

    fn allocate(&mut self, uid: &str) -> Option<(usize, bool)> {
        if let Some(i) = self.slots.iter().position(|s| s.as_deref() == Some(uid)) {
            return Some((i, false));
        }
        let n = self.slots.len();
        let start = self.cursor.map_or(0, |c| c + 1);
        let i = (start..start + n).map(|i| i % n).find(|&i| self.slots[i].is_none())?;
        self.slots[i] = Some(uid.to_owned());
        self.cursor = Some(i);
        Some((i, true))
    }

    fn release(&mut self, uid: &str) -> Option<usize> {
        let i = self.slots.iter().position(|s| s.as_deref() == Some(uid))?;
        self.slots[i] = None;
        Some(i)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Allocate(u8),
    Release(u8),
    Reopen,
}

fn ops(max_uid: u8, reopen: bool) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (0..max_uid).prop_map(Op::Allocate),
        3 => (0..max_uid).prop_map(Op::Release),
        (if reopen { 1 } else { 0 }) => Just(Op::Reopen),
    ];
    proptest::collection::vec(op, 0..80)
}

/// The allocator under test, pure or persisted.
trait Allocator {
    fn allocate(&mut self, uid: &str) -> Result<Allocated, IpamError>;
    fn release(&mut self, uid: &str) -> Option<Ipv4Addr>;
    fn allocations(&self) -> Vec<(Ipv4Addr, String)>;
}

impl Allocator for IpamState {
    fn allocate(&mut self, uid: &str) -> Result<Allocated, IpamError> {
        IpamState::allocate(self, uid)
    }
    fn release(&mut self, uid: &str) -> Option<Ipv4Addr> {
        IpamState::release(self, uid)
    }
    fn allocations(&self) -> Vec<(Ipv4Addr, String)> {
        IpamState::allocations(self)
    }
}

impl Allocator for Ipam {
    fn allocate(&mut self, uid: &str) -> Result<Allocated, IpamError> {
        Ipam::allocate(self, uid)
    }
    fn release(&mut self, uid: &str) -> Option<Ipv4Addr> {
        Ipam::release(self, uid).unwrap()
    }
    fn allocations(&self) -> Vec<(Ipv4Addr, String)> {
        Ipam::allocations(self)
    }
}

/// Applies an allocate or release to both and compares the results, then
/// the whole allocation tables.
fn check_op(model: &mut Model, first: Ipv4Addr, op: &Op, ipam: &mut dyn Allocator) -> Result<(), TestCaseError> {
    let addr = |i: usize| Ipv4Addr::from(u32::from(first) + i as u32);
    match op {
        Op::Allocate(u) => {
            let uid = format!("pod-{u}");
            match (model.allocate(&uid), ipam.allocate(&uid)) {
                (Some((i, new)), Ok(got)) => prop_assert_eq!(got, Allocated { ip: addr(i), new }),
                (None, Err(IpamError::Exhausted { .. })) => {}
                (want, got) => prop_assert!(false, "allocate {}: model {:?}, ipam {:?}", uid, want, got),
            }
        }
        Op::Release(u) => {
            let uid = format!("pod-{u}");
            prop_assert_eq!(model.release(&uid).map(addr), ipam.release(&uid));
        }
        Op::Reopen => {}
    }
    let allocs = ipam.allocations();
    assert_no_duplicates(&allocs)?;
    prop_assert_eq!(allocs, model_allocations(model, first));
    Ok(())
}

fn assert_no_duplicates(allocs: &[(Ipv4Addr, String)]) -> Result<(), TestCaseError> {
    let ips: HashSet<_> = allocs.iter().map(|(ip, _)| ip).collect();
    let uids: HashSet<_> = allocs.iter().map(|(_, uid)| uid).collect();
    prop_assert_eq!(ips.len(), allocs.len());
    prop_assert_eq!(uids.len(), allocs.len());
    Ok(())
}

fn model_allocations(model: &Model, first: Ipv4Addr) -> Vec<(Ipv4Addr, String)> {
    let by_ip: HashMap<usize, &String> =
        model.slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|u| (i, u))).collect();
    let mut v: Vec<_> =
        by_ip.into_iter().map(|(i, u)| (Ipv4Addr::from(u32::from(first) + i as u32), u.clone())).collect();
    v.sort();
    v
}

proptest! {
    /// A /29 (5 pod addresses) and 8 uids, so exhaustion and wrap-around
    /// happen often.
    #[test]
    fn allocator_matches_model(ops in ops(8, false)) {
        let mut state = IpamState::new(net("198.18.0.0/29")).unwrap();
        let first = state.pod_range().0;
        let mut model = Model::new(state.capacity() as usize);
        for op in &ops {
            check_op(&mut model, first, op, &mut state)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The same against the persisted allocator, reopening it now and then
    /// (a restart): the file alone must carry the state.
    #[test]
    fn persisted_allocator_matches_model_across_restarts(ops in ops(8, true)) {
        let dir = tempfile::tempdir().unwrap();
        let cidr = net("198.18.0.0/29");
        let mut ipam = Ipam::open(dir.path(), cidr).unwrap();
        let first = ip("198.18.0.2");
        let mut model = Model::new(5);
        for op in &ops {
            if let Op::Reopen = op {
                drop(ipam);
                ipam = Ipam::open(dir.path(), cidr).unwrap();
            }
            check_op(&mut model, first, op, &mut ipam)?;
        }
    }
}

// ---- names ----

#[test]
fn host_veth_names_fit_and_are_recognised() {
    let name = host_veth_name("0f8b1c9e-5b7a-4a57-9d0a-3c6f2b1e4d55");
    assert_eq!(name.len(), 13);
    assert!(name.len() <= 15);
    assert!(name.starts_with("bth"));
    assert!(is_host_veth_name(&name));
    assert_eq!(name, host_veth_name("0f8b1c9e-5b7a-4a57-9d0a-3c6f2b1e4d55"), "stable");
    assert_ne!(name, host_veth_name("another"));
    for other in ["bth", "bth0123456789a", "bth012345678", "bthABCDEF0123", "eth0", "xth0123456789"] {
        assert!(!is_host_veth_name(other), "{other}");
    }
    assert!(is_host_veth_name("bth0123456789"));
}

#[test]
fn pod_uids_are_safe_file_names() {
    let longest = "a".repeat(MAX_UID_LEN);
    for ok in ["0f8b1c9e-5b7a-4a57-9d0a-3c6f2b1e4d55", "a", "pod_1.x", longest.as_str()] {
        validate_uid(ok).unwrap();
    }
    // The uid goes into the veth alias, which holds 255 bytes.
    assert!(HOST_VETH_ALIAS_PREFIX.len() + MAX_UID_LEN < 256);
    let long = "a".repeat(MAX_UID_LEN + 1);
    for bad in ["", ".", "..", "../etc", "a/b", ".hidden", "sp ace", "ünï", long.as_str()] {
        let e = validate_uid(bad).unwrap_err();
        assert!(matches!(e, NetworkError::InvalidPodUid { .. }), "{bad}: {e}");
    }
}
