//! kube-proxy's iptables ruleset (KUBE-SERVICES → KUBE-SVC → KUBE-SEP), as
//! `iptables-restore` input; shared by the `iptables-legacy` and
//! `iptables-nft` peers and the apply benchmark. Also the Service model and
//! name hashing the nftables generator ([`super::kube_nftables`]) shares.
//!
//! # Design
//! Pure functions from a list of [`ServicePort`]s to the text kube-proxy's
//! iptables proxier (`pkg/proxy/iptables/proxier.go`, `syncProxyRules`)
//! hands to `iptables-restore --noflush --counters`, for a ClusterIP Service
//! with `Cluster` traffic policy, no session affinity, no NodePort:
//! - chain names `KUBE-SVC-`/`KUBE-SEP-` + the first 16 base32 characters
//!   of SHA-256(`ns/name:port` + `tcp` [+ `ip:port`]), so they are the
//!   names kube-proxy would give the same Service;
//! - per Service one `KUBE-SERVICES` rule (`-d VIP --dport 80`), a
//!   `KUBE-SVC-…` chain with the masquerade check and one
//!   `-m statistic --mode random --probability 1/(n-i)` rule per endpoint
//!   (0.2500000000, 0.3333333333, 0.5000000000, then unconditional), and a
//!   `KUBE-SEP-…` chain per endpoint (hairpin `KUBE-MARK-MASQ`, then
//!   `DNAT --to-destination`);
//! - above 1000 endpoints in total, kube-proxy's "large cluster mode": the
//!   per-endpoint comments are left out;
//! - the top-level chains (filter `KUBE-SERVICES`, `KUBE-FORWARD`, …; nat
//!   `KUBE-SERVICES`, `KUBE-POSTROUTING`, `KUBE-MARK-MASQ`, …) are declared
//!   (so flushed) and rewritten on every sync, full or partial; a partial
//!   sync ([`Sync::Partial`]) adds only the changed Services' SVC and SEP
//!   chains. So a one-endpoint change at N Services still rewrites the N
//!   rules of nat `KUBE-SERVICES`, as kube-proxy does.
//!
//! [`install`] runs it on the e2e node (shared by both iptables peers);
//! [`run_bounded`] is the time-bounded runner every kube-proxy-style peer
//! and the apply benchmark use.
//!
//! kube-proxy links its chains from the built-in ones (`PREROUTING` →
//! `KUBE-SERVICES`, …) with separate `iptables -N`/`-I` calls before the
//! restore; [`jumps`] writes the same rules as one restore input.
//!
//! Masquerade: the rules that mark for it are all there (`KUBE-MARK-MASQ`,
//! `KUBE-POSTROUTING` … `MASQUERADE --random-fully`), with the cluster CIDR
//! [`CLUSTER_CIDR`] (every address of the benchmark topology, client
//! included). So nothing is marked here, as for pod-to-Service traffic in a
//! real cluster: the backends route their replies back through the node,
//! where conntrack undoes the DNAT, so no SNAT is needed.
//!
//! # Limitations
//! TCP ClusterIP Services only; Services are written in index order (Go's
//! map order is random in kube-proxy), so the last Service is the last rule
//! of `KUBE-SERVICES`, the worst case the e2e benchmark wants. kubelet's
//! `KUBE-FIREWALL` chain and the `KUBE-PROXY-CANARY` monitor chain are not
//! written (neither is on the Service path). Stale-chain deletion (which
//! needs an `iptables-save` first) is not modelled: the benchmark only adds.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use berth_tests::ChildGuard;

use crate::e2e::peer::{Installed, SERVICE_PORT, Scene, TimedOut, service_vip};

