//! Resource usage for `kapsel top`: node CPU from /proc/stat and memory working set from
//! /proc/meminfo; per container CPU and memory from the runtime's cgroup stats. Reported to the
//! control plane every interval, CPU as a rate over the interval.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kapsel_proto::v1::{ContainerUsage, NodeStats, PodUsage, Usage};
use kapsel_runtime::{ContainerId, ContainerStatus};

use crate::model::{LABEL_CONTAINER, LABEL_POD_NAME, LABEL_POD_NAMESPACE};
use crate::node::meminfo_field;
use crate::sync::Ctx;

/// Busy CPU time of the node in nanoseconds (all CPUs), from the first line of /proc/stat.
pub fn node_cpu_ns(proc_stat: &str, ticks_per_sec: u64) -> Option<u64> {
    let line = proc_stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| f.get(*i))
        .sum();
    Some(busy.saturating_mul(1_000_000_000) / ticks_per_sec.max(1))
}

/// Nanocores used between two cumulative samples.
pub fn rate(prev_ns: u64, cur_ns: u64, dt: Duration) -> u64 {
    let secs = dt.as_secs_f64();
    if secs <= 0.0 || cur_ns < prev_ns {
        return 0;
    }
    ((cur_ns - prev_ns) as f64 / secs) as u64
}

/// Report usage every `interval` until dropped.
pub async fn run(ctx: Arc<Ctx>, interval: Duration) {
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let mut prev_node: Option<(u64, Instant)> = None;
    let mut prev: HashMap<ContainerId, u64> = HashMap::new();
    let mut t = tokio::time::interval(interval);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        t.tick().await;
        let rt = ctx.rt.clone();
        let sample = tokio::task::spawn_blocking(move || {
            let now = Instant::now();
            let node_ns = node_cpu_ns(
                &std::fs::read_to_string("/proc/stat").unwrap_or_default(),
                hz,
            );
            let mi = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
            let mem = meminfo_field(&mi, "MemTotal")
                .unwrap_or(0)
                .saturating_sub(meminfo_field(&mi, "MemAvailable").unwrap_or(0));
            let mut cs = Vec::new();
            for c in rt.list().unwrap_or_default() {
                if c.status != ContainerStatus::Running {
                    continue;
                }
                if let Ok(st) = rt.stats(&c.id) {
                    cs.push((c, st));
                }
            }
            (now, node_ns, mem, cs)
        })
        .await;
        let Ok((now, node_ns, mem, cs)) = sample else {
            continue;
        };
        let Some(node_ns) = node_ns else { continue };
        let window = prev_node.map_or(interval, |(_, t)| now - t);
        let node_cpu = prev_node.map_or(0, |(p, _)| rate(p, node_ns, window));
        prev_node = Some((node_ns, now));
        let mut pods: BTreeMap<(String, String), Vec<ContainerUsage>> = BTreeMap::new();
        let mut next_prev = HashMap::new();
        let mut snapshot = crate::metrics::Snapshot {
            node_cpu_seconds: node_ns as f64 / 1e9,
            node_memory_working_set_bytes: mem,
            containers: Vec::new(),
        };
        for (c, st) in cs {
            let (Some(ns), Some(pod), Some(name)) = (
                c.labels.get(LABEL_POD_NAMESPACE),
                c.labels.get(LABEL_POD_NAME),
                c.labels.get(LABEL_CONTAINER),
            ) else {
                continue;
            };
            let cpu = prev
                .get(&c.id)
                .map_or(0, |p| rate(*p, st.cpu_usage_ns, window));
            next_prev.insert(c.id.clone(), st.cpu_usage_ns);
            snapshot.containers.push(crate::metrics::ContainerSample {
                namespace: ns.clone(),
                pod: pod.clone(),
                container: name.clone(),
                cpu_seconds: st.cpu_usage_ns as f64 / 1e9,
                memory_working_set_bytes: st.memory_working_set_bytes,
            });
            pods.entry((ns.clone(), pod.clone()))
                .or_default()
                .push(ContainerUsage {
                    name: name.clone(),
                    usage: Some(Usage {
                        cpu_nano_cores: cpu,
                        memory_working_set_bytes: st.memory_working_set_bytes,
                    }),
                });
        }
        prev = next_prev;
        crate::metrics::set_snapshot(snapshot);
        let report = NodeStats {
            node_name: ctx.cfg.node_name.clone(),
            timestamp_unix_ms: i64::try_from(crate::model::now_ms()).unwrap_or(0),
            window_ms: i64::try_from(window.as_millis()).unwrap_or(0),
            node: Some(Usage {
                cpu_nano_cores: node_cpu,
                memory_working_set_bytes: mem,
            }),
            pods: pods
                .into_iter()
                .map(|((namespace, name), containers)| PodUsage {
                    namespace,
                    name,
                    containers,
                })
                .collect(),
        };
        if let Err(e) = ctx.cp.report_stats(&report).await {
            tracing::debug!(error = %e, "stats report failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_time_and_rates() {
        let s = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 1 2 3\n";
        // busy = 100+5+50+3+2+0 = 160 ticks at 100 Hz = 1.6 s
        assert_eq!(node_cpu_ns(s, 100), Some(1_600_000_000));
        assert_eq!(node_cpu_ns("garbage", 100), None);
        assert_eq!(
            rate(1_000_000_000, 1_500_000_000, Duration::from_secs(1)),
            500_000_000
        );
        assert_eq!(rate(5, 1, Duration::from_secs(1)), 0);
    }
}
