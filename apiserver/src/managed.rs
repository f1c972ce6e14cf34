//! Field ownership: `metadata.managedFields`, as Kubernetes' structured-merge-diff keeps it.
//!
//! Every write records which manager set which fields:
//! - **Update** (POST, PUT, non-apply PATCH): the manager (`fieldManager`, else the first word
//!   of the User-Agent) takes every field the write added or changed; those fields leave every
//!   other manager, and fields the write removed leave everyone ([`update`]).
//! - **Apply** (server-side apply): the manager owns exactly the fields of its applied
//!   configuration; fields it applied before and leaves out now are removed from the object when
//!   no other manager owns them; changing a field another manager owns is a conflict (`409`)
//!   unless `force=true`, which takes the field over ([`apply`]).
//!
//! Field sets are kept in the `FieldsV1` format itself: a tree keyed by path elements —
//! `f:<field>`, `k:<key fields as JSON>` (an item of an associative list), `v:<JSON value>` (an
//! item of a set), `i:<index>` — where `"."` marks a node that is itself a member. The schema of
//! the built-in kinds (which lists are associative and by which keys, which are sets, which
//! lists and maps are atomic) is Kubernetes' (`x-kubernetes-list-type`, `-list-map-keys`,
//! `-map-type`), decided by field name as the strategic merge patch does (patch.rs).
//!
//! Everything here is a pure function over `serde_json::Value`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// A set of field paths (FieldsV1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Set(BTreeMap<String, Node>);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Node {
    member: bool,
    children: Set,
}

/// A path: a list of path elements (`f:spec`, `k:{"name":"web"}`, …).
pub type Path = Vec<String>;

impl Set {
    /// Parse a `fieldsV1` object (anything else is the empty set).
    pub fn from_fields_v1(v: &Value) -> Set {
        let mut s = Set::default();
        if let Some(m) = v.as_object() {
            for (k, c) in m {
                if k == "." {
                    continue;
                }
                let empty = c.as_object().is_none_or(Map::is_empty);
                let node = Node {
                    member: empty || c.get(".").is_some(),
                    children: Set::from_fields_v1(c),
                };
                s.0.insert(k.clone(), node);
            }
        }
        s
    }

    /// The `fieldsV1` object of this set.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        for (k, n) in &self.0 {
            let mut c = match n.children.to_fields_v1() {
                Value::Object(c) => c,
                _ => Map::new(),
            };
            if n.member && !c.is_empty() {
                c.insert(".".into(), json!({}));
            }
            m.insert(k.clone(), Value::Object(c));
        }
        Value::Object(m)
    }

    /// No members at all.
    pub fn is_empty(&self) -> bool {
        self.0.values().all(|n| !n.member && n.children.is_empty())
    }

    pub fn insert(&mut self, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let n = self.0.entry(first.clone()).or_default();
        if rest.is_empty() {
            n.member = true;
        } else {
            n.children.insert(rest);
        }
    }

    /// Whether `path` is a member.
    pub fn has(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => false,
            Some((first, rest)) => self.0.get(first).is_some_and(|n| {
                if rest.is_empty() {
                    n.member
                } else {
                    n.children.has(rest)
                }
            }),
        }
    }

    /// Whether some member lies strictly below `path`.
    fn has_below(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => !self.is_empty(),
            Some((first, rest)) => self
                .0
                .get(first)
                .is_some_and(|n| n.children.has_below(rest)),
        }
    }

    fn prune_empty(mut self) -> Set {
        self.0 = std::mem::take(&mut self.0)
            .into_iter()
            .filter_map(|(k, n)| {
                let children = n.children.prune_empty();
                (n.member || !children.0.is_empty()).then_some((
                    k,
                    Node {
                        member: n.member,
                        children,
                    },
                ))
            })
            .collect();
        self
    }

    pub fn union(&self, o: &Set) -> Set {
        let mut out = self.clone();
        for (k, n) in &o.0 {
            let e = out.0.entry(k.clone()).or_default();
            e.member |= n.member;
            e.children = e.children.union(&n.children);
        }
        out
    }

    /// Members of both.
    pub fn intersection(&self, o: &Set) -> Set {
        let mut out = Set::default();
        for (k, n) in &self.0 {
            if let Some(m) = o.0.get(k) {
                out.0.insert(
                    k.clone(),
                    Node {
                        member: n.member && m.member,
                        children: n.children.intersection(&m.children),
                    },
                );
            }
        }
        out.prune_empty()
    }

    /// Members of `self` that are not members of `o` (children are kept).
    pub fn difference(&self, o: &Set) -> Set {
        let mut out = Set::default();
        for (k, n) in &self.0 {
            let node = match o.0.get(k) {
                None => n.clone(),
                Some(m) => Node {
                    member: n.member && !m.member,
                    children: n.children.difference(&m.children),
                },
            };
            out.0.insert(k.clone(), node);
        }
        out.prune_empty()
    }

    /// Members of `self` that are neither members of `o` nor below one.
    pub fn recursive_difference(&self, o: &Set) -> Set {
        let mut out = Set::default();
        for (k, n) in &self.0 {
            match o.0.get(k) {
                None => {
                    out.0.insert(k.clone(), n.clone());
                }
                Some(m) if m.member => {}
                Some(m) => {
                    out.0.insert(
                        k.clone(),
                        Node {
                            member: n.member,
                            children: n.children.recursive_difference(&m.children),
                        },
                    );
                }
            }
        }
        out.prune_empty()
    }

    /// Every member path, parents before their children.
    pub fn members(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for (k, n) in &self.0 {
            prefix.push(k.clone());
            if n.member {
                out.push(prefix.clone());
            }
            n.children.collect(prefix, out);
            prefix.pop();
        }
    }
}