/// The namespace every benchmark Service lives in.
pub const NAMESPACE: &str = "bench";
/// The name of every benchmark Service's single port.
pub const PORT_NAME: &str = "http";
/// The only protocol written, lower case as kube-proxy hashes it.
pub const PROTOCOL: &str = "tcp";
/// kube-proxy's `--cluster-cidr`: the local-traffic detector's range. The
/// whole benchmarking /16 (client, node, backends), so nothing masquerades.
pub const CLUSTER_CIDR: &str = "198.18.0.0/16";
/// The Service CIDR (nftables mode drops traffic to unallocated VIPs in it).
pub const SERVICE_CIDR: &str = "198.19.0.0/16";
/// kube-proxy's masquerade mark: bit 14 (`--iptables-masquerade-bit`),
/// printed with Go's `%#08x`.
pub const MASQ_MARK: &str = "0x004000";
/// Above this many endpoints in total kube-proxy drops per-endpoint
/// comments ("large cluster mode").
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// One Service port as kube-proxy sees it (ClusterIP, TCP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    pub port_name: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// Ready endpoints, in the order kube-proxy would write them.
    pub endpoints: Vec<SocketAddrV4>,
}

impl ServicePort {
    /// Benchmark Service `index`: `bench/svc-INDEX:http` at
    /// [`service_vip`]`(index)`:[`SERVICE_PORT`].
    ///
    /// # Panics
    /// If `index` is beyond the VIP range (see [`service_vip`]).
    pub fn bench(index: usize, endpoints: Vec<SocketAddrV4>) -> Self {
        Self {
            namespace: NAMESPACE.to_owned(),
            name: format!("svc-{index}"),
            port_name: PORT_NAME.to_owned(),
            cluster_ip: service_vip(index),
            port: SERVICE_PORT,
            endpoints,
        }
    }

    /// kube-proxy's `ServicePortName.String()`: `namespace/name:port`.
    pub fn port_name_string(&self) -> String {
        format!("{}/{}:{}", self.namespace, self.name, self.port_name)
    }

    /// `KUBE-SVC-` + hash: the Service's `Cluster` policy chain.
    pub fn svc_chain(&self) -> String {
        format!("KUBE-SVC-{}", hash_name(&format!("{}{PROTOCOL}", self.port_name_string()), 16))
    }

    /// `KUBE-SEP-` + hash: the chain of one endpoint of this Service.
    pub fn sep_chain(&self, endpoint: SocketAddrV4) -> String {
        format!("KUBE-SEP-{}", hash_name(&format!("{}{PROTOCOL}{endpoint}", self.port_name_string()), 16))
    }
}

/// `n` benchmark Services (0 … n-1), each with all of `backends`.
pub fn bench_services(n: usize, backends: &[SocketAddrV4]) -> Vec<ServicePort> {
    (0..n).map(|i| ServicePort::bench(i, backends.to_vec())).collect()
}

/// Which Services a sync writes chains for.
#[derive(Clone, Copy, Debug)]
pub enum Sync<'a> {
    /// Every Service: kube-proxy's first sync (and one an hour after).
    Full,
    /// Only these Service indexes (into the slice given to [`restore`]):
    /// kube-proxy's partial sync after those Services or their endpoints
    /// changed.
    Partial(&'a [usize]),
}

impl Sync<'_> {
    fn writes(&self, index: usize) -> bool {
        match self {
            Sync::Full => true,
            Sync::Partial(changed) => changed.contains(&index),
        }
    }
}

/// kube-proxy's `computeProbability(n)`: `1/n` with ten decimals.
pub fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// The filter chains kube-proxy writes on every sync.
const FILTER_CHAINS: [&str; 5] =
    ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL"];
/// The nat chains kube-proxy writes on every sync (besides SVC/SEP).
const NAT_CHAINS: [&str; 4] = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"];

/// One rule linking a built-in chain to one of kube-proxy's
/// (`iptablesJumpChains`).
struct Jump {
    table: &'static str,
    from: &'static str,
    to: &'static str,
    comment: &'static str,
    new_only: bool,
}

