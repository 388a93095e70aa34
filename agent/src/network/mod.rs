//! Pod networking: a network namespace, a routed veth pair and an address
//! from the node's pod CIDR for every pod.
//!
//! # Design
//! Routed veths without a bridge, as Cilium and Calico do. For the pod CIDR
//! `198.18.0.0/24` the gateway is its first address, `198.18.0.1`; a pod
//! gets the next free address, say `198.18.0.2`, and:
//!
//! ```text
//!  node netns (the agent's)                       pod netns <netns_dir>/<uid>
//!  bth<10 hex of sha256(uid)>  198.18.0.1/32  ══ veth ══  eth0  198.18.0.2/32
//!  route 198.18.0.2/32 dev bth… scope link                route 198.18.0.1 dev eth0 scope link
//!                                                         default via 198.18.0.1 dev eth0
//! ```
//!
//! The host-side veth is named `bth` + 10 hex digits of the uid's SHA-256
//! (interface names hold 15 bytes) and carries the alias `berth pod <uid>`
//! (`ip link` shows it). The alias, not the name, says which pod owns a
//! veth: setup, teardown and garbage collection never touch a veth owned by
//! another uid, so a hash collision fails one setup instead of breaking
//! another pod.
//!
//! Every host-side veth carries the gateway address as a /32 (Linux allows
//! one address on many interfaces; each gets its own local route, so
//! removing one pod's veth leaves the gateway answering on the others).
//! The node answers the pod's ARP for the gateway itself, and reaches each
//! pod through its /32 host route, so no proxy ARP and no bridge are
//! needed, and pod-to-pod traffic is plain IP forwarding in the node
//! namespace: that needs `net.ipv4.ip_forward=1` there, which this module
//! only reports ([`PodNetwork::ip_forward`]) and leaves to the caller; a
//! node→pod connection works without it.
//!
//! "The node namespace" is the network namespace of the thread that calls
//! [`PodNetwork::open`]: it is remembered, and every netlink operation runs
//! on a short-lived std thread that enters it (or a pod's namespace) first
//! (see [`netns`]); the calling thread never changes namespace, so this is
//! safe to call from `spawn_blocking`. Nothing else is configured: no
//! sysctl, no firewall rule, no other interface.
//!
//! The pod side (`eth0`) is created directly inside the pod namespace, so
//! the name never exists in the node namespace. Setup is idempotent per
//! uid and converges: pieces that exist are kept (a running pod's namespace
//! is never replaced), missing ones are made, and a veth of this pod that
//! is not paired with its namespace is replaced; on an error, whatever this
//! call made is removed again and a newly allocated address released.
//! Teardown deletes the veth, then the namespace file, then releases the
//! address, so an address is never free while its veth may still exist.
//!
//! Addresses come from [`ipam`] (persisted, flock-guarded, round-robin).
//!
//! Transmit checksum offload stays at the veth default (on). That is right
//! for a kernel-only path; if XDP is ever attached to these veths it must
//! be turned off, see `tests/src/topology.rs` for why.
//!
//! # Limitations
//! IPv4 only; no MTU or bandwidth settings; no off-node routes (the pod
//! CIDR is not announced to other nodes). Operations of one [`PodNetwork`]
//! run one at a time (a mutex), a few milliseconds each (every netlink
//! step starts a thread and a socket). Host veth names are a 40-bit hash
//! of the uid: two uids that collide are detected (the second setup fails
//! with [`NetworkError::HostVethInUse`]), not resolved. A veth that lost
//! its alias (a crash between creating and naming it) is recognised by its
//! pairing with the pod's namespace, or removed by garbage collection when
//! its name matches no kept pod. Namespace files stay mounted until
//! teardown, also after the agent exits (like `ip netns`).

pub mod ipam;
mod netlink;
pub mod netns;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeSet, HashSet},
    fs::{self, File},
    io,
    net::Ipv4Addr,
    os::fd::AsFd,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use self::ipam::{Ipam, IpamError, Ipv4Net, ParseCidrError};
use self::netlink::{Link, Netlink};

