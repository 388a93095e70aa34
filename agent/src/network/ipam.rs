//! IP address management for the node's pod CIDR: one IPv4 address per pod
//! uid, persisted on disk.
//!
//! # Design
//! The state file `<state_dir>/ipam.json` is the truth. Every operation
//! takes an exclusive `flock` on `<state_dir>/ipam.lock`, re-reads the file,
//! changes it and writes it back atomically (temporary file, `fsync`,
//! `rename`, `fsync` of the directory), so two agent processes pointed at
//! the same directory cannot hand out one address twice, and neither can an
//! agent that restarts. The allocator itself ([`IpamState`]) is pure and
//! unit-tested against a model.
//!
//! Like CNI's host-local plugin, allocation is round-robin: the search
//! starts after the address handed out last, so an address a pod just
//! released is not reused until the range wraps (a late packet to the old
//! pod does not reach a new one). The network address, the gateway (the
//! first address) and the broadcast address are never handed out. Asking
//! again for a uid that holds an address returns that address.
//!
//! A state file that cannot be parsed or breaks an invariant (address out
//! of range, one address or uid twice, another CIDR) is an error and is
//! never overwritten: fixing it is a human decision.
//!
//! # Limitations
//! IPv4 only. [`Ipam::allocations`] reports what this process read at its
//! last operation; another process sharing the directory may have changed
//! the file since (every operation re-reads it, so allocation stays safe).
//! Allocation scans the range linearly (at most 65 534 steps for a /16).

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    fs::{self, File},
    io::{self, Write},
    net::{AddrParseError, Ipv4Addr},
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Mutex, PoisonError},
};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// The state file's name inside the state directory.
pub const STATE_FILE: &str = "ipam.json";
/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "ipam.lock";
/// The state file format this code reads and writes.
const FORMAT_VERSION: u32 = 1;

/// An IPv4 network: address and prefix length, host bits zero
/// (`198.18.0.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix_len: u8,
}

/// Why a string is not an IPv4 CIDR.
#[derive(Debug, thiserror::Error)]
pub enum ParseCidrError {
    #[error("{input:?} is not a CIDR: expected ADDRESS/PREFIX, e.g. 198.18.0.0/24")]
    MissingPrefix { input: String },
    #[error("{input:?} is not a CIDR: bad IPv4 address: {cause}")]
    BadAddress { input: String, cause: AddrParseError },
    #[error("{input:?} is not a CIDR: the prefix length must be a number from 0 to 32")]
    BadPrefix { input: String },
    #[error("{addr}/{prefix_len} has host bits set; the network is {network}")]
    HostBitsSet { addr: Ipv4Addr, prefix_len: u8, network: Ipv4Net },
}

impl Ipv4Net {
    /// `addr/prefix_len`.
    ///
    /// # Errors
    /// If `prefix_len > 32` or `addr` has bits set beyond the prefix.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self, ParseCidrError> {
        if prefix_len > 32 {
            return Err(ParseCidrError::BadPrefix { input: format!("{addr}/{prefix_len}") });
        }
        let network = Ipv4Addr::from(u32::from(addr) & mask(prefix_len));
        if network != addr {
            return Err(ParseCidrError::HostBitsSet { addr, prefix_len, network: Self { addr: network, prefix_len } });
        }
        Ok(Self { addr, prefix_len })
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The last address (all host bits set).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix_len))
    }

    /// How many addresses the network spans (2^(32 - prefix)).
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.addr)
    }
}

