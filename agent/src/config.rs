//! The standalone services file: what `berth-agent standalone --config FILE`
//! reads (see `examples/standalone.yaml`).
//!
//! # Design
//! Two steps. serde parses the YAML into private `Raw*` structs that mirror
//! the file and reject unknown fields; numbers and addresses are kept loose
//! there (`i64`, `String`) so that range and address mistakes are not parse
//! errors. Validation then converts them into the public, idiomatic types
//! and collects *every* problem with its field path
//! (`services[1].backends[0].weight`), so one run of `--check` lists all of
//! them. Checks that need the machine (does the uplink exist, is the cgroup
//! on cgroup2) are injected through [`Checks`], so validation itself does no
//! I/O and tests run anywhere.
//!
//! Defaults follow Kubernetes where it has one: protocol `TCP`, session
//! affinity `None`, ClientIP timeout 10800 s; spellings too (`TCP`,
//! `ClientIP`).
//!
//! # Limitations
//! - IPv4 only: an IPv6 VIP or backend is rejected.
//! - Map sizes (`limits`) are checked against what this file needs, but the
//!   kernel maps are sized at first load: raising a limit needs a restart
//!   (and, for pinned maps, `berth-agent cleanup`).
//! - Backend ids are per Service: the same address in two Services counts
//!   twice against `limits.backends`.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::Deserialize;

pub use berth_ebpf::abi::Protocol;

use crate::datapath::{
    DesiredBackend, DesiredService, ServiceAddr,
    schedule::{self, Algorithm, MaglevTableSize, Weight},
};

#[cfg(test)]
mod tests;

/// The instance name used when the file names none.
pub const DEFAULT_INSTANCE: &str = "default";
/// Where `/metrics`, `/healthz` and `/readyz` are served unless told otherwise.
pub const DEFAULT_METRICS_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);
/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10_800;
/// Kubernetes' upper bound for the ClientIP timeout (one day).
pub const MAX_AFFINITY_TIMEOUT_S: u32 = 86_400;
/// Largest backend weight (weights are relative; this keeps sums small).
pub const MAX_WEIGHT: u32 = 65_535;
/// Linux `IFNAMSIZ` minus the terminating NUL.
const MAX_INTERFACE_NAME: usize = 15;

/// A validated services file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandaloneConfig {
    /// Pins live in `<bpffs root>/<instance>/`.
    pub instance: String,
    /// XDP (ingress) and reverse NAT (tc egress) attach here.
    pub uplink: String,
    /// cgroup2 directory for the socket-LB hooks; `None` = no socket LB.
    pub socket_lb_cgroup: Option<PathBuf>,
    pub metrics_address: SocketAddr,
    pub limits: Limits,
    pub services: Vec<ServiceSpec>,
}

/// Kernel map sizes (max_entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub services: u32,
    pub backends: u32,
    pub conntrack: u32,
    pub affinity: u32,
    pub schedule_slots: u32,
    pub sock_rev: u32,
}

impl Limits {
    // The defaults come from abi.h, where the kernel objects get theirs.
    /// 65536
    pub const DEFAULT_SERVICES: u32 = berth_ebpf::abi::BERTH_DEFAULT_MAX_SERVICES;
    /// 262144
    pub const DEFAULT_BACKENDS: u32 = berth_ebpf::abi::BERTH_DEFAULT_MAX_BACKENDS;
    /// 262144
    pub const DEFAULT_CONNTRACK: u32 = berth_ebpf::abi::BERTH_DEFAULT_MAX_CT;
    /// 65536
    pub const DEFAULT_AFFINITY: u32 = berth_ebpf::abi::BERTH_DEFAULT_MAX_AFFINITY;
    /// 1048576
    pub const DEFAULT_SCHEDULE_SLOTS: u32 = berth_ebpf::abi::BERTH_DEFAULT_MAX_SCHEDULE;
    /// 65536
    pub const DEFAULT_SOCK_REV: u32 = berth_ebpf::abi::BERTH_DEFAULT_MAX_SOCK_REV;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            services: Self::DEFAULT_SERVICES,
            backends: Self::DEFAULT_BACKENDS,
            conntrack: Self::DEFAULT_CONNTRACK,
            affinity: Self::DEFAULT_AFFINITY,
            schedule_slots: Self::DEFAULT_SCHEDULE_SLOTS,
            sock_rev: Self::DEFAULT_SOCK_REV,
        }
    }
}

