//! kube-proxy's nftables-mode ruleset, as `nft -f` input; used by the
//! `nftables` peer and the apply benchmark.
//!
//! # Design
//! Pure functions writing the transaction kube-proxy's nftables proxier
//! (`pkg/proxy/nftables/proxier.go`: `setupNFTables`, `syncProxyRules`,
//! `writeServiceToEndpointRules`) sends through knftables, in knftables'
//! text form (`add chain ip kube-proxy …`), for TCP ClusterIP Services with
//! `Cluster` traffic policy:
//! - table `ip kube-proxy`; base chains `nat-prerouting`/`nat-output` jump
//!   to `services`, whose one rule is
//!   `ip daddr . meta l4proto . th dport vmap @service-ips`;
//! - the verdict map `service-ips` holds one element per Service,
//!   `VIP . tcp . 80 : goto service-HASH-bench/svc-i/tcp/http`;
//! - each Service chain has the masquerade check then
//!   `numgen random mod N vmap { 0 : goto endpoint-…, … }`; each endpoint
//!   chain `ip saddr IP jump mark-for-masquerade` (hairpin) then
//!   `meta l4proto tcp dnat to IP:PORT`;
//! - the filter chains (`filter-forward` … `ct state new jump
//!   cluster-ips-check`, the no-endpoint and firewall vmaps) are there too,
//!   since packets pass them.
//!
//! Chain names are kube-proxy's: prefix + first 8 base32 characters of
//! SHA-256 of the name + `-` + `ns/name/tcp/port[__ip/port]`.
//!
//! A partial sync ([`partial`]) is what kube-proxy sends after one
//! Service's endpoints changed: every chain of that Service re-added and
//! flushed, then its rules written again; map elements whose value did not
//! change are not touched. Masquerade is as in [`super::kube_iptables`]:
//! marked only from outside [`CLUSTER_CIDR`], so never here, and not needed.
//!
//! # Limitations
//! kube-proxy also runs `nft list chains` and `nft list sets` on every sync
//! (to find stale chains); those reads are not part of the transaction and
//! not written here. NodePorts are not configured (the `service-nodeports`
//! rule is there, the map stays empty); `--nodeport-addresses` is taken as
//! "all" (kube-proxy's default before 1.31).

use std::fmt::Write as _;

use super::kube_iptables::{CLUSTER_CIDR, MASQ_MARK, PROTOCOL, SERVICE_CIDR, ServicePort, hash_name};

/// kube-proxy's table (in family `ip`).
pub const TABLE: &str = "kube-proxy";

/// kube-proxy's `hashAndTruncate`: 8 hash characters, `-`, the name.
fn hash_and_truncate(name: &str) -> String {
    // nftables names are at most 256 bytes, kube-proxy keeps 16 for the
    // prefix; benchmark names are far shorter, so nothing is truncated.
    format!("{}-{name}", hash_name(name, 8))
}

/// `service-HASH-ns/name/tcp/port`: the Service's `Cluster` policy chain.
pub fn service_chain(svc: &ServicePort) -> String {
    format!("service-{}", hash_and_truncate(&format!("{}/{}/{PROTOCOL}/{}", svc.namespace, svc.name, svc.port_name)))
}

/// `endpoint-HASH-ns/name/tcp/port__ip/port`: one endpoint's chain.
pub fn endpoint_chain(svc: &ServicePort, endpoint: std::net::SocketAddrV4) -> String {
    format!(
        "endpoint-{}",
        hash_and_truncate(&format!(
            "{}/{}/{PROTOCOL}/{}__{}/{}",
            svc.namespace,
            svc.name,
            svc.port_name,
            endpoint.ip(),
            endpoint.port()
        ))
    )
}

/// Base chains: name, type, hook, priority. kube-proxy says `dstnat-10`,
/// `dstnat`, `srcnat`; knftables writes them as numbers (dstnat = -100,
/// srcnat = 100), since nft accepts the names only on some hooks.
const BASE_CHAINS: [(&str, &str, &str, &str); 8] = [
    ("filter-prerouting", "filter", "prerouting", "-110"),
    ("filter-input", "filter", "input", "-110"),
    ("filter-forward", "filter", "forward", "-110"),
    ("filter-output", "filter", "output", "-110"),
    ("filter-output-post-dnat", "filter", "output", "-90"),
    ("nat-prerouting", "nat", "prerouting", "-100"),
    ("nat-output", "nat", "output", "-100"),
    ("nat-postrouting", "nat", "postrouting", "100"),
];

