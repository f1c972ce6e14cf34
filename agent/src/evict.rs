//! Node-pressure eviction: when memory.available falls under the threshold, evict BestEffort
//! pods first, then Burstable (largest memory user first), one per round, reported as
//! `Evicted` (phase Failed). Guaranteed pods are not evicted.

use std::sync::Arc;
use std::time::Duration;

use crate::model::{sandbox_id, LABEL_POD_UID};
use crate::node::meminfo_field;
use crate::sync::Ctx;

/// Order eviction candidates: `(uid, qos, memory bytes)` → uids, first to evict first (pure).
pub fn rank(mut pods: Vec<(String, &'static str, u64)>) -> Vec<String> {
    let class = |q: &str| match q {
        "BestEffort" => 0,
        "Burstable" => 1,
        _ => 2,
    };
    pods.retain(|(_, q, _)| class(q) < 2);
    pods.sort_by(|a, b| class(a.1).cmp(&class(b.1)).then(b.2.cmp(&a.2)));
    pods.into_iter().map(|p| p.0).collect()
}

pub async fn run(ctx: Arc<Ctx>) {
    let mut t = tokio::time::interval(Duration::from_secs(2));
    loop {
        t.tick().await;
        let avail = meminfo_field(
            &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
            "MemAvailable",
        );
        let Some(avail) = avail else { continue };
        if avail >= ctx.cfg.eviction_memory_available {
            continue;
        }
        let rt = ctx.rt.clone();
        let Ok(Ok(list)) = tokio::task::spawn_blocking(move || {
            rt.list().map(|l| {
                l.into_iter()
                    .filter_map(|c| {
                        let uid = c.labels.get(LABEL_POD_UID)?.clone();
                        let mem = rt.stats(&c.id).map_or(0, |s| s.memory_working_set_bytes);
                        Some((uid, mem))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .await
        else {
            continue;
        };
        let mut per_pod: std::collections::HashMap<String, u64> = Default::default();
        for (uid, m) in list {
            *per_pod.entry(uid).or_default() += m;
        }
        let qos = crate::lock(&ctx.qos);
        let cands = per_pod
            .into_iter()
            .filter(|(u, _)| sandbox_id(u).is_some())
            .map(|(u, m)| {
                let q = qos.get(&u).copied().unwrap_or("BestEffort");
                (u, q, m)
            })
            .collect();
        drop(qos);
        if let Some(victim) = rank(cands).into_iter().next() {
            tracing::warn!(pod_uid = %victim, available = avail, "memory pressure: evicting");
            crate::lock(&ctx.evictions).insert(
                victim,
                format!(
                    "The node was low on resource: memory. Threshold quantity: {}, available: {}Ki.",
                    ctx.cfg.eviction_memory_available,
                    avail / 1024
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_effort_first_then_burstable_by_usage_never_guaranteed() {
        let got = rank(vec![
            ("g".into(), "Guaranteed", 900),
            ("b-small".into(), "Burstable", 10),
            ("b-big".into(), "Burstable", 500),
            ("be".into(), "BestEffort", 1),
        ]);
        assert_eq!(got, vec!["be", "b-big", "b-small"]);
    }
}