/// The pod-side interface name.
pub const POD_IF: &str = "eth0";
/// Prefix of every host-side veth berth makes.
pub const HOST_VETH_PREFIX: &str = "bth";
/// Hex digits of the uid's hash in a host veth name (3 + 10 ≤ 15 bytes).
const HOST_VETH_HASH_LEN: usize = 10;
/// Longest pod uid accepted (Kubernetes uids are 36-byte UUIDs; the veth
/// alias holds at most 255 bytes).
pub const MAX_UID_LEN: usize = 128;
/// A host veth's alias is this and the pod uid: it marks ownership.
pub const HOST_VETH_ALIAS_PREFIX: &str = "berth pod ";
/// Names the node namespace in errors.
const NODE_NETNS: &str = "node netns";

/// Where pod networking keeps its state.
#[derive(Debug, Clone)]
pub struct PodNetworkConfig {
    /// Holds `ipam.json` and `ipam.lock`.
    pub state_dir: PathBuf,
    /// The node's pod CIDR, /30 or shorter.
    pub pod_cidr: Ipv4Net,
    /// Where pod namespace files are bind-mounted (`<netns_dir>/<uid>`),
    /// e.g. `/run/berth/<node>/netns`. Made a shared mount point of itself.
    pub netns_dir: PathBuf,
}

/// A pod's network, as [`PodNetwork::setup`] made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNet {
    /// The namespace file, for `setns` or `nsenter --net=`.
    pub netns: PathBuf,
    /// The pod's address (on its `eth0`, /32).
    pub ip: Ipv4Addr,
    /// The veth end in the node namespace.
    pub host_veth: String,
    /// The pod's default gateway (the node).
    pub gateway: Ipv4Addr,
}

/// Why a pod network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid pod uid {uid:?}: {reason}")]
    InvalidPodUid { uid: String, reason: &'static str },
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("{op} {path}: {cause}")]
    Io { op: &'static str, path: PathBuf, cause: io::Error },
    #[error("{op} {what}: {cause}")]
    Sys { op: &'static str, what: String, cause: nix::Error },
    #[error("netlink in {netns}: {op}: {cause}")]
    Netlink { op: String, netns: String, cause: io::Error },
    #[error("a thread working in {what} panicked")]
    ThreadPanicked { what: String },
    #[error("{path} exists but is not a mounted network namespace nor a plain file; remove it")]
    NetnsPathInUse { path: PathBuf },
    #[error(
        "interface {name} (kind {kind}) exists in the node netns and is not a berth veth; cannot set up pod {pod_uid}"
    )]
    HostVethNameTaken { name: String, kind: String, pod_uid: String },
    #[error(
        "veth {name} exists in the node netns, owned by {}, and is not paired with {POD_IF} of {netns}: \
         a uid hash collision or a leftover; cannot set up pod {pod_uid}",
        owner.as_deref().map_or_else(|| "nobody (no alias)".to_owned(), |o| format!("pod {o}"))
    )]
    HostVethInUse { name: String, owner: Option<String>, netns: PathBuf, pod_uid: String },
    #[error(
        "setting up the network of pod {pod_uid} failed: {error}; rolling back failed too: {rollback} \
         (teardown or garbage_collect removes the leftovers)"
    )]
    Rollback { pod_uid: String, error: Box<NetworkError>, rollback: Box<NetworkError> },
}

/// The pod networks of one node: see the module docs.
#[derive(Debug)]
pub struct PodNetwork {
    config: PodNetworkConfig,
    ipam: Ipam,
    /// The node namespace (the caller's of [`PodNetwork::open`]).
    node_ns: File,
    ip_forward: bool,
    /// Serialises setup/teardown/garbage_collect.
    ops: Mutex<()>,
}

/// What [`PodNetwork::setup`] made in this call, for rollback.
#[derive(Debug, Default)]
struct Made {
    address: bool,
    netns: bool,
    veth: bool,
}