/// One Service: a {VIP, port, protocol} and its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub algorithm: Algorithm,
    /// [`MaglevTableSize::DEFAULT`] unless the file sets it; only Maglev
    /// uses it.
    pub maglev_table_size: MaglevTableSize,
    pub affinity: Affinity,
    pub backends: Vec<BackendSpec>,
}

/// Kubernetes `sessionAffinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Affinity {
    #[default]
    None,
    /// A client IP sticks to its backend for `timeout_s` seconds of silence.
    ClientIp { timeout_s: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendSpec {
    pub address: Ipv4Addr,
    pub port: u16,
    /// A terminating backend may say `weight: 0`; it then counts as 1 in the
    /// fallback schedule used only when no backend is active.
    pub weight: Weight,
    pub state: BackendState,
}

/// Whether a backend takes new flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Takes new flows.
    #[default]
    Active,
    /// Keeps its existing flows, takes no new ones (unless no backend of
    /// the Service is active).
    Terminating,
}

/// One thing wrong with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Field path, e.g. `services[1].backends[0].weight`.
    pub path: String,
    pub reason: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML, or not the schema; `message` is serde_yaml's, which names
    /// the field path and the line and column.
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// Valid YAML with mistakes; all of them.
    #[error("{}", list_problems(.file, .problems))]
    Invalid { file: String, problems: Vec<ConfigProblem> },
}

fn list_problems(file: &str, problems: &[ConfigProblem]) -> String {
    problems.iter().map(|p| format!("{file}: {p}")).collect::<Vec<_>>().join("\n")
}

type InterfaceCheck = dyn Fn(&str) -> bool + Send + Sync;
type CgroupCheck = dyn Fn(&Path) -> Result<(), String> + Send + Sync;

/// The machine-dependent checks validation needs, injected so that
/// validation does no I/O of its own.
pub struct Checks {
    interface_exists: Box<InterfaceCheck>,
    cgroup2_dir: Box<CgroupCheck>,
}

impl Checks {
    /// `interface_exists(name)`: is there such a network interface?
    /// `cgroup2_dir(path)`: `Err(reason)` unless `path` is a directory on a
    /// cgroup2 filesystem.
    pub fn new(
        interface_exists: impl Fn(&str) -> bool + Send + Sync + 'static,
        cgroup2_dir: impl Fn(&Path) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        Self { interface_exists: Box::new(interface_exists), cgroup2_dir: Box::new(cgroup2_dir) }
    }

    /// Checks against this machine: `if_nametoindex(3)` in the current
    /// network namespace, and `statfs(2)` for the cgroup2 magic.
    pub fn system() -> Self {
        Self::new(system_interface_exists, system_cgroup2_dir)
    }

    /// Accepts every interface and cgroup: for parsing a file meant for
    /// another machine.
    pub fn accept_all() -> Self {
        Self::new(|_| true, |_| Ok(()))
    }
}

impl fmt::Debug for Checks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checks").finish_non_exhaustive()
    }
}

fn system_interface_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

fn system_cgroup2_dir(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", path.display()));
    }
    let fs = nix::sys::statfs::statfs(path).map_err(|e| format!("statfs {}: {e}", path.display()))?;
    if fs.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        return Err(format!(
            "{} is not on a cgroup2 filesystem (the socket-LB hooks attach only to cgroup2; on a hybrid layout use a directory under /sys/fs/cgroup/unified)",
            path.display()
        ));
    }
    Ok(())
}

impl StandaloneConfig {
    /// Reads and validates the file at `path`.
    ///
    /// # Errors
    /// [`ConfigError::Read`] if the file cannot be read, otherwise as
    /// [`StandaloneConfig::from_yaml`].
    pub fn load(path: &Path, checks: &Checks) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_yaml(&path.display().to_string(), &text, checks)
    }

    /// Parses and validates `text`; `file_label` names it in messages.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for YAML or schema errors (unknown field,
    /// wrong type, missing required field), stopping at the first;
    /// [`ConfigError::Invalid`] with every problem found otherwise.
    pub fn from_yaml(file_label: &str, text: &str, checks: &Checks) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_yaml::from_str(text)
            .map_err(|e| ConfigError::Parse { file: file_label.to_owned(), message: e.to_string() })?;
        let mut v = Validator { problems: Vec::new(), checks };
        let config = v.config(raw);
        if v.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { file: file_label.to_owned(), problems: v.problems })
        }
    }

    /// The Services as the data plane takes them.
    pub fn desired_services(&self) -> Vec<DesiredService> {
        self.services.iter().map(ServiceSpec::desired).collect()
    }
}

