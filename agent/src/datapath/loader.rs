//! Loading berth's objects, pinning their maps and links, and re-attaching
//! atomically on restart.
//!
//! # Design
//! Everything lives under one pin directory, `/sys/fs/bpf/berth/<instance>/`:
//! maps by name (`berth_*_v1`, shared by the three objects through
//! `LIBBPF_PIN_BY_NAME`) and links under `links/`, named after their attach
//! point. A pinned link keeps its program attached when the agent exits, so
//! forwarding never depends on the agent process. On start the agent loads a
//! fresh copy of each program against the pinned maps and swaps it into the
//! existing link with BPF_LINK_UPDATE; links for attach points no longer
//! configured are unpinned, which detaches them.
//!
//! # Limitations
//! A map whose pinned size or layout differs from what this agent would
//! create is refused (see [`LoadError::PinnedMapMismatch`]); resizing needs
//! `berth-agent cleanup` first, which interrupts forwarding.

use std::{
    collections::BTreeSet,
    fs, io,
    os::{fd::AsFd, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::MapData,
    programs::{
        CgroupAttachMode, CgroupSockAddr, LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode, links::FdLink,
        tc::TcAttachOptions,
    },
};
use berth_ebpf::{abi, globals, programs};

use super::sys;

/// Where pins live unless told otherwise.
pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf/berth";

/// Map sizes (max_entries). Defaults come from abi.h.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLimits {
    pub services: u32,
    pub backends: u32,
    pub schedule_slots: u32,
    pub conntrack: u32,
    pub affinity: u32,
    pub sock_rev: u32,
}

impl Default for MapLimits {
    fn default() -> Self {
        Self {
            services: abi::BERTH_DEFAULT_MAX_SERVICES,
            backends: abi::BERTH_DEFAULT_MAX_BACKENDS,
            schedule_slots: abi::BERTH_DEFAULT_MAX_SCHEDULE,
            conntrack: abi::BERTH_DEFAULT_MAX_CT,
            affinity: abi::BERTH_DEFAULT_MAX_AFFINITY,
            sock_rev: abi::BERTH_DEFAULT_MAX_SOCK_REV,
        }
    }
}

impl MapLimits {
    /// (map name, max_entries) for every sized map.
    fn entries(&self) -> [(&'static str, u32); 9] {
        [
            ("berth_services_v1", self.services),
            ("berth_backends_v1", self.backends),
            ("berth_schedule_v1", self.schedule_slots),
            ("berth_ct_v1", self.conntrack),
            ("berth_affinity_v1", self.affinity),
            ("berth_sock_rev_v1", self.sock_rev),
            ("berth_svc_stats_v1", self.services),
            ("berth_backend_stats_v1", self.backends),
            ("berth_wrr_cursor_v1", self.services),
        ]
    }
}

/// The pin directory of one berth instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    pub fn new(bpffs_root: &Path, instance: &str) -> Self {
        Self { root: bpffs_root.join(instance) }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Removes every link (detaching its program) and map berth pinned for
    /// this instance, then the directory. Forwarding through this instance
    /// stops. Missing pins are not an error: cleanup is idempotent.
    ///
    /// # Errors
    /// Filesystem errors other than "not found", with the path.
    pub fn remove_all(&self) -> Result<Vec<PathBuf>, LoadError> {
        let mut removed = Vec::new();
        for dir in [self.links(), self.root.clone()] {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(LoadError::Fs { path: dir, source }),
            };
            for entry in entries {
                let path = entry.map_err(|source| LoadError::Fs { path: dir.clone(), source })?.path();
                if path.is_dir() {
                    continue;
                }
                fs::remove_file(&path).map_err(|source| LoadError::Fs { path: path.clone(), source })?;
                removed.push(path);
            }
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(LoadError::Fs { path: dir, source }),
            }
        }
        Ok(removed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("bpffs is not mounted at {path} (mount -t bpf bpf /sys/fs/bpf, or run `cargo xtask setup`)")]
    NoBpffs { path: PathBuf },
    #[error("{path}")]
    Fs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("loading the {object} object")]
    Load {
        object: &'static str,
        #[source]
        source: aya::EbpfError,
    },
    #[error(
        "pinned map {path} has {found} but this agent needs {expected}; \
         run `berth-agent cleanup --instance <name>` (interrupts forwarding) or use a new instance"
    )]
    PinnedMapMismatch { path: PathBuf, expected: String, found: String },
    #[error("program {program} missing from the {object} object")]
    MissingProgram { object: &'static str, program: &'static str },
    #[error("program {program}")]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("unknown interface {name:?}")]
    UnknownInterface { name: String },
    #[error("opening cgroup {path}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("attaching {program} at {target}")]
    Attach {
        program: &'static str,
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("pinning link {path}")]
    PinLink {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
}