/// A path as Kubernetes prints it in conflicts: `.spec.template.spec.containers[name="web"].image`.
pub fn path_string(path: &[String]) -> String {
    let mut s = String::new();
    for pe in path {
        if let Some(f) = pe.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = pe.strip_prefix("k:") {
            let fields: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            s.push_str(&format!("[{}]", fields.join(",")));
        } else if let Some(v) = pe.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = pe.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        }
    }
    s
}

// ---- the schema of the built-in kinds ----

/// How a list field merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListType {
    /// Replaced as a whole (`x-kubernetes-list-type: atomic`, Kubernetes' default).
    Atomic,
    /// Of scalars, merged as a set (`set`).
    Set,
    /// Of objects, merged by key fields (`map` with `x-kubernetes-list-map-keys`).
    Map(&'static [&'static str]),
}

/// The default of a key field that an item may leave out.
fn key_default(field: &str) -> Option<Value> {
    (field == "protocol").then(|| json!("TCP"))
}

fn list_type_of(field: &str, items: &[Value]) -> ListType {
    let has = |k: &str| items.iter().any(|i| i.get(k).is_some());
    let t = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => ListType::Map(&["name"]),
        "ports" if has("containerPort") => ListType::Map(&["containerPort", "protocol"]),
        "ports" if has("port") => ListType::Map(&["port", "protocol"]),
        "volumeMounts" => ListType::Map(&["mountPath"]),
        "volumeDevices" => ListType::Map(&["devicePath"]),
        "conditions" => ListType::Map(&["type"]),
        "ownerReferences" => ListType::Map(&["uid"]),
        "hostAliases" | "podIPs" | "hostIPs" => ListType::Map(&["ip"]),
        "topologySpreadConstraints" => ListType::Map(&["topologyKey", "whenUnsatisfiable"]),
        "finalizers" => ListType::Set,
        _ => ListType::Atomic,
    };
    // Items that cannot be keyed (a missing key, duplicates) make the list atomic.
    match t {
        ListType::Map(keys) => {
            let mut seen = std::collections::HashSet::new();
            for i in items {
                match item_key(i, keys) {
                    Some(k) if seen.insert(k.clone()) => {}
                    _ => return ListType::Atomic,
                }
            }
            t
        }
        ListType::Set => {
            let mut seen = std::collections::HashSet::new();
            if items
                .iter()
                .all(|i| !i.is_object() && !i.is_array() && seen.insert(i.to_string()))
            {
                t
            } else {
                ListType::Atomic
            }
        }
        ListType::Atomic => t,
    }
}

/// The list type of `field`, looking at the items of both sides.
fn list_type(field: &str, a: &[Value], b: &[Value]) -> ListType {
    // One side alone (a create, an added list): no need to copy the items together.
    if b.is_empty() {
        return list_type_of(field, a);
    }
    if a.is_empty() {
        return list_type_of(field, b);
    }
    let both: Vec<Value> = a.iter().chain(b).cloned().collect();
    let t = list_type_of(field, &both);
    if t == ListType::Atomic {
        // Duplicates across the two sides are fine; each side must be keyable on its own.
        let (ta, tb) = (list_type_of(field, a), list_type_of(field, b));
        if ta == tb && ta != ListType::Atomic {
            return ta;
        }
        if a.is_empty() {
            return tb;
        }
        if b.is_empty() {
            return ta;
        }
    }
    t
}

/// Maps replaced as a whole (`x-kubernetes-map-type: atomic` / `+structType=atomic`).
fn atomic_map(field: &str, v: &Value) -> bool {
    match field {
        // metav1.LabelSelector (Service's `selector` is a plain map of strings).
        "selector" => v.get("matchLabels").is_some() || v.get("matchExpressions").is_some(),
        "labelSelector" | "namespaceSelector" | "podSelector" | "configMapKeyRef"
        | "secretKeyRef" | "fieldRef" | "resourceFieldRef" => true,
        _ => false,
    }
}

/// The `k:` path element of an associative list item (key fields sorted, defaults filled).
fn item_key(item: &Value, keys: &[&str]) -> Option<String> {
    let mut m = BTreeMap::new();
    for k in keys {
        let v = item.get(*k).cloned().or_else(|| key_default(k))?;
        if v.is_object() || v.is_array() || v.is_null() {
            return None;
        }
        m.insert(k.to_string(), v);
    }
    Some(format!("k:{}", serde_json::to_string(&m).ok()?))
}

fn value_key(v: &Value) -> String {
    format!("v:{v}")
}

// ---- field sets of values ----

/// The fields an object sets (SMD's `ToFieldSet`).
pub fn to_set(v: &Value) -> Set {
    let mut s = Set::default();
    if let Some(m) = v.as_object() {
        walk_map(m, &mut Vec::new(), &mut s);
    }
    s
}

fn walk_map(m: &Map<String, Value>, path: &mut Path, s: &mut Set) {
    for (k, v) in m {
        path.push(format!("f:{k}"));
        walk_field(k, v, path, s);
        path.pop();
    }
}

fn walk_field(field: &str, v: &Value, path: &mut Path, s: &mut Set) {
    match v {
        Value::Object(o) if !o.is_empty() && !atomic_map(field, v) => walk_map(o, path, s),
        Value::Array(a) => match list_type(field, a, &[]) {
            ListType::Atomic => s.insert(path),
            ListType::Set => {
                for i in a {
                    path.push(value_key(i));
                    s.insert(path);
                    path.pop();
                }
            }
            ListType::Map(keys) => {
                for i in a {
                    let Some(k) = item_key(i, keys) else { continue };
                    path.push(k);
                    s.insert(path);
                    if let Some(o) = i.as_object() {
                        walk_map(o, path, s);
                    }
                    path.pop();
                }
            }
        },
        _ => s.insert(path),
    }
}