const JUMPS: [Jump; 12] = [
    Jump {
        table: "filter",
        from: "INPUT",
        to: "KUBE-EXTERNAL-SERVICES",
        comment: "kubernetes externally-visible service portals",
        new_only: true,
    },
    Jump {
        table: "filter",
        from: "FORWARD",
        to: "KUBE-EXTERNAL-SERVICES",
        comment: "kubernetes externally-visible service portals",
        new_only: true,
    },
    Jump {
        table: "filter",
        from: "INPUT",
        to: "KUBE-NODEPORTS",
        comment: "kubernetes health check service ports",
        new_only: false,
    },
    Jump {
        table: "filter",
        from: "FORWARD",
        to: "KUBE-SERVICES",
        comment: "kubernetes service portals",
        new_only: true,
    },
    Jump {
        table: "filter",
        from: "OUTPUT",
        to: "KUBE-SERVICES",
        comment: "kubernetes service portals",
        new_only: true,
    },
    Jump {
        table: "filter",
        from: "FORWARD",
        to: "KUBE-FORWARD",
        comment: "kubernetes forwarding rules",
        new_only: false,
    },
    Jump {
        table: "filter",
        from: "INPUT",
        to: "KUBE-PROXY-FIREWALL",
        comment: "kubernetes load balancer firewall",
        new_only: true,
    },
    Jump {
        table: "filter",
        from: "OUTPUT",
        to: "KUBE-PROXY-FIREWALL",
        comment: "kubernetes load balancer firewall",
        new_only: true,
    },
    Jump {
        table: "filter",
        from: "FORWARD",
        to: "KUBE-PROXY-FIREWALL",
        comment: "kubernetes load balancer firewall",
        new_only: true,
    },
    Jump { table: "nat", from: "OUTPUT", to: "KUBE-SERVICES", comment: "kubernetes service portals", new_only: false },
    Jump {
        table: "nat",
        from: "PREROUTING",
        to: "KUBE-SERVICES",
        comment: "kubernetes service portals",
        new_only: false,
    },
    Jump {
        table: "nat",
        from: "POSTROUTING",
        to: "KUBE-POSTROUTING",
        comment: "kubernetes postrouting rules",
        new_only: false,
    },
];

impl Jump {
    /// The rule spec after `-I FROM` / `-D FROM`.
    fn spec(&self) -> String {
        let ct = if self.new_only { "-m conntrack --ctstate NEW " } else { "" };
        format!("{ct}-m comment --comment \"{}\" -j {}", self.comment, self.to)
    }
}