impl PodNetwork {
    /// Remembers the calling thread's network namespace as the node
    /// namespace, loads (or creates) the IPAM state and prepares
    /// `netns_dir`. Reads `net.ipv4.ip_forward` there (see
    /// [`PodNetwork::ip_forward`]); logs a warning when it is off.
    ///
    /// # Errors
    /// If the IPAM state is unusable (corrupt, another CIDR, CIDR too
    /// small), or `netns_dir` cannot be created or made a mount point.
    pub fn open(config: PodNetworkConfig) -> Result<Self, NetworkError> {
        let ipam = Ipam::open(&config.state_dir, config.pod_cidr)?;
        let node_ns = netns::current()?;
        netns::prepare_dir(&config.netns_dir)?;
        let ip_forward = netns::in_netns(&node_ns, NODE_NETNS, read_ip_forward)?;
        if !ip_forward {
            tracing::warn!(
                "net.ipv4.ip_forward is 0 in the agent's network namespace: pods can reach the node, \
                 but not each other or anything beyond"
            );
        }
        Ok(Self { config, ipam, node_ns, ip_forward, ops: Mutex::new(()) })
    }

    /// Whether `net.ipv4.ip_forward` was 1 in the node namespace at
    /// [`PodNetwork::open`].
    pub fn ip_forward(&self) -> bool {
        self.ip_forward
    }

    pub fn pod_cidr(&self) -> Ipv4Net {
        self.config.pod_cidr
    }

    /// Every pod's gateway: the first address of the pod CIDR.
    pub fn gateway(&self) -> Ipv4Addr {
        self.ipam.gateway()
    }

    /// Where the namespace file of `pod_uid` lives (whether or not it
    /// exists).
    pub fn netns_path(&self, pod_uid: &str) -> PathBuf {
        self.config.netns_dir.join(pod_uid)
    }

    /// Every address allocation (address, pod uid), ordered by address.
    /// As of this process's last operation: every operation re-reads the
    /// state file.
    pub fn allocations(&self) -> Vec<(Ipv4Addr, String)> {
        self.ipam.allocations()
    }

    /// Makes the network of `pod_uid`, or returns it if it exists
    /// (see the module docs). Blocking: call it from `spawn_blocking`.
    ///
    /// # Errors
    /// An invalid uid, an exhausted pod CIDR, a host veth name taken by
    /// another interface ([`NetworkError::HostVethNameTaken`]) or by a veth
    /// that is not this pod's ([`NetworkError::HostVethInUse`]), or a
    /// failing syscall or netlink request. Whatever
    /// this call made is removed again first; if that fails too,
    /// [`NetworkError::Rollback`] carries both errors.
    pub fn setup(&self, pod_uid: &str) -> Result<PodNet, NetworkError> {
        validate_uid(pod_uid)?;
        let _ops = self.lock_ops();
        let mut made = Made::default();
        match self.setup_steps(pod_uid, &mut made) {
            Ok(net) => Ok(net),
            Err(error) => match self.rollback(pod_uid, &made) {
                Ok(()) => Err(error),
                Err(rollback) => Err(NetworkError::Rollback {
                    pod_uid: pod_uid.to_owned(),
                    error: Box::new(error),
                    rollback: Box::new(rollback),
                }),
            },
        }
    }

    /// Removes the network of `pod_uid`: the veth, the namespace file (the
    /// namespace goes once no process uses it), the address. Pieces that
    /// are missing are skipped, so this is idempotent. An interface with
    /// the pod's host veth name that is not this pod's (another kind,
    /// another owner's alias, or no alias and not paired with the pod's
    /// namespace) is left alone and logged.
    ///
    /// # Errors
    /// An invalid uid, or a failing syscall or netlink request; the
    /// address is released only after everything else is gone.
    pub fn teardown(&self, pod_uid: &str) -> Result<(), NetworkError> {
        validate_uid(pod_uid)?;
        let _ops = self.lock_ops();
        self.teardown_locked(pod_uid)
    }

