//! Helpers on JSON objects (`metadata.*`, `status`, type meta).

use serde_json::{Map, Value};

use kapsel_api::Time;

/// `metadata.<field>` as a string (`""` when missing).
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}
pub fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}
pub fn resource_version(obj: &Value) -> &str {
    meta_str(obj, "resourceVersion")
}
pub fn uid(obj: &Value) -> &str {
    meta_str(obj, "uid")
}

/// The `metadata` map, created when missing (a non-object is replaced by an object).
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(o) = obj else {
        unreachable!("made an object above")
    };
    let m = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    let Value::Object(m) = m else {
        unreachable!("made an object above")
    };
    m
}

pub fn set_meta(obj: &mut Value, field: &str, v: Value) {
    meta_mut(obj).insert(field.to_string(), v);
}

pub fn remove_meta(obj: &mut Value, field: &str) {
    meta_mut(obj).remove(field);
}

pub fn meta_value<'a>(obj: &'a Value, field: &str) -> Option<&'a Value> {
    obj.get("metadata").and_then(|m| m.get(field))
}

/// Make `to`'s `metadata.<field>` what `from` has: a copy, or absent when `from` has none.
pub fn carry_meta(from: &Value, to: &mut Value, field: &str) {
    match meta_value(from, field) {
        Some(v) => set_meta(to, field, v.clone()),
        None => remove_meta(to, field),
    }
}

pub fn generation(obj: &Value) -> i64 {
    meta_value(obj, "generation")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    meta_value(obj, "finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn set_finalizers(obj: &mut Value, f: &[String]) {
    if f.is_empty() {
        remove_meta(obj, "finalizers");
    } else {
        set_meta(obj, "finalizers", Value::from(f.to_vec()));
    }
}

pub fn is_deleting(obj: &Value) -> bool {
    meta_value(obj, "deletionTimestamp").is_some_and(|v| !v.is_null())
}

pub fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    meta_value(obj, "labels").and_then(Value::as_object)
}

pub fn now_string() -> String {
    Time::now().to_string()
}

/// Set a top-level field, or remove it when `v` is `None`.
pub fn set_top(obj: &mut Value, field: &str, v: Option<Value>) {
    if let Some(o) = obj.as_object_mut() {
        match v {
            Some(v) => {
                o.insert(field.to_string(), v);
            }
            None => {
                o.remove(field);
            }
        }
    }
}

/// Five random characters from Kubernetes' name-suffix alphabet (no vowels, no look-alikes).
pub fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_helpers() {
        let mut v = serde_json::json!({"kind": "Pod"});
        assert_eq!(name(&v), "");
        set_meta(&mut v, "name", "a".into());
        assert_eq!(name(&v), "a");
        set_finalizers(&mut v, &["x".to_string()]);
        assert_eq!(finalizers(&v), vec!["x"]);
        set_finalizers(&mut v, &[]);
        assert!(meta_value(&v, "finalizers").is_none());
        let mut bad = serde_json::json!({"metadata": 3});
        set_meta(&mut bad, "name", "b".into());
        assert_eq!(name(&bad), "b");
        assert_eq!(random_suffix().len(), 5);
    }
}
