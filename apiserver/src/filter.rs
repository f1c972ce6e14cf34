//! `labelSelector` / `fieldSelector` filtering of JSON objects, shared by list and watch.

use std::collections::BTreeMap;

use serde_json::Value;

use kapsel_api::selector::{FieldSelector, Selector};

use crate::errors::ApiError;
use crate::objects as o;
use crate::registry::{field_value, ResourceDef};

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub labels: Option<Selector>,
    pub fields: Option<FieldSelector>,
}

impl Filter {
    /// Parse the query parameters; unknown field labels are a 400 as in Kubernetes.
    pub fn parse(
        def: &ResourceDef,
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<Filter, ApiError> {
        let labels = match label_selector.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => {
                let sel = Selector::parse(s).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse requirement: {e}"))
                })?;
                Some(sel).filter(|s| !s.is_empty())
            }
            None => None,
        };
        let fields = match field_selector.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => {
                let fs = FieldSelector::parse(s).map_err(|e| {
                    ApiError::bad_request(format!("invalid field selector {s:?}: {e}"))
                })?;
                for (f, _, _) in &fs.terms {
                    if !def.supports_field(f) {
                        return Err(ApiError::bad_request(format!(
                            "field label not supported: {f}"
                        )));
                    }
                }
                Some(fs).filter(|f| !f.terms.is_empty())
            }
            None => None,
        };
        Ok(Filter { labels, fields })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(sel) = &self.labels {
            let labels: BTreeMap<String, String> = o::labels(obj)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            if !sel.matches(&labels) {
                return false;
            }
        }
        if let Some(fs) = &self.fields {
            if !fs.matches(|f| Some(field_value(obj, f))) {
                return false;
            }
        }
        true
    }

    /// Match raw stored bytes (parsed only when there is something to match).
    pub fn matches_bytes(&self, b: &[u8]) -> bool {
        if self.is_empty() {
            return true;
        }
        serde_json::from_slice::<Value>(b).is_ok_and(|v| self.matches(&v))
    }
}
