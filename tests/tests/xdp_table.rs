//! Table tests of the XDP program through BPF_PROG_TEST_RUN: for each input
//! packet, the expected verdict and the exact expected output bytes. Expected
//! outputs are built independently (headers rewritten, checksums computed
//! from scratch), so the program's incremental checksum arithmetic is checked
//! against a full recomputation.
//!
//! Each test loads berth into its own bpffs pin directory and attaches
//! nothing. Privileged: needs root (CAP_BPF, CAP_NET_ADMIN).

use std::{collections::BTreeMap, net::Ipv4Addr};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use berth_agent::datapath::{
    Datapath, DatapathOptions, DesiredBackend, DesiredService, MapLimits, PinDir,
    schedule::{Algorithm, MaglevTableSize, Weight},
};
use berth_ebpf::abi::{
    BERTH_DROP_NO_BACKEND, BERTH_EV_MIDFLOW_MISS, BERTH_PASS_FRAGMENT, BERTH_PASS_MALFORMED, Protocol,
};

use berth_tests::packet::{self, Ipv4Opts, Pkt, TcpFlags};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 2);

/// A loaded (unattached) berth in a private pin directory, removed on drop.
struct Loaded {
    dp: Datapath,
    pins: PinDir,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        if let Err(e) = self.pins.remove_all() {
            eprintln!("cleanup of {}: {e}", self.pins.path().display());
        }
    }
}

fn load(services: &[DesiredService]) -> Loaded {
    berth_tests::require_root();
    let instance = format!("table-{}", berth_tests::short_id());
    let pins = PinDir::new(std::path::Path::new("/sys/fs/bpf/berth-test"), &instance);
    let limits = MapLimits {
        services: 64,
        backends: 256,
        schedule_slots: 1 << 16,
        conntrack: 4096,
        affinity: 256,
        sock_rev: 256,
    };
    let mut dp = Datapath::load(DatapathOptions {
        pins: pins.clone(),
        limits,
        uplink: None,
        socket_lb_cgroup: None,
        stats: true,
    })
    .expect("loading berth (needs root, bpffs and a 5.x+ kernel)");
    dp.apply(services).expect("programming services");
    Loaded { dp, pins }
}

fn backend(last: u8, weight: u32) -> DesiredBackend {
    DesiredBackend {
        addr: Ipv4Addr::new(198, 18, last, 2),
        port: 8080,
        weight: Weight::new(weight).expect("weight"),
        terminating: false,
    }
}

fn service(port: u16, protocol: Protocol, algorithm: Algorithm, backends: Vec<DesiredBackend>) -> DesiredService {
    DesiredService {
        name: format!("svc-{port}"),
        vip: VIP,
        port,
        protocol,
        algorithm,
        maglev_table_size: MaglevTableSize::DEFAULT,
        affinity_timeout_s: None,
        backends,
    }
}

