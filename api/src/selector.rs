//! Label selectors (`matchLabels` + `matchExpressions`, and the string form
//! `a=b,c!=d,e in (x,y),!f`) and field selectors.

use std::collections::BTreeMap;
use std::fmt;

use crate::meta::LabelSelector;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

/// A parsed label selector. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Selector {
    pub fn everything() -> Self {
        Selector::default()
    }
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
    /// Parse the string form used in `?labelSelector=`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let _ = s;
        todo!("selector parsing")
    }
    /// Convert a `metav1.LabelSelector`.
    pub fn from_label_selector(ls: &LabelSelector) -> Result<Self, String> {
        let _ = ls;
        todo!("LabelSelector conversion")
    }
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let _ = labels;
        todo!("selector matching")
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!("selector formatting")
    }
}

/// A field selector (`metadata.name=x,spec.nodeName!=`): only `=`, `==` and `!=`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// (field, value, negated)
    pub terms: Vec<(String, String, bool)>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let _ = s;
        todo!("field selector parsing")
    }
    /// `get` returns the value of a field of the object, `None` when the field is not supported.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        let _ = get;
        todo!("field selector matching")
    }
}