/// The netmask of a prefix length ≤ 32, as a host-order integer.
fn mask(prefix_len: u8) -> u32 {
    // checked_shl: a shift by 32 (prefix 0) is out of range for u32.
    u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0)
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Net {
    type Err = ParseCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| ParseCidrError::MissingPrefix { input: s.to_owned() })?;
        let addr = addr.parse().map_err(|cause| ParseCidrError::BadAddress { input: s.to_owned(), cause })?;
        // Digits only: `u8::from_str` would also take "+24".
        let prefix_len = match prefix.parse::<u8>() {
            Ok(p) if p <= 32 && prefix.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => return Err(ParseCidrError::BadPrefix { input: s.to_owned() }),
        };
        Self::new(addr, prefix_len)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why an IPAM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error(
        "pod CIDR {cidr} is too small: pods need a prefix of /30 or shorter (network, gateway, broadcast and at least one pod)"
    )]
    CidrTooSmall { cidr: Ipv4Net },
    #[error("all {capacity} pod addresses of {cidr} are allocated; cannot allocate one for pod {pod_uid}")]
    Exhausted { cidr: Ipv4Net, capacity: u32, pod_uid: String },
    #[error("{op} {path}: {cause}")]
    Io { op: &'static str, path: PathBuf, cause: io::Error },
    #[error("locking {path}: {cause}")]
    Lock { path: PathBuf, cause: nix::Error },
    #[error("IPAM state {path} is not valid JSON for format version {FORMAT_VERSION} (left untouched): {cause}")]
    Parse { path: PathBuf, cause: serde_json::Error },
    #[error("IPAM state {path} is corrupt (left untouched): {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "IPAM state {path} is for pod CIDR {stored}, but the agent is configured with {configured}; \
         remove the pods and the file to change the CIDR"
    )]
    CidrChanged { path: PathBuf, stored: Ipv4Net, configured: Ipv4Net },
    #[error(
        "IPAM state {path} disappeared while the agent was running; refusing to start over (addresses in use would be handed out again)"
    )]
    StateMissing { path: PathBuf },
}

/// The result of [`Ipam::allocate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocated {
    pub ip: Ipv4Addr,
    /// `false` when the uid already held this address.
    pub new: bool,
}

/// The allocator, without persistence: the pod CIDR, the last address
/// handed out and the live allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamState {
    cidr: Ipv4Net,
    last: Option<Ipv4Addr>,
    by_ip: BTreeMap<Ipv4Addr, String>,
    by_uid: HashMap<String, Ipv4Addr>,
}