fn run(l: &mut Loaded, input: &[u8]) -> (u32, Vec<u8>) {
    let xdp: &Xdp =
        l.dp.objects_mut()
            .xdp
            .program(berth_ebpf::programs::XDP_LB)
            .expect("xdp program")
            .try_into()
            .expect("an XDP program");
    let mut out = vec![0u8; input.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(input);
    opts.data_out = Some(&mut out);
    let res = xdp.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    (res.return_value, out)
}

fn reason(l: &Loaded, code: u32) -> u64 {
    l.dp.maps().reasons.get(&code, 0).map(|v| v.iter().sum()).unwrap_or(0)
}

fn tcp(sport: u16, dport: u16, flags: TcpFlags) -> Pkt {
    Pkt::tcp(CLIENT, sport, VIP, dport, flags, b"")
}

/// The packet the backend should receive: same bytes, destination rewritten,
/// checksums recomputed from scratch.
fn dnat(p: &Pkt, to: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut q = p.clone();
    q.dst = to;
    q.dport = port;
    q.build()
}

fn web() -> DesiredService {
    service(80, Protocol::Tcp, Algorithm::Wrr, vec![backend(1, 1)])
}

#[test]
fn tcp_flow_is_translated_on_every_packet() {
    let mut l = load(&[web()]);
    let b = Ipv4Addr::new(198, 18, 1, 2);
    for (what, flags, payload) in [
        ("SYN", TcpFlags::SYN, &b""[..]),
        ("ACK", TcpFlags::ACK, b""),
        ("PSH|ACK with data", TcpFlags::PSH_ACK, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("FIN|ACK", TcpFlags::FIN_ACK, b""),
        ("RST", TcpFlags::RST, b""),
    ] {
        let p = Pkt::tcp(CLIENT, 40000, VIP, 80, flags, payload);
        let (verdict, out) = run(&mut l, &p.build());
        assert_eq!(verdict, XDP_PASS, "{what}");
        assert_eq!(out, dnat(&p, b, 8080), "{what}: output bytes");
    }
}

#[test]
fn udp_is_translated_and_a_zero_checksum_stays_zero() {
    let mut l = load(&[service(53, Protocol::Udp, Algorithm::Wrr, vec![backend(1, 1)])]);
    let p = Pkt::udp(CLIENT, 5353, VIP, 53, b"query");
    let (verdict, out) = run(&mut l, &p.build());
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, dnat(&p, Ipv4Addr::new(198, 18, 1, 2), 8080));

    let mut nocsum = Pkt::udp(CLIENT, 5354, VIP, 53, b"query");
    nocsum.udp_zero_checksum = true;
    let (verdict, out) = run(&mut l, &nocsum.build());
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, dnat(&nocsum, Ipv4Addr::new(198, 18, 1, 2), 8080), "UDP checksum 0 must stay 0");
}

#[test]
fn ip_options_are_skipped_correctly() {
    let mut l = load(&[web()]);
    let mut p = tcp(40001, 80, TcpFlags::SYN);
    p.ip_options = Ipv4Opts::RouterAlert;
    let (verdict, out) = run(&mut l, &p.build());
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, dnat(&p, Ipv4Addr::new(198, 18, 1, 2), 8080));
}

#[test]
fn packets_that_are_not_for_a_service_pass_untouched() {
    let mut l = load(&[web()]);
    let mut icmp = tcp(0, 0, TcpFlags::SYN);
    icmp.proto_override = Some(1);
    let mut vlan = tcp(40002, 80, TcpFlags::SYN);
    vlan.vlan = Some(100);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("other port", tcp(40002, 81, TcpFlags::SYN).build()),
        ("other address", Pkt::tcp(CLIENT, 40002, Ipv4Addr::new(198, 19, 0, 11), 80, TcpFlags::SYN, b"").build()),
        ("UDP to a TCP Service", Pkt::udp(CLIENT, 40002, VIP, 80, b"x").build()),
        ("ICMP to the VIP", icmp.build()),
        ("ARP", packet::arp()),
        ("VLAN-tagged SYN to the VIP", vlan.build()),
    ];
    for (what, input) in cases {
        let (verdict, out) = run(&mut l, &input);
        assert_eq!(verdict, XDP_PASS, "{what}");
        assert_eq!(out, input, "{what}: must be untouched");
    }
}