/// `nftablesJumpChains`: (to, from, extra match).
const JUMPS: [(&str, &str, &str); 11] = [
    ("nodeport-endpoints-check", "filter-input", "ct state new "),
    ("service-endpoints-check", "filter-input", "ct state new "),
    ("service-endpoints-check", "filter-forward", "ct state new "),
    ("service-endpoints-check", "filter-output", "ct state new "),
    ("firewall-check", "filter-prerouting", "ct state new "),
    ("firewall-check", "filter-output", "ct state new "),
    ("services", "nat-output", ""),
    ("services", "nat-prerouting", ""),
    ("masquerading", "nat-postrouting", ""),
    ("cluster-ips-check", "filter-forward", "ct state new "),
    ("cluster-ips-check", "filter-output-post-dnat", "ct state new "),
];

/// Writes `add chain` + `flush chain` once per chain (`ensureChain`).
struct Tx {
    out: String,
    created: std::collections::HashSet<String>,
}

impl Tx {
    fn new(capacity: usize) -> Self {
        Self { out: String::with_capacity(capacity), created: std::collections::HashSet::new() }
    }

    fn line(&mut self, line: std::fmt::Arguments<'_>) {
        let _ = self.out.write_fmt(line);
        self.out.push('\n');
    }

    fn ensure_chain(&mut self, chain: &str) {
        if self.created.insert(chain.to_owned()) {
            self.line(format_args!("add chain ip {TABLE} {chain}"));
            self.line(format_args!("flush chain ip {TABLE} {chain}"));
        }
    }

    fn rule(&mut self, chain: &str, rule: &str) {
        self.line(format_args!("add rule ip {TABLE} {chain} {rule}"));
    }
}

/// `setupNFTables`: the table, base chains, top-level chains, sets and maps
/// (flushed), as on kube-proxy's first sync.
fn setup(tx: &mut Tx) {
    tx.line(format_args!("add table ip {TABLE} {{ comment \"rules for kube-proxy\" ; }}"));
    // The first sync re-creates the base chains (add + delete first).
    for (name, ..) in BASE_CHAINS {
        tx.line(format_args!("add chain ip {TABLE} {name}"));
        tx.line(format_args!("delete chain ip {TABLE} {name}"));
    }
    for (name, kind, hook, priority) in BASE_CHAINS {
        tx.line(format_args!("add chain ip {TABLE} {name} {{ type {kind} hook {hook} priority {priority} ; }}"));
        tx.line(format_args!("flush chain ip {TABLE} {name}"));
    }
    for (to, from, extra) in JUMPS {
        tx.ensure_chain(to);
        tx.rule(from, &format!("{extra}jump {to}"));
    }
    for chain in ["services", "cluster-ips-check", "masquerading", "mark-for-masquerade"] {
        tx.ensure_chain(chain);
    }
    tx.rule("mark-for-masquerade", &format!("mark set mark or {MASQ_MARK}"));
    tx.rule("masquerading", &format!("mark and {MASQ_MARK} == 0 return"));
    tx.rule("masquerading", &format!("mark set mark xor {MASQ_MARK}"));
    tx.rule("masquerading", "masquerade fully-random");
    tx.line(format_args!("add set ip {TABLE} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"));
    tx.rule(
        "cluster-ips-check",
        "ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"",
    );
    tx.rule(
        "cluster-ips-check",
        &format!("ip daddr {{ {SERVICE_CIDR} }} drop comment \"Drop traffic to unallocated ClusterIPs\""),
    );
    // nodeport-addresses "all": the set is made sure not to exist.
    tx.line(format_args!(
        "add set ip {TABLE} nodeport-ips {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}"
    ));
    tx.line(format_args!("delete set ip {TABLE} nodeport-ips"));
    tx.line(format_args!(
        "add map ip {TABLE} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \
         \"vmap to drop or reject packets to services with no endpoints\" ; }}"
    ));
    tx.line(format_args!(
        "add map ip {TABLE} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; comment \"vmap to drop \
         or reject packets to service nodeports with no endpoints\" ; }}"
    ));
    tx.line(format_args!(
        "add chain ip {TABLE} reject-chain {{ comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }}"
    ));
    tx.line(format_args!("flush chain ip {TABLE} reject-chain"));
    tx.rule("reject-chain", "reject");
    tx.rule("service-endpoints-check", "ip daddr . meta l4proto . th dport vmap @no-endpoint-services");
    tx.rule("nodeport-endpoints-check", "ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports");
    tx.line(format_args!(
        "add map ip {TABLE} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \
         \"destinations that are subject to LoadBalancerSourceRanges\" ; }}"
    ));
    tx.ensure_chain("firewall-check");
    tx.rule("firewall-check", "ip daddr . meta l4proto . th dport vmap @firewall-ips");
    tx.line(format_args!(
        "add map ip {TABLE} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, \
         ExternalIP and LoadBalancer IP traffic\" ; }}"
    ));
    tx.line(format_args!(
        "add map ip {TABLE} service-nodeports {{ type inet_proto . inet_service : verdict ; comment \"NodePort \
         traffic\" ; }}"
    ));
    tx.rule("services", "ip daddr . meta l4proto . th dport vmap @service-ips");
    tx.rule("services", "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports");
    tx.line(format_args!("flush set ip {TABLE} cluster-ips"));
    for map in ["service-ips", "firewall-ips", "no-endpoint-services", "no-endpoint-nodeports", "service-nodeports"] {
        tx.line(format_args!("flush map ip {TABLE} {map}"));
    }
}

