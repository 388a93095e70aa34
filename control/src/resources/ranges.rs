//! The ClusterIP and NodePort ranges and their allocation records.
//!
//! One store key per allocated address or port, whose value names the
//! owning Service:
//!
//! ```text
//! /registry/ranges/serviceips/198.19.0.10      {"namespace":"default","name":"web","uid":"…"}
//! /registry/ranges/servicenodeports/30080      {"namespace":"default","name":"web","uid":"…"}
//! ```
//!
//! A new allocation is an [`Op::Create`] of its key, committed in the same
//! transaction as the Service: if another writer took the address first,
//! the create — and with it the whole transaction — fails, and the API
//! server runs admission again, which then sees the address taken. So no
//! address is ever handed out twice, also across restarts (the records are
//! stored like any object) and across API servers sharing one etcd.
//! Releases are [`Op::Delete`]s conditional on the record's revision.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::store::{Op, Store, StoreError};

/// Where ClusterIP records live.
pub const SERVICE_IPS_PREFIX: &str = "/registry/ranges/serviceips/";
/// Where NodePort records live.
pub const NODE_PORTS_PREFIX: &str = "/registry/ranges/servicenodeports/";

/// The shortest prefix accepted: Kubernetes' limit of 2^20 addresses.
const MIN_PREFIX_LEN: u8 = 12;
/// The longest: two usable addresses.
const MAX_PREFIX_LEN: u8 = 30;

/// Why a range in the configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("service CIDR {text:?} {reason}")]
    ServiceCidr { text: String, reason: String },
    #[error("node port range {text:?} {reason}")]
    NodePorts { text: String, reason: String },
}

/// The IPv4 range ClusterIPs come from, e.g. `198.19.0.0/16`. Its network
/// and broadcast addresses are never allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl ServiceCidr {
    /// # Errors
    /// [`RangeError::ServiceCidr`] when host bits are set or the prefix is
    /// not in `/12..=/30`.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Self, RangeError> {
        let err = |reason: String| RangeError::ServiceCidr { text: format!("{network}/{prefix_len}"), reason };
        if !(MIN_PREFIX_LEN..=MAX_PREFIX_LEN).contains(&prefix_len) {
            return Err(err(format!("must have a prefix length between {MIN_PREFIX_LEN} and {MAX_PREFIX_LEN}")));
        }
        let cidr = ServiceCidr { network, prefix_len };
        if u32::from(network) & !cidr.mask() != 0 {
            return Err(err(format!("has host bits set (the network is {})", Ipv4Addr::from(cidr.base()))));
        }
        Ok(cidr)
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix_len))
    }

    fn base(&self) -> u32 {
        u32::from(self.network) & self.mask()
    }

    /// How many addresses may be allocated (all but network and broadcast).
    pub fn capacity(&self) -> u32 {
        (1u32 << (32 - u32::from(self.prefix_len))) - 2
    }

    /// Whether `ip` may be a ClusterIP: inside the range, neither its
    /// network nor its broadcast address.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        ip & self.mask() == self.base() && ip != self.base() && ip != self.base() | !self.mask()
    }

    /// The `i`th allocatable address, `i < capacity()`.
    fn nth(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base() + 1 + i)
    }
}

impl Default for ServiceCidr {
    /// `198.19.0.0/16`: the benchmarking range, which never collides with
    /// RFC 1918 networks (DESIGN.md, section 6).
    fn default() -> Self {
        ServiceCidr { network: Ipv4Addr::new(198, 19, 0, 0), prefix_len: 16 }
    }
}

impl FromStr for ServiceCidr {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<Self, RangeError> {
        let err = |reason: &str| RangeError::ServiceCidr { text: text.to_owned(), reason: reason.to_owned() };
        let (ip, len) = text.split_once('/').ok_or_else(|| err("is not an IPv4 CIDR like 198.19.0.0/16"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| err("is not an IPv4 CIDR like 198.19.0.0/16"))?;
        let len: u8 = len.parse().map_err(|_| err("is not an IPv4 CIDR like 198.19.0.0/16"))?;
        ServiceCidr::new(ip, len).map_err(|e| match e {
            RangeError::ServiceCidr { reason, .. } => RangeError::ServiceCidr { text: text.to_owned(), reason },
            other => other,
        })
    }
}

impl fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// The ports NodePorts come from, inclusive: `30000-32767` by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePortRange {
    first: u16,
    last: u16,
}