impl ServiceSpec {
    pub fn addr(&self) -> ServiceAddr {
        ServiceAddr { vip: self.vip, port: self.port, protocol: self.protocol }
    }

    pub fn desired(&self) -> DesiredService {
        DesiredService {
            name: self.name.clone(),
            vip: self.vip,
            port: self.port,
            protocol: self.protocol,
            algorithm: self.algorithm,
            maglev_table_size: self.maglev_table_size,
            affinity_timeout_s: match self.affinity {
                Affinity::None => None,
                Affinity::ClientIp { timeout_s } => Some(timeout_s),
            },
            backends: self
                .backends
                .iter()
                .map(|b| DesiredBackend {
                    addr: b.address,
                    port: b.port,
                    weight: b.weight,
                    terminating: b.state == BackendState::Terminating,
                })
                .collect(),
        }
    }

    /// Slots of this Service's schedule: the active backends' table, or the
    /// terminating ones' when none is active (the data plane's fallback).
    fn slot_count(&self) -> usize {
        let of =
            |state| -> Vec<Weight> { self.backends.iter().filter(|b| b.state == state).map(|b| b.weight).collect() };
        let mut weights = of(BackendState::Active);
        if weights.is_empty() {
            weights = of(BackendState::Terminating);
        }
        schedule::slot_count(self.algorithm, &weights, self.maglev_table_size)
    }
}

// ---- The file as written -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of standalone settings (uplink, services, ...)")]
struct RawConfig {
    #[serde(default)]
    instance: Option<String>,
    uplink: String,
    #[serde(default)]
    socket_lb_cgroup: Option<String>,
    #[serde(default)]
    metrics_address: Option<String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    services: Vec<RawService>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a mapping of map sizes")]
struct RawLimits {
    services: Option<i64>,
    backends: Option<i64>,
    conntrack: Option<i64>,
    affinity: Option<i64>,
    schedule_slots: Option<i64>,
    sock_rev: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a Service (name, vip, port, backends, ...)")]
struct RawService {
    name: String,
    vip: String,
    port: i64,
    #[serde(default)]
    protocol: Option<RawProtocol>,
    #[serde(default)]
    algorithm: Option<Algorithm>,
    #[serde(default)]
    maglev_table_size: Option<i64>,
    #[serde(default)]
    session_affinity: Option<RawAffinity>,
    #[serde(default)]
    affinity_timeout_seconds: Option<i64>,
    #[serde(default)]
    backends: Vec<RawBackend>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a backend (address, port, weight, state)")]
struct RawBackend {
    address: String,
    port: i64,
    #[serde(default)]
    weight: Option<i64>,
    #[serde(default)]
    state: Option<BackendState>,
}

/// Kubernetes spelling only: `TCP`, `UDP`.
#[derive(Deserialize, Clone, Copy)]
enum RawProtocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

/// Kubernetes spelling only: `None`, `ClientIP`.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
enum RawAffinity {
    None,
    #[serde(rename = "ClientIP")]
    ClientIp,
}

// ---- Validation ----------------------------------------------------------

/// Converts the raw file into [`StandaloneConfig`], recording problems.
///
/// A field with a problem gets a placeholder value so that validation can go
/// on and find the other problems; the config built is thrown away whenever
/// a problem was recorded, so placeholders never escape. Duplicate checks
/// skip entries whose address or port is a placeholder ([`AddressOk`]), or
/// two bad VIPs would be reported as duplicates of each other.
struct Validator<'a> {
    problems: Vec<ConfigProblem>,
    checks: &'a Checks,
}

impl Validator<'_> {
    fn problem(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(ConfigProblem { path: path.into(), reason: reason.into() });
    }