/// Which kernel objects to load and how.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub pins: PinDir,
    pub limits: MapLimits,
    /// Per-CPU traffic counters (off only to price them in benchmarks).
    pub stats: bool,
}

/// The loaded objects. Maps are shared through pins; each object holds its
/// own programs.
pub struct Loaded {
    pub xdp: Ebpf,
    pub tc: Ebpf,
    pub sock: Ebpf,
}

fn is_bpffs(path: &Path) -> bool {
    // statfs f_type BPF_FS_MAGIC; a missing path is "not bpffs".
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// Loads the three objects against the instance's pinned maps (created on
/// first use).
///
/// # Errors
/// No bpffs, incompatible pinned maps, or a load/verifier failure (the
/// verifier log is in the source chain).
pub fn load(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    let bpffs = opts.pins.path().parent().unwrap_or(opts.pins.path());
    let mut probe = bpffs.to_path_buf();
    // The instance dir's parent may not exist yet; bpffs must be an ancestor.
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if !is_bpffs(&probe) {
        return Err(LoadError::NoBpffs { path: probe });
    }
    fs::create_dir_all(opts.pins.path()).map_err(|source| LoadError::Fs { path: opts.pins.path().into(), source })?;
    check_pinned_maps(opts)?;

    let stats: u32 = opts.stats.into();
    let entries = opts.limits.entries();
    let load_one = |object: &'static str, bytes: &[u8]| -> Result<Ebpf, LoadError> {
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(opts.pins.path());
        loader.override_global(globals::STATS, &stats, true);
        for (name, size) in entries {
            loader.map_max_entries(name, size);
        }
        loader.load(bytes).map_err(|source| LoadError::Load { object, source })
    };
    Ok(Loaded {
        xdp: load_one("xdp_lb", berth_ebpf::xdp_lb_object())?,
        tc: load_one("tc_rev_nat", berth_ebpf::tc_rev_nat_object())?,
        sock: load_one("sock_lb", berth_ebpf::sock_lb_object())?,
    })
}

/// Refuses to reuse a pinned map whose size differs from the configured one:
/// aya would silently reuse it, and a too-small map fails later, per packet.
fn check_pinned_maps(opts: &LoadOptions) -> Result<(), LoadError> {
    for (name, max_entries) in opts.limits.entries() {
        let path = opts.pins.map(name);
        let Ok(map) = MapData::from_pin(&path) else { continue };
        let info = map.info().map_err(|source| LoadError::Map { name, source })?;
        if info.max_entries() != max_entries {
            return Err(LoadError::PinnedMapMismatch {
                path,
                expected: format!("max_entries {max_entries}"),
                found: format!("max_entries {}", info.max_entries()),
            });
        }
    }
    Ok(())
}

/// An attach point: where one program is attached, and the name its link is
/// pinned under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachPoint {
    XdpIngress { ifname: String },
    TcEgress { ifname: String },
    Cgroup { path: PathBuf, hook: SockHook },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockHook {
    Connect4,
    Sendmsg4,
    Recvmsg4,
    Getpeername4,
}

impl SockHook {
    pub const ALL: [SockHook; 4] = [SockHook::Connect4, SockHook::Sendmsg4, SockHook::Recvmsg4, SockHook::Getpeername4];

    fn program(self) -> &'static str {
        match self {
            SockHook::Connect4 => programs::CONNECT4,
            SockHook::Sendmsg4 => programs::SENDMSG4,
            SockHook::Recvmsg4 => programs::RECVMSG4,
            SockHook::Getpeername4 => programs::GETPEERNAME4,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SockHook::Connect4 => "connect4",
            SockHook::Sendmsg4 => "sendmsg4",
            SockHook::Recvmsg4 => "recvmsg4",
            SockHook::Getpeername4 => "getpeername4",
        }
    }
}

/// bpffs refuses names with '.', which interface names may contain.
fn pin_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

impl AttachPoint {
    /// The link's pin name: the attach point, so a changed configuration
    /// leaves a recognisably stale pin behind.
    fn pin_name(&self) -> Result<String, LoadError> {
        Ok(match self {
            AttachPoint::XdpIngress { ifname } => format!("xdp-{}", pin_safe(ifname)),
            AttachPoint::TcEgress { ifname } => format!("tcx-egress-{}", pin_safe(ifname)),
            AttachPoint::Cgroup { path, hook } => {
                // The cgroup's inode is its id; the path is for people.
                let ino = fs::metadata(path).map_err(|source| LoadError::Cgroup { path: path.clone(), source })?.ino();
                format!("{}-cg{ino}", hook.name())
            }
        })
    }

