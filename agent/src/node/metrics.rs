//! Container and pod metrics with cAdvisor's and kubelet's names, so
//! dashboards and alerts written for kubelet's `/metrics/cadvisor` work:
//! `container_cpu_usage_seconds_total`, `container_memory_working_set_bytes`,
//! `container_memory_usage_bytes`, `container_spec_memory_limit_bytes`,
//! `container_oom_events_total`, `container_threads`,
//! `container_start_time_seconds`, with `namespace`, `pod`, `container`
//! labels (the pod-level cgroup has `container=""`, as in cAdvisor), plus
//! kube-state-metrics' `kube_pod_container_status_restarts_total` and
//! `kube_pod_container_status_ready`, and kubelet's `kubelet_running_pods`
//! and `kubelet_running_containers`.
//!
//! Values are read from cgroupfs at scrape time, on the blocking pool.

use std::sync::Arc;

use axum::{Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{
    node::supervisor::{Shared, pod_cgroup},
    pod::status::ContainerState,
};

type LabelSet = Vec<(&'static str, String)>;

struct NodeCollector {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCollector")
    }
}

#[derive(Default)]
struct Rows {
    cpu: Vec<(LabelSet, f64)>,
    working_set: Vec<(LabelSet, f64)>,
    usage: Vec<(LabelSet, f64)>,
    limit: Vec<(LabelSet, f64)>,
    ooms: Vec<(LabelSet, u64)>,
    threads: Vec<(LabelSet, f64)>,
    start: Vec<(LabelSet, f64)>,
    restarts: Vec<(LabelSet, u64)>,
    ready: Vec<(LabelSet, f64)>,
    running_pods: f64,
    containers_by_state: [(&'static str, f64); 4],
}

fn counter<N: prometheus_client::encoding::EncodeCounterValue + Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(LabelSet, N)],
) -> Result<(), std::fmt::Error>
where
    ConstCounter<N>: EncodeMetric,
{
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, rows: &[(LabelSet, f64)]) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl NodeCollector {
    fn rows(&self) -> Rows {
        let mut rows = Rows {
            containers_by_state: [("created", 0.0), ("running", 0.0), ("exited", 0.0), ("unknown", 0.0)],
            ..Default::default()
        };
        for pod in self.shared.all_pods() {
            let spec = pod.spec();
            let (record, live) = pod.snapshot();
            let pod_labels = |container: &str| -> LabelSet {
                vec![
                    ("namespace", spec.namespace.clone()),
                    ("pod", spec.name.clone()),
                    ("container", container.to_owned()),
                ]
            };
            if record.net.is_some() {
                rows.running_pods += 1.0;
            }
            let mut cgroups = vec![(pod_labels(""), pod_cgroup(&spec.uid), None)];
            for (rec, live) in record.containers.iter().zip(live.iter()) {
                let labels = pod_labels(&rec.name);
                rows.restarts.push((labels.clone(), u64::from(rec.restart_count)));
                rows.ready.push((labels.clone(), if live.ready { 1.0 } else { 0.0 }));
                let state = match &live.state {
                    ContainerState::Running { .. } => 1,
                    ContainerState::Terminated { .. } => 2,
                    ContainerState::Waiting { .. } => 0,
                };
                rows.containers_by_state[state].1 += 1.0;
                if let (Some(instance), ContainerState::Running { .. }) = (&rec.instance, &live.state) {
                    cgroups.push((labels, instance.cgroup.clone(), Some(instance.started_at_unix_ms)));
                }
            }
            for (labels, cgroup, started) in cgroups {
                let Ok(stats) = self.shared.driver.stats(&cgroup) else { continue };
                rows.cpu.push((labels.clone(), stats.cpu_usage_ns as f64 / 1e9));
                rows.working_set.push((labels.clone(), stats.memory_working_set_bytes as f64));
                rows.usage.push((labels.clone(), stats.memory_usage_bytes as f64));
                if let Some(limit) = stats.memory_limit {
                    rows.limit.push((labels.clone(), limit as f64));
                }
                rows.ooms.push((labels.clone(), stats.oom_kill_count));
                rows.threads.push((labels.clone(), stats.pids_current as f64));
                if let Some(ms) = started {
                    rows.start.push((labels, ms as f64 / 1000.0));
                }
            }
        }
        rows
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = self.rows();
        counter(&mut e, "container_cpu_usage_seconds", "Cumulative cpu time consumed in seconds", &r.cpu)?;
        gauge(&mut e, "container_memory_working_set_bytes", "Current working set in bytes", &r.working_set)?;
        gauge(
            &mut e,
            "container_memory_usage_bytes",
            "Current memory usage in bytes, including all memory regardless of when it was accessed",
            &r.usage,
        )?;
        gauge(&mut e, "container_spec_memory_limit_bytes", "Memory limit for the container", &r.limit)?;
        counter(&mut e, "container_oom_events", "Count of out of memory events observed for the container", &r.ooms)?;
        gauge(&mut e, "container_threads", "Number of threads (tasks) running inside the container", &r.threads)?;
        gauge(
            &mut e,
            "container_start_time_seconds",
            "Start time of the container since unix epoch in seconds",
            &r.start,
        )?;
        counter(
            &mut e,
            "kube_pod_container_status_restarts",
            "The number of container restarts per container",
            &r.restarts,
        )?;
        gauge(
            &mut e,
            "kube_pod_container_status_ready",
            "Describes whether the containers readiness check succeeded",
            &r.ready,
        )?;
        gauge(
            &mut e,
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            &[(vec![], r.running_pods)],
        )?;
        let by_state: Vec<(LabelSet, f64)> =
            r.containers_by_state.iter().map(|(s, n)| (vec![("container_state", (*s).to_owned())], *n)).collect();
        gauge(&mut e, "kubelet_running_containers", "Number of containers currently running", &by_state)?;
        Ok(())
    }
}

/// `/metrics` and `/healthz` for the node agent.
pub fn router(shared: Arc<Shared>) -> Router {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(NodeCollector { shared }));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Arc::new(registry))
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    // cgroupfs reads are blocking syscalls: keep them off the workers.
    match tokio::task::spawn_blocking(move || crate::metrics::render(&registry)).await {
        Ok(Ok(body)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        )
            .into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed\n").into_response(),
    }
}