    fn config(&mut self, raw: RawConfig) -> StandaloneConfig {
        let instance = raw.instance.unwrap_or_else(|| DEFAULT_INSTANCE.to_owned());
        if !instance_name_ok(&instance) {
            self.problem(
                "instance",
                format!("{instance:?} is not a valid instance name: use 1-32 characters from a-z, 0-9 and '-'"),
            );
        }
        self.uplink(&raw.uplink);
        let socket_lb_cgroup = raw.socket_lb_cgroup.map(|s| self.cgroup(&s));
        let metrics_address = match raw.metrics_address {
            None => DEFAULT_METRICS_ADDRESS,
            Some(s) => s.parse().unwrap_or_else(|_| {
                self.problem("metrics_address", format!("{s:?} is not an address:port (e.g. 127.0.0.1:9464)"));
                DEFAULT_METRICS_ADDRESS
            }),
        };
        let checked: Vec<(ServiceSpec, AddressOk)> =
            raw.services.into_iter().enumerate().map(|(i, s)| self.service(&format!("services[{i}]"), s)).collect();
        self.duplicate_services(&checked);
        let services: Vec<ServiceSpec> = checked.into_iter().map(|(s, _)| s).collect();
        let limits = self.limits(&raw.limits, &services);
        StandaloneConfig { instance, uplink: raw.uplink, socket_lb_cgroup, metrics_address, limits, services }
    }

    fn uplink(&mut self, name: &str) {
        if name.is_empty() {
            self.problem("uplink", "must name the interface where traffic for the VIPs arrives");
        } else if name.len() > MAX_INTERFACE_NAME || name.contains(['/', ' ', '\0']) {
            self.problem(
                "uplink",
                format!("{name:?} is not a valid interface name (at most 15 bytes, no '/' or spaces)"),
            );
        } else if !(self.checks.interface_exists)(name) {
            self.problem("uplink", format!("interface {name:?} does not exist"));
        }
    }

    fn cgroup(&mut self, s: &str) -> PathBuf {
        let path = PathBuf::from(s);
        if !path.is_absolute() {
            self.problem("socket_lb_cgroup", format!("{s:?} must be an absolute path (a cgroup2 directory)"));
        } else if let Err(reason) = (self.checks.cgroup2_dir)(&path) {
            self.problem("socket_lb_cgroup", reason);
        }
        path
    }

    fn service(&mut self, path: &str, raw: RawService) -> (ServiceSpec, AddressOk) {
        if let Some(reason) = service_name_problem(&raw.name) {
            self.problem(format!("{path}.name"), reason);
        }
        let before = self.problems.len();
        let vip = self.ipv4(&format!("{path}.vip"), &raw.vip, AddressRole::Vip);
        let port = self.port(&format!("{path}.port"), raw.port);
        let addr_ok = AddressOk(self.problems.len() == before);
        let protocol = match raw.protocol.unwrap_or(RawProtocol::Tcp) {
            RawProtocol::Tcp => Protocol::Tcp,
            RawProtocol::Udp => Protocol::Udp,
        };
        let algorithm = raw.algorithm.unwrap_or_default();
        let maglev_table_size = match raw.maglev_table_size {
            None => MaglevTableSize::DEFAULT,
            Some(size) => self.maglev_table_size(&format!("{path}.maglev_table_size"), size, algorithm),
        };
        let affinity = self.affinity(path, raw.session_affinity, raw.affinity_timeout_seconds);
        let checked: Vec<(BackendSpec, AddressOk)> = raw
            .backends
            .into_iter()
            .enumerate()
            .map(|(j, b)| self.backend(&format!("{path}.backends[{j}]"), b))
            .collect();
        self.duplicate_backends(path, &checked);
        let backends: Vec<BackendSpec> = checked.into_iter().map(|(b, _)| b).collect();
        let spec =
            ServiceSpec { name: raw.name, vip, port, protocol, algorithm, maglev_table_size, affinity, backends };
        if spec.algorithm == Algorithm::Maglev {
            let active = spec.backends.iter().filter(|b| b.state == BackendState::Active).count();
            if active > spec.maglev_table_size.get() as usize {
                self.problem(
                    format!("{path}.backends"),
                    format!(
                        "{active} active backends do not fit a maglev table of {} slots: some would get no traffic (raise maglev_table_size)",
                        spec.maglev_table_size.get()
                    ),
                );
            }
        }
        (spec, addr_ok)
    }

