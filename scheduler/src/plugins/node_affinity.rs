//! NodeAffinity (nodeaffinity/node_affinity.go): required terms filter, preferred terms score.
//!
//! Terms are compiled once per pod: `Gt`/`Lt` values are parsed to integers, and a malformed
//! requirement (unknown operator, `Gt` without exactly one integer value, `In` without values)
//! makes its term match nothing, as Kubernetes' lazy-error selector does.

use std::collections::BTreeMap;

use kapsel_api::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm};

use crate::framework::{
    default_normalize_score, CycleState, FilterPlugin, Reason, ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::snapshot::NodeInfo;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn compile(r: &NodeSelectorRequirement) -> Option<Requirement> {
        let int = || -> Option<i64> {
            match r.values.as_slice() {
                [v] => v.parse().ok(),
                _ => None,
            }
        };
        let op = match r.operator.as_str() {
            "In" if !r.values.is_empty() => Op::In(r.values.clone()),
            "NotIn" if !r.values.is_empty() => Op::NotIn(r.values.clone()),
            "Exists" if r.values.is_empty() => Op::Exists,
            "DoesNotExist" if r.values.is_empty() => Op::DoesNotExist,
            "Gt" => Op::Gt(int()?),
            "Lt" => Op::Lt(int()?),
            _ => return None,
        };
        Some(Requirement {
            key: r.key.clone(),
            op,
        })
    }

    fn matches(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (Op::In(vs), Some(v)) => vs.iter().any(|x| x == v),
            (Op::In(_), None) => false,
            (Op::NotIn(vs), Some(v)) => !vs.iter().any(|x| x == v),
            (Op::NotIn(_), None) => true,
            (Op::Exists, v) => v.is_some(),
            (Op::DoesNotExist, v) => v.is_none(),
            (Op::Gt(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x > *n),
            (Op::Lt(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x < *n),
            (Op::Gt(_) | Op::Lt(_), None) => false,
        }
    }
}

/// One `NodeSelectorTerm`: all its expressions (on labels) and fields (`metadata.name` only) must
/// match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledTerm {
    exprs: Vec<Requirement>,
    fields: Vec<Requirement>,
    /// A requirement failed to compile: the term matches nothing.
    invalid: bool,
}

impl CompiledTerm {
    pub fn compile(t: &NodeSelectorTerm) -> CompiledTerm {
        let mut invalid = false;
        let mut exprs = Vec::with_capacity(t.match_expressions.len());
        for r in &t.match_expressions {
            match Requirement::compile(r) {
                Some(c) => exprs.push(c),
                None => invalid = true,
            }
        }
        let mut fields = Vec::with_capacity(t.match_fields.len());
        for r in &t.match_fields {
            match Requirement::compile(r) {
                Some(
                    c @ Requirement {
                        op: Op::In(_) | Op::NotIn(_),
                        ..
                    },
                ) if c.key == "metadata.name" => fields.push(c),
                _ => invalid = true,
            }
        }
        CompiledTerm {
            exprs,
            fields,
            invalid,
        }
    }

    fn is_empty(&self) -> bool {
        self.exprs.is_empty() && self.fields.is_empty()
    }

    /// Does the term match? An empty term matches nothing when required and everything when
    /// preferred (where it is a no-op), as in Kubernetes.
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>, empty: bool) -> bool {
        if self.invalid {
            return false;
        }
        if self.is_empty() {
            return empty;
        }
        self.exprs
            .iter()
            .all(|r| r.matches(labels.get(&r.key).map(String::as_str)))
            && self.fields.iter().all(|r| r.matches(Some(name)))
    }
}

/// A required `NodeSelector`: the terms are ORed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledNodeSelector {
    terms: Vec<CompiledTerm>,
}

impl CompiledNodeSelector {
    pub fn compile(s: &NodeSelector) -> CompiledNodeSelector {
        CompiledNodeSelector {
            terms: s
                .node_selector_terms
                .iter()
                .map(CompiledTerm::compile)
                .collect(),
        }
    }
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().any(|t| t.matches(name, labels, false))
    }
}