/// Which parts of one Service a sync writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    /// Elements and chains (full sync).
    All,
    /// Chains only: the elements are already there with the same values.
    Chains,
}

/// The per-Service part of `syncProxyRules` (kube-proxy's order: chains
/// ensured, map elements, then the chains' rules).
fn service(tx: &mut Tx, svc: &ServicePort, write: Write) {
    let chain = service_chain(svc);
    let endpoints: Vec<String> = svc.endpoints.iter().map(|ep| endpoint_chain(svc, *ep)).collect();
    for ep in &endpoints {
        tx.ensure_chain(ep);
    }
    if !svc.endpoints.is_empty() {
        tx.ensure_chain(&chain);
    }
    if write == Write::All {
        tx.line(format_args!("add element ip {TABLE} cluster-ips {{ {} }}", svc.cluster_ip));
        if svc.endpoints.is_empty() {
            tx.line(format_args!(
                "add element ip {TABLE} no-endpoint-services {{ {} . {PROTOCOL} . {} comment \"{}\" : goto \
                 reject-chain }}",
                svc.cluster_ip,
                svc.port,
                svc.port_name_string()
            ));
        } else {
            tx.line(format_args!(
                "add element ip {TABLE} service-ips {{ {} . {PROTOCOL} . {} : goto {chain} }}",
                svc.cluster_ip, svc.port
            ));
        }
    }
    if svc.endpoints.is_empty() {
        return;
    }
    // The local-traffic detector: off-cluster sources get masqueraded.
    tx.rule(
        &chain,
        &format!(
            "ip daddr {} {PROTOCOL} dport {} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade",
            svc.cluster_ip, svc.port
        ),
    );
    let vmap: Vec<String> = endpoints.iter().enumerate().map(|(i, ep)| format!("{i} : goto {ep}")).collect();
    tx.rule(&chain, &format!("numgen random mod {} vmap {{ {} }}", endpoints.len(), vmap.join(" , ")));
    for (ep, ep_chain) in svc.endpoints.iter().zip(&endpoints) {
        tx.rule(ep_chain, &format!("ip saddr {} jump mark-for-masquerade", ep.ip()));
        tx.rule(ep_chain, &format!("meta l4proto {PROTOCOL} dnat to {ep}"));
    }
}

/// kube-proxy's first (full) sync for `services`, as `nft -f` input.
pub fn full(services: &[ServicePort]) -> String {
    let endpoints: usize = services.iter().map(|s| s.endpoints.len()).sum();
    let mut tx = Tx::new(8192 + services.len() * 600 + endpoints * 500);
    setup(&mut tx);
    for svc in services {
        service(&mut tx, svc, Write::All);
    }
    tx.out
}