    fn describe(&self) -> String {
        match self {
            AttachPoint::XdpIngress { ifname } => format!("xdp ingress of {ifname}"),
            AttachPoint::TcEgress { ifname } => format!("tc egress of {ifname}"),
            AttachPoint::Cgroup { path, hook } => format!("cgroup {} ({})", path.display(), hook.name()),
        }
    }
}

/// The attach points of a configuration: XDP and reverse NAT on the uplink,
/// and the four socket hooks when a socket-LB cgroup is set.
pub fn attach_points(uplink: Option<&str>, socket_lb_cgroup: Option<&Path>) -> Vec<AttachPoint> {
    let mut points = Vec::new();
    if let Some(ifname) = uplink {
        points.push(AttachPoint::XdpIngress { ifname: ifname.to_owned() });
        points.push(AttachPoint::TcEgress { ifname: ifname.to_owned() });
    }
    if let Some(path) = socket_lb_cgroup {
        for hook in SockHook::ALL {
            points.push(AttachPoint::Cgroup { path: path.to_owned(), hook });
        }
    }
    points
}

/// How an attach point ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachOutcome {
    /// No pinned link existed: attached and pinned.
    Attached,
    /// A pinned link existed: its program was swapped atomically.
    Replaced,
}

/// Attaches every point, replacing the programs of existing pinned links in
/// place, then detaches pinned links no longer wanted.
///
/// # Errors
/// The first attach point that fails; points before it stay attached.
pub fn attach_all(
    loaded: &mut Loaded,
    pins: &PinDir,
    points: &[AttachPoint],
) -> Result<Vec<(AttachPoint, AttachOutcome)>, LoadError> {
    let links_dir = pins.links();
    fs::create_dir_all(&links_dir).map_err(|source| LoadError::Fs { path: links_dir.clone(), source })?;
    let mut wanted = BTreeSet::new();
    let mut outcomes = Vec::new();
    for point in points {
        let name = point.pin_name()?;
        let outcome = attach_one(loaded, &links_dir.join(&name), point)?;
        wanted.insert(name);
        outcomes.push((point.clone(), outcome));
    }
    // Stale links (an uplink or cgroup no longer configured): unpin detaches.
    let entries = fs::read_dir(&links_dir).map_err(|source| LoadError::Fs { path: links_dir.clone(), source })?;
    for entry in entries {
        let entry = entry.map_err(|source| LoadError::Fs { path: links_dir.clone(), source })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !wanted.contains(&name) {
            tracing::info!(link = %name, "detaching link no longer configured");
            fs::remove_file(entry.path()).map_err(|source| LoadError::Fs { path: entry.path(), source })?;
        }
    }
    Ok(outcomes)
}