pub struct NodeAffinity;

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }
    fn filter(&self, state: &CycleState<'_>, node: &NodeInfo) -> Status {
        match &state.pod.required_affinity {
            Some(sel) if !sel.matches(node.name.as_str(), node.labels()) => {
                Status::unresolvable(Reason::NodeAffinityMismatch)
            }
            _ => Status::success(),
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }
    fn pre_score(&self, state: &mut CycleState<'_>, _feasible: &[&NodeInfo]) -> bool {
        !state.pod.preferred_affinity.is_empty()
    }
    /// Sum of the weights of the preferred terms the node matches.
    fn score(&self, state: &CycleState<'_>, node: &NodeInfo) -> i64 {
        state
            .pod
            .preferred_affinity
            .iter()
            .filter(|(_, t)| t.matches(node.name.as_str(), node.labels(), true))
            .map(|(w, _)| *w)
            .sum()
    }
    fn normalize(&self, _state: &CycleState<'_>, scores: &mut [i64]) {
        default_normalize_score(MAX_NODE_SCORE, false, scores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operator_table() {
        let node = labels(&[("zone", "a"), ("cores", "8"), ("gpu", "")]);
        let cases = [
            ("In hit", req("zone", "In", &["a", "b"]), true),
            ("In miss", req("zone", "In", &["b"]), false),
            ("In absent key", req("rack", "In", &["1"]), false),
            (
                "In without values is invalid",
                req("zone", "In", &[]),
                false,
            ),
            ("NotIn hit", req("zone", "NotIn", &["b"]), true),
            ("NotIn miss", req("zone", "NotIn", &["a"]), false),
            (
                "NotIn absent key matches",
                req("rack", "NotIn", &["1"]),
                true,
            ),
            ("Exists", req("gpu", "Exists", &[]), true),
            ("Exists absent", req("rack", "Exists", &[]), false),
            (
                "Exists with values is invalid",
                req("gpu", "Exists", &["x"]),
                false,
            ),
            ("DoesNotExist", req("rack", "DoesNotExist", &[]), true),
            (
                "DoesNotExist present",
                req("gpu", "DoesNotExist", &[]),
                false,
            ),
            ("Gt true", req("cores", "Gt", &["4"]), true),
            ("Gt equal is false", req("cores", "Gt", &["8"]), false),
            ("Gt non-integer label", req("zone", "Gt", &["1"]), false),
            (
                "Gt non-integer value is invalid",
                req("cores", "Gt", &["x"]),
                false,
            ),
            (
                "Gt two values is invalid",
                req("cores", "Gt", &["1", "2"]),
                false,
            ),
            ("Gt absent key", req("rack", "Gt", &["1"]), false),
            ("Lt true", req("cores", "Lt", &["16"]), true),
            ("Lt false", req("cores", "Lt", &["8"]), false),
            ("unknown operator", req("zone", "Equals", &["a"]), false),
        ];
        for (name, r, want) in cases {
            let term = CompiledTerm::compile(&NodeSelectorTerm {
                match_expressions: vec![r],
                match_fields: vec![],
            });
            assert_eq!(term.matches("n1", &node, false), want, "{name}");
        }
    }

    #[test]
    fn terms_are_ored_and_expressions_anded() {
        let node = labels(&[("zone", "a"), ("disk", "ssd")]);
        let term = |rs: Vec<NodeSelectorRequirement>| NodeSelectorTerm {
            match_expressions: rs,
            match_fields: vec![],
        };
        let sel = |terms: Vec<NodeSelectorTerm>| {
            CompiledNodeSelector::compile(&NodeSelector {
                node_selector_terms: terms,
            })
        };
        // AND inside a term: zone=a AND disk=hdd fails.
        assert!(!sel(vec![term(vec![
            req("zone", "In", &["a"]),
            req("disk", "In", &["hdd"])
        ])])
        .matches("n1", &node));
        // OR across terms: (zone=b) OR (disk=ssd).
        assert!(sel(vec![
            term(vec![req("zone", "In", &["b"])]),
            term(vec![req("disk", "In", &["ssd"])])
        ])
        .matches("n1", &node));
        // An empty term matches nothing; no terms match nothing.
        assert!(!sel(vec![term(vec![])]).matches("n1", &node));
        assert!(!sel(vec![]).matches("n1", &node));
        // An invalid term does not poison a valid one.
        assert!(sel(vec![
            term(vec![req("zone", "Bogus", &[])]),
            term(vec![req("zone", "In", &["a"])])
        ])
        .matches("n1", &node));
    }

    #[test]
    fn match_fields_metadata_name() {
        let node = labels(&[]);
        let t = CompiledTerm::compile(&NodeSelectorTerm {
            match_expressions: vec![],
            match_fields: vec![req("metadata.name", "In", &["n1"])],
        });
        assert!(t.matches("n1", &node, false));
        assert!(!t.matches("n2", &node, false));
        let t = CompiledTerm::compile(&NodeSelectorTerm {
            match_expressions: vec![],
            match_fields: vec![req("metadata.uid", "In", &["n1"])],
        });
        assert!(
            !t.matches("n1", &node, false),
            "only metadata.name is a field"
        );
    }

    #[test]
    fn filter_uses_required_terms() {
        let pod = PodBuilder::new("p")
            .required_affinity(vec![req("zone", "In", &["a"])])
            .info();
        let a = NodeBuilder::new("a").label("zone", "a").info();
        let b = NodeBuilder::new("b").label("zone", "b").info();
        assert_eq!(first_failure(&[&NodeAffinity], &pod, &a), None);
        assert_eq!(
            first_failure(&[&NodeAffinity], &pod, &b),
            Some(Reason::NodeAffinityMismatch)
        );
    }

    #[test]
    fn preferred_score_table() {
        // Terms: zone=a (weight 80), disk=ssd (weight 20).
        // Raw: a+ssd = 100, a = 80, ssd = 20, none = 0; max 100 → unchanged.
        let pod = PodBuilder::new("p")
            .preferred_affinity(80, vec![req("zone", "In", &["a"])])
            .preferred_affinity(20, vec![req("disk", "In", &["ssd"])])
            .info();
        let nodes = [
            NodeBuilder::new("n1")
                .label("zone", "a")
                .label("disk", "ssd")
                .info(),
            NodeBuilder::new("n2").label("zone", "a").info(),
            NodeBuilder::new("n3").label("disk", "ssd").info(),
            NodeBuilder::new("n4").info(),
        ];
        assert_eq!(run_score(&NodeAffinity, &pod, &nodes), vec![100, 80, 20, 0]);
        // Only n1, n2 feasible: raw 100, 80, max 100 → unchanged.
        assert_eq!(run_score(&NodeAffinity, &pod, &nodes[..2]), vec![100, 80]);
        // Raw 80, 20 → 100*80/80 = 100, 100*20/80 = 25.
        assert_eq!(run_score(&NodeAffinity, &pod, &nodes[1..3]), vec![100, 25]);
    }
}