    /// After an agent restart: removes every pod network whose uid is not
    /// in `keep`, found from namespace files in `netns_dir`, address
    /// allocations and the aliases of veths named like berth's host veths.
    /// Returns those uids (sorted). Such veths without an alias, whose name
    /// is no kept pod's, are deleted too and logged.
    ///
    /// # Errors
    /// The first failure; pods before it are already removed.
    pub fn garbage_collect(&self, keep: &HashSet<String>) -> Result<Vec<String>, NetworkError> {
        let _ops = self.lock_ops();
        let mut doomed = BTreeSet::new();
        let dir = &self.config.netns_dir;
        let entries =
            fs::read_dir(dir).map_err(|cause| NetworkError::Io { op: "listing", path: dir.clone(), cause })?;
        for entry in entries {
            let entry = entry.map_err(|cause| NetworkError::Io { op: "listing", path: dir.clone(), cause })?;
            let name = entry.file_name();
            match name.to_str() {
                Some(uid) if validate_uid(uid).is_ok() => {
                    if !keep.contains(uid) {
                        doomed.insert(uid.to_owned());
                    }
                }
                _ => {
                    tracing::warn!(path = %entry.path().display(), "unexpected entry in the netns directory, left alone")
                }
            }
        }
        for (_, uid) in self.ipam.reload()? {
            if !keep.contains(&uid) {
                doomed.insert(uid);
            }
        }
        // Veths: their alias names the owner; alias-less ones (a crash
        // between creating and naming, or outside meddling) are orphans
        // unless their name is a kept pod's (its next setup names it).
        let keep_veths: HashSet<String> = keep.iter().map(|uid| host_veth_name(uid)).collect();
        let mut orphans = Vec::new();
        let veths = netns::in_netns(&self.node_ns, NODE_NETNS, || Netlink::connect(NODE_NETNS)?.links())?;
        for link in veths.into_iter().filter(|l| l.is_veth() && is_host_veth_name(&l.name)) {
            match owner(&link) {
                Some(uid) if validate_uid(uid).is_ok() && !keep.contains(uid) => {
                    doomed.insert(uid.to_owned());
                }
                Some(uid) if validate_uid(uid).is_ok() => {}
                Some(_) => {
                    tracing::warn!(veth = %link.name, alias = ?link.alias, "a veth alias names no valid pod uid: left alone")
                }
                None if !keep_veths.contains(&link.name) => orphans.push(link),
                None => {}
            }
        }
        for uid in &doomed {
            self.teardown_locked(uid)?;
        }
        if !orphans.is_empty() {
            netns::in_netns(&self.node_ns, NODE_NETNS, || {
                let nl = Netlink::connect(NODE_NETNS)?;
                for link in &orphans {
                    tracing::info!(veth = %link.name, "deleting a berth veth that belongs to no known pod");
                    nl.delete_link(link)?;
                }
                Ok(())
            })?;
        }
        Ok(doomed.into_iter().collect())
    }

