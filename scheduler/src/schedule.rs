//! One scheduling cycle as a pure function: `schedule(pod, snapshot, framework, rng)`.
//!
//! Filter (in Kubernetes' default order, stopping at a node's first failing plugin) → PreScore →
//! Score → NormalizeScore → weighted sum → pick the best, ties broken uniformly at random with
//! the given rng (reservoir sampling, as kube-scheduler's `selectHost`). With a seeded rng the
//! result is deterministic.
//!
//! Large clusters: like kube-scheduler's `percentageOfNodesToScore`, filtering stops once enough
//! feasible nodes are found (all nodes below 100; adaptively `50 − n/125` %, ≥ 5 %, ≥ 100 nodes
//! above), starting at a random offset so every node gets its turn.

use std::fmt;

use rand::Rng;

use crate::config::Config;
use crate::framework::{Code, CycleState, FilterPlugin, Reason, ScorePlugin, Status};
use crate::plugins::{
    fit::Fit, node_affinity::NodeAffinity, node_selector::NodeSelector, ports::NodePorts,
    spread::Spread, taints::TaintToleration, unschedulable::NodeReady,
    unschedulable::NodeUnschedulable,
};
use crate::snapshot::{NodeInfo, NodeName, PodInfo, Snapshot};

/// Kubernetes' `minFeasibleNodesToFind`.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// Kubernetes' `minFeasibleNodesPercentageToFind`.
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

/// The configured plugins: filters in order, scores with weights.
pub struct Framework {
    pub filters: Vec<Box<dyn FilterPlugin>>,
    pub scores: Vec<(Box<dyn ScorePlugin>, i64)>,
    pub percentage_of_nodes_to_score: u32,
}

impl Framework {
    pub fn new(config: &Config) -> Framework {
        let w = &config.weights;
        let filters: Vec<Box<dyn FilterPlugin>> = vec![
            Box::new(NodeReady),
            Box::new(NodeUnschedulable),
            Box::new(TaintToleration),
            Box::new(NodeSelector),
            Box::new(NodeAffinity),
            Box::new(NodePorts),
            Box::new(Fit {
                strategy: config.scoring_strategy,
            }),
        ];
        let scores: Vec<(Box<dyn ScorePlugin>, i64)> = vec![
            (Box::new(TaintToleration), w.taint_toleration),
            (Box::new(NodeAffinity), w.node_affinity),
            (
                Box::new(Fit {
                    strategy: config.scoring_strategy,
                }),
                w.node_resources_fit,
            ),
            (Box::new(Spread), w.pod_topology_spread),
        ];
        Framework {
            filters,
            scores: scores.into_iter().filter(|(_, w)| *w > 0).collect(),
            percentage_of_nodes_to_score: config.percentage_of_nodes_to_score,
        }
    }

    /// Run the filters on one node; the first failure wins.
    pub fn run_filters(&self, state: &CycleState<'_>, node: &NodeInfo) -> Status {
        for f in &self.filters {
            let st = f.filter(state, node);
            if !st.is_success() {
                return st;
            }
        }
        Status::success()
    }

    /// kube-scheduler's `numFeasibleNodesToFind`.
    pub fn num_feasible_nodes_to_find(&self, all: usize) -> usize {
        if all < MIN_FEASIBLE_NODES_TO_FIND {
            return all;
        }
        let mut pct = self.percentage_of_nodes_to_score as usize;
        if pct == 0 {
            pct = 50usize
                .saturating_sub(all / 125)
                .max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND);
        }
        (all * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
    }
}

/// No node fits. `Display` is Kubernetes' `FitError.Error()`: reasons counted over nodes,
/// rendered `"<count> <reason>"` and sorted as strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitError {
    pub num_all_nodes: usize,
    /// (reason, number of nodes) in first-seen order.
    pub reasons: Vec<(Reason, usize)>,
    /// True if some node failed with a resolvable code (preemption or pod churn could help).
    pub resolvable: bool,
}

