//! NodeResourcesFit (noderesources/fit.go, least_allocated.go, most_allocated.go).
//!
//! Filter: the pod's request (computed once, see `resources::PodRequest`) must fit in
//! `allocatable - requested` for every resource it asks for; one more pod must fit in the node's
//! `pods` allocatable. Ephemeral storage is checked when the pod requests it and the node reports
//! it (a homelab node that does not report it is not penalised).
//!
//! Score: cpu and memory (weight 1 each) with the non-zero requests, `LeastAllocated`
//! `(cap - req)·100 / cap` or `MostAllocated` `min(req, cap)·100 / cap`, averaged with integer
//! division; a resource with zero capacity is left out.

use crate::framework::{
    CycleState, FilterPlugin, Reason, ScorePlugin, ScoringStrategy, Status, MAX_NODE_SCORE,
};
use crate::snapshot::NodeInfo;

pub struct Fit {
    pub strategy: ScoringStrategy,
}

impl FilterPlugin for Fit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }
    fn filter(&self, state: &CycleState<'_>, node: &NodeInfo) -> Status {
        let want = &state.pod.request.request;
        let alloc = &node.allocatable.resources;
        let used = &node.requested;
        // Fast path, no allocation: everything fits.
        let pods_ok = used.pods < alloc.pods;
        let cpu_ok = want.cpu.0 == 0 || want.cpu.0 <= alloc.cpu.0.saturating_sub(used.cpu.0);
        let mem_ok =
            want.memory.0 == 0 || want.memory.0 <= alloc.memory.0.saturating_sub(used.memory.0);
        let eph_ok = want.ephemeral_storage.0 == 0
            || !node.allocatable.has_ephemeral_storage
            || want.ephemeral_storage.0
                <= alloc
                    .ephemeral_storage
                    .0
                    .saturating_sub(used.ephemeral_storage.0);
        if pods_ok && cpu_ok && mem_ok && eph_ok {
            return Status::success();
        }
        // Same order as Kubernetes' fitsRequest: pods, cpu, memory, ephemeral-storage.
        let mut reasons = Vec::with_capacity(4);
        if !pods_ok {
            reasons.push(Reason::TooManyPods);
        }
        if !cpu_ok {
            reasons.push(Reason::INSUFFICIENT_CPU);
        }
        if !mem_ok {
            reasons.push(Reason::INSUFFICIENT_MEMORY);
        }
        if !eph_ok {
            reasons.push(Reason::INSUFFICIENT_EPHEMERAL_STORAGE);
        }
        Status::unschedulable(reasons)
    }
}

/// `(capacity - requested) * 100 / capacity`, 0 when over capacity.
pub fn least_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// `min(requested, capacity) * 100 / capacity`.
pub fn most_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    requested.min(capacity) * MAX_NODE_SCORE / capacity
}

