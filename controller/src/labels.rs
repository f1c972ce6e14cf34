//! Evaluating a structured `metav1.LabelSelector` against labels.
//!
//! The controllers only ever need the structured form (`matchLabels` + `matchExpressions`), so this
//! is a direct port of `metav1.LabelSelectorAsSelector` + `Matches` that does not depend on the
//! string parser in `kapsel_api::selector`.

use std::collections::BTreeMap;

use kapsel_api::LabelSelector;

use crate::error::{Error, Result};

/// Does `sel` select `labels`? An empty selector selects everything (as in `apps/v1`, where the
/// API server refuses empty selectors anyway). Unknown operators are an error.
pub fn matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool> {
    for (k, v) in &sel.match_labels {
        if labels.get(k) != Some(v) {
            return Ok(false);
        }
    }
    for req in &sel.match_expressions {
        let val = labels.get(&req.key);
        let ok = match req.operator.as_str() {
            "In" => val.is_some_and(|v| req.values.contains(v)),
            "NotIn" => val.is_none_or(|v| !req.values.contains(v)),
            "Exists" => val.is_some(),
            "DoesNotExist" => val.is_none(),
            op => return Err(Error::InvalidSelector(format!("unknown operator {op:?}"))),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `matches`, treating an invalid selector as selecting nothing (what Kubernetes' controllers do).
pub fn selects(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    matches(sel, labels).unwrap_or(false)
}

/// Is the selector empty (selects everything)?
pub fn is_everything(sel: &LabelSelector) -> bool {
    sel.match_labels.is_empty() && sel.match_expressions.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::LabelSelectorRequirement;

    fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn match_labels_and_expressions() {
        let sel = LabelSelector {
            match_labels: l(&[("app", "web")]),
            match_expressions: vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: vec!["a".into(), "b".into()],
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: vec![],
                },
            ],
        };
        assert!(selects(&sel, &l(&[("app", "web"), ("tier", "a")])));
        assert!(!selects(&sel, &l(&[("app", "web"), ("tier", "c")])));
        assert!(!selects(
            &sel,
            &l(&[("app", "web"), ("tier", "a"), ("canary", "1")])
        ));
        assert!(!selects(&sel, &l(&[("tier", "a")])));
        assert!(selects(&LabelSelector::default(), &l(&[])));
        let bad = LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: "x".into(),
                operator: "Near".into(),
                values: vec![],
            }],
            ..Default::default()
        };
        assert!(matches(&bad, &l(&[])).is_err());
    }
}