/// Find the list index an item path element names.
fn find_item(a: &[Value], pe: &str) -> Option<usize> {
    if let Some(k) = pe.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(k).ok()?;
        let keys: Vec<&str> = want.keys().map(String::as_str).collect();
        let wanted = Some(pe.to_string());
        a.iter().position(|i| item_key(i, &keys) == wanted)
    } else if let Some(v) = pe.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        a.iter().position(|i| *i == want)
    } else if let Some(i) = pe.strip_prefix("i:") {
        i.parse().ok().filter(|i| *i < a.len())
    } else {
        None
    }
}

/// The value at `path`.
pub fn get<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for pe in path {
        cur = match (pe.strip_prefix("f:"), cur) {
            (Some(f), Value::Object(m)) => m.get(f)?,
            (None, Value::Array(a)) => &a[find_item(a, pe)?],
            _ => return None,
        };
    }
    Some(cur)
}

/// Remove the value at `path` (nothing when it is not there).
fn remove(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for pe in parents {
        cur = match (pe.strip_prefix("f:"), cur) {
            (Some(f), Value::Object(m)) => match m.get_mut(f) {
                Some(c) => c,
                None => return,
            },
            (None, Value::Array(a)) => match find_item(a, pe) {
                Some(i) => &mut a[i],
                None => return,
            },
            _ => return,
        };
    }
    match (last.strip_prefix("f:"), cur) {
        (Some(f), Value::Object(m)) => {
            m.remove(f);
        }
        (None, Value::Array(a)) => {
            if let Some(i) = find_item(a, last) {
                a.remove(i);
            }
        }
        _ => {}
    }
}

/// Fields added, removed and changed from `old` to `new` (SMD's `Compare`).
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: Set,
    pub removed: Set,
    pub modified: Set,
}

pub fn compare(old: &Value, new: &Value) -> Comparison {
    let (so, sn) = (to_set(old), to_set(new));
    let mut modified = Set::default();
    for p in so.intersection(&sn).members() {
        let leaf = p
            .last()
            .is_some_and(|pe| pe.starts_with("f:") || pe.starts_with("i:"));
        if leaf && get(old, &p) != get(new, &p) {
            modified.insert(&p);
        }
    }
    Comparison {
        added: sn.difference(&so),
        removed: so.difference(&sn),
        modified,
    }
}

// ---- merging an applied configuration ----

/// Merge an applied configuration into the live object by the schema: maps merge, associative
/// lists merge item by item (live order, new items appended), sets unite, atomic lists and maps
/// and scalars are replaced. Nulls in the configuration are ignored.
pub fn merge(live: &Value, cfg: &Value) -> Value {
    merge_field("", live, cfg)
}

fn merge_field(field: &str, live: &Value, cfg: &Value) -> Value {
    match (live, cfg) {
        (Value::Object(l), Value::Object(c)) if !atomic_map(field, cfg) => {
            let mut out = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    continue;
                }
                let merged = match l.get(k) {
                    Some(lv) => merge_field(k, lv, cv),
                    None => merge_field(k, &Value::Null, cv),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => match list_type(field, l, c) {
            ListType::Atomic => cfg.clone(),
            ListType::Set => {
                let mut out = l.clone();
                out.extend(c.iter().filter(|i| !l.contains(i)).cloned());
                Value::Array(out)
            }
            ListType::Map(keys) => {
                let ck: Vec<Option<String>> = c.iter().map(|i| item_key(i, keys)).collect();
                let mut out: Vec<Value> = l
                    .iter()
                    .map(|li| {
                        let k = item_key(li, keys);
                        match ck.iter().position(|x| *x == k) {
                            Some(j) => merge_field("", li, &c[j]),
                            None => li.clone(),
                        }
                    })
                    .collect();
                let lk: Vec<Option<String>> = l.iter().map(|i| item_key(i, keys)).collect();
                for (j, ci) in c.iter().enumerate() {
                    if !lk.contains(&ck[j]) {
                        out.push(merge_field("", &Value::Null, ci));
                    }
                }
                Value::Array(out)
            }
        },
        (_, Value::Object(c)) => Value::Object(
            c.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), merge_field(k, &Value::Null, v)))
                .collect(),
        ),
        _ => cfg.clone(),
    }
}

// ---- managers ----

pub const APPLY: &str = "Apply";
pub const UPDATE: &str = "Update";

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub time: Option<String>,
    /// `""`, `status` or `scale`.
    pub subresource: String,
    pub fields: Set,
}

/// Who writes: the manager, the operation, the object's apiVersion, the subresource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Writer {
    pub manager: String,
    pub operation: &'static str,
    pub api_version: String,
    pub subresource: String,
}

impl Entry {
    fn is(&self, w: &Writer) -> bool {
        self.manager == w.manager
            && self.operation == w.operation
            && self.subresource == w.subresource
            && (w.operation == APPLY || self.api_version == w.api_version)
    }

    /// As Kubernetes names a manager in conflicts: `"kubectl"`, `"x" using apps/v1`,
    /// `"x" with subresource "status" using v1`.
    pub fn display(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == UPDATE {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

/// Decode `metadata.managedFields` (`None`: not a list of valid entries).
pub fn decode(v: &Value) -> Option<Vec<Entry>> {
    let list = v.as_array()?;
    list.iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let op = s("operation");
            if op != APPLY && op != UPDATE {
                return None;
            }
            if !matches!(
                e.get("fieldsType").and_then(Value::as_str),
                None | Some("FieldsV1")
            ) {
                return None;
            }
            Some(Entry {
                manager: s("manager"),
                operation: op,
                api_version: s("apiVersion"),
                time: e.get("time").and_then(Value::as_str).map(str::to_string),
                subresource: s("subresource"),
                fields: Set::from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null)),
            })
        })
        .collect()
}