impl ScorePlugin for Fit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }
    fn score(&self, state: &CycleState<'_>, node: &NodeInfo) -> i64 {
        let pod = &state.pod.request.non_zero;
        let alloc = &node.allocatable.resources;
        let used = &node.non_zero_requested;
        let f = match self.strategy {
            ScoringStrategy::LeastAllocated => least_requested_score,
            ScoringStrategy::MostAllocated => most_requested_score,
        };
        let mut total = 0;
        let mut weights = 0;
        for (req, cap) in [
            (used.cpu.0 + pod.cpu.0, alloc.cpu.0),
            (used.memory.0 + pod.memory.0, alloc.memory.0),
        ] {
            if cap == 0 {
                continue;
            }
            total += f(req, cap);
            weights += 1;
        }
        if weights == 0 {
            0
        } else {
            total / weights
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn fit_filter_table() {
        struct Case {
            name: &'static str,
            // node allocatable cpu, memory, pods
            node: (&'static str, &'static str, &'static str),
            // already requested on the node (cpu, memory) by one pod
            existing: Option<(&'static str, &'static str)>,
            pod: PodBuilder,
            want: Vec<Reason>,
        }
        let cases = vec![
            Case {
                name: "fits exactly",
                node: ("1", "1Gi", "10"),
                existing: Some(("500m", "512Mi")),
                pod: PodBuilder::new("p").container("500m", "512Mi"),
                want: vec![],
            },
            Case {
                name: "one milli-cpu over",
                node: ("1", "1Gi", "10"),
                existing: Some(("500m", "512Mi")),
                pod: PodBuilder::new("p").container("501m", "512Mi"),
                want: vec![Reason::INSUFFICIENT_CPU],
            },
            Case {
                name: "cpu and memory both short",
                node: ("1", "1Gi", "10"),
                existing: Some(("900m", "1000Mi")),
                pod: PodBuilder::new("p").container("200m", "100Mi"),
                want: vec![Reason::INSUFFICIENT_CPU, Reason::INSUFFICIENT_MEMORY],
            },
            Case {
                // containers 300m + 300m = 600m, init 900m → request 900m; 1000-200 = 800 free.
                name: "init container dominates and does not fit",
                node: ("1", "1Gi", "10"),
                existing: Some(("200m", "0")),
                pod: PodBuilder::new("p")
                    .container("300m", "")
                    .container("300m", "")
                    .init_container("900m", ""),
                want: vec![Reason::INSUFFICIENT_CPU],
            },
            Case {
                // init 700m < 800m free although containers+init would be 1300m.
                name: "init container is not added to containers",
                node: ("1", "1Gi", "10"),
                existing: Some(("200m", "0")),
                pod: PodBuilder::new("p")
                    .container("300m", "")
                    .container("300m", "")
                    .init_container("700m", ""),
                want: vec![],
            },
            Case {
                name: "pod count is checked even for best-effort pods",
                node: ("1", "1Gi", "1"),
                existing: Some(("0", "0")),
                pod: PodBuilder::new("p"),
                want: vec![Reason::TooManyPods],
            },
            Case {
                name: "zero request fits an overcommitted node",
                node: ("1", "1Gi", "10"),
                existing: Some(("2", "2Gi")),
                pod: PodBuilder::new("p").container("", ""),
                want: vec![],
            },
            Case {
                name: "every reason at once, in Kubernetes order",
                node: ("1", "1Gi", "1"),
                existing: Some(("1", "1Gi")),
                pod: PodBuilder::new("p").container("1m", "1"),
                want: vec![
                    Reason::TooManyPods,
                    Reason::INSUFFICIENT_CPU,
                    Reason::INSUFFICIENT_MEMORY,
                ],
            },
        ];
        for c in cases {
            let mut node = NodeBuilder::new("n")
                .allocatable(c.node.0, c.node.1, c.node.2)
                .info();
            if let Some((cpu, mem)) = c.existing {
                node.add_pod(&PodBuilder::new("old").container(cpu, mem).info());
            }
            let pod = c.pod.info();
            let st = Fit {
                strategy: ScoringStrategy::LeastAllocated,
            }
            .filter(&CycleState::new(&pod), &node);
            assert_eq!(st.reasons, c.want, "{}", c.name);
            if !c.want.is_empty() {
                assert_eq!(st.code, crate::framework::Code::Unschedulable, "{}", c.name);
            }
        }
    }

    #[test]
    fn ephemeral_storage_only_when_node_reports_it() {
        let pod = PodBuilder::new("p").ephemeral_storage("10Gi").info();
        let fit = Fit {
            strategy: ScoringStrategy::LeastAllocated,
        };
        let silent = NodeBuilder::new("a").info();
        assert!(fit.filter(&CycleState::new(&pod), &silent).is_success());
        let small = NodeBuilder::new("b").ephemeral_storage("5Gi").info();
        assert_eq!(
            fit.filter(&CycleState::new(&pod), &small).reasons,
            vec![Reason::INSUFFICIENT_EPHEMERAL_STORAGE]
        );
        let big = NodeBuilder::new("c").ephemeral_storage("20Gi").info();
        assert!(fit.filter(&CycleState::new(&pod), &big).is_success());
    }

    #[test]
    fn score_arithmetic_table() {
        // Lifted from the shape of Kubernetes' least_allocated_test.go: node 4000m / 10000 bytes,
        // existing 1000m / 2000, pod 1000m / 3000 → requested 2000m / 5000.
        // Least: cpu (4000-2000)*100/4000 = 50, mem (10000-5000)*100/10000 = 50 → 50.
        // Most:  cpu 2000*100/4000 = 50,        mem 5000*100/10000 = 50     → 50.
        // Second node 6000m / 10000 bytes, empty: requested 1000m / 3000.
        // Least: cpu 5000*100/6000 = 83, mem 7000*100/10000 = 70 → (83+70)/2 = 76.
        // Most:  cpu 1000*100/6000 = 16, mem 3000*100/10000 = 30 → (16+30)/2 = 23.
        let mut n1 = NodeBuilder::new("n1")
            .allocatable("4", "10000", "110")
            .info();
        n1.add_pod(&PodBuilder::new("old").container("1", "2000").info());
        let n2 = NodeBuilder::new("n2")
            .allocatable("6", "10000", "110")
            .info();
        let pod = PodBuilder::new("p").container("1", "3000").info();
        let nodes = [n1, n2];
        let least = Fit {
            strategy: ScoringStrategy::LeastAllocated,
        };
        let most = Fit {
            strategy: ScoringStrategy::MostAllocated,
        };
        assert_eq!(run_score(&least, &pod, &nodes), vec![50, 76]);
        assert_eq!(run_score(&most, &pod, &nodes), vec![50, 23]);
    }

    #[test]
    fn score_edge_cases() {
        assert_eq!(least_requested_score(5, 4), 0, "over capacity");
        assert_eq!(least_requested_score(0, 0), 0, "no capacity");
        assert_eq!(most_requested_score(5, 4), 100, "clamped to capacity");
        assert_eq!(most_requested_score(1, 0), 0);
        // A best-effort pod counts 100m / 200Mi for scoring: node 1000m / 400Mi →
        // least cpu 90, mem 50 → 70.
        let node = NodeBuilder::new("n")
            .allocatable("1", "400Mi", "110")
            .info();
        let pod = PodBuilder::new("p").container("", "").info();
        let least = Fit {
            strategy: ScoringStrategy::LeastAllocated,
        };
        assert_eq!(run_score(&least, &pod, &[node]), vec![70]);
    }
}