    fn maglev_table_size(&mut self, path: &str, size: i64, algorithm: Algorithm) -> MaglevTableSize {
        if algorithm != Algorithm::Maglev {
            self.problem(path, format!("only allowed with algorithm: maglev (this Service uses {algorithm})"));
        }
        let checked = match u32::try_from(size) {
            Ok(size) => MaglevTableSize::new(size).map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "maglev table size {size} is out of range ({}-{})",
                MaglevTableSize::MIN,
                MaglevTableSize::MAX
            )),
        };
        checked.unwrap_or_else(|reason| {
            self.problem(path, reason);
            MaglevTableSize::DEFAULT
        })
    }

    fn affinity(&mut self, path: &str, kind: Option<RawAffinity>, timeout: Option<i64>) -> Affinity {
        let at = format!("{path}.affinity_timeout_seconds");
        let client_ip = kind == Some(RawAffinity::ClientIp);
        if !client_ip && timeout.is_some() {
            self.problem(&at, "only allowed with session_affinity: ClientIP");
        }
        let timeout_s = match timeout {
            None => DEFAULT_AFFINITY_TIMEOUT_S,
            Some(t) => match u32::try_from(t) {
                Ok(t) if (1..=MAX_AFFINITY_TIMEOUT_S).contains(&t) => t,
                _ => {
                    self.problem(&at, format!("timeout {t} is out of range (1-{MAX_AFFINITY_TIMEOUT_S} seconds)"));
                    DEFAULT_AFFINITY_TIMEOUT_S
                }
            },
        };
        if client_ip { Affinity::ClientIp { timeout_s } } else { Affinity::None }
    }

    fn backend(&mut self, path: &str, raw: RawBackend) -> (BackendSpec, AddressOk) {
        let before = self.problems.len();
        let address = self.ipv4(&format!("{path}.address"), &raw.address, AddressRole::Backend);
        let port = self.port(&format!("{path}.port"), raw.port);
        let addr_ok = AddressOk(self.problems.len() == before);
        let state = raw.state.unwrap_or_default();
        let raw_weight = raw.weight.unwrap_or(1);
        let weight = match u32::try_from(raw_weight) {
            Ok(0) if state == BackendState::Terminating => Weight::ONE,
            Ok(0) => {
                self.problem(
                    format!("{path}.weight"),
                    format!("weight 0 is not allowed for an active backend (1-{MAX_WEIGHT}; to drain it, set state: terminating)"),
                );
                Weight::ONE
            }
            Ok(w) if w <= MAX_WEIGHT => Weight::new(w).unwrap_or(Weight::ONE),
            _ => {
                self.problem(format!("{path}.weight"), format!("weight {raw_weight} is out of range (1-{MAX_WEIGHT})"));
                Weight::ONE
            }
        };
        (BackendSpec { address, port, weight, state }, addr_ok)
    }

    fn port(&mut self, path: &str, port: i64) -> u16 {
        match u16::try_from(port) {
            Ok(0) => {
                self.problem(path, "port 0 is not allowed (1-65535)");
                1
            }
            Ok(p) => p,
            Err(_) => {
                self.problem(path, format!("port {port} is out of range (1-65535)"));
                1
            }
        }
    }

    fn ipv4(&mut self, path: &str, text: &str, role: AddressRole) -> Ipv4Addr {
        let addr = match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => a,
            Ok(IpAddr::V6(_)) => {
                self.problem(path, format!("{text}: IPv6 is not supported yet"));
                return Ipv4Addr::UNSPECIFIED;
            }
            Err(_) => {
                self.problem(path, format!("{text:?} is not an IPv4 address"));
                return Ipv4Addr::UNSPECIFIED;
            }
        };
        let what = match role {
            AddressRole::Vip => "a VIP",
            AddressRole::Backend => "a backend",
        };
        let kind = if addr.is_unspecified() {
            Some("the unspecified address")
        } else if addr.is_multicast() {
            Some("a multicast address")
        } else if addr.is_broadcast() {
            Some("the broadcast address")
        } else if addr.is_loopback() && role == AddressRole::Vip {
            // Loopback traffic never crosses the uplink or a connect() hook
            // that would translate it, so a loopback VIP could never work.
            Some("a loopback address")
        } else {
            None
        };
        if let Some(kind) = kind {
            self.problem(path, format!("{addr} is {kind} and cannot be {what}"));
        }
        addr
    }

    fn duplicate_services(&mut self, services: &[(ServiceSpec, AddressOk)]) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut addrs: HashMap<ServiceAddr, usize> = HashMap::new();
        for (i, (s, addr_ok)) in services.iter().enumerate() {
            // An empty name is already reported; do not report it twice.
            if !s.name.is_empty()
                && let Some(first) = first_use(&mut names, s.name.as_str(), i)
            {
                self.problem(
                    format!("services[{i}].name"),
                    format!("duplicate Service name {:?} (first used by services[{first}])", s.name),
                );
            }
            if addr_ok.0
                && let Some(first) = first_use(&mut addrs, s.addr(), i)
            {
                self.problem(
                    format!("services[{i}]"),
                    format!("{} is already used by services[{first}] ({:?})", s.addr(), services[first].0.name),
                );
            }
        }
    }

    fn duplicate_backends(&mut self, path: &str, backends: &[(BackendSpec, AddressOk)]) {
        let mut seen: HashMap<(Ipv4Addr, u16), usize> = HashMap::new();
        for (j, (b, addr_ok)) in backends.iter().enumerate() {
            if addr_ok.0
                && let Some(first) = first_use(&mut seen, (b.address, b.port), j)
            {
                self.problem(
                    format!("{path}.backends[{j}]"),
                    format!("duplicate backend {}:{} (first listed at backends[{first}])", b.address, b.port),
                );
            }
        }
    }

    fn limits(&mut self, raw: &RawLimits, services: &[ServiceSpec]) -> Limits {
        let d = Limits::default();
        let limits = Limits {
            services: self.limit("services", raw.services, d.services),
            backends: self.limit("backends", raw.backends, d.backends),
            conntrack: self.limit("conntrack", raw.conntrack, d.conntrack),
            affinity: self.limit("affinity", raw.affinity, d.affinity),
            schedule_slots: self.limit("schedule_slots", raw.schedule_slots, d.schedule_slots),
            sock_rev: self.limit("sock_rev", raw.sock_rev, d.sock_rev),
        };
        let need_services = services.len() as u64;
        if need_services > u64::from(limits.services) {
            self.problem(
                "limits.services",
                format!("limit {} is smaller than the {need_services} Services in this file", limits.services),
            );
        }
        let need_backends: u64 = services.iter().map(|s| s.backends.len() as u64).sum();
        if need_backends > u64::from(limits.backends) {
            self.problem(
                "limits.backends",
                format!(
                    "limit {} is smaller than the {need_backends} backends in this file (each Service's backends count separately)",
                    limits.backends
                ),
            );
        }
        // Make-before-break: a Service keeps its previous table while the
        // next one is written, so the map must hold two tables per Service.
        let tables: u64 = services.iter().map(|s| s.slot_count() as u64).sum();
        if 2 * tables > u64::from(limits.schedule_slots) {
            self.problem(
                "limits.schedule_slots",
                format!(
                    "limit {} is smaller than the {} slots this file needs (its schedules take {tables} slots; each Service keeps its previous schedule while a new one is swapped in)",
                    limits.schedule_slots,
                    2 * tables
                ),
            );
        }
        limits
    }

    fn limit(&mut self, name: &str, value: Option<i64>, default: u32) -> u32 {
        let Some(v) = value else { return default };
        match u32::try_from(v) {
            Ok(0) => {
                self.problem(format!("limits.{name}"), "must be at least 1");
                default
            }
            Ok(v) => v,
            Err(_) => {
                self.problem(format!("limits.{name}"), format!("{v} is out of range (1-{})", u32::MAX));
                default
            }
        }
    }
}