/// Restore input (for `--noflush`) that creates kube-proxy's top-level
/// chains and prepends the jumps to them from the built-in chains, as
/// kube-proxy's `EnsureChain`/`EnsureRule(Prepend, …)` calls do before its
/// first sync.
pub fn jumps() -> String {
    let mut out = String::new();
    for table in ["filter", "nat"] {
        let _ = writeln!(out, "*{table}");
        let mut declared: Vec<&str> = Vec::new();
        for j in JUMPS.iter().filter(|j| j.table == table) {
            if !declared.contains(&j.to) {
                declared.push(j.to);
                let _ = writeln!(out, ":{} - [0:0]", j.to);
            }
        }
        for j in JUMPS.iter().filter(|j| j.table == table) {
            let _ = writeln!(out, "-I {} {}", j.from, j.spec());
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// The restore input of one kube-proxy sync (for `iptables-restore
/// --noflush --counters`): the top-level chains in full, plus the SVC and
/// SEP chains of the Services `sync` selects.
pub fn restore(services: &[ServicePort], sync: Sync<'_>) -> String {
    let total_endpoints: usize = services.iter().map(|s| s.endpoints.len()).sum();
    let large_cluster = total_endpoints > LARGE_CLUSTER_ENDPOINTS;
    // Roughly 150 bytes per rule line, ~3 lines per endpoint.
    let mut out = String::with_capacity(512 + services.len() * 200 + total_endpoints * 450);

    out.push_str("*filter\n");
    for chain in FILTER_CHAINS {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    // Services without endpoints are rejected in the filter table.
    for svc in services.iter().filter(|s| s.endpoints.is_empty()) {
        let _ = writeln!(
            out,
            "-A KUBE-SERVICES -m comment --comment \"{} has no endpoints\" -m {PROTOCOL} -p {PROTOCOL} -d {} --dport {} \
             -j REJECT",
            svc.port_name_string(),
            svc.cluster_ip,
            svc.port
        );
    }
    // `nf_conntrack_tcp_be_liberal` is 0 by default, so kube-proxy drops
    // INVALID packets.
    out.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
    let _ = writeln!(
        out,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} \
         -j ACCEPT"
    );
    out.push_str(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate \
         RELATED,ESTABLISHED -j ACCEPT\n",
    );
    out.push_str("COMMIT\n");

    // nat: chain declarations first, then rules, as kube-proxy concatenates
    // its natChains and natRules buffers.
    let mut chains = String::new();
    let mut rules = String::with_capacity(out.capacity());
    out.push_str("*nat\n");
    for chain in NAT_CHAINS {
        let _ = writeln!(chains, ":{chain} - [0:0]");
    }
    let _ = writeln!(rules, "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN");
    let _ = writeln!(rules, "-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}");
    rules.push_str(
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE \
         --random-fully\n",
    );
    let _ = writeln!(rules, "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}");

    for (index, svc) in services.iter().enumerate() {
        if svc.endpoints.is_empty() {
            continue;
        }
        let name = svc.port_name_string();
        let svc_chain = svc.svc_chain();
        let matcher = format!("-m {PROTOCOL} -p {PROTOCOL} -d {} --dport {}", svc.cluster_ip, svc.port);
        let _ = writeln!(rules, "-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" {matcher} -j {svc_chain}");
        if !sync.writes(index) {
            continue;
        }
        let _ = writeln!(chains, ":{svc_chain} - [0:0]");
        // The local-traffic detector: off-cluster sources get masqueraded.
        let _ = writeln!(
            rules,
            "-A {svc_chain} -m comment --comment \"{name} cluster IP\" {matcher} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ"
        );
        let n = svc.endpoints.len();
        for (i, ep) in svc.endpoints.iter().enumerate() {
            let _ = write!(rules, "-A {svc_chain} ");
            if !large_cluster {
                let _ = write!(rules, "-m comment --comment \"{name} -> {ep}\" ");
            }
            if i + 1 < n {
                let _ = write!(rules, "-m statistic --mode random --probability {} ", probability(n - i));
            }
            let _ = writeln!(rules, "-j {}", svc.sep_chain(*ep));
        }
        for ep in &svc.endpoints {
            let sep = svc.sep_chain(*ep);
            let _ = writeln!(chains, ":{sep} - [0:0]");
            let comment = if large_cluster { String::new() } else { format!("-m comment --comment {name} ") };
            let _ = writeln!(rules, "-A {sep} {comment}-s {} -j KUBE-MARK-MASQ", ep.ip());
            let _ = writeln!(rules, "-A {sep} {comment}-m {PROTOCOL} -p {PROTOCOL} -j DNAT --to-destination {ep}");
        }
    }
    rules.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in \
         this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    );
    out.push_str(&chains);
    out.push_str(&rules);
    out.push_str("COMMIT\n");
    out
}

/// Restore input (for `--noflush`) that removes everything [`jumps`] and
/// [`restore`] made for `services`: the jump rules, then every chain
/// flushed and deleted (kube-proxy's `CleanupLeftovers`).
pub fn cleanup(services: &[ServicePort]) -> String {
    let mut out = String::new();
    out.push_str("*filter\n");
    for chain in FILTER_CHAINS {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for j in JUMPS.iter().filter(|j| j.table == "filter") {
        let _ = writeln!(out, "-D {} {}", j.from, j.spec());
    }
    for chain in FILTER_CHAINS {
        let _ = writeln!(out, "-X {chain}");
    }
    out.push_str("COMMIT\n*nat\n");
    let mut nat: Vec<String> = NAT_CHAINS.iter().map(|c| (*c).to_owned()).collect();
    for svc in services {
        nat.push(svc.svc_chain());
        nat.extend(svc.endpoints.iter().map(|ep| svc.sep_chain(*ep)));
    }
    for chain in &nat {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for j in JUMPS.iter().filter(|j| j.table == "nat") {
        let _ = writeln!(out, "-D {} {}", j.from, j.spec());
    }
    for chain in &nat {
        let _ = writeln!(out, "-X {chain}");
    }
    out.push_str("COMMIT\n");
    out
}

/// Which iptables binaries write the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-legacy-restore`: x_tables, the whole table replaced as one
    /// blob per commit.
    Legacy,
    /// `iptables-nft-restore`: the same rules translated to nf_tables.
    Nft,
}

impl Backend {
    /// The restore binary.
    pub fn restore(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy-restore",
            Backend::Nft => "iptables-nft-restore",
        }
    }

    /// The peer name in results.
    pub fn peer(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy",
            Backend::Nft => "iptables-nft",
        }
    }
}

/// `RESTORE -w 5 --noflush [--counters] FILE`, as kube-proxy calls it
/// (`RestoreAll(…, NoFlushTables, RestoreCounters)`).
pub fn restore_args(file: &Path, counters: bool) -> Vec<String> {
    let mut args = vec!["-w".to_owned(), "5".to_owned(), "--noflush".to_owned()];
    if counters {
        args.push("--counters".to_owned());
    }
    args.push(file.display().to_string());
    args
}

/// Runs `cmd` to completion within `timeout` and returns how long it ran
/// (spawn to exit).
///
/// # Errors
/// [`TimedOut`] (downcastable) when it was still running at `timeout`: it
/// is then killed (SIGTERM, then SIGKILL, by PID) and reaped. Otherwise if
/// it cannot start or exits unsuccessfully (with its stderr).
pub fn run_bounded(cmd: Command, what: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = berth_tests::wait::deadline_after(timeout);
    let mut child = ChildGuard::spawn(cmd, what, None)?;
    // Poll, short pauses first: a one-rule change takes milliseconds and the
    // pause bounds the measurement error.
    let mut pause = Duration::from_micros(50);
    let (status, elapsed) = loop {
        if let Some(status) = child.try_wait()? {
            break (status, started.elapsed());
        }
        if Instant::now() >= deadline {
            if let Err(e) = child.terminate(Duration::from_secs(2)) {
                eprintln!("berth-bench: {what}: killing after timeout: {e:#}");
            }
            return Err(TimedOut { what: what.to_owned(), after: timeout }.into());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(1));
    };
    if !status.success() {
        let finished = child.finish(Duration::from_secs(2))?;
        anyhow::bail!("{what} failed ({status}): {}", finished.stderr.trim());
    }
    Ok(elapsed)
}

/// iptables' lock file: `/run/xtables.lock` is one file for every network
/// namespace of the machine, so a benchmark loading rules in one namespace
/// would wait for (or, after `-w 5`, fail on) another loading in its own.
/// Each install uses a lock file of its own instead; nothing else writes
/// iptables rules in the namespaces the benchmarks make.
pub const XTABLES_LOCKFILE: &str = "XTABLES_LOCKFILE";

/// `RESTORE -w 5 --noflush [--counters] FILE` with the lock file `lock`.
pub fn restore_command(backend: Backend, file: &Path, counters: bool, lock: &Path) -> Command {
    let mut cmd = Command::new(backend.restore());
    cmd.args(restore_args(file, counters)).env(XTABLES_LOCKFILE, lock);
    cmd
}

/// `ip netns exec NETNS PROGRAM ARGS…`: what [`berth_tests::Netns::command`]
/// builds, from the name alone so a guard can own it.
pub fn netns_command(netns: &str, program: &str, args: &[String]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, program]).args(args);
    cmd
}