/// kube-proxy's partial sync after the endpoints of `services[changed]`
/// changed (their Service elements keep their values).
pub fn partial(services: &[ServicePort], changed: &[usize]) -> String {
    let mut tx = Tx::new(4096);
    for &i in changed {
        if let Some(svc) = services.get(i) {
            service(&mut tx, svc, Write::Chains);
        }
    }
    tx.out
}

/// Removes everything: kube-proxy's `CleanupLeftovers`. Adding the table
/// first makes it succeed when there is nothing to delete.
pub fn cleanup() -> String {
    format!("add table ip {TABLE}\ndelete table ip {TABLE}\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests panic so failures carry a backtrace")]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::e2e::peers::kube_iptables::bench_services;

    fn backends() -> Vec<SocketAddrV4> {
        (1..=4).map(|k| SocketAddrV4::new(Ipv4Addr::new(198, 18, k, 2), 8080)).collect()
    }

    #[test]
    fn chain_names_match_kube_proxys() {
        // From kube-proxy's own comments: "ULMVA6XW-ns1/svc1/tcp/p80" and
        // "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80".
        let svc = ServicePort {
            namespace: "ns1".into(),
            name: "svc1".into(),
            port_name: "p80".into(),
            cluster_ip: Ipv4Addr::new(172, 30, 0, 41),
            port: 80,
            endpoints: vec![],
        };
        assert_eq!(service_chain(&svc), "service-ULMVA6XW-ns1/svc1/tcp/p80");
        let ep = SocketAddrV4::new(Ipv4Addr::new(10, 180, 0, 1), 80);
        assert_eq!(endpoint_chain(&svc, ep), "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80");
    }

    #[test]
    fn full_sync_dispatches_through_the_verdict_map() {
        let services = bench_services(3, &backends());
        let text = full(&services);
        assert!(
            text.contains("add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips\n")
        );
        assert!(text.contains("add rule ip kube-proxy nat-prerouting jump services\n"));
        assert!(text.contains("add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }\n"));
        let svc = &services[1];
        let chain = service_chain(svc);
        assert!(
            text.contains(&format!(
                "add element ip kube-proxy service-ips {{ 198.19.0.2 . tcp . 80 : goto {chain} }}\n"
            ))
        );
        let eps: Vec<String> = backends().iter().map(|ep| endpoint_chain(svc, *ep)).collect();
        assert!(text.contains(&format!(
            "add rule ip kube-proxy {chain} numgen random mod 4 vmap {{ 0 : goto {} , 1 : goto {} , 2 : goto {} , 3 : \
             goto {} }}\n",
            eps[0], eps[1], eps[2], eps[3]
        )));
        for (ep, ep_chain) in backends().iter().zip(&eps) {
            assert!(text.contains(&format!("add rule ip kube-proxy {ep_chain} meta l4proto tcp dnat to {ep}\n")));
        }
        assert_eq!(text.matches("add element ip kube-proxy service-ips").count(), 3);
        assert_eq!(text.matches(" dnat to ").count(), 12);
        // Each chain is added (and flushed) once.
        assert_eq!(text.matches(&format!("add chain ip kube-proxy {chain}\n")).count(), 1);
        assert_eq!(text.matches("add chain ip kube-proxy services\n").count(), 1);
    }

    #[test]
    fn partial_sync_rewrites_only_the_changed_service() {
        let mut services = bench_services(50, &backends());
        services[7].endpoints.push(SocketAddrV4::new(Ipv4Addr::new(198, 18, 9, 2), 8080));
        let text = partial(&services, &[7]);
        assert!(!text.contains("add element"));
        assert!(!text.contains("add table"));
        assert_eq!(text.matches("add chain ").count(), 6);
        assert_eq!(text.matches("flush chain ").count(), 6);
        assert!(text.contains("numgen random mod 5 vmap"));
        assert_eq!(text.matches(" dnat to ").count(), 5);
        assert!(text.contains("svc-7/"));
        assert!(!text.contains("svc-8/"));
    }
}
