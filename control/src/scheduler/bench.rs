//! A synthetic cluster and workload for measuring scheduling throughput.
//! The bench crate calls [`bench_place`]; nothing here is timed in tests.

use std::time::{Duration, Instant};

use super::{ClusterState, HostPort, NodeInfo, PlaceError, PodRequest, Protocol, Requests, Resources};

/// What [`bench_place`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacementStats {
    /// Pods placed.
    pub placed: usize,
    /// Pods no node could take.
    pub unschedulable: usize,
    /// Wall time of the scheduling loop only (building the cluster and the
    /// pods is not counted).
    pub elapsed: Duration,
}

impl PlacementStats {
    /// Scheduling decisions (placed or unschedulable) per second.
    pub fn pods_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { (self.placed + self.unschedulable) as f64 / secs } else { f64::INFINITY }
    }
}

/// Places `pods` synthetic pods, one at a time with [`ClusterState::place`],
/// on `nodes` synthetic nodes, and times it. Same seed, same cluster, same
/// pods, same placements.
///
/// The cluster: nodes of 4 to 64 cores with 4 GiB per core and 110 pods
/// each; about 1 % not ready and 1 % cordoned. The workload: Deployments of
/// 1 to 20 replicas sharing one template (so one owner and equal requests),
/// with one pod in ten a bare pod; requests of 100m to 2 cores and 128 MiB to
/// 4 GiB; one template in twenty requesting nothing (best effort), one in
/// fifty binding a host port. 10,000 such pods fill about 40 % of 1,000
/// nodes, so nearly all are placed.
pub fn bench_place(nodes: usize, pods: usize, seed: u64) -> PlacementStats {
    let mut rng = SplitMix64(seed);
    let mut state = ClusterState::new();
    for i in 0..nodes {
        let cores = [4u64, 8, 16, 32, 64][rng.below(5) as usize];
        let info = NodeInfo {
            name: format!("node-{i:05}"),
            ready: rng.below(100) != 0,
            unschedulable: rng.below(100) == 0,
            allocatable: Resources { milli_cpu: cores * 1000, memory_bytes: cores * (4 << 30), pods: 110 },
        };
        // Names are unique by construction.
        let _ = state.add_node(info);
    }

    let mut workload = Vec::with_capacity(pods);
    let mut deployment = 0u64;
    while workload.len() < pods {
        deployment += 1;
        let bare = rng.below(10) == 0;
        let replicas = if bare { 1 } else { 1 + rng.below(20) };
        let requests = if rng.below(20) == 0 {
            Requests::default()
        } else {
            Requests { milli_cpu: 100 + 50 * rng.below(39), memory_bytes: (128 << 20) * (1 + rng.below(32)) }
        };
        let host_ports = if rng.below(50) == 0 {
            vec![HostPort { protocol: Protocol::Tcp, port: 8000 + (deployment % 50) as u16 }]
        } else {
            Vec::new()
        };
        for r in 0..replicas {
            if workload.len() == pods {
                break;
            }
            workload.push(PodRequest {
                key: format!("bench/d{deployment}-{r}"),
                owner: (!bare).then(|| format!("bench/d{deployment}")),
                requests,
                host_ports: host_ports.clone(),
            });
        }
    }

    let (mut placed, mut unschedulable) = (0, 0);
    let start = Instant::now();
    for pod in &workload {
        match state.place(pod) {
            Ok(_) => placed += 1,
            Err(PlaceError::Unschedulable(_)) => unschedulable += 1,
            // Keys are unique by construction.
            Err(PlaceError::PodExists { .. }) => {}
        }
    }
    PlacementStats { placed, unschedulable, elapsed: start.elapsed() }
}

/// Steele, Lea and Flood's SplitMix64: tiny, seedable, good enough to vary a
/// workload (and no dependency).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for a benchmark (modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