/// Undoes an iptables install when dropped (also after a failed or timed
/// out one): the cleanup restore, or for iptables-nft in a namespace that
/// had no `ip nat`/`ip filter` tables before, deleting those tables (fast,
/// where a restore that flushes 50k chains through iptables-nft is not).
struct IptablesTeardown {
    netns: String,
    backend: Backend,
    cleanup_file: PathBuf,
    lock: PathBuf,
    delete_nft_tables: Vec<&'static str>,
}

/// Bound on tearing down (a 10k-Service cleanup through iptables-legacy
/// takes seconds).
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(300);

impl Drop for IptablesTeardown {
    fn drop(&mut self) {
        let result = if self.delete_nft_tables.is_empty() {
            let args = restore_args(&self.cleanup_file, false);
            let mut cmd = netns_command(&self.netns, self.backend.restore(), &args);
            cmd.env(XTABLES_LOCKFILE, &self.lock);
            run_bounded(cmd, "iptables cleanup", TEARDOWN_TIMEOUT).map(drop)
        } else {
            self.delete_nft_tables.iter().try_for_each(|table| {
                let args: Vec<String> = ["delete", "table", "ip", table].map(str::to_owned).to_vec();
                run_bounded(netns_command(&self.netns, "nft", &args), "nft delete table", TEARDOWN_TIMEOUT).map(drop)
            })
        };
        if let Err(e) = result {
            eprintln!("berth-bench: {} teardown in {}: {e:#}", self.backend.peer(), self.netns);
        }
    }
}