    fn lock_ops(&self) -> std::sync::MutexGuard<'_, ()> {
        // The mutex guards no data, so a poisoned one is as good as any.
        self.ops.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn setup_steps(&self, uid: &str, made: &mut Made) -> Result<PodNet, NetworkError> {
        let allocated = self.ipam.allocate(uid)?;
        made.address = allocated.new;
        let ip = allocated.ip;
        let gateway = self.gateway();

        let netns_path = self.netns_path(uid);
        made.netns = ensure_netns(&netns_path)?;
        let pod_ns = File::open(&netns_path).map_err(|cause| NetworkError::Io {
            op: "opening netns",
            path: netns_path.clone(),
            cause,
        })?;
        let pod_label = netns_path.display().to_string();

        let host_veth = host_veth_name(uid);
        let alias = format!("{HOST_VETH_ALIAS_PREFIX}{uid}");
        let host = netns::in_netns(&self.node_ns, NODE_NETNS, || Netlink::connect(NODE_NETNS)?.link(&host_veth))?;
        let pod_if = netns::in_netns(&pod_ns, &pod_label, || Netlink::connect(&pod_label)?.link(POD_IF))?;
        let plan = match host {
            None => Plan::Create,
            Some(h) if !h.is_veth() => {
                return Err(NetworkError::HostVethNameTaken {
                    name: host_veth,
                    kind: h.kind.unwrap_or_else(|| "none".to_owned()),
                    pod_uid: uid.to_owned(),
                });
            }
            Some(h) if paired(&h, pod_if.as_ref()) && owner(&h).is_none_or(|o| o == uid) => Plan::Keep,
            Some(h) if owner(&h) == Some(uid) => Plan::Replace(h),
            Some(h) => {
                return Err(NetworkError::HostVethInUse {
                    name: host_veth,
                    owner: owner(&h).map(str::to_owned),
                    netns: netns_path,
                    pod_uid: uid.to_owned(),
                });
            }
        };

        // Node side: the pair, its alias, the gateway address, the pod's
        // host route.
        netns::in_netns(&self.node_ns, NODE_NETNS, || {
            let nl = Netlink::connect(NODE_NETNS)?;
            let create = match &plan {
                Plan::Keep => false,
                Plan::Create => true,
                Plan::Replace(stale) => {
                    tracing::info!(veth = %host_veth, pod_uid = uid, "replacing a veth of this pod that is not paired with its netns");
                    nl.delete_link(stale)?;
                    true
                }
            };
            if create {
                nl.add_veth(&host_veth, POD_IF, pod_ns.as_fd())?;
                made.veth = true;
            }
            let link = nl.link(&host_veth)?.ok_or_else(|| vanished(&host_veth, NODE_NETNS))?;
            if link.alias.as_deref() != Some(alias.as_str()) {
                nl.set_alias(&link, &alias)?;
            }
            nl.replace_address(&link, gateway, 32)?;
            nl.set_up(&link)?;
            nl.replace_route(ip, 32, &link, None)
        })?;

        // Pod side: lo, eth0 with the pod's /32, the gateway on the link,
        // the default route through it.
        netns::in_netns(&pod_ns, &pod_label, || {
            let nl = Netlink::connect(&pod_label)?;
            let lo = nl.link("lo")?.ok_or_else(|| vanished("lo", &pod_label))?;
            nl.set_up(&lo)?;
            let eth0 = nl.link(POD_IF)?.ok_or_else(|| vanished(POD_IF, &pod_label))?;
            nl.replace_address(&eth0, ip, 32)?;
            nl.set_up(&eth0)?;
            nl.replace_route(gateway, 32, &eth0, None)?;
            nl.replace_route(Ipv4Addr::UNSPECIFIED, 0, &eth0, Some(gateway))
        })?;

        Ok(PodNet { netns: netns_path, ip, host_veth, gateway })
    }

    /// Undoes what [`PodNetwork::setup_steps`] made, newest first; keeps
    /// going after a failure and returns the first.
    fn rollback(&self, uid: &str, made: &Made) -> Result<(), NetworkError> {
        let mut first = None;
        if made.veth {
            let name = host_veth_name(uid);
            let deleted = netns::in_netns(&self.node_ns, NODE_NETNS, || {
                let nl = Netlink::connect(NODE_NETNS)?;
                match nl.link(&name)? {
                    Some(link) => nl.delete_link(&link).map(drop),
                    None => Ok(()),
                }
            });
            first = first.or(deleted.err());
        }
        if made.netns {
            first = first.or(netns::remove(&self.netns_path(uid)).err());
        }
        if made.address {
            first = first.or(self.ipam.release(uid).err().map(NetworkError::from));
        }
        first.map_or(Ok(()), Err)
    }

    fn teardown_locked(&self, uid: &str) -> Result<(), NetworkError> {
        let name = host_veth_name(uid);
        let netns_path = self.netns_path(uid);
        let host = netns::in_netns(&self.node_ns, NODE_NETNS, || Netlink::connect(NODE_NETNS)?.link(&name))?;
        if let Some(link) = host {
            let ours = link.is_veth()
                && match owner(&link) {
                    Some(o) => o == uid,
                    // No alias: ours only if paired with this pod's eth0.
                    None => paired(&link, self.pod_link(&netns_path, POD_IF)?.as_ref()),
                };
            if ours {
                netns::in_netns(&self.node_ns, NODE_NETNS, || Netlink::connect(NODE_NETNS)?.delete_link(&link))?;
            } else {
                tracing::warn!(
                    interface = %name, kind = ?link.kind, alias = ?link.alias, pod_uid = uid,
                    "an interface with this pod's host veth name belongs to someone else: left alone"
                );
            }
        }
        netns::remove(&netns_path)?;
        self.ipam.release(uid)?;
        Ok(())
    }