#[test]
fn malformed_and_fragmented_packets_pass_untouched_and_are_counted() {
    let mut l = load(&[web()]);
    let syn = tcp(40003, 80, TcpFlags::SYN).build();
    let udp = Pkt::udp(CLIENT, 40003, VIP, 80, b"").build();
    let mut bad_ihl = syn.clone();
    bad_ihl[14] = 0x44; // version 4, ihl 4 (< 5)
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        ("truncated IPv4 header", syn[..14 + 10].to_vec()),
        ("truncated TCP header", syn[..14 + 20 + 10].to_vec()),
        ("truncated UDP header", udp[..14 + 20 + 4].to_vec()),
        ("IHL below 5", bad_ihl),
    ];
    for (i, (what, input)) in malformed.iter().enumerate() {
        let (verdict, out) = run(&mut l, input);
        assert_eq!(verdict, XDP_PASS, "{what}");
        assert_eq!(&out, input, "{what}: must be untouched");
        assert_eq!(reason(&l, BERTH_PASS_MALFORMED), i as u64 + 1, "{what}: counted as malformed");
    }
    let mut first = tcp(40004, 80, TcpFlags::SYN);
    first.more_fragments = true;
    let mut later = tcp(40004, 80, TcpFlags::SYN);
    later.fragment_offset = 185;
    for (i, (what, p)) in [("first fragment", first), ("later fragment", later)].into_iter().enumerate() {
        let input = p.build();
        let (verdict, out) = run(&mut l, &input);
        assert_eq!(verdict, XDP_PASS, "{what}");
        assert_eq!(out, input, "{what}: must be untouched");
        assert_eq!(reason(&l, BERTH_PASS_FRAGMENT), i as u64 + 1, "{what}: counted");
    }
}

#[test]
fn a_service_without_backends_drops_and_counts() {
    let mut l = load(&[service(80, Protocol::Tcp, Algorithm::Wrr, vec![])]);
    let (verdict, _) = run(&mut l, &tcp(40005, 80, TcpFlags::SYN).build());
    assert_eq!(verdict, XDP_DROP);
    assert_eq!(reason(&l, BERTH_DROP_NO_BACKEND), 1);
}

#[test]
fn midflow_packet_without_state_is_balanced_and_counted() {
    let mut l = load(&[web()]);
    let p = tcp(40006, 80, TcpFlags::ACK);
    let (verdict, out) = run(&mut l, &p.build());
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, dnat(&p, Ipv4Addr::new(198, 18, 1, 2), 8080));
    assert_eq!(reason(&l, BERTH_EV_MIDFLOW_MISS), 1);
}

/// Pins the test thread to one CPU: the WRR cursor is per CPU.
fn pin_to_cpu0() {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).expect("cpu 0");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("sched_setaffinity");
}

fn backend_of(out: &[u8]) -> u8 {
    out[14 + 18] // third octet of the destination address: backend index
}

#[test]
fn wrr_new_flows_follow_the_smooth_sequence_exactly() {
    pin_to_cpu0();
    let mut l = load(&[service(80, Protocol::Tcp, Algorithm::Wrr, vec![backend(1, 1), backend(2, 2), backend(3, 3)])]);
    let picks: Vec<u8> = (0..60u16)
        .map(|i| {
            let (verdict, out) = run(&mut l, &tcp(41000 + i, 80, TcpFlags::SYN).build());
            assert_eq!(verdict, XDP_PASS);
            backend_of(&out)
        })
        .collect();
    for window in picks.windows(6) {
        let mut counts = BTreeMap::new();
        for b in window {
            *counts.entry(*b).or_insert(0) += 1;
        }
        assert_eq!(counts, BTreeMap::from([(1, 1), (2, 2), (3, 3)]), "window {window:?} of {picks:?}");
    }
    // Interleaved, never in blocks: the weight-3 backend never gets 3 in a row.
    assert!(!picks.windows(3).any(|w| w.iter().all(|b| *b == 3)), "{picks:?}");
}

#[test]
fn flows_stick_to_their_backend_and_maglev_is_deterministic() {
    let mut l =
        load(&[service(80, Protocol::Tcp, Algorithm::Maglev, vec![backend(1, 1), backend(2, 1), backend(3, 1)])]);
    let mut seen = BTreeMap::new();
    for i in 0..200u16 {
        let (_, out) = run(&mut l, &tcp(42000 + i, 80, TcpFlags::SYN).build());
        let b = backend_of(&out);
        seen.insert(i, b);
        *seen.entry(1000 + u16::from(b)).or_insert(0) += 0;
        // Later packets of the flow go to the same backend.
        let (_, out) = run(&mut l, &tcp(42000 + i, 80, TcpFlags::ACK).build());
        assert_eq!(backend_of(&out), b, "flow {i}");
    }
    let used: std::collections::BTreeSet<u8> = (0..200u16).map(|i| seen[&i]).collect();
    assert_eq!(used.len(), 3, "maglev spreads 200 flows over all backends");
}