fn attach_one(loaded: &mut Loaded, pin: &Path, point: &AttachPoint) -> Result<AttachOutcome, LoadError> {
    let program_name = match point {
        AttachPoint::XdpIngress { .. } => programs::XDP_LB,
        AttachPoint::TcEgress { .. } => programs::TC_REV_NAT,
        AttachPoint::Cgroup { hook, .. } => hook.program(),
    };
    let (object, ebpf) = match point {
        AttachPoint::XdpIngress { .. } => ("xdp_lb", &mut loaded.xdp),
        AttachPoint::TcEgress { .. } => ("tc_rev_nat", &mut loaded.tc),
        AttachPoint::Cgroup { .. } => ("sock_lb", &mut loaded.sock),
    };
    let program = ebpf.program_mut(program_name).ok_or(LoadError::MissingProgram { object, program: program_name })?;
    let prog_err = |source| LoadError::Program { program: program_name, source };
    let attach_err = |source| LoadError::Attach { program: program_name, target: point.describe(), source };

    // Load (verify) first; only a verified program may replace a live one.
    let existing = match sys::obj_get(pin) {
        Ok(fd) => Some(fd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(attach_err(e)),
    };

    let fd_link: FdLink = match (point, program) {
        (AttachPoint::XdpIngress { ifname }, aya::programs::Program::Xdp(xdp)) => {
            load_if_needed_xdp(xdp).map_err(prog_err)?;
            if let Some(link) = existing {
                let prog_fd = xdp.fd().map_err(prog_err)?;
                sys::link_update(link.as_fd(), prog_fd.as_fd()).map_err(attach_err)?;
                return Ok(AttachOutcome::Replaced);
            }
            let ifindex = ifindex(ifname)?;
            let id = xdp.attach_to_if_index(ifindex, XdpMode::default()).map_err(prog_err)?;
            xdp.take_link(id).map_err(prog_err)?.try_into().map_err(|e| attach_err(link_error(e)))?
        }
        (AttachPoint::TcEgress { ifname }, aya::programs::Program::SchedClassifier(tc)) => {
            load_if_needed_tc(tc).map_err(prog_err)?;
            if let Some(link) = existing {
                let prog_fd = tc.fd().map_err(prog_err)?;
                sys::link_update(link.as_fd(), prog_fd.as_fd()).map_err(attach_err)?;
                return Ok(AttachOutcome::Replaced);
            }
            ifindex(ifname)?;
            let id = tc
                .attach_with_options(ifname, TcAttachType::Egress, TcAttachOptions::TcxOrder(LinkOrder::default()))
                .map_err(prog_err)?;
            tc.take_link(id).map_err(prog_err)?.try_into().map_err(|e| attach_err(link_error(e)))?
        }
        (AttachPoint::Cgroup { path, .. }, aya::programs::Program::CgroupSockAddr(sock)) => {
            load_if_needed_sock(sock).map_err(prog_err)?;
            if let Some(link) = existing {
                let prog_fd = sock.fd().map_err(prog_err)?;
                sys::link_update(link.as_fd(), prog_fd.as_fd()).map_err(attach_err)?;
                return Ok(AttachOutcome::Replaced);
            }
            let cgroup = fs::File::open(path).map_err(|source| LoadError::Cgroup { path: path.clone(), source })?;
            let id = sock.attach(&cgroup, CgroupAttachMode::Single).map_err(prog_err)?;
            sock.take_link(id).map_err(prog_err)?.try_into().map_err(|e| attach_err(link_error(e)))?
        }
        _ => return Err(LoadError::MissingProgram { object, program: program_name }),
    };
    fd_link.pin(pin).map_err(|source| LoadError::PinLink { path: pin.to_owned(), source })?;
    Ok(AttachOutcome::Attached)
}

fn link_error(e: aya::programs::links::LinkError) -> io::Error {
    io::Error::other(e.to_string())
}

fn ifindex(ifname: &str) -> Result<u32, LoadError> {
    nix::net::if_::if_nametoindex(ifname).map_err(|_| LoadError::UnknownInterface { name: ifname.to_owned() })
}

// aya's `load` fails when called twice; the same object may feed several
// attach points (one program per cgroup hook, but one XDP program per uplink).
fn load_if_needed_xdp(p: &mut Xdp) -> Result<(), aya::programs::ProgramError> {
    if p.fd().is_err() { p.load() } else { Ok(()) }
}

fn load_if_needed_tc(p: &mut SchedClassifier) -> Result<(), aya::programs::ProgramError> {
    if p.fd().is_err() { p.load() } else { Ok(()) }
}

fn load_if_needed_sock(p: &mut CgroupSockAddr) -> Result<(), aya::programs::ProgramError> {
    if p.fd().is_err() { p.load() } else { Ok(()) }
}

/// Loads (verifies) every program without attaching anything, and returns
/// each program's verified instruction count. Used by tests to make program
/// growth visible.
///
/// # Errors
/// A verifier rejection, with its log in the source chain.
pub fn verify_all(loaded: &mut Loaded) -> Result<Vec<(&'static str, u32)>, LoadError> {
    let mut counts = Vec::new();
    for (name, program) in loaded.xdp.programs_mut().chain(loaded.tc.programs_mut()).chain(loaded.sock.programs_mut()) {
        let static_name: &'static str = [
            programs::XDP_LB,
            programs::TC_REV_NAT,
            programs::CONNECT4,
            programs::SENDMSG4,
            programs::RECVMSG4,
            programs::GETPEERNAME4,
        ]
        .into_iter()
        .find(|p| *p == name)
        .unwrap_or("unknown");
        let prog_err = |source| LoadError::Program { program: static_name, source };
        match program {
            aya::programs::Program::Xdp(p) => load_if_needed_xdp(p).map_err(prog_err)?,
            aya::programs::Program::SchedClassifier(p) => load_if_needed_tc(p).map_err(prog_err)?,
            aya::programs::Program::CgroupSockAddr(p) => load_if_needed_sock(p).map_err(prog_err)?,
            _ => continue,
        }
        let info = program.info().map_err(prog_err)?;
        counts.push((static_name, info.verified_instruction_count().unwrap_or(0)));
    }
    counts.sort_unstable();
    Ok(counts)
}
