//! The scheduling framework, after Kubernetes' `kube-scheduler/framework/interface.go`: statuses,
//! the Filter and Score extension points, and the per-cycle state.
//!
//! Plugins are pure: a filter looks at the pod (via the cycle state) and the `NodeInfo` it is
//! handed — never at the rest of the snapshot — and a score plugin returns an integer that
//! `normalize` maps into `0..=MAX_NODE_SCORE`.
//!
//! Kubernetes keeps per-cycle data in a string-keyed map (`CycleState`); here the few pieces of
//! state are typed fields, which keeps the per-node loop free of lookups and downcasts.

use std::fmt;

use crate::resources::{CPU, EPHEMERAL_STORAGE, MEMORY};
use crate::snapshot::{NodeInfo, PodInfo};

pub const MIN_NODE_SCORE: i64 = 0;
pub const MAX_NODE_SCORE: i64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    Success,
    /// The node does not fit now; another pod's deletion could make it fit (preemption could help).
    Unschedulable,
    /// The node will not fit whatever happens to the other pods (taints, affinity).
    UnschedulableAndUnresolvable,
    /// Something went wrong evaluating the plugin.
    Error,
}

/// Why a node was rejected. `Display` gives Kubernetes' wording, which ends up in the
/// `0/N nodes are available: …` message.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    NodeNotReady,
    NodeUnschedulable,
    /// `Insufficient cpu` etc.
    Insufficient(&'static str),
    TooManyPods,
    NodeAffinityMismatch,
    UntoleratedTaint {
        key: String,
        value: String,
    },
    PortsConflict,
    Other(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NodeNotReady => f.write_str("node(s) were not ready"),
            Reason::NodeUnschedulable => f.write_str("node(s) were unschedulable"),
            Reason::Insufficient(r) => write!(f, "Insufficient {r}"),
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::NodeAffinityMismatch => {
                f.write_str("node(s) didn't match Pod's node affinity/selector")
            }
            Reason::UntoleratedTaint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Reason::PortsConflict => {
                f.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Reason::Other(s) => f.write_str(s),
        }
    }
}

impl Reason {
    pub const INSUFFICIENT_CPU: Reason = Reason::Insufficient(CPU);
    pub const INSUFFICIENT_MEMORY: Reason = Reason::Insufficient(MEMORY);
    pub const INSUFFICIENT_EPHEMERAL_STORAGE: Reason = Reason::Insufficient(EPHEMERAL_STORAGE);
}

/// The outcome of a plugin. `Status::success()` does not allocate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<Reason>,
}

impl Status {
    pub const fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
        }
    }
    pub fn unschedulable(reasons: Vec<Reason>) -> Status {
        Status {
            code: Code::Unschedulable,
            reasons,
        }
    }
    pub fn unresolvable(reason: Reason) -> Status {
        Status {
            code: Code::UnschedulableAndUnresolvable,
            reasons: vec![reason],
        }
    }
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
}

/// The scoring strategy of NodeResourcesFit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ScoringStrategy {
    /// Prefer the emptiest node (spread load). Kubernetes' default.
    #[default]
    LeastAllocated,
    /// Prefer the fullest node that fits (bin-packing).
    MostAllocated,
}

impl std::str::FromStr for ScoringStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "LeastAllocated" => Ok(ScoringStrategy::LeastAllocated),
            "MostAllocated" => Ok(ScoringStrategy::MostAllocated),
            _ => Err(format!(
                "unknown scoring strategy {s:?} (LeastAllocated or MostAllocated)"
            )),
        }
    }
}

/// Per-cycle scratch state: the pod being scheduled and what PreScore computed for it.
#[derive(Debug)]
pub struct CycleState<'a> {
    pub pod: &'a PodInfo,
    /// `ln(feasible nodes + 2)`: PodTopologySpread's `topologyNormalizingWeight` for hostname.
    pub spread_weight: f64,
}

impl<'a> CycleState<'a> {
    pub fn new(pod: &'a PodInfo) -> Self {
        CycleState {
            pod,
            spread_weight: 1.0,
        }
    }
}

/// Filter extension point: can this pod run on this node?
pub trait FilterPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn filter(&self, state: &CycleState<'_>, node: &NodeInfo) -> Status;
}

/// Score extension point, with PreScore and NormalizeScore folded in.
pub trait ScorePlugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// Called once per cycle with the feasible nodes. Returning `false` skips the plugin for this
    /// pod (Kubernetes' `Skip` status), e.g. spreading for a pod without an owner.
    fn pre_score(&self, _state: &mut CycleState<'_>, _feasible: &[&NodeInfo]) -> bool {
        true
    }
    fn score(&self, state: &CycleState<'_>, node: &NodeInfo) -> i64;
    /// Map the raw scores (in feasible-node order) into `0..=MAX_NODE_SCORE`.
    fn normalize(&self, _state: &CycleState<'_>, _scores: &mut [i64]) {}
}

/// Kubernetes' `helper.DefaultNormalizeScore`: scale so the best raw score is `max`; with
/// `reverse`, the best becomes `max - score` (fewer is better). All zero + reverse → all `max`.
pub fn default_normalize_score(max: i64, reverse: bool, scores: &mut [i64]) {
    let max_count = scores.iter().copied().max().unwrap_or(0);
    if max_count == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = max);
        }
        return;
    }
    for s in scores.iter_mut() {
        let mut v = max * *s / max_count;
        if reverse {
            v = max - v;
        }
        *s = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_normalize_table() {
        // (raw, reverse, want)
        let cases: &[(&[i64], bool, &[i64])] = &[
            // 100 * s / 4
            (&[1, 2, 4], false, &[25, 50, 100]),
            // 100 - 100 * s / 4
            (&[1, 2, 4], true, &[75, 50, 0]),
            (&[0, 0, 0], false, &[0, 0, 0]),
            (&[0, 0, 0], true, &[100, 100, 100]),
            // integer division truncates: 100*1/3 = 33
            (&[1, 3], false, &[33, 100]),
            (&[], true, &[]),
        ];
        for (raw, reverse, want) in cases {
            let mut s = raw.to_vec();
            default_normalize_score(MAX_NODE_SCORE, *reverse, &mut s);
            assert_eq!(&s, want, "raw {raw:?} reverse {reverse}");
        }
    }

    #[test]
    fn reason_wording_matches_kubernetes() {
        assert_eq!(
            Reason::INSUFFICIENT_MEMORY.to_string(),
            "Insufficient memory"
        );
        assert_eq!(
            Reason::UntoleratedTaint {
                key: "dedicated".into(),
                value: "gpu".into()
            }
            .to_string(),
            "node(s) had untolerated taint {dedicated: gpu}"
        );
    }
}