impl FitError {
    fn add(&mut self, st: &Status) {
        if st.code == Code::Unschedulable {
            self.resolvable = true;
        }
        for r in &st.reasons {
            match self.reasons.iter_mut().find(|(x, _)| x == r) {
                Some((_, n)) => *n += 1,
                None => self.reasons.push((r.clone(), 1)),
            }
        }
    }
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.num_all_nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        write!(f, "0/{} nodes are available:", self.num_all_nodes)?;
        if !parts.is_empty() {
            write!(f, " {}.", parts.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for FitError {}

/// Reusable buffers so a cycle does not allocate per node.
#[derive(Default)]
pub struct Scratch {
    feasible: Vec<usize>,
    raw: Vec<i64>,
    total: Vec<i64>,
}

/// Place `pod` on a node of `snapshot`, or explain why none fits.
pub fn schedule(
    pod: &PodInfo,
    snapshot: &Snapshot,
    fw: &Framework,
    rng: &mut impl Rng,
) -> Result<NodeName, FitError> {
    schedule_with(pod, snapshot, fw, rng, &mut Scratch::default())
}

/// `schedule` with caller-owned buffers.
pub fn schedule_with(
    pod: &PodInfo,
    snapshot: &Snapshot,
    fw: &Framework,
    rng: &mut impl Rng,
    scratch: &mut Scratch,
) -> Result<NodeName, FitError> {
    let nodes = snapshot.nodes();
    let n = nodes.len();
    let mut err = FitError {
        num_all_nodes: n,
        reasons: Vec::new(),
        resolvable: false,
    };
    if n == 0 {
        return Err(err);
    }
    let want = fw.num_feasible_nodes_to_find(n);
    let start = if want < n { rng.gen_range(0..n) } else { 0 };

    let mut state = CycleState::new(pod);
    let feasible = &mut scratch.feasible;
    feasible.clear();
    // Nodes in order from `start`, wrapping around: `start..n` then `0..start`.
    for idx in (start..n).chain(0..start) {
        let st = fw.run_filters(&state, &nodes[idx]);
        if st.is_success() {
            feasible.push(idx);
            if feasible.len() >= want {
                break;
            }
        } else {
            err.add(&st);
        }
    }
    match feasible.len() {
        0 => return Err(err),
        1 => return Ok(nodes[feasible[0]].name.clone()),
        _ => {}
    }

    // Score.
    let m = feasible.len();
    let total = &mut scratch.total;
    total.clear();
    total.resize(m, 0);
    let infos: Vec<&NodeInfo> = feasible.iter().map(|&i| &nodes[i]).collect();
    for (plugin, weight) in &fw.scores {
        if !plugin.pre_score(&mut state, &infos) {
            continue;
        }
        let raw = &mut scratch.raw;
        raw.clear();
        raw.extend(infos.iter().map(|node| plugin.score(&state, node)));
        plugin.normalize(&state, raw);
        for (t, s) in total.iter_mut().zip(raw.iter()) {
            *t += s * weight;
        }
    }

    // selectHost: the highest total, reservoir-sampled among equals.
    let mut best = 0;
    let mut best_score = i64::MIN;
    let mut ties = 0u32;
    for (j, &s) in total.iter().enumerate() {
        if s > best_score {
            best_score = s;
            best = j;
            ties = 1;
        } else if s == best_score {
            ties += 1;
            if rng.gen_range(0..ties) == 0 {
                best = j;
            }
        }
    }
    Ok(infos[best].name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::ScoringStrategy;
    use crate::testing::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn fw() -> Framework {
        Framework::new(&Config::default())
    }

    fn snapshot(nodes: Vec<NodeInfo>) -> Snapshot {
        let mut s = Snapshot::new();
        for n in nodes {
            s.insert(n);
        }
        s
    }

    #[test]
    fn fit_error_message_matches_kubernetes() {
        // 2 nodes short of memory, 1 tainted: reasons are "count reason" strings sorted.
        let nodes = vec![
            NodeBuilder::new("a").allocatable("4", "1Gi", "110").info(),
            NodeBuilder::new("b").allocatable("4", "1Gi", "110").info(),
            NodeBuilder::new("c")
                .taint("dedicated", "gpu", "NoSchedule")
                .info(),
        ];
        let pod = PodBuilder::new("p").container("100m", "2Gi").info();
        let err = schedule(&pod, &snapshot(nodes), &fw(), &mut StdRng::seed_from_u64(1))
            .expect_err("nothing fits");
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, \
             2 Insufficient memory."
        );
    }

    #[test]
    fn fit_error_counts_every_reason_of_a_node_and_sorts_as_strings() {
        // 10 nodes short of cpu and memory, 2 cordoned: "10 …" sorts before "2 …" as strings,
        // as in Kubernetes.
        let mut nodes = Vec::new();
        for i in 0..10 {
            nodes.push(
                NodeBuilder::new(&format!("s{i}"))
                    .allocatable("1", "1Gi", "110")
                    .info(),
            );
        }
        for i in 0..2 {
            nodes.push(NodeBuilder::new(&format!("c{i}")).unschedulable().info());
        }
        let pod = PodBuilder::new("p").container("2", "2Gi").info();
        let err = schedule(&pod, &snapshot(nodes), &fw(), &mut StdRng::seed_from_u64(1))
            .expect_err("nothing fits");
        assert_eq!(
            err.to_string(),
            "0/12 nodes are available: 10 Insufficient cpu, 10 Insufficient memory, \
             2 node(s) were unschedulable."
        );
        assert!(err.resolvable);
    }

    #[test]
    fn no_nodes() {
        let pod = PodBuilder::new("p").info();
        let err = schedule(&pod, &Snapshot::new(), &fw(), &mut StdRng::seed_from_u64(1))
            .expect_err("no nodes");
        assert_eq!(err.to_string(), "no nodes available to schedule pods");
    }

    #[test]
    fn least_vs_most_allocated_choose_opposite_nodes() {
        let mut busy = NodeBuilder::new("busy")
            .allocatable("4", "8Gi", "110")
            .info();
        busy.add_pod(&PodBuilder::new("x").container("3", "6Gi").info());
        let idle = NodeBuilder::new("idle")
            .allocatable("4", "8Gi", "110")
            .info();
        let s = snapshot(vec![busy, idle]);
        let pod = PodBuilder::new("p").container("500m", "1Gi").info();
        let mut rng = StdRng::seed_from_u64(7);
        let least = Framework::new(&Config::default());
        assert_eq!(
            schedule(&pod, &s, &least, &mut rng).expect("fits").0,
            "idle"
        );
        let most = Framework::new(&Config {
            scoring_strategy: ScoringStrategy::MostAllocated,
            ..Config::default()
        });
        assert_eq!(schedule(&pod, &s, &most, &mut rng).expect("fits").0, "busy");
    }

    #[test]
    fn ties_are_deterministic_under_a_seed_and_cover_all_equals() {
        let mut s = Snapshot::new();
        for i in 0..5 {
            s.upsert_node(NodeBuilder::new(&format!("n{i}")).info().node)
                .expect("node");
        }
        let pod = PodBuilder::new("p").info();
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50)
                .map(|_| schedule(&pod, &s, &fw(), &mut rng).expect("fits").0)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42), "same seed, same choices");
        let picked: std::collections::BTreeSet<_> = run(42).into_iter().collect();
        assert_eq!(picked.len(), 5, "every tied node gets picked: {picked:?}");
    }