impl IpamState {
    /// An empty allocator for `cidr`.
    ///
    /// # Errors
    /// If `cidr` is longer than /30.
    pub fn new(cidr: Ipv4Net) -> Result<Self, IpamError> {
        if cidr.prefix_len() > 30 {
            return Err(IpamError::CidrTooSmall { cidr });
        }
        Ok(Self { cidr, last: None, by_ip: BTreeMap::new(), by_uid: HashMap::new() })
    }

    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The gateway: the first address after the network address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.addr()) + 1)
    }

    /// The first and last address pods get (gateway + 1 ..= broadcast - 1).
    pub fn pod_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        (Ipv4Addr::from(u32::from(self.cidr.addr()) + 2), Ipv4Addr::from(u32::from(self.cidr.broadcast()) - 1))
    }

    /// How many addresses pods can get.
    pub fn capacity(&self) -> u32 {
        let (first, last) = self.pod_range();
        u32::from(last) - u32::from(first) + 1
    }

    fn in_pod_range(&self, ip: Ipv4Addr) -> bool {
        let (first, last) = self.pod_range();
        (first..=last).contains(&ip)
    }

    /// The address `uid` holds.
    pub fn get(&self, uid: &str) -> Option<Ipv4Addr> {
        self.by_uid.get(uid).copied()
    }

    /// The last address handed out (the round-robin cursor).
    pub fn last(&self) -> Option<Ipv4Addr> {
        self.last
    }

    /// Every allocation, ordered by address.
    pub fn allocations(&self) -> Vec<(Ipv4Addr, String)> {
        self.by_ip.iter().map(|(ip, uid)| (*ip, uid.clone())).collect()
    }

    /// The address of `uid`: the one it holds, or the first free one after
    /// the last handed out (wrapping around).
    ///
    /// # Errors
    /// [`IpamError::Exhausted`] when every address is taken.
    pub fn allocate(&mut self, uid: &str) -> Result<Allocated, IpamError> {
        if let Some(ip) = self.get(uid) {
            return Ok(Allocated { ip, new: false });
        }
        let (first, _) = self.pod_range();
        let first = u32::from(first);
        let capacity = self.capacity();
        // Offset of the cursor in the pod range; a fresh allocator starts at
        // the first address.
        let start = match self.last {
            Some(last) if self.in_pod_range(last) => (u32::from(last) - first + 1) % capacity,
            _ => 0,
        };
        let free = (0..capacity)
            .map(|step| Ipv4Addr::from(first + (start + step) % capacity))
            .find(|ip| !self.by_ip.contains_key(ip))
            .ok_or_else(|| IpamError::Exhausted { cidr: self.cidr, capacity, pod_uid: uid.to_owned() })?;
        self.by_ip.insert(free, uid.to_owned());
        self.by_uid.insert(uid.to_owned(), free);
        self.last = Some(free);
        Ok(Allocated { ip: free, new: true })
    }

    /// Frees the address of `uid`; returns it, or `None` if `uid` held none.
    /// The cursor stays, so the address is not handed out again at once.
    pub fn release(&mut self, uid: &str) -> Option<Ipv4Addr> {
        let ip = self.by_uid.remove(uid)?;
        self.by_ip.remove(&ip);
        Some(ip)
    }

    fn to_file(&self) -> StateFile {
        StateFile {
            version: FORMAT_VERSION,
            cidr: self.cidr,
            last_allocated: self.last,
            allocations: self.by_ip.iter().map(|(ip, uid)| FileAllocation { ip: *ip, pod_uid: uid.clone() }).collect(),
        }
    }

    /// Rebuilds the allocator from a parsed file, checking every invariant.
    fn from_file(file: StateFile, configured: Ipv4Net, path: &Path) -> Result<Self, IpamError> {
        let corrupt = |reason: String| IpamError::Corrupt { path: path.to_owned(), reason };
        if file.version != FORMAT_VERSION {
            return Err(corrupt(format!("format version {} (this agent reads {FORMAT_VERSION})", file.version)));
        }
        if file.cidr != configured {
            return Err(IpamError::CidrChanged { path: path.to_owned(), stored: file.cidr, configured });
        }
        let mut state = Self::new(configured)?;
        if let Some(last) = file.last_allocated
            && !state.in_pod_range(last)
        {
            return Err(corrupt(format!("last_allocated {last} is not a pod address of {configured}")));
        }
        state.last = file.last_allocated;
        for FileAllocation { ip, pod_uid } in file.allocations {
            if !state.in_pod_range(ip) {
                return Err(corrupt(format!("{ip} (pod {pod_uid}) is not a pod address of {configured}")));
            }
            if pod_uid.is_empty() {
                return Err(corrupt(format!("{ip} is allocated to an empty pod uid")));
            }
            if let Some(other) = state.by_ip.get(&ip) {
                return Err(corrupt(format!("{ip} is allocated twice (pods {other} and {pod_uid})")));
            }
            if let Some(other) = state.by_uid.get(&pod_uid) {
                return Err(corrupt(format!("pod {pod_uid} holds two addresses ({other} and {ip})")));
            }
            state.by_ip.insert(ip, pod_uid.clone());
            state.by_uid.insert(pod_uid, ip);
        }
        Ok(state)
    }
}

/// `ipam.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    cidr: Ipv4Net,
    last_allocated: Option<Ipv4Addr>,
    allocations: Vec<FileAllocation>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAllocation {
    ip: Ipv4Addr,
    pod_uid: String,
}

/// The persistent allocator: [`IpamState`] kept in `<state_dir>/ipam.json`
/// (see the module docs).
#[derive(Debug)]
pub struct Ipam {
    state_path: PathBuf,
    lock_path: PathBuf,
    dir: PathBuf,
    cidr: Ipv4Net,
    /// What the file held after this process's last operation.
    cache: Mutex<IpamState>,
}