/// Records `key` at `index` unless already seen; returns the first index if
/// it was.
fn first_use<K: std::hash::Hash + Eq>(seen: &mut HashMap<K, usize>, key: K, index: usize) -> Option<usize> {
    match seen.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(index);
            None
        }
    }
}

/// Whether an entry's address and port are real (not placeholders).
#[derive(Clone, Copy)]
struct AddressOk(bool);

#[derive(Clone, Copy, PartialEq, Eq)]
enum AddressRole {
    Vip,
    Backend,
}

/// `[a-z0-9-]{1,32}`: the instance names a directory under bpffs.
fn instance_name_ok(name: &str) -> bool {
    (1..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// DNS-1123-subdomain-like names, optionally `namespace/name`.
fn service_name_problem(name: &str) -> Option<String> {
    const MAX: usize = 253;
    if name.is_empty() {
        return Some("must not be empty".to_owned());
    }
    if name.len() > MAX {
        return Some(format!("name is {} characters long; at most {MAX} are allowed", name.len()));
    }
    let parts_ok = match name.split_once('/') {
        Some((ns, rest)) => dns_name_ok(ns) && dns_name_ok(rest),
        None => dns_name_ok(name),
    };
    (!parts_ok).then(|| {
        format!(
            "{name:?} is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (optionally as \"namespace/name\")"
        )
    })
}

/// `[a-z0-9]([-a-z0-9.]*[a-z0-9])?`
fn dns_name_ok(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            alnum(first) && alnum(last) && bytes.iter().all(|&b| alnum(b) || b == b'-' || b == b'.')
        }
        _ => false,
    }
}