/// Encode entries in Kubernetes' order (operation, time, manager, apiVersion, subresource).
pub fn encode(entries: &[Entry]) -> Value {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    Value::Array(
        sorted
            .into_iter()
            .map(|e| {
                entry_json(
                    &e.manager,
                    &e.operation,
                    &e.api_version,
                    e.time.as_deref(),
                    &e.subresource,
                    e.fields.to_fields_v1(),
                )
            })
            .collect(),
    )
}

/// One `managedFields` entry as JSON.
fn entry_json(
    manager: &str,
    operation: &str,
    api_version: &str,
    time: Option<&str>,
    subresource: &str,
    fields_v1: Value,
) -> Value {
    let mut m = Map::new();
    m.insert("manager".into(), json!(manager));
    m.insert("operation".into(), json!(operation));
    m.insert("apiVersion".into(), json!(api_version));
    if let Some(t) = time {
        m.insert("time".into(), json!(t));
    }
    m.insert("fieldsType".into(), json!("FieldsV1"));
    m.insert("fieldsV1".into(), fields_v1);
    if !subresource.is_empty() {
        m.insert("subresource".into(), json!(subresource));
    }
    Value::Object(m)
}

/// The managed fields of a create by `w`: what `update` from `{}` records, computed in one walk
/// of `obj` — no projected copy, no intermediate [`Set`] — as creates are the hot path. Returns
/// `false` (and changes nothing) when the request brings its own managedFields: then the general
/// [`update`] applies.
pub fn record_create(obj: &mut Value, w: &Writer, now: &str, has_status: bool) -> bool {
    if obj.pointer("/metadata/managedFields").is_some() || w.subresource == "status" {
        return false;
    }
    let Some(top) = obj.as_object() else {
        return false;
    };
    let mut fields = Map::new();
    for (k, v) in top {
        match k.as_str() {
            "apiVersion" | "kind" => continue,
            "status" if has_status => continue,
            "metadata" if v.is_object() => {
                let mut node = Map::new();
                for (mk, mv) in v.as_object().into_iter().flatten() {
                    if !SERVER_META.contains(&mk.as_str()) {
                        field_node(mk, mv, &mut node);
                    }
                }
                if !node.is_empty() {
                    fields.insert("f:metadata".into(), Value::Object(node));
                }
            }
            _ => field_node(k, v, &mut fields),
        }
    }
    let entries = if fields.is_empty() {
        None
    } else {
        Some(Value::Array(vec![entry_json(
            &w.manager,
            w.operation,
            &w.api_version,
            Some(now),
            &w.subresource,
            Value::Object(fields),
        )]))
    };
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        match entries {
            Some(e) => {
                meta.insert("managedFields".into(), e);
            }
            None => {
                meta.remove("managedFields");
            }
        }
    }
    true
}

/// The metadata fields the server sets, which no manager owns (see [`project`]).
const SERVER_META: &[&str] = &[
    "name",
    "namespace",
    "generateName",
    "creationTimestamp",
    "selfLink",
    "uid",
    "generation",
    "managedFields",
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Add field `field` (value `v`) to the FieldsV1 map `out`, as `to_set(..).to_fields_v1()` does.
fn field_node(field: &str, v: &Value, out: &mut Map<String, Value>) {
    let mut node = Map::new();
    let member = fields_below(field, v, &mut node);
    if member && !node.is_empty() {
        node.insert(".".into(), json!({}));
    }
    if member || !node.is_empty() {
        out.insert(format!("f:{field}"), Value::Object(node));
    }
}

/// Fill `node` with the FieldsV1 of what lies below `field`; whether the field is itself a
/// member (a scalar, an atomic map or list) — the cases of [`walk_field`].
fn fields_below(field: &str, v: &Value, node: &mut Map<String, Value>) -> bool {
    match v {
        Value::Object(o) if !o.is_empty() && !atomic_map(field, v) => {
            for (k, c) in o {
                field_node(k, c, node);
            }
            false
        }
        Value::Array(a) => match list_type(field, a, &[]) {
            ListType::Atomic => true,
            ListType::Set => {
                for i in a {
                    node.insert(value_key(i), json!({}));
                }
                false
            }
            ListType::Map(keys) => {
                for i in a {
                    let Some(k) = item_key(i, keys) else { continue };
                    let mut child = Map::new();
                    for (ik, iv) in i.as_object().into_iter().flatten() {
                        field_node(ik, iv, &mut child);
                    }
                    if !child.is_empty() {
                        child.insert(".".into(), json!({}));
                    }
                    node.insert(k, Value::Object(child));
                }
                false
            }
        },
        _ => true,
    }
}

/// The entries a write starts from: the request's own when it sets valid, non-empty ones
/// (clients may rewrite managedFields; `[{}]` resets them), else the live object's.
pub fn starting_entries(request: &Value, live: &Value) -> Vec<Entry> {
    let from = |o: &Value| {
        o.pointer("/metadata/managedFields")
            .and_then(decode)
            .unwrap_or_default()
    };
    match request.pointer("/metadata/managedFields") {
        Some(Value::Array(a)) if a.len() == 1 && a[0].as_object().is_some_and(Map::is_empty) => {
            Vec::new()
        }
        Some(v) => match decode(v) {
            Some(e) if !e.is_empty() => e,
            _ => from(live),
        },
        None => from(live),
    }
}

/// Store `entries` as the object's `metadata.managedFields` (removed when empty).
pub fn set_entries(obj: &mut Value, entries: &[Entry]) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), encode(entries));
    }
}