    #[test]
    fn spreads_replicas_of_one_owner_then_respects_affinity_weights() {
        // Equal nodes; a ReplicaSet's pods placed one by one spread 2/2/2.
        let mut s = Snapshot::new();
        for i in 0..3 {
            s.upsert_node(
                NodeBuilder::new(&format!("n{i}"))
                    .allocatable("8", "16Gi", "110")
                    .info()
                    .node,
            )
            .expect("node");
        }
        let mut rng = StdRng::seed_from_u64(3);
        for i in 0..6 {
            let pod = PodBuilder::new(&format!("r{i}"))
                .owner("rs-1")
                .container("100m", "128Mi")
                .info();
            let node = schedule(&pod, &s, &fw(), &mut rng).expect("fits");
            s.get_mut(&node).expect("node").add_pod(&pod);
        }
        for n in s.nodes() {
            assert_eq!(n.owner_count("rs-1"), 2, "{}", n.name);
        }
    }

    #[test]
    fn preferred_affinity_and_prefer_no_schedule_steer_placement() {
        let mut s = Snapshot::new();
        s.upsert_node(NodeBuilder::new("plain").info().node)
            .expect("n");
        s.upsert_node(NodeBuilder::new("ssd").label("disk", "ssd").info().node)
            .expect("n");
        s.upsert_node(
            NodeBuilder::new("soft")
                .label("disk", "ssd")
                .taint("spot", "", "PreferNoSchedule")
                .info()
                .node,
        )
        .expect("n");
        let pod = PodBuilder::new("p")
            .preferred_affinity(
                50,
                vec![kapsel_api::NodeSelectorRequirement {
                    key: "disk".into(),
                    operator: "In".into(),
                    values: vec!["ssd".into()],
                }],
            )
            .info();
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..20 {
            assert_eq!(schedule(&pod, &s, &fw(), &mut rng).expect("fits").0, "ssd");
        }
    }

    #[test]
    fn num_feasible_nodes_to_find_table() {
        let f = fw();
        // (all nodes, wanted)
        for (all, want) in [
            (0, 0),
            (99, 99),
            (100, 100),
            // 50 - 1000/125 = 42 % of 1000
            (1000, 420),
            // 50 - 5000/125 = 10 % of 5000
            (5000, 500),
            // floor at 5 %: 50 - 40 < 5 → 5 % of 6000 = 300
            (6000, 300),
            // 200 nodes: 50 - 1 = 49 % = 98 → at least 100
            (200, 100),
        ] {
            assert_eq!(f.num_feasible_nodes_to_find(all), want, "{all}");
        }
        let all = Framework::new(&Config {
            percentage_of_nodes_to_score: 100,
            ..Config::default()
        });
        assert_eq!(all.num_feasible_nodes_to_find(5000), 5000);
    }

    #[test]
    fn sampling_still_finds_the_only_fitting_node() {
        // 1000 nodes, only one big enough: sampling stops on feasible count, not on nodes seen.
        let mut s = Snapshot::new();
        for i in 0..1000 {
            let cpu = if i == 777 { "64" } else { "1" };
            s.upsert_node(
                NodeBuilder::new(&format!("n{i}"))
                    .allocatable(cpu, "8Gi", "110")
                    .info()
                    .node,
            )
            .expect("node");
        }
        let pod = PodBuilder::new("p").container("8", "1Gi").info();
        let mut rng = StdRng::seed_from_u64(5);
        assert_eq!(schedule(&pod, &s, &fw(), &mut rng).expect("fits").0, "n777");
    }
}
