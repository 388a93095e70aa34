//! Prometheus metrics of the data plane (`berth_*`, OpenMetrics text).
//!
//! # Design
//! Traffic counters live in per-CPU kernel maps; they are read at scrape
//! time by a [`Collector`] that holds its own handles on the pinned maps, so
//! a scrape never waits for the datapath owner. Which id belongs to which
//! Service or backend is a [`Labels`] snapshot that the owner replaces after
//! every apply. Agent-side events (programming latency, reloads) are ordinary
//! registered metrics.
//!
//! # Limitations
//! Counter values are per id: when a backend leaves and comes back it gets a
//! fresh id and its series restarts from zero (a counter reset, which
//! Prometheus' rate() handles). Entry counts of hash maps are walks of their
//! keys: O(entries) per scrape.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, RwLock},
};

use berth_ebpf::abi::{BERTH_REASON_MAX, REASONS, berth_traffic_stats};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
    },
    registry::Registry,
};

use crate::datapath::{MapLimits, Maps, Table, maps::count_keys};

/// Which Service / backend each kernel id stands for.
#[derive(Debug, Default, Clone)]
pub struct Labels {
    /// svc id → (service name, vip:port/proto)
    pub services: BTreeMap<u32, (String, String)>,
    /// backend id → (service name, addr:port, state)
    pub backends: BTreeMap<u32, (String, String, &'static str)>,
    pub schedule_slots: u64,
}

impl Labels {
    pub fn from_table(table: &Table) -> Self {
        let mut labels = Labels::default();
        for (addr, entry) in table.services() {
            labels.services.insert(entry.id.0, (entry.name.clone(), addr.to_string()));
            labels.schedule_slots += entry.schedule.len() as u64 + u64::from(entry.other_epoch_len);
            for ((a, p), slot) in &entry.backends {
                let state = match slot.state {
                    berth_ebpf::abi::BackendState::Terminating => "terminating",
                    _ => "active",
                };
                labels.backends.insert(slot.id.0, (entry.name.clone(), format!("{a}:{p}"), state));
            }
        }
        labels
    }
}

/// Agent-side metrics, updated by the code that observes the events.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    /// Seconds from a configuration change being seen to its maps written.
    pub programming_latency: Histogram,
    /// Configuration loads by result (applied, unchanged, rejected, failed).
    pub config_reloads: Family<Vec<(String, String)>, Counter>,
}

impl AgentMetrics {
    fn new() -> Self {
        // 50 µs .. ~3.3 s: a one-Service change is sub-millisecond, a full
        // load of 10k Services is around a second.
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 17);
        Self { programming_latency: Histogram::new(buckets), config_reloads: Family::default() }
    }

    pub fn reload(&self, result: &str) {
        self.config_reloads.get_or_create(&vec![("result".to_owned(), result.to_owned())]).inc();
    }
}

/// Builds the registry: the kernel collector plus the agent metrics.
pub fn registry(maps: Maps, limits: MapLimits, labels: Arc<RwLock<Labels>>) -> (Registry, AgentMetrics) {
    let mut registry = Registry::with_prefix("berth");
    let agent = AgentMetrics::new();
    registry.register(
        "programming_latency_seconds",
        "Time from a configuration change being seen to the kernel maps written",
        agent.programming_latency.clone(),
    );
    registry.register("config_reloads", "Configuration loads by result", agent.config_reloads.clone());
    registry.register_collector(Box::new(KernelCollector { maps: Mutex::new(maps), limits, labels }));
    (registry, agent)
}

/// Reads the kernel's counters at scrape time.
#[derive(Debug)]
struct KernelCollector {
    maps: Mutex<Maps>,
    limits: MapLimits,
    labels: Arc<RwLock<Labels>>,
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Maps")
    }
}

fn sum_stats(values: &aya::maps::PerCpuValues<berth_traffic_stats>) -> berth_traffic_stats {
    values.iter().fold(berth_traffic_stats::default(), |acc, v| berth_traffic_stats {
        packets: acc.packets + v.packets,
        bytes: acc.bytes + v.bytes,
        new_flows: acc.new_flows + v.new_flows,
    })
}