/// Which part of an object a write's ownership covers: the fields a manager can own, without
/// the ones the server sets (apiVersion, kind, name, uid, resourceVersion, …) and without
/// `status` on the main resource / everything but `status` on the status subresource.
pub fn project(obj: &Value, subresource: &str, has_status: bool) -> Value {
    let mut m = obj.as_object().cloned().unwrap_or_default();
    if subresource == "status" {
        return match m.remove("status") {
            Some(s) => json!({ "status": s }),
            None => json!({}),
        };
    }
    m.remove("apiVersion");
    m.remove("kind");
    if has_status {
        m.remove("status");
    }
    if let Some(Value::Object(meta)) = m.get_mut("metadata") {
        for f in SERVER_META {
            meta.remove(*f);
        }
        if meta.is_empty() {
            m.remove("metadata");
        }
    }
    Value::Object(m)
}

/// An Update by `w` from `old` to `new` (both already projected): the writer takes every field
/// added or changed, others lose those and every removed field. Entries left empty are dropped.
pub fn update(
    old: &Value,
    new: &Value,
    mut entries: Vec<Entry>,
    w: &Writer,
    now: &str,
) -> Vec<Entry> {
    // From nothing (a create) every field is added: no need to compare.
    let c = if old.as_object().is_some_and(Map::is_empty) {
        Comparison {
            added: to_set(new),
            ..Comparison::default()
        }
    } else {
        compare(old, new)
    };
    let changed = if c.modified.is_empty() {
        c.added
    } else {
        c.added.union(&c.modified)
    };
    for e in &mut entries {
        e.fields = e.fields.difference(&changed);
        if !c.removed.is_empty() {
            e.fields = e.fields.difference(&c.removed);
        }
    }
    let own = if c.removed.is_empty() {
        changed
    } else {
        changed.difference(&c.removed)
    };
    if !own.is_empty() {
        match entries.iter_mut().find(|e| e.is(w)) {
            Some(e) => {
                e.fields = e.fields.union(&own);
                e.time = Some(now.to_string());
            }
            None => entries.push(Entry {
                manager: w.manager.clone(),
                operation: w.operation.to_string(),
                api_version: w.api_version.clone(),
                time: Some(now.to_string()),
                subresource: w.subresource.clone(),
                fields: own,
            }),
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    entries
}

/// A field another manager owns, which an apply would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The manager as Kubernetes prints it (see [`Entry::display`]).
    pub manager: String,
    /// The field as Kubernetes prints it (`.spec.replicas`).
    pub field: String,
}

/// Kubernetes' message for apply conflicts.
pub fn conflict_message(c: &[Conflict]) -> String {
    if let [one] = c {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.manager, one.field
        );
    }
    let mut by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for x in c {
        by.entry(&x.manager).or_default().push(&x.field);
    }
    let mut lines = Vec::new();
    for (m, fields) in by {
        lines.push(format!("conflicts with {m}:"));
        lines.extend(fields.iter().map(|f| format!("- {f}")));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        c.len(),
        lines.join("\n")
    )
}

/// The result of an apply: the new object (projection-independent: the live object with the
/// configuration merged in and the manager's dropped fields removed) and the entries.
#[derive(Debug)]
pub struct Applied {
    pub object: Value,
    pub entries: Vec<Entry>,
}

