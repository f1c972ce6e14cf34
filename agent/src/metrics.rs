//! Prometheus metrics of the agent, with the kubelet's and cAdvisor's names so existing
//! dashboards work:
//!
//! - kubelet (`/api/v1/nodes/NAME/proxy/metrics`): `kubelet_pod_start_duration_seconds`,
//!   `kubelet_started_containers_total`, `kubelet_container_restarts_total`,
//!   `kubelet_image_pull_duration_seconds`, `kubelet_running_pods`, `kubelet_running_containers`.
//! - cAdvisor (`/api/v1/nodes/NAME/proxy/metrics/cadvisor`): per container
//!   `container_cpu_usage_seconds_total` and `container_memory_working_set_bytes` with
//!   `namespace`, `pod`, `container` labels, and the node itself as `id="/"`.
//!
//! The agent listens on no port: the API server relays these over the agent's own stream.

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

struct M {
    pod_start: Histogram,
    image_pull: Histogram,
    started: Counter,
    restarts: Counter,
    running_pods: Gauge,
    running_containers: Gauge,
}

static M: LazyLock<M> = LazyLock::new(|| M {
    // 5 ms .. ~3 min
    pod_start: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
    image_pull: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
    started: Counter::default(),
    restarts: Counter::default(),
    running_pods: Gauge::default(),
    running_containers: Gauge::default(),
});

/// One container's usage as cAdvisor reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerSample {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// Cumulative CPU time.
    pub cpu_seconds: f64,
    pub memory_working_set_bytes: u64,
}

/// The latest usage snapshot (written by the stats loop, read on scrape).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub node_cpu_seconds: f64,
    pub node_memory_working_set_bytes: u64,
    pub containers: Vec<ContainerSample>,
}

static SNAPSHOT: Mutex<Option<Snapshot>> = Mutex::new(None);

/// Publish a new usage snapshot; also sets the running pod and container gauges.
pub fn set_snapshot(s: Snapshot) {
    let mut pods: Vec<(&str, &str)> = s
        .containers
        .iter()
        .map(|c| (c.namespace.as_str(), c.pod.as_str()))
        .collect();
    pods.sort_unstable();
    pods.dedup();
    M.running_pods
        .set(i64::try_from(pods.len()).unwrap_or(i64::MAX));
    M.running_containers
        .set(i64::try_from(s.containers.len()).unwrap_or(i64::MAX));
    *crate::lock(&SNAPSHOT) = Some(s);
}

/// From the agent first seeing a pod to its containers running.
pub fn pod_started(d: Duration) {
    M.pod_start.observe(d.as_secs_f64());
}

/// An image was pulled from a registry (cache hits are not pulls).
pub fn image_pulled(d: Duration) {
    M.image_pull.observe(d.as_secs_f64());
}

/// A container was created and started.
pub fn container_started() {
    M.started.inc();
}

/// A container exited and will be restarted.
pub fn container_restarted() {
    M.restarts.inc();
}

/// Add the kubelet metrics to `reg`.
pub fn register(reg: &mut Registry) {
    let m = &*M;
    reg.register(
        "kubelet_pod_start_duration_seconds",
        "Duration in seconds from the agent seeing a pod for the first time to the pod starting to run",
        m.pod_start.clone(),
    );
    reg.register(
        "kubelet_image_pull_duration_seconds",
        "Duration in seconds to pull an image from a registry",
        m.image_pull.clone(),
    );
    reg.register(
        "kubelet_started_containers",
        "Cumulative number of containers started",
        m.started.clone(),
    );
    reg.register(
        "kubelet_container_restarts",
        "Cumulative number of container restarts (exits followed by a restart)",
        m.restarts.clone(),
    );
    reg.register(
        "kubelet_running_pods",
        "Number of pods that have a running container",
        m.running_pods.clone(),
    );
    reg.register(
        "kubelet_running_containers",
        "Number of running containers",
        m.running_containers.clone(),
    );
}

/// Encodes the latest [`Snapshot`] on each scrape.
#[derive(Debug)]
struct Cadvisor;

impl Collector for Cadvisor {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(s) = crate::lock(&SNAPSHOT).clone() else {
            return Ok(());
        };
        let labels = |c: &ContainerSample| {
            [
                (
                    "id",
                    format!("/kapsel/{}/{}/{}", c.namespace, c.pod, c.container),
                ),
                ("namespace", c.namespace.clone()),
                ("pod", c.pod.clone()),
                ("container", c.container.clone()),
            ]
        };
        let root = [
            ("id", "/".to_string()),
            ("namespace", String::new()),
            ("pod", String::new()),
            ("container", String::new()),
        ];
        {
            let mut e = enc.encode_descriptor(
                "container_cpu_usage_seconds",
                "Cumulative cpu time consumed in seconds",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(s.node_cpu_seconds).encode(e.encode_family(&root)?)?;
            for c in &s.containers {
                ConstCounter::new(c.cpu_seconds).encode(e.encode_family(&labels(c))?)?;
            }
        }
        let mut e = enc.encode_descriptor(
            "container_memory_working_set_bytes",
            "Current working set in bytes",
            None,
            MetricType::Gauge,
        )?;
        let g = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
        g(s.node_memory_working_set_bytes).encode(e.encode_family(&root)?)?;
        for c in &s.containers {
            g(c.memory_working_set_bytes).encode(e.encode_family(&labels(c))?)?;
        }
        Ok(())
    }
}

/// Add the cAdvisor metrics to `reg`.
pub fn register_cadvisor(reg: &mut Registry) {
    reg.register_collector(Box::new(Cadvisor));
}

fn render(fill: fn(&mut Registry)) -> String {
    let mut reg = Registry::default();
    fill(&mut reg);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

/// The body of one of the agent's endpoints (`metrics`, `metrics/cadvisor`), or `None`.
pub fn endpoint(path: &str) -> Option<String> {
    match path.trim_matches('/') {
        "metrics" => Some(render(register)),
        "metrics/cadvisor" => Some(render(register_cadvisor)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cadvisor_exposition_has_node_and_containers() {
        set_snapshot(Snapshot {
            node_cpu_seconds: 12.5,
            node_memory_working_set_bytes: 4096,
            containers: vec![
                ContainerSample {
                    namespace: "d".into(),
                    pod: "p".into(),
                    container: "c".into(),
                    cpu_seconds: 1.25,
                    memory_working_set_bytes: 1024,
                },
                ContainerSample {
                    namespace: "d".into(),
                    pod: "p".into(),
                    container: "side".into(),
                    cpu_seconds: 0.5,
                    memory_working_set_bytes: 2048,
                },
            ],
        });
        let text = endpoint("metrics/cadvisor").unwrap();
        assert!(
            text.contains("# TYPE container_cpu_usage_seconds counter"),
            "{text}"
        );
        assert!(
            text.contains("container_cpu_usage_seconds_total{id=\"/\",namespace=\"\",pod=\"\",container=\"\"} 12.5"),
            "{text}"
        );
        assert!(text.contains(
            "container_memory_working_set_bytes{id=\"/kapsel/d/p/c\",namespace=\"d\",pod=\"p\",container=\"c\"} 1024"
        ));
        assert!(text.ends_with("# EOF\n"));
        let k = endpoint("/metrics").unwrap();
        assert!(k.contains("kubelet_running_pods 1\n"), "{k}");
        assert!(k.contains("kubelet_running_containers 2\n"), "{k}");
        assert_eq!(endpoint("debug/pprof"), None);
    }
}
