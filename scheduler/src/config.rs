//! Scheduler configuration: scoring strategy, plugin weights and loop tuning, from a YAML or JSON
//! file and/or flags. Every field has a default; unknown fields are an error.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::framework::ScoringStrategy;

/// Score plugin weights. Defaults are Kubernetes' default profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Weights {
    pub node_resources_fit: i64,
    pub pod_topology_spread: i64,
    pub node_affinity: i64,
    pub taint_toleration: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            node_resources_fit: 1,
            pod_topology_spread: 2,
            node_affinity: 2,
            taint_toleration: 3,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// Pods whose `spec.schedulerName` is empty or this name are ours.
    pub scheduler_name: String,
    pub scoring_strategy: ScoringStrategy,
    pub weights: Weights,
    /// Like kube-scheduler's `percentageOfNodesToScore`: stop filtering once this share of the
    /// nodes has been found feasible (never fewer than 100 nodes). 0 = adaptive
    /// (`50 − nodes/125` %, at least 5 %); 100 = always look at every node.
    pub percentage_of_nodes_to_score: u32,
    /// Binds in flight at once. 128 by default: on the 1,000-node e2e bench 32 → 4,157, 64 →
    /// ~4,300, 128 → ~4,830 pods/s (docs/benchmarks.md, session 9), and it stays under the API
    /// server's 200 mutating requests in flight, which apply to the scheduler's identity.
    pub parallel_binds: usize,
    /// Binding attempts per pod on conflict before it goes to backoff.
    pub bind_retries: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Emit `Scheduled` / `FailedScheduling` Events.
    pub events: bool,
    /// Seed for tie-breaking; `None` = random (production).
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scheduler_name: "kapsel".into(),
            scoring_strategy: ScoringStrategy::LeastAllocated,
            weights: Weights::default(),
            percentage_of_nodes_to_score: 0,
            parallel_binds: 128,
            bind_retries: 5,
            initial_backoff_ms: 1000,
            max_backoff_ms: 10_000,
            events: true,
            seed: None,
        }
    }
}

impl Config {
    /// Parse a YAML (or JSON) configuration.
    pub fn from_yaml(s: &str) -> Result<Config> {
        let c: Config = serde_yaml::from_str(s).map_err(|e| Error::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    pub fn from_file(path: &Path) -> Result<Config> {
        let s = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_yaml(&s)
    }

    pub fn validate(&self) -> Result<()> {
        let w = &self.weights;
        for (name, v) in [
            ("nodeResourcesFit", w.node_resources_fit),
            ("podTopologySpread", w.pod_topology_spread),
            ("nodeAffinity", w.node_affinity),
            ("taintToleration", w.taint_toleration),
        ] {
            if !(0..=100).contains(&v) {
                return Err(Error::Config(format!(
                    "weights.{name} must be between 0 and 100, got {v}"
                )));
            }
        }
        if self.percentage_of_nodes_to_score > 100 {
            return Err(Error::Config(
                "percentageOfNodesToScore must be between 0 and 100".into(),
            ));
        }
        if self.parallel_binds == 0 {
            return Err(Error::Config("parallelBinds must be at least 1".into()));
        }
        if self.initial_backoff_ms == 0 || self.max_backoff_ms < self.initial_backoff_ms {
            return Err(Error::Config(
                "need 0 < initialBackoffMs <= maxBackoffMs".into(),
            ));
        }
        Ok(())
    }

    pub fn initial_backoff(&self) -> Duration {
        Duration::from_millis(self.initial_backoff_ms)
    }
    pub fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.max_backoff_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_with_defaults() {
        let c =
            Config::from_yaml("scoringStrategy: MostAllocated\nweights:\n  podTopologySpread: 5\n")
                .expect("parse");
        assert_eq!(c.scoring_strategy, ScoringStrategy::MostAllocated);
        assert_eq!(c.weights.pod_topology_spread, 5);
        assert_eq!(c.weights.taint_toleration, 3);
        assert_eq!(c.scheduler_name, "kapsel");
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        assert!(Config::from_yaml("scoringStrategy: Random\n").is_err());
        assert!(Config::from_yaml("weight: {}\n").is_err());
        assert!(Config::from_yaml("weights: {nodeAffinity: -1}\n").is_err());
        assert!(Config::from_yaml("percentageOfNodesToScore: 101\n").is_err());
    }
}