    /// The interface `name` in the pod namespace at `netns_path`; `None` if
    /// there is no such namespace or interface.
    fn pod_link(&self, netns_path: &Path, name: &str) -> Result<Option<Link>, NetworkError> {
        if !netns::is_mounted(netns_path)? {
            return Ok(None);
        }
        let ns = File::open(netns_path).map_err(|cause| NetworkError::Io {
            op: "opening netns",
            path: netns_path.to_owned(),
            cause,
        })?;
        let label = netns_path.display().to_string();
        netns::in_netns(&ns, &label, || Netlink::connect(&label)?.link(name))
    }
}

/// What setup does about the host veth.
#[derive(Debug)]
enum Plan {
    /// None exists: create it.
    Create,
    /// This pod's, paired with its netns: keep it.
    Keep,
    /// This pod's (by alias) but paired elsewhere: delete and create.
    Replace(Link),
}

/// The pod uid a host veth's alias names.
fn owner(link: &Link) -> Option<&str> {
    link.alias.as_deref()?.strip_prefix(HOST_VETH_ALIAS_PREFIX)
}

/// Whether the veth `host` (in the node netns) is the peer of `pod_if`.
/// Interface indexes are per namespace, but a pod's eth0 only ever has its
/// peer in the node netns, so matching the index is enough.
fn paired(host: &Link, pod_if: Option<&Link>) -> bool {
    pod_if.is_some_and(|p| p.is_veth() && p.peer_index == Some(host.index))
}

/// The host-side veth name of a pod: `bth` and the first 10 hex digits of
/// the SHA-256 of its uid (13 bytes; interface names hold at most 15).
pub fn host_veth_name(pod_uid: &str) -> String {
    let digest = Sha256::digest(pod_uid.as_bytes());
    let mut name = String::from(HOST_VETH_PREFIX);
    name.push_str(&hex::encode(&digest[..HOST_VETH_HASH_LEN / 2]));
    name
}

/// Whether `name` looks like a [`host_veth_name`].
pub fn is_host_veth_name(name: &str) -> bool {
    name.strip_prefix(HOST_VETH_PREFIX).is_some_and(|hash| {
        hash.len() == HOST_VETH_HASH_LEN && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Pod uids name files in `netns_dir`: 1 to [`MAX_UID_LEN`] bytes of
/// ASCII letters, digits, `-`, `_` and `.`, not starting with `.`.
///
/// # Errors
/// [`NetworkError::InvalidPodUid`] saying what is wrong.
pub fn validate_uid(uid: &str) -> Result<(), NetworkError> {
    let reason = if uid.is_empty() {
        "empty"
    } else if uid.len() > MAX_UID_LEN {
        "longer than 128 bytes"
    } else if uid.starts_with('.') {
        "starts with '.'"
    } else if !uid.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        "only ASCII letters, digits, '-', '_' and '.' are allowed"
    } else {
        return Ok(());
    };
    Err(NetworkError::InvalidPodUid { uid: uid.to_owned(), reason })
}

/// Makes sure `path` is a mounted namespace; returns whether it made one.
/// A plain file there is a leftover of a crash between creating the file
/// and mounting it: it is replaced.
fn ensure_netns(path: &Path) -> Result<bool, NetworkError> {
    if netns::is_mounted(path)? {
        return Ok(false);
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => {
            netns::remove(path)?;
        }
        Ok(_) => return Err(NetworkError::NetnsPathInUse { path: path.to_owned() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(cause) => return Err(NetworkError::Io { op: "inspecting", path: path.to_owned(), cause }),
    }
    netns::create(path)?;
    Ok(true)
}

/// An interface that existed a moment ago is gone (someone else deleted
/// it): reported as a netlink `ENODEV`.
fn vanished(name: &str, netns: &str) -> NetworkError {
    NetworkError::Netlink {
        op: format!("looking up interface {name}"),
        netns: netns.to_owned(),
        cause: io::Error::from_raw_os_error(libc::ENODEV),
    }
}

/// `net.ipv4.ip_forward` of the calling thread's network namespace
/// (`/proc/sys/net` follows the reading thread's namespace).
fn read_ip_forward() -> Result<bool, NetworkError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let value =
        fs::read_to_string(PATH).map_err(|cause| NetworkError::Io { op: "reading", path: PATH.into(), cause })?;
    Ok(value.trim() == "1")
}
