#![allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]

use super::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn backends() -> Vec<SocketAddrV4> {
    (1..=4).map(|k| SocketAddrV4::new(Ipv4Addr::new(198, 18, k, 2), 8080)).collect()
}

fn service(namespace: &str, name: &str, port_name: &str) -> ServicePort {
    ServicePort {
        namespace: namespace.into(),
        name: name.into(),
        port_name: port_name.into(),
        cluster_ip: Ipv4Addr::new(10, 96, 0, 1),
        port: 443,
        endpoints: vec![],
    }
}

#[test]
fn sha256_standard_vectors() {
    assert_eq!(hex(&sha256(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(hex(&sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(
        hex(&sha256(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
}

#[test]
fn chain_names_match_real_clusters() {
    // The chains every kube-proxy (iptables mode) cluster has for the
    // `kubernetes` and `kube-dns` Services.
    assert_eq!(service("default", "kubernetes", "https").svc_chain(), "KUBE-SVC-NPX46M4PTMTKRN6Y");
    assert_eq!(service("kube-system", "kube-dns", "dns-tcp").svc_chain(), "KUBE-SVC-ERIFXISQEP7F7OF4");
    assert_eq!(hash_name("kube-system/kube-dns:dnsudp", 16), "TCOU7JCQXEZGVUNU");
}

#[test]
fn chain_names_are_stable_and_distinct() {
    let a = ServicePort::bench(0, backends());
    let b = ServicePort::bench(1, backends());
    assert_eq!(a.svc_chain(), ServicePort::bench(0, vec![]).svc_chain());
    assert_ne!(a.svc_chain(), b.svc_chain());
    assert_ne!(a.sep_chain(backends()[0]), b.sep_chain(backends()[0]));
    assert_ne!(a.sep_chain(backends()[0]), a.sep_chain(backends()[1]));
    // iptables chain names are at most 28 characters.
    assert_eq!(a.svc_chain().len(), 25);
    assert_eq!(a.sep_chain(backends()[0]).len(), 25);
}

#[test]
fn probabilities_are_kube_proxys() {
    assert_eq!(probability(4), "0.2500000000");
    assert_eq!(probability(3), "0.3333333333");
    assert_eq!(probability(2), "0.5000000000");
}

#[test]
fn full_sync_has_one_svc_chain_per_service_and_one_sep_per_backend() {
    let services = bench_services(3, &backends());
    let text = restore(&services, Sync::Full);
    let svc = &services[2];
    let chain = svc.svc_chain();
    assert!(text.contains(&format!(
        "-A KUBE-SERVICES -m comment --comment \"bench/svc-2:http cluster IP\" -m tcp -p tcp -d 198.19.0.3 --dport \
         80 -j {chain}\n"
    )));
    let lb: Vec<&str> =
        text.lines().filter(|l| l.starts_with(&format!("-A {chain} ")) && l.contains("KUBE-SEP-")).collect();
    assert_eq!(lb.len(), 4);
    for (line, p) in lb.iter().zip(["0.2500000000", "0.3333333333", "0.5000000000"]) {
        assert!(line.contains(&format!("-m statistic --mode random --probability {p} ")), "{line}");
    }
    assert!(!lb[3].contains("statistic"), "the last endpoint is unconditional: {}", lb[3]);
    for (line, ep) in lb.iter().zip(backends()) {
        assert!(line.contains(&format!("--comment \"bench/svc-2:http -> {ep}\"")), "{line}");
        let sep = svc.sep_chain(ep);
        assert!(line.ends_with(&format!("-j {sep}")));
        assert!(text.contains(&format!(":{sep} - [0:0]\n")));
        assert!(text.contains(&format!(
            "-A {sep} -m comment --comment bench/svc-2:http -m tcp -p tcp -j DNAT --to-destination {ep}\n"
        )));
        assert!(
            text.contains(&format!(
                "-A {sep} -m comment --comment bench/svc-2:http -s {} -j KUBE-MARK-MASQ\n",
                ep.ip()
            ))
        );
    }
    assert_eq!(text.matches(":KUBE-SVC-").count(), 3);
    assert_eq!(text.matches(":KUBE-SEP-").count(), 12);
    assert_eq!(text.matches("-j DNAT").count(), 12);
    // The nodeports jump stays the last rule of nat KUBE-SERVICES.
    let last = text.lines().rfind(|l| l.starts_with("-A KUBE-SERVICES")).unwrap();
    assert!(last.ends_with("-j KUBE-NODEPORTS"));
    assert_eq!(text.matches("COMMIT\n").count(), 2);
}

#[test]
fn large_clusters_drop_endpoint_comments() {
    let services = bench_services(300, &backends());
    let text = restore(&services, Sync::Full);
    let sep = services[0].sep_chain(backends()[0]);
    assert!(text.contains(&format!("-A {sep} -s 198.18.1.2 -j KUBE-MARK-MASQ\n")));
    assert!(!text.contains(" -> "), "per-endpoint comments in large cluster mode");
    assert!(text.contains("\"bench/svc-299:http cluster IP\""));
}

#[test]
fn partial_sync_rewrites_top_level_chains_and_only_the_changed_service() {
    let mut services = bench_services(5, &backends());
    services[3].endpoints.push(SocketAddrV4::new(Ipv4Addr::new(198, 18, 9, 2), 8080));
    let text = restore(&services, Sync::Partial(&[3]));
    assert_eq!(text.matches("-A KUBE-SERVICES -m comment --comment \"bench/svc-").count(), 5);
    assert_eq!(text.matches(":KUBE-SVC-").count(), 1);
    assert!(text.contains(&format!(":{} - [0:0]", services[3].svc_chain())));
    assert_eq!(text.matches(":KUBE-SEP-").count(), 5);
    assert!(text.contains("--probability 0.2000000000 "));
    assert!(text.contains(":KUBE-FORWARD - [0:0]"));
}

#[test]
fn jumps_and_cleanup_mirror_each_other() {
    let j = jumps();
    assert!(j.contains("-I PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"));
    assert!(j.contains(
        "-I FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
    ));
    let services = bench_services(2, &backends());
    let c = cleanup(&services);
    for line in j.lines().filter(|l| l.starts_with("-I ")) {
        assert!(c.contains(&line.replacen("-I ", "-D ", 1)), "{line}");
    }
    assert_eq!(c.matches("-X KUBE-SEP-").count(), 8);
    assert_eq!(c.matches("-X KUBE-SVC-").count(), 2);
}
