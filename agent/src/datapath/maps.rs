//! Typed handles on berth's pinned maps.
//!
//! Opened from the pins, not taken from a loaded object, so the datapath
//! owner and the metrics collector each hold their own handles and a
//! restarted agent sees exactly what the kernel uses.

use std::path::PathBuf;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use berth_ebpf::abi::{
    berth_affinity_key, berth_affinity_value, berth_backend, berth_ct_key, berth_ct_value, berth_schedule_key,
    berth_service_key, berth_service_value, berth_sock_rev_key, berth_sock_rev_value, berth_traffic_stats,
};

use super::loader::PinDir;

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("opening pinned map {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {name}: {op}")]
    Op {
        name: &'static str,
        op: String,
        #[source]
        source: aya::maps::MapError,
    },
}

pub type ServicesMap = HashMap<MapData, berth_service_key, berth_service_value>;
pub type BackendsMap = Array<MapData, berth_backend>;
pub type ScheduleMap = HashMap<MapData, berth_schedule_key, u32>;
pub type ConntrackMap = HashMap<MapData, berth_ct_key, berth_ct_value>;
pub type StatsMap = PerCpuArray<MapData, berth_traffic_stats>;

pub struct Maps {
    pub services: ServicesMap,
    pub backends: BackendsMap,
    pub schedule: ScheduleMap,
    pub conntrack: ConntrackMap,
    pub svc_stats: StatsMap,
    pub backend_stats: StatsMap,
    pub wrr_cursor: PerCpuArray<MapData, u32>,
    pub reasons: PerCpuArray<MapData, u64>,
    pub affinity: HashMap<MapData, berth_affinity_key, berth_affinity_value>,
    pub sock_rev: HashMap<MapData, berth_sock_rev_key, berth_sock_rev_value>,
}

fn open(pins: &PinDir, name: &'static str) -> Result<Map, MapsError> {
    let path = pins.map(name);
    let data = MapData::from_pin(&path).map_err(|source| MapsError::Open { path: path.clone(), source })?;
    Map::from_map_data(data).map_err(|source| MapsError::Open { path, source })
}

fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(pins: &PinDir, name: &'static str) -> Result<T, MapsError> {
    T::try_from(open(pins, name)?).map_err(|source| MapsError::Open { path: pins.map(name), source })
}

impl Maps {
    /// Opens every map from the instance's pins.
    ///
    /// # Errors
    /// A missing pin (the objects were never loaded) or a type mismatch.
    pub fn open(pins: &PinDir) -> Result<Self, MapsError> {
        Ok(Self {
            services: typed(pins, "berth_services_v1")?,
            backends: typed(pins, "berth_backends_v1")?,
            schedule: typed(pins, "berth_schedule_v1")?,
            conntrack: typed(pins, "berth_ct_v1")?,
            svc_stats: typed(pins, "berth_svc_stats_v1")?,
            backend_stats: typed(pins, "berth_backend_stats_v1")?,
            wrr_cursor: typed(pins, "berth_wrr_cursor_v1")?,
            reasons: typed(pins, "berth_reasons_v1")?,
            affinity: typed(pins, "berth_affinity_v1")?,
            sock_rev: typed(pins, "berth_sock_rev_v1")?,
        })
    }
}

/// Number of entries of a hash map, by walking its keys
/// (BPF_MAP_GET_NEXT_KEY). O(entries) syscalls: fine for a scrape, never on a
/// hot path. Keys removed during the walk may restart it (the kernel's
/// semantics), so the figure is approximate under churn.
pub fn count_keys<K: aya::Pod, V: aya::Pod>(map: &HashMap<MapData, K, V>) -> u64 {
    map.keys().take_while(Result::is_ok).count() as u64
}