/// Server-side apply of `cfg` by `w` onto `live` (`{}` when creating), whose ownership is
/// `entries`. `project` strips what ownership does not cover (see [`project`]).
pub fn apply(
    live: &Value,
    cfg: &Value,
    mut entries: Vec<Entry>,
    w: &Writer,
    force: bool,
    now: &str,
    project: &dyn Fn(&Value) -> Value,
) -> Result<Applied, Vec<Conflict>> {
    let mut merged = merge(live, cfg);
    let set = to_set(&project(cfg));
    let last = match entries.iter_mut().find(|e| e.is(w)) {
        Some(e) => std::mem::replace(&mut e.fields, set.clone()),
        None => {
            entries.push(Entry {
                manager: w.manager.clone(),
                operation: w.operation.to_string(),
                api_version: w.api_version.clone(),
                time: None,
                subresource: w.subresource.clone(),
                fields: set.clone(),
            });
            Set::default()
        }
    };
    // What the manager applied before and leaves out now goes, unless someone else owns it
    // (a named field also stays while anything below it is owned).
    let owned = entries
        .iter()
        .fold(Set::default(), |acc, e| acc.union(&e.fields));
    // Parents first: a removed list item takes its fields along (its key is gone after).
    for p in last.difference(&set).members() {
        let named = p.last().is_some_and(|pe| pe.starts_with("f:"));
        if !owned.has(&p) && (!named || !owned.has_below(&p)) {
            remove(&mut merged, &p);
        }
    }
    let c = compare(&project(live), &project(&merged));
    let changed = c.added.union(&c.modified);
    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| !e.is(w)) {
        for p in e.fields.intersection(&changed).members() {
            conflicts.push(Conflict {
                manager: e.display(),
                field: path_string(&p),
            });
        }
    }
    if !force && !conflicts.is_empty() {
        conflicts.sort_by(|a, b| (&a.manager, &a.field).cmp(&(&b.manager, &b.field)));
        return Err(conflicts);
    }
    let object_changed = merged != *live;
    for e in &mut entries {
        if e.is(w) {
            if object_changed || e.time.is_none() {
                e.time = Some(now.to_string());
            }
        } else {
            e.fields = e.fields.difference(&changed).difference(&c.removed);
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    Ok(Applied {
        object: merged,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `record_create` (one walk, the create fast path) must record exactly what the general
    /// `update` from `{}` over the projected object records.
    #[test]
    fn record_create_matches_the_general_update_from_nothing() {
        let objs = [
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "ns", "uid": "u", "generation": 1,
                    "creationTimestamp": "t", "labels": {"app": "web"},
                    "finalizers": ["a", "b"], "ownerReferences": [{"uid": "o1", "name": "rs"}]},
                "spec": {"containers": [
                    {"name": "c", "image": "i",
                     "ports": [{"containerPort": 80}, {"containerPort": 81, "protocol": "UDP"}],
                     "env": [{"name": "A", "value": "1"},
                             {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                     "args": ["x", "y"], "resources": {"requests": {"cpu": "1"}, "limits": {}},
                     "volumeMounts": [{"mountPath": "/d", "name": "v"}]}],
                    "volumes": [{"name": "v", "emptyDir": {}}], "nodeSelector": {"k": "v"},
                    "tolerations": [{"key": "a"}]},
                "status": {"phase": "Pending"}}),
            // Lists that cannot be keyed are atomic; empty lists and maps; nothing but server
            // metadata; a LabelSelector (atomic map).
            json!({"metadata": {"name": "x", "finalizers": []},
                "spec": {"containers": [{"image": "no-name"}], "ports": [],
                    "selector": {"matchLabels": {"a": "b"}}, "empty": {}}}),
            json!({"metadata": {"name": "only-server-fields", "uid": "u"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                "data": {"k": "v"}, "status": {"kept": "without a status subresource"}}),
            json!({"metadata": {"name": "dup", "finalizers": ["a", "a"]},
                "spec": {"containers": [{"name": "c"}, {"name": "c"}]}}),
        ];
        let w = Writer {
            manager: "m".into(),
            operation: UPDATE,
            api_version: "v1".into(),
            subresource: String::new(),
        };
        for obj in &objs {
            for has_status in [true, false] {
                let mut fast = obj.clone();
                assert!(record_create(&mut fast, &w, "now", has_status));
                let mut slow = obj.clone();
                let entries = update(
                    &json!({}),
                    &project(obj, "", has_status),
                    Vec::new(),
                    &w,
                    "now",
                );
                set_entries(&mut slow, &entries);
                assert_eq!(fast, slow, "{obj} (has_status {has_status})");
            }
        }
        // A request with its own managedFields takes the general path.
        let mut own = json!({"metadata": {"name": "x", "managedFields": [{}]}});
        assert!(!record_create(&mut own, &w, "now", true));
        assert_eq!(
            own,
            json!({"metadata": {"name": "x", "managedFields": [{}]}})
        );
    }

    /// `update` skips the comparison when the old object is empty (a create); that is only
    /// right because comparing anything with `{}` adds every field and changes none.
    #[test]
    fn an_update_from_nothing_owns_exactly_the_fields_a_comparison_adds() {
        let objs = [
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [
                {"name": "c", "image": "i", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                 "args": ["x", "y"]}], "nodeSelector": {"k": "v"}}}),
            json!({"data": {"k": "v"}, "spec": {"finalizers": ["x"], "empty": {}}}),
            json!({}),
        ];
        for new in objs {
            let c = compare(&json!({}), &new);
            assert!(c.modified.is_empty() && c.removed.is_empty());
            assert_eq!(c.added, to_set(&new));
            let entries = update(&json!({}), &new, Vec::new(), &w("m", UPDATE), "t");
            let want: Vec<Set> = if c.added.is_empty() {
                vec![]
            } else {
                vec![c.added]
            };
            let got: Vec<Set> = entries.into_iter().map(|e| e.fields).collect();
            assert_eq!(got, want, "{new}");
        }
    }

    fn w(manager: &str, op: &'static str) -> Writer {
        Writer {
            manager: manager.into(),
            operation: op,
            api_version: "apps/v1".into(),
            subresource: String::new(),
        }
    }

    fn proj(v: &Value) -> Value {
        project(v, "", true)
    }

    fn paths(s: &Set) -> Vec<String> {
        s.members().iter().map(|p| path_string(p)).collect()
    }

    fn deploy(replicas: i64, image: &str, extra_env: bool) -> Value {
        let mut env = vec![json!({"name": "A", "value": "1"})];
        if extra_env {
            env.push(json!({"name": "B", "value": "2"}));
        }
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                    "name": "web", "image": image, "env": env,
                    "ports": [{"containerPort": 80}],
                    "args": ["a", "b"]
                }]}}
            }
        })
    }

    #[test]
    fn field_sets_follow_the_schema() {
        let s = to_set(&proj(&deploy(2, "web:1", false)));
        assert_eq!(
            s.to_fields_v1(),
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {},
                            "f:args": {},
                            "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                ".": {}, "f:containerPort": {}
                            }}
                        }}}
                    }
                }
            })
        );
        // FieldsV1 round trip.
        assert_eq!(Set::from_fields_v1(&s.to_fields_v1()), s);
        // Sets, empty maps and nulls.
        let s =
            to_set(&json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"x": {}, "y": null}}));
        assert_eq!(
            paths(&s),
            vec![
                ".metadata.finalizers[=\"a\"]",
                ".metadata.finalizers[=\"b\"]",
                ".spec.x",
                ".spec.y"
            ]
        );
        // Unkeyable items (a duplicate key) make the list atomic.
        let s = to_set(&json!({"env": [{"name": "A"}, {"name": "A"}]}));
        assert_eq!(paths(&s), vec![".env"]);
    }

    #[test]
    fn set_algebra() {
        let a = to_set(&json!({"a": 1, "b": {"c": 1, "d": 1}}));
        let b = to_set(&json!({"b": {"c": 2}, "e": 1}));
        assert_eq!(paths(&a.union(&b)), vec![".a", ".b.c", ".b.d", ".e"]);
        assert_eq!(paths(&a.intersection(&b)), vec![".b.c"]);
        assert_eq!(paths(&a.difference(&b)), vec![".a", ".b.d"]);
        let whole_b = to_set(&json!({"b": null}));
        assert_eq!(paths(&a.recursive_difference(&whole_b)), vec![".a"]);
        assert!(a.difference(&a).is_empty());
        assert!(Set::default().is_empty());
    }

    #[test]
    fn path_strings() {
        let p: Path = vec![
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"web\"}".into(),
            "f:ports".into(),
            "k:{\"containerPort\":80,\"protocol\":\"TCP\"}".into(),
            "f:containerPort".into(),
        ];
        assert_eq!(
            path_string(&p),
            ".spec.containers[name=\"web\"].ports[containerPort=80,protocol=\"TCP\"].containerPort"
        );
        assert_eq!(
            path_string(&["f:finalizers".into(), "v:\"x\"".into()]),
            ".finalizers[=\"x\"]"
        );
        assert_eq!(path_string(&["f:a".into(), "i:3".into()]), ".a[3]");
    }

    #[test]
    fn merge_by_list_types() {
        let live = json!({"spec": {
            "containers": [
                {"name": "web", "image": "web:1", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                {"name": "log", "image": "log:1"}
            ],
            "args": ["a", "b"],
            "selector": {"matchLabels": {"app": "web", "x": "y"}},
            "finalizers": ["a"]
        }});
        let cfg = json!({"spec": {
            "containers": [
                {"name": "side", "image": "side:1"},
                {"name": "web", "image": "web:2", "ports": [{"containerPort": 80}, {"containerPort": 81}]}
            ],
            "args": ["c"],
            "selector": {"matchLabels": {"app": "web"}},
            "finalizers": ["b", "a"],
            "gone": null
        }});
        let m = merge(&live, &cfg);
        assert_eq!(
            m,
            json!({"spec": {
                "containers": [
                    {"name": "web", "image": "web:2", "ports": [
                        {"containerPort": 80, "protocol": "TCP"}, {"containerPort": 81}
                    ]},
                    {"name": "log", "image": "log:1"},
                    {"name": "side", "image": "side:1"}
                ],
                "args": ["c"],
                "selector": {"matchLabels": {"app": "web"}},
                "finalizers": ["a", "b"]
            }})
        );
    }

    #[test]
    fn update_takes_changed_fields_from_others() {
        let v1 = proj(&deploy(2, "web:1", true));
        let created = update(&json!({}), &v1, vec![], &w("kubectl-create", UPDATE), "t1");
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].fields, to_set(&v1));
        assert_eq!(created[0].time.as_deref(), Some("t1"));
        // A second manager changes the image and removes env B.
        let v2 = proj(&deploy(2, "web:2", false));
        let e = update(&v1, &v2, created, &w("editor", UPDATE), "t2");
        let creator = e.iter().find(|e| e.manager == "kubectl-create").unwrap();
        let editor = e.iter().find(|e| e.manager == "editor").unwrap();
        let img = ".spec.template.spec.containers[name=\"web\"].image";
        assert_eq!(paths(&editor.fields), vec![img]);
        assert!(!paths(&creator.fields).contains(&img.to_string()));
        assert!(!paths(&creator.fields)
            .iter()
            .any(|p| p.contains("[name=\"B\"]")));
        // A no-op update records nothing.
        let same = update(&v2, &v2, e.clone(), &w("third", UPDATE), "t3");
        assert_eq!(same, e);
        // Entries are told apart by manager, operation, subresource and (Update) apiVersion.
        let mut other_version = w("editor", UPDATE);
        other_version.api_version = "apps/v2".into();
        let e2 = update(
            &v2,
            &proj(&deploy(3, "web:2", false)),
            e,
            &other_version,
            "t4",
        );
        assert_eq!(e2.iter().filter(|e| e.manager == "editor").count(), 2);
    }

    #[test]
    fn apply_owns_exactly_the_applied_fields_and_creates() {
        let cfg = deploy(2, "web:1", true);
        let a = apply(
            &json!({}),
            &cfg,
            vec![],
            &w("kubectl", APPLY),
            false,
            "t1",
            &proj,
        )
        .unwrap();
        assert_eq!(a.object, cfg);
        assert_eq!(a.entries.len(), 1);
        assert_eq!(a.entries[0].operation, "Apply");
        assert_eq!(a.entries[0].fields, to_set(&proj(&cfg)));
        let enc = encode(&a.entries);
        assert_eq!(enc[0]["manager"], "kubectl");
        assert_eq!(enc[0]["fieldsType"], "FieldsV1");
        assert_eq!(decode(&enc).unwrap(), a.entries);
        // Applying the same again changes nothing and keeps the time.
        let b = apply(
            &a.object,
            &cfg,
            a.entries.clone(),
            &w("kubectl", APPLY),
            false,
            "t2",
            &proj,
        )
        .unwrap();
        assert_eq!(b.object, a.object);
        assert_eq!(b.entries, a.entries);
    }

    #[test]
    fn apply_removes_fields_the_manager_dropped_unless_someone_else_owns_them() {
        let v1 = deploy(2, "web:1", true);
        let a = apply(
            &json!({}),
            &v1,
            vec![],
            &w("kubectl", APPLY),
            false,
            "t1",
            &proj,
        )
        .unwrap();
        // Someone else adds a label and an annotation (Update).
        let mut live = a.object.clone();
        live["metadata"]["labels"]["team"] = json!("a");
        live["metadata"]["annotations"] = json!({"note": "x"});
        let e = update(
            &proj(&a.object),
            &proj(&live),
            a.entries,
            &w("kubectl-label", UPDATE),
            "t2",
        );
        // kubectl applies without env B and with another label: B goes, team stays.
        let mut v2 = deploy(2, "web:1", false);
        v2["metadata"]["labels"]["tier"] = json!("fe");
        let b = apply(&live, &v2, e, &w("kubectl", APPLY), false, "t3", &proj).unwrap();
        let env = &b.object["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env, &json!([{"name": "A", "value": "1"}]));
        assert_eq!(
            b.object["metadata"]["labels"],
            json!({"app": "web", "team": "a", "tier": "fe"})
        );
        // kubectl now applies without the label `tier` and without `args`.
        let mut v3 = deploy(2, "web:1", false);
        v3["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("args");
        let c = apply(
            &b.object,
            &v3,
            b.entries,
            &w("kubectl", APPLY),
            false,
            "t4",
            &proj,
        )
        .unwrap();
        assert_eq!(
            c.object["metadata"]["labels"],
            json!({"app": "web", "team": "a"})
        );
        assert!(c.object["spec"]["template"]["spec"]["containers"][0]
            .get("args")
            .is_none());
        assert_eq!(c.object["metadata"]["annotations"], json!({"note": "x"}));
        // A field a second applier shares is kept when the first drops it.
        let shared = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 2}});
        let d = apply(
            &c.object,
            &shared,
            c.entries,
            &w("other", APPLY),
            false,
            "t5",
            &proj,
        )
        .unwrap();
        let mut v4 = v3.clone();
        v4["spec"].as_object_mut().unwrap().remove("replicas");
        let e = apply(
            &d.object,
            &v4,
            d.entries,
            &w("kubectl", APPLY),
            false,
            "t6",
            &proj,
        )
        .unwrap();
        assert_eq!(e.object["spec"]["replicas"], 2, "still owned by other");
        // Once nobody owns it, it goes.
        let empty =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
        let f = apply(
            &e.object,
            &empty,
            e.entries,
            &w("other", APPLY),
            false,
            "t7",
            &proj,
        )
        .unwrap();
        assert!(f.object["spec"].get("replicas").is_none());
        assert!(
            !f.entries.iter().any(|e| e.manager == "other"),
            "empty entries dropped"
        );
    }

    #[test]
    fn conflicts_and_force() {
        let v1 = deploy(2, "web:1", false);
        let a = apply(
            &json!({}),
            &v1,
            vec![],
            &w("kubectl", APPLY),
            false,
            "t1",
            &proj,
        )
        .unwrap();
        let other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 3}});
        let err = apply(
            &a.object,
            &other,
            a.entries.clone(),
            &w("other", APPLY),
            false,
            "t2",
            &proj,
        )
        .unwrap_err();
        assert_eq!(
            err,
            vec![Conflict {
                manager: "\"kubectl\"".into(),
                field: ".spec.replicas".into()
            }]
        );
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"
        );
        // The same value is no conflict: both own it.
        let same = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 2}});
        let s = apply(
            &a.object,
            &same,
            a.entries.clone(),
            &w("other", APPLY),
            false,
            "t2",
            &proj,
        )
        .unwrap();
        assert_eq!(s.entries.len(), 2);
        // force takes the field over.
        let f = apply(
            &a.object,
            &other,
            a.entries,
            &w("other", APPLY),
            true,
            "t3",
            &proj,
        )
        .unwrap();
        assert_eq!(f.object["spec"]["replicas"], 3);
        let kubectl = f.entries.iter().find(|e| e.manager == "kubectl").unwrap();
        assert!(!kubectl.fields.has(&["f:spec".into(), "f:replicas".into()]));
        let o = f.entries.iter().find(|e| e.manager == "other").unwrap();
        assert_eq!(paths(&o.fields), vec![".spec.replicas"]);
        // Now kubectl's own apply conflicts with "other".
        let err = apply(
            &f.object,
            &v1,
            f.entries.clone(),
            &w("kubectl", APPLY),
            false,
            "t4",
            &proj,
        )
        .unwrap_err();
        assert_eq!(err[0].manager, "\"other\"");
        // Conflicts with Update managers name their apiVersion; several are grouped.
        let mut live = f.object.clone();
        live["spec"]["replicas"] = json!(5);
        live["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:9");
        let e = update(
            &proj(&f.object),
            &proj(&live),
            f.entries,
            &w("kubectl-edit", UPDATE),
            "t5",
        );
        let err = apply(&live, &v1, e, &w("kubectl", APPLY), false, "t6", &proj).unwrap_err();
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 2 conflicts: conflicts with \"kubectl-edit\" using apps/v1:\n\
             - .spec.replicas\n\
             - .spec.template.spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn starting_entries_prefer_the_request() {
        let entry = json!([{"manager": "m", "operation": "Update", "apiVersion": "v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}}]);
        let live = json!({"metadata": {"managedFields": entry.clone()}});
        assert_eq!(starting_entries(&json!({"metadata": {}}), &live).len(), 1);
        assert!(starting_entries(&json!({"metadata": {"managedFields": [{}]}}), &live).is_empty());
        let other = json!([{"manager": "n", "operation": "Apply", "apiVersion": "v1",
            "fieldsType": "FieldsV1", "fieldsV1": {}}]);
        let got = starting_entries(&json!({"metadata": {"managedFields": other}}), &live);
        assert_eq!(got[0].manager, "n");
        let bad = json!([{"manager": "n", "operation": "Bogus"}]);
        let got = starting_entries(&json!({"metadata": {"managedFields": bad}}), &live);
        assert_eq!(got[0].manager, "m", "undecodable: the live object's");
    }

    #[test]
    fn projection() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "uid": "u", "resourceVersion": "1", "labels": {"a": "b"}},
            "spec": {"x": 1}, "status": {"phase": "Running"}});
        assert_eq!(
            project(&obj, "", true),
            json!({"metadata": {"labels": {"a": "b"}}, "spec": {"x": 1}})
        );
        assert_eq!(
            project(&obj, "status", true),
            json!({"status": {"phase": "Running"}})
        );
    }
}