#[test]
fn removed_backend_flows_are_rebalanced_and_syn_picks_a_live_one() {
    let mut l = load(&[service(80, Protocol::Tcp, Algorithm::Wrr, vec![backend(1, 1), backend(2, 1)])]);
    let mut on_b1 = None;
    for i in 0..4u16 {
        let (_, out) = run(&mut l, &tcp(43000 + i, 80, TcpFlags::SYN).build());
        if backend_of(&out) == 1 {
            on_b1 = Some(43000 + i);
        }
    }
    let sport = on_b1.expect("some flow landed on backend 1");
    l.dp.apply(&[service(80, Protocol::Tcp, Algorithm::Wrr, vec![backend(2, 1)])]).expect("remove backend 1");
    let (verdict, out) = run(&mut l, &tcp(sport, 80, TcpFlags::ACK).build());
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(backend_of(&out), 2, "the flow moves to a live backend (which answers RST)");
    assert_eq!(reason(&l, berth_ebpf::abi::BERTH_EV_BACKEND_GONE), 1);
}

#[test]
fn verifier_instruction_counts_are_recorded() {
    let l = load(&[]);
    let counts = l.dp.instruction_counts().to_vec();
    let baseline_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("verifier-insns.txt");
    let mut report = String::new();
    for (name, n) in &counts {
        report.push_str(&format!("{name} {n}\n"));
    }
    eprintln!("verified instructions:\n{report}");
    if std::env::var_os("BERTH_UPDATE_BASELINE").is_some() {
        std::fs::write(&baseline_path, &report).expect("write baseline");
        return;
    }
    let baseline = std::fs::read_to_string(&baseline_path)
        .expect("tests/verifier-insns.txt (regenerate with BERTH_UPDATE_BASELINE=1)");
    for line in baseline.lines() {
        let (name, n) = line.split_once(' ').expect("name count");
        let base: u32 = n.parse().expect("count");
        let now = counts.iter().find(|(p, _)| *p == name).map(|(_, n)| *n).expect("program still exists");
        // Growth beyond 10% must be a deliberate baseline update.
        assert!(
            now <= base + base / 10,
            "{name}: {now} verified instructions, baseline {base}; update tests/verifier-insns.txt"
        );
    }
}

/// Reverse entries (backend → client) in conntrack.
fn reverse_entries(l: &Loaded) -> usize {
    l.dp.maps()
        .conntrack
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, v)| u32::from(v.kind) == berth_ebpf::abi::BERTH_CT_REVERSE)
        .count()
}

#[test]
fn a_direct_syn_on_the_tuple_of_an_old_translated_flow_drops_its_reverse_entry() {
    let mut l = load(&[web()]);
    let b = Ipv4Addr::new(198, 18, 1, 2);
    let vip_syn = Pkt::tcp(CLIENT, 41000, VIP, 80, TcpFlags::SYN, b"");
    let (verdict, out) = run(&mut l, &vip_syn.build());
    assert_eq!((verdict, out), (XDP_PASS, dnat(&vip_syn, b, 8080)));
    assert_eq!(reverse_entries(&l), 1, "the translated flow has its reverse entry");

    // The client later talks to the backend directly from the same port: a
    // mid-flow packet changes nothing, a SYN (a new connection on that
    // 4-tuple) retires the old flow's reverse entry, so tc no longer rewrites
    // the new connection's replies to the VIP. Both pass untouched.
    for (flags, left) in [(TcpFlags::ACK, 1), (TcpFlags::SYN, 0)] {
        let direct = Pkt::tcp(CLIENT, 41000, b, 8080, flags, b"");
        let (verdict, out) = run(&mut l, &direct.build());
        assert_eq!((verdict, out), (XDP_PASS, direct.build()), "{flags:?}");
        assert_eq!(reverse_entries(&l), left, "after a direct {flags:?}");
    }
}