/// Installs `scene`'s Services the kube-proxy way on the node with
/// `backend`: [`jumps`], then the full-sync [`restore`] (timed). Everything
/// runs inside the node namespace; the whole install is bounded by
/// `timeout`.
///
/// # Errors
/// [`TimedOut`] at the bound; a failing tool otherwise.
pub fn install(scene: &Scene<'_>, timeout: Duration, backend: Backend) -> anyhow::Result<Installed> {
    let deadline = berth_tests::wait::deadline_after(timeout);
    let left = || deadline.saturating_duration_since(Instant::now());
    let netns = scene.topo.node.name().to_owned();
    let services = bench_services(scene.services, &scene.backends);
    let dir = scene.work_dir;
    let (jumps_file, rules_file, cleanup_file) =
        (dir.join("kube-jumps.rules"), dir.join("kube-services.rules"), dir.join("kube-cleanup.rules"));
    for (path, text) in
        [(&jumps_file, jumps()), (&rules_file, restore(&services, Sync::Full)), (&cleanup_file, cleanup(&services))]
    {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let delete_nft_tables = match backend {
        Backend::Legacy => Vec::new(),
        Backend::Nft => {
            let tables = scene.topo.node.exec(&["nft", "list", "tables"])?;
            ["nat", "filter"]
                .into_iter()
                .filter(|t| !tables.lines().any(|l| l.trim() == format!("table ip {t}")))
                .collect()
        }
    };
    // Made before the first change, so a failed install is undone too.
    let lock = dir.join("xtables.lock");
    let teardown =
        IptablesTeardown { netns: netns.clone(), backend, cleanup_file, lock: lock.clone(), delete_nft_tables };
    let what = |step: &str| format!("{} {step} ({} Services)", backend.restore(), scene.services);
    let restore_cmd = |file: &Path, counters: bool| {
        let mut cmd = netns_command(&netns, backend.restore(), &restore_args(file, counters));
        cmd.env(XTABLES_LOCKFILE, &lock);
        cmd
    };
    run_bounded(restore_cmd(&jumps_file, false), &what("jumps"), left())?;
    let install_time = run_bounded(restore_cmd(&rules_file, true), &what("rules"), left())?;
    Ok(Installed { target: scene.target(), client_cgroup: None, install_time, guard: Box::new(teardown) })
}

/// The first `chars` characters of base32 (RFC 4648, Go's
/// `base32.StdEncoding`) of SHA-256(`input`): kube-proxy's chain-name hash
/// (16 characters for iptables, 8 for nftables).
///
/// # Panics
/// If `chars` > 51 (SHA-256 has 256 bits, 51 full base32 characters).
pub fn hash_name(input: &str, chars: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    assert!(chars <= 51, "at most 51 base32 characters of a SHA-256");
    let digest = sha256(input.as_bytes());
    (0..chars)
        .map(|c| {
            // Five bits starting at bit 5c, big-endian across the bytes.
            let bit = c * 5;
            let (byte, shift) = (bit / 8, bit % 8);
            let pair = u16::from(digest[byte]) << 8 | u16::from(*digest.get(byte + 1).unwrap_or(&0));
            char::from(ALPHABET[usize::from((pair >> (11 - shift)) & 0x1f)])
        })
        .collect()
}

/// SHA-256 (FIPS 180-4). Written out here so chain names match kube-proxy's
/// byte for byte without pulling a crypto dependency into the workspace for
/// a name; tested against the standard vectors.
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
        0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
        0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
        0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
        0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
        0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
        0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (state, v) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *state = state.wrapping_add(v);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests;