type LabelSet = Vec<(&'static str, String)>;

fn encode_counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(LabelSet, u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn encode_gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(LabelSet, i64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for KernelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A poisoned lock only means a scrape panicked; the data is still valid.
        let maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        let labels = self.labels.read().unwrap_or_else(|e| e.into_inner()).clone();

        let (mut pkts, mut bytes, mut flows) = (Vec::new(), Vec::new(), Vec::new());
        for (id, (name, addr)) in &labels.services {
            let Ok(values) = maps.svc_stats.get(id, 0) else { continue };
            let s = sum_stats(&values);
            let l: LabelSet = vec![("service", name.clone()), ("address", addr.clone())];
            pkts.push((l.clone(), s.packets));
            bytes.push((l.clone(), s.bytes));
            flows.push((l, s.new_flows));
        }
        encode_counters(&mut encoder, "service_packets", "Packets forwarded to the Service (XDP path)", &pkts)?;
        encode_counters(&mut encoder, "service_bytes", "Bytes forwarded to the Service (XDP path)", &bytes)?;
        encode_counters(&mut encoder, "service_new_flows", "New flows (XDP) and socket connects balanced", &flows)?;

        let (mut pkts, mut bytes, mut flows) = (Vec::new(), Vec::new(), Vec::new());
        for (id, (name, backend, state)) in &labels.backends {
            let Ok(values) = maps.backend_stats.get(id, 0) else { continue };
            let s = sum_stats(&values);
            let l: LabelSet =
                vec![("service", name.clone()), ("backend", backend.clone()), ("state", (*state).to_owned())];
            pkts.push((l.clone(), s.packets));
            bytes.push((l.clone(), s.bytes));
            flows.push((l, s.new_flows));
        }
        encode_counters(&mut encoder, "backend_packets", "Packets forwarded to the backend (XDP path)", &pkts)?;
        encode_counters(&mut encoder, "backend_bytes", "Bytes forwarded to the backend (XDP path)", &bytes)?;
        encode_counters(&mut encoder, "backend_new_flows", "New flows sent to the backend", &flows)?;

        let (mut drops, mut events) = (Vec::new(), Vec::new());
        for reason in REASONS {
            if reason.code >= BERTH_REASON_MAX {
                continue;
            }
            let value = maps.reasons.get(&reason.code, 0).map(|v| v.iter().sum::<u64>()).unwrap_or(0);
            let row = (vec![("reason", reason.label.to_owned())], value);
            if reason.is_drop() { drops.push(row) } else { events.push(row) }
        }
        encode_counters(&mut encoder, "drops", "Packets dropped or socket calls refused, by reason", &drops)?;
        encode_counters(
            &mut encoder,
            "datapath_events",
            "Packets passed untouched and flow events, by reason",
            &events,
        )?;

        let conntrack = count_keys(&maps.conntrack);
        encode_gauges(
            &mut encoder,
            "conntrack_entries",
            "Conntrack entries (forward + reverse per flow)",
            &[(vec![], conntrack as i64)],
        )?;
        let fill = [
            ("services", labels.services.len() as u64, self.limits.services),
            ("backends", labels.backends.len() as u64, self.limits.backends),
            ("schedule", labels.schedule_slots, self.limits.schedule_slots),
            ("conntrack", conntrack, self.limits.conntrack),
            ("affinity", count_keys(&maps.affinity), self.limits.affinity),
            ("sock_rev", count_keys(&maps.sock_rev), self.limits.sock_rev),
        ];
        let used: Vec<_> = fill.iter().map(|(m, u, _)| (vec![("map", (*m).to_owned())], *u as i64)).collect();
        let cap: Vec<_> = fill.iter().map(|(m, _, c)| (vec![("map", (*m).to_owned())], i64::from(*c))).collect();
        encode_gauges(&mut encoder, "map_entries", "Entries in use per kernel map", &used)?;
        encode_gauges(&mut encoder, "map_capacity", "max_entries per kernel map", &cap)?;
        Ok(())
    }
}

/// Renders the registry as OpenMetrics text.
///
/// # Errors
/// Only a formatting error from a collector.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}