impl Ipam {
    /// Loads `<state_dir>/ipam.json`, or creates it (and the directory)
    /// with no allocations.
    ///
    /// # Errors
    /// If the CIDR is too small, the directory or files cannot be used, or
    /// the state file is corrupt or for another CIDR.
    pub fn open(state_dir: &Path, cidr: Ipv4Net) -> Result<Self, IpamError> {
        let empty = IpamState::new(cidr)?;
        fs::create_dir_all(state_dir).map_err(|cause| IpamError::Io {
            op: "creating directory",
            path: state_dir.to_owned(),
            cause,
        })?;
        let ipam = Self {
            state_path: state_dir.join(STATE_FILE),
            lock_path: state_dir.join(LOCK_FILE),
            dir: state_dir.to_owned(),
            cidr,
            cache: Mutex::new(empty.clone()),
        };
        let _lock = ipam.lock()?;
        let state = match ipam.read()? {
            Some(state) => state,
            None => {
                ipam.write(&empty)?;
                empty
            }
        };
        *ipam.cache() = state;
        Ok(ipam)
    }

    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The gateway address (see [`IpamState::gateway`]).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.addr()) + 1)
    }

    /// The state file.
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// The address of `uid`, allocating one if it has none.
    ///
    /// # Errors
    /// If the range is exhausted or the state cannot be read or written;
    /// nothing changes then.
    pub fn allocate(&self, uid: &str) -> Result<Allocated, IpamError> {
        self.update(|state| state.allocate(uid))
    }

    /// Frees the address of `uid` (a no-op if it has none).
    ///
    /// # Errors
    /// If the state cannot be read or written.
    pub fn release(&self, uid: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        self.update(|state| Ok(state.release(uid)))
    }

    /// The address `uid` holds, as of this process's last operation.
    pub fn get(&self, uid: &str) -> Option<Ipv4Addr> {
        self.cache().get(uid)
    }

    /// Every allocation, by address, as of this process's last operation.
    pub fn allocations(&self) -> Vec<(Ipv4Addr, String)> {
        self.cache().allocations()
    }

    /// Every allocation, re-read from the state file under the lock.
    ///
    /// # Errors
    /// If the state cannot be read.
    pub fn reload(&self) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
        self.update(|state| Ok(state.allocations()))
    }

    /// Lock, read, apply `change`, write back if the state changed.
    fn update<T>(&self, change: impl FnOnce(&mut IpamState) -> Result<T, IpamError>) -> Result<T, IpamError> {
        let _lock = self.lock()?;
        let before = self.read()?.ok_or_else(|| IpamError::StateMissing { path: self.state_path.clone() })?;
        let mut after = before.clone();
        let result = change(&mut after);
        if after != before {
            self.write(&after)?;
        }
        // The cache follows the file, also when `change` failed.
        *self.cache() = after;
        result
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, IpamState> {
        // Poisoning is harmless: the cache is only ever replaced whole.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An exclusive lock on `ipam.lock`, released when dropped. `flock`
    /// locks belong to the open file description, so this also serialises
    /// two `Ipam`s in one process.
    fn lock(&self) -> Result<Flock<File>, IpamError> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|cause| IpamError::Io { op: "opening", path: self.lock_path.clone(), cause })?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, cause)| IpamError::Lock { path: self.lock_path.clone(), cause })
    }

    /// The state file's contents, `None` if there is no file.
    fn read(&self) -> Result<Option<IpamState>, IpamError> {
        let text = match fs::read_to_string(&self.state_path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(cause) => return Err(IpamError::Io { op: "reading", path: self.state_path.clone(), cause }),
        };
        let file: StateFile =
            serde_json::from_str(&text).map_err(|cause| IpamError::Parse { path: self.state_path.clone(), cause })?;
        IpamState::from_file(file, self.cidr, &self.state_path).map(Some)
    }

    /// Atomically replaces the state file.
    fn write(&self, state: &IpamState) -> Result<(), IpamError> {
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IpamError + 'a {
            move |cause| IpamError::Io { op, path: path.to_owned(), cause }
        }
        let mut json = serde_json::to_vec_pretty(&state.to_file()).map_err(|e| IpamError::Io {
            op: "encoding",
            path: self.state_path.clone(),
            cause: e.into(),
        })?;
        json.push(b'\n');
        let mut file = File::create(&tmp).map_err(io_err("creating", &tmp))?;
        file.write_all(&json).map_err(io_err("writing", &tmp))?;
        file.sync_all().map_err(io_err("syncing", &tmp))?;
        drop(file);
        fs::rename(&tmp, &self.state_path).map_err(io_err("renaming into place", &self.state_path))?;
        // The rename is durable only once the directory entry is.
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err("syncing directory", &self.dir))
    }
}