impl NodePortRange {
    /// # Errors
    /// [`RangeError::NodePorts`] for an empty range or one including port 0.
    pub fn new(range: RangeInclusive<u16>) -> Result<Self, RangeError> {
        let (first, last) = range.into_inner();
        let err = |reason: &str| RangeError::NodePorts { text: format!("{first}-{last}"), reason: reason.to_owned() };
        if first == 0 {
            return Err(err("must not include port 0"));
        }
        if first > last {
            return Err(err("is empty"));
        }
        Ok(NodePortRange { first, last })
    }

    pub fn first(&self) -> u16 {
        self.first
    }

    pub fn last(&self) -> u16 {
        self.last
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    fn capacity(&self) -> u32 {
        u32::from(self.last - self.first) + 1
    }

    /// The `i`th port, `i < capacity()`.
    fn nth(&self, i: u32) -> u16 {
        // i < capacity ≤ 65535, and first + i ≤ last.
        self.first.saturating_add(u16::try_from(i).unwrap_or(u16::MAX))
    }
}

impl Default for NodePortRange {
    /// Kubernetes' `30000-32767`.
    fn default() -> Self {
        NodePortRange { first: 30000, last: 32767 }
    }
}

impl FromStr for NodePortRange {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<Self, RangeError> {
        let err = || RangeError::NodePorts { text: text.to_owned(), reason: "is not a range like 30000-32767".into() };
        let (first, last) = text.split_once('-').ok_or_else(err)?;
        let first: u16 = first.trim().parse().map_err(|_| err())?;
        let last: u16 = last.trim().parse().map_err(|_| err())?;
        NodePortRange::new(first..=last)
    }
}

impl fmt::Display for NodePortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The Service an allocation record belongs to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

pub(crate) fn ip_key(ip: Ipv4Addr) -> String {
    format!("{SERVICE_IPS_PREFIX}{ip}")
}

pub(crate) fn port_key(port: u16) -> String {
    format!("{NODE_PORTS_PREFIX}{port}")
}

/// The addresses with a record.
pub(crate) fn taken_ips(store: &dyn Store) -> Result<HashSet<Ipv4Addr>, StoreError> {
    taken(store, SERVICE_IPS_PREFIX)
}

/// The ports with a record.
pub(crate) fn taken_ports(store: &dyn Store) -> Result<HashSet<u16>, StoreError> {
    taken(store, NODE_PORTS_PREFIX)
}

fn taken<T: FromStr + Eq + std::hash::Hash>(store: &dyn Store, prefix: &str) -> Result<HashSet<T>, StoreError> {
    let (records, _) = store.list(prefix)?;
    Ok(records.iter().filter_map(|(key, _)| key.strip_prefix(prefix)?.parse().ok()).collect())
}

/// A free address, probing upwards from a random one (`start`) so that
/// concurrent allocations rarely collide and a released address is not
/// handed out again at once.
pub(crate) fn pick_ip(cidr: &ServiceCidr, taken: &HashSet<Ipv4Addr>, start: u64) -> Option<Ipv4Addr> {
    pick(cidr.capacity(), start, |i| !taken.contains(&cidr.nth(i))).map(|i| cidr.nth(i))
}

/// A free port; as [`pick_ip`].
pub(crate) fn pick_port(range: &NodePortRange, taken: &HashSet<u16>, start: u64) -> Option<u16> {
    pick(range.capacity(), start, |i| !taken.contains(&range.nth(i))).map(|i| range.nth(i))
}

fn pick(capacity: u32, start: u64, free: impl Fn(u32) -> bool) -> Option<u32> {
    if capacity == 0 {
        return None;
    }
    // start % capacity < capacity ≤ u32::MAX.
    let start = u32::try_from(start % u64::from(capacity)).unwrap_or(0);
    (0..capacity).map(|k| ((u64::from(start) + u64::from(k)) % u64::from(capacity)) as u32).find(|&i| free(i))
}

/// A delete of the record under `key` if `owner` holds it, conditional on
/// its revision. A record that is missing or held by someone else is left
/// alone. When the store cannot be read the delete is unconditional: the
/// transaction then fails rather than leak the record.
pub(crate) fn release(store: &dyn Store, key: String, owner: &Owner) -> Option<Op> {
    match store.get(&key) {
        Ok(Some(record)) => {
            let holder: Option<Owner> = serde_json::from_slice(&record.value).ok();
            let held = holder.is_some_and(|h| {
                h.namespace == owner.namespace && h.name == owner.name && (owner.uid.is_empty() || h.uid == owner.uid)
            });
            held.then_some(Op::Delete { key, expected: Some(record.revision) })
        }
        Ok(None) => None,
        Err(_) => Some(Op::Delete { key, expected: None }),
    }
}
