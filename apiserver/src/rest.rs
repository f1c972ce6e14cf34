//! The write path: create, update (PUT, PATCH, subresources) and delete of objects.
//!
//! Every write ends in [`write_object`], inside one store transaction: namespace lifecycle
//! check, existence/compare-and-swap, ResourceQuota delta check and `status.used` update, and the
//! object stamped with the transaction's revision as its `resourceVersion`. Decoding, defaulting,
//! LimitRange admission and validation happen before the transaction (they need no store state
//! beyond what they read), so the store's write lock is held only for the short commit step.
//! An update reads the object, computes the new one, and commits only if the stored object is
//! still the one it read (Kubernetes' `GuaranteedUpdate`); otherwise it retries, or answers 409
//! when the client gave a resourceVersion.

use bytes::Bytes;
use serde_json::Value;

use kapsel_api::codec::DecodeError;
use kapsel_api::{
    DeleteOptions, ErrorList, FieldError, FieldErrorKind, LimitRange, Pod, ResourceQuota, Service,
    StatusCause, Validate,
};

use crate::admission::{self, limitrange, podsecurity, quota};
use crate::checks;
use crate::errors::{ApiError, ObjRef};
use crate::managed;
use crate::objects::{self as o};
use crate::registry::{self, ResourceDef};
use crate::store::{SledStore, Store, StoreError, Txn};
use crate::svcalloc;

/// Namespaces that exist from the first start.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];
/// Namespaces that may not be deleted.
const UNDELETABLE_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// How unknown fields in a body are treated (`?fieldValidation=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Reject with 400 (kapsel's default: unknown fields are never silently dropped).
    #[default]
    Strict,
    /// Accept, drop them, and answer with `Warning` headers.
    Warn,
    /// Accept and drop them.
    Ignore,
}

#[derive(Clone, Debug, Default)]
pub struct WriteOpts {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    /// Who writes, for `metadata.managedFields` (an Update entry, managed.rs). `None`: the
    /// write keeps the managedFields its candidate carries (server-side apply computes its
    /// own; server-internal writes record nothing).
    pub owner: Option<FieldOwner>,
}

/// The field manager of a write: `fieldManager`, else the User-Agent's first word.
#[derive(Clone, Debug, Default)]
pub struct FieldOwner {
    pub manager: String,
    /// `""`, `status` or `scale`.
    pub subresource: &'static str,
}

/// `owner` as the writer of an Update of a `def` object.
fn writer(def: &ResourceDef, owner: &FieldOwner) -> managed::Writer {
    managed::Writer {
        manager: owner.manager.clone(),
        operation: managed::UPDATE,
        api_version: def.api_version.to_string(),
        subresource: owner.subresource.to_string(),
    }
}

/// Record an Update by `owner` from `old` (`{}` on create) to `new` in `new`'s managedFields.
fn record_update(def: &ResourceDef, owner: &FieldOwner, old: &Value, new: &mut Value) {
    let entries = managed::starting_entries(new, old);
    let w = writer(def, owner);
    let sub = owner.subresource;
    let entries = managed::update(
        &managed::project(old, sub, def.has_status),
        &managed::project(new, sub, def.has_status),
        entries,
        &w,
        &o::now_string(),
    );
    managed::set_entries(new, &entries);
}

/// Record a create by `owner` in `new`'s managedFields: [`record_update`] from `{}`, in one walk.
fn record_create(def: &ResourceDef, owner: &FieldOwner, new: &mut Value) {
    let w = writer(def, owner);
    if !managed::record_create(new, &w, &o::now_string(), def.has_status) {
        record_update(def, owner, &serde_json::json!({}), new);
    }
}

/// The result of a write: the object as stored, and warnings for the `Warning` header.
#[derive(Debug)]
pub struct Outcome {
    pub object: Value,
    pub warnings: Vec<String>,
    /// `object` as stored (compact JSON), when it was written: the response reuses it instead
    /// of encoding the object a second time.
    pub encoded: Option<Bytes>,
}

/// Which part of an object an update may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sub {
    /// The main resource: status changes are ignored, spec changes bump the generation.
    Main,
    /// `/status`: only status changes.
    Status,
    /// Server-internal updates (binding): the candidate is taken as it is, no generation bump.
    Internal,
}

enum Change {
    Create(Value),
    Update { old: Value, new: Value },
    Delete { old: Value },
}

/// Errors inside an update transaction: a real error, or "the object changed under us".
enum TxnErr {
    Api(ApiError),
    Retry,
}

impl From<StoreError> for TxnErr {
    fn from(e: StoreError) -> Self {
        TxnErr::Api(e.into())
    }
}
impl From<ApiError> for TxnErr {
    fn from(e: ApiError) -> Self {
        TxnErr::Api(e)
    }
}

const MAX_ATTEMPTS: usize = 64;

fn ns_def() -> &'static ResourceDef {
    registry::find("", "v1", "namespaces").expect("namespaces are registered")
}
fn quota_def() -> &'static ResourceDef {
    registry::find("", "v1", "resourcequotas").expect("resourcequotas are registered")
}
fn limitrange_def() -> &'static ResourceDef {
    registry::find("", "v1", "limitranges").expect("limitranges are registered")
}

fn to_bytes(v: &Value) -> Result<Bytes, ApiError> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| ApiError::Internal(format!("encoding: {e}")))
}

fn from_bytes(b: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(b)
        .map_err(|e| ApiError::Internal(format!("decoding stored object: {e}")))
}

/// Check (and fill in) `apiVersion` and `kind` of a body for `def`.
pub fn check_type_meta(def: &ResourceDef, body: &mut Value) -> Result<(), ApiError> {
    let Some(m) = body.as_object_mut() else {
        return Err(ApiError::bad_request(format!(
            "the body of a {} must be a JSON object",
            def.kind
        )));
    };
    match m.get("apiVersion") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() || s == def.api_version => {}
        Some(Value::String(s)) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({s}) does not match the expected API version ({})",
                def.api_version
            )))
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "apiVersion must be a string, not {other}"
            )))
        }
    }
    match m.get("kind") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() || s == def.kind => {}
        Some(Value::String(s)) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({s}) does not match the expected kind ({}) of resource {}",
                def.kind,
                def.group_resource()
            )))
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "kind must be a string, not {other}"
            )))
        }
    }
    m.insert("apiVersion".into(), def.api_version.into());
    m.insert("kind".into(), def.kind.into());
    if let Some(md) = m.get("metadata") {
        if !md.is_object() && !md.is_null() {
            return Err(ApiError::BadRequest {
                message: format!(
                    "{} in version \"{}\" cannot be handled as a {}: metadata: expected an object",
                    def.kind, def.version, def.kind
                ),
                causes: vec![StatusCause {
                    reason: Some("FieldValueInvalid".into()),
                    message: Some("expected an object".into()),
                    field: Some("metadata".into()),
                }],
            });
        }
    }
    Ok(())
}

/// Decode, default and re-encode a body as `def`'s kind; unknown fields per `fv`.
pub fn decode(
    def: &ResourceDef,
    v: Value,
    fv: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let prefix = format!(
        "{} in version \"{}\" cannot be handled as a {}",
        def.kind, def.version, def.kind
    );
    match def.ops.decode_default(v) {
        Ok((v, unknown)) if unknown.is_empty() => Ok((v, Vec::new())),
        Ok((v, unknown)) => match fv {
            FieldValidation::Strict => Err(ApiError::BadRequest {
                message: format!("{prefix}: {}", DecodeError::UnknownFields(unknown.clone())),
                causes: unknown
                    .iter()
                    .map(|f| StatusCause {
                        reason: Some("FieldValueUnknown".into()),
                        message: Some(format!("unknown field \"{f}\"")),
                        field: Some(f.clone()),
                    })
                    .collect(),
            }),
            FieldValidation::Warn => Ok((
                v,
                unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect(),
            )),
            FieldValidation::Ignore => Ok((v, Vec::new())),
        },
        Err(DecodeError::Type { path, message }) => Err(ApiError::BadRequest {
            message: if path.is_empty() {
                format!("{prefix}: {message}")
            } else {
                format!("{prefix}: {path}: {message}")
            },
            causes: vec![StatusCause {
                reason: Some("FieldValueInvalid".into()),
                message: Some(message),
                field: Some(path).filter(|p| !p.is_empty()),
            }],
        }),
        Err(e) => Err(ApiError::bad_request(format!("{prefix}: {e}"))),
    }
}

fn invalid(def: &ResourceDef, name: &str, errors: ErrorList) -> ApiError {
    ApiError::Invalid {
        kind: def.kind.to_string(),
        group: def.group.to_string(),
        name: name.to_string(),
        errors,
    }
}

/// Errors in a namespace's `pod-security.kubernetes.io/*` labels.
fn podsecurity_label_errors(obj: &Value) -> ErrorList {
    let labels = obj
        .pointer("/metadata/labels")
        .and_then(|l| serde::Deserialize::deserialize(l).ok())
        .unwrap_or_default();
    podsecurity::label_errors(&labels)
}

/// Kind-specific normalisation after decoding (what Kubernetes' strategies do on create/update).
fn normalize(def: &ResourceDef, obj: &mut Value) {
    if def.plural == "limitranges" {
        if let Ok(mut lr) = <LimitRange as serde::Deserialize>::deserialize(&*obj) {
            if let Some(spec) = lr.spec.as_mut() {
                for item in spec.limits.iter_mut() {
                    limitrange::default_limit_range_item(item);
                }
            }
            if let Ok(v) = serde_json::to_value(&lr) {
                *obj = v;
            }
        }
    }
}

/// Status on create, as Kubernetes' `PrepareForCreate` strategies reset it.
fn status_on_create(def: &ResourceDef, obj: &mut Value) {
    match def.plural {
        "pods" => {
            let mut st = serde_json::json!({"phase": "Pending"});
            if let Some(q) = obj.pointer("/status/qosClass").cloned() {
                st["qosClass"] = q;
            }
            o::set_top(obj, "status", Some(st));
        }
        "namespaces" => o::set_top(obj, "status", Some(serde_json::json!({"phase": "Active"}))),
        "deployments" | "replicasets" | "services" | "resourcequotas" => {
            o::set_top(obj, "status", None)
        }
        _ => {}
    }
}

fn precondition_failed(
    def: &ResourceDef,
    name: &str,
    what: &str,
    want: &str,
    have: &str,
) -> ApiError {
    let (label, meta_label) = if what == "uid" {
        ("UID", "UID")
    } else {
        ("ResourceVersion", "ResourceVersion")
    };
    ApiError::conflict(
        def.err_ref(name),
        format!("Precondition failed: {label} in precondition: {want}, {meta_label} in object meta: {have}"),
    )
}

/// The one place where objects are written. Runs inside a store transaction.
fn write_object(
    txn: &mut dyn Txn,
    def: &ResourceDef,
    ns: &str,
    key: &str,
    change: Change,
    dry_run: bool,
) -> Result<(Value, Option<Bytes>), ApiError> {
    let rv = Value::String(txn.revision().to_string());
    match change {
        Change::Create(mut obj) => {
            let name = o::name(&obj).to_string();
            if def.namespaced {
                check_namespace_active(txn, def, ns, &name)?;
            }
            if txn.get(key)?.is_some() {
                return Err(ApiError::AlreadyExists(def.err_ref(&name)));
            }
            if def.plural == "resourcequotas" {
                recompute_quota_status(txn, ns, &mut obj)?;
            }
            apply_quota(txn, def, ns, &name, None, Some(&obj), dry_run)?;
            if dry_run {
                o::remove_meta(&mut obj, "resourceVersion");
                return Ok((obj, None));
            }
            o::set_meta(&mut obj, "resourceVersion", rv);
            let bytes = to_bytes(&obj)?;
            txn.put(key, bytes.clone());
            Ok((obj, Some(bytes)))
        }
        Change::Update { old, mut new } => {
            let name = o::name(&new).to_string();
            let grace_zero = o::meta_value(&new, "deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                == Some(0);
            if o::is_deleting(&new) && o::finalizers(&new).is_empty() && grace_zero {
                // The last finalizer is gone from a deleting object: delete it now.
                apply_quota(txn, def, ns, &name, Some(&old), None, dry_run)?;
                o::set_meta(&mut new, "resourceVersion", rv);
                if !dry_run {
                    txn.delete(key, to_bytes(&new)?);
                }
                return Ok((new, None));
            }
            if def.plural == "resourcequotas" {
                recompute_quota_status(txn, ns, &mut new)?;
            }
            apply_quota(txn, def, ns, &name, Some(&old), Some(&new), dry_run)?;
            if dry_run {
                return Ok((new, None));
            }
            o::set_meta(&mut new, "resourceVersion", rv);
            let bytes = to_bytes(&new)?;
            txn.put(key, bytes.clone());
            Ok((new, Some(bytes)))
        }
        Change::Delete { mut old } => {
            let name = o::name(&old).to_string();
            apply_quota(txn, def, ns, &name, Some(&old), None, dry_run)?;
            if !dry_run {
                o::set_meta(&mut old, "resourceVersion", rv);
                txn.delete(key, to_bytes(&old)?);
            }
            Ok((old, None))
        }
    }
}

/// Fill in a Service's cluster IP and node ports from what the other stored Services hold, in the
/// write's transaction (see [`svcalloc`]).
fn allocate_service(
    txn: &mut dyn Txn,
    ranges: &svcalloc::Ranges,
    def: &ResourceDef,
    key: &str,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let mut svc: Service = serde::Deserialize::deserialize(&*obj)
        .map_err(|e| ApiError::Internal(format!("re-decoding service: {e}")))?;
    let old: Option<Service> = old.and_then(|o| serde::Deserialize::deserialize(o).ok());
    let mut used = svcalloc::InUse::default();
    for (k, b) in txn.list(&def.prefix(None))? {
        if k == key {
            continue;
        }
        if let Ok(other) = serde_json::from_slice::<Service>(&b) {
            used.add(&other);
        }
    }
    let seeds = svcalloc::Seeds {
        ip: rand::random(),
        port: rand::random(),
    };
    svcalloc::allocate(ranges, &mut svc, old.as_ref(), &used, seeds)
        .map_err(|errs| invalid(def, svc.metadata.name(), errs))?;
    *obj = serde_json::to_value(&svc).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(())
}

/// The typed Pod of an object that went through `decode` (so it decodes).
fn decode_pod(v: &Value) -> Result<Pod, ApiError> {
    serde::Deserialize::deserialize(v)
        .map_err(|e| ApiError::Internal(format!("re-decoding pod: {e}")))
}

/// What admission reads of a stored Namespace, decoded straight from its bytes (every pod
/// create reads its namespace twice: no JSON tree for that).
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct NsView {
    metadata: NsViewMeta,
    status: Option<NsViewStatus>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct NsViewMeta {
    deletion_timestamp: Option<String>,
    labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct NsViewStatus {
    phase: Option<String>,
}

impl NsView {
    fn decode(b: &[u8]) -> Result<NsView, ApiError> {
        serde_json::from_slice(b)
            .map_err(|e| ApiError::Internal(format!("decoding stored namespace: {e}")))
    }
}

fn check_namespace_active(
    txn: &mut dyn Txn,
    def: &ResourceDef,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    let nsd = ns_def();
    let Some(b) = txn.get(&nsd.key("", ns))? else {
        return Err(ApiError::NotFound(nsd.err_ref(ns)));
    };
    let v = NsView::decode(&b)?;
    if v.metadata.deletion_timestamp.is_some()
        || v.status.and_then(|s| s.phase).as_deref() == Some("Terminating")
    {
        return Err(ApiError::Forbidden {
            obj: def.err_ref(name),
            reason: format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        });
    }
    Ok(())
}

/// Check the usage change of an object against every quota of its namespace and write the
/// quotas' new `status.used` — in the caller's transaction.
fn apply_quota(
    txn: &mut dyn Txn,
    def: &ResourceDef,
    ns: &str,
    name: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    dry_run: bool,
) -> Result<(), ApiError> {
    if !def.namespaced || def.plural == "resourcequotas" {
        return Ok(());
    }
    let quotas = txn.list(&quota_def().prefix(Some(ns)))?;
    if quotas.is_empty() {
        return Ok(());
    }
    let old_u = old.map(|v| quota::quota_usage(def, v)).unwrap_or_default();
    let new_u = new.map(|v| quota::quota_usage(def, v)).unwrap_or_default();
    let delta = quota::usage_delta(&old_u, &new_u);
    if delta.is_empty() {
        return Ok(());
    }
    let rv = txn.revision().to_string();
    for (qkey, qbytes) in quotas {
        let Ok(mut q) = serde_json::from_slice::<ResourceQuota>(&qbytes) else {
            tracing::warn!(key = %qkey, "skipping an undecodable ResourceQuota");
            continue;
        };
        let hard = q.spec.as_ref().map(|s| s.hard.clone()).unwrap_or_default();
        if !delta.keys().any(|k| hard.contains_key(k)) {
            continue;
        }
        let qname = q.metadata.name().to_string();
        let forbidden = |reason: String| ApiError::Forbidden {
            obj: def.err_ref(name),
            reason,
        };
        if def.plural == "pods" && old.is_none() {
            if let Some(Ok(pod)) = new.map(<Pod as serde::Deserialize>::deserialize) {
                if let Some(msg) = quota::missing_compute(&pod, &hard) {
                    return Err(forbidden(format!("failed quota: {qname}: {msg}")));
                }
            }
        }
        let used = q
            .status
            .as_ref()
            .map(|s| s.used.clone())
            .unwrap_or_default();
        let new_used = quota::check_quota(&qname, &hard, &used, &delta).map_err(forbidden)?;
        if new_used != used && !dry_run {
            let st = q.status.get_or_insert_with(Default::default);
            st.hard = hard;
            st.used = new_used;
            q.metadata.resource_version = Some(rv.clone());
            let bytes = serde_json::to_vec(&q)
                .map_err(|e| ApiError::Internal(format!("encoding quota: {e}")))?;
            txn.put(&qkey, Bytes::from(bytes));
        }
    }
    Ok(())
}

/// Set a quota's `status.hard` from its spec and compute `status.used` from the namespace's
/// objects as they are in this transaction.
fn recompute_quota_status(txn: &mut dyn Txn, ns: &str, obj: &mut Value) -> Result<(), ApiError> {
    let Ok(mut q) = <ResourceQuota as serde::Deserialize>::deserialize(&*obj) else {
        return Ok(());
    };
    let hard = q.spec.as_ref().map(|s| s.hard.clone()).unwrap_or_default();
    let mut total = quota::Usage::new();
    for def in registry::all().iter().filter(|d| d.namespaced) {
        let relevant = hard.keys().any(|k| {
            *k == format!("count/{}", def.group_resource())
                || k == def.plural
                || (def.plural == "pods"
                    && (k.starts_with("requests.")
                        || k.starts_with("limits.")
                        || k == "cpu"
                        || k == "memory"
                        || k == "ephemeral-storage"))
                || (def.plural == "services" && k.starts_with("services."))
        });
        if !relevant {
            continue;
        }
        for (_, b) in txn.list(&def.prefix(Some(ns)))? {
            if let Ok(v) = serde_json::from_slice::<Value>(&b) {
                quota::accumulate(&mut total, &quota::quota_usage(def, &v));
            }
        }
    }
    let st = q.status.get_or_insert_with(Default::default);
    st.used = quota::used_list(&hard, &total);
    st.hard = hard;
    if let Ok(v) = serde_json::to_value(&q) {
        *obj = v;
    }
    Ok(())
}

/// The API's state: the store, and the signal that closes long-running requests on shutdown.
pub struct Api {
    pub store: SledStore,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Where Services get their cluster IPs and node ports.
    pub service_ranges: svcalloc::Ranges,
}

/// Metadata the server alone sets: an update always keeps the stored object's.
const SERVER_OWNED_META: [&str; 6] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
];

impl Api {
    /// Create the system namespaces that do not exist yet.
    pub async fn bootstrap(&self) -> Result<(), ApiError> {
        let nsd = ns_def();
        for ns in SYSTEM_NAMESPACES {
            if self.store.get(&nsd.key("", ns))?.is_some() {
                continue;
            }
            let body = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            match self.create(nsd, "", body, &WriteOpts::default()).await {
                Ok(_) | Err(ApiError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Read and decode one object.
    pub fn get_object(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
    ) -> Result<(Value, Bytes), ApiError> {
        let b = self
            .store
            .get(&def.key(ns, name))?
            .ok_or_else(|| ApiError::NotFound(def.err_ref(name)))?;
        Ok((from_bytes(&b)?, b))
    }

    /// LimitRange admission of a pod create; returns the pod, decoded once for the create's
    /// other typed checks (validation, Pod Security). `obj` is re-encoded only when a range
    /// changed it.
    fn admit_limit_ranges(&self, ns: &str, obj: &mut Value) -> Result<Pod, ApiError> {
        let mut pod = decode_pod(obj)?;
        let items = self
            .store
            .list(&limitrange_def().prefix(Some(ns)), None, 0)?
            .items;
        if items.is_empty() {
            return Ok(pod);
        }
        let ranges: Vec<LimitRange> = items
            .iter()
            .filter_map(|(_, b)| serde_json::from_slice(b).ok())
            .collect();
        let name = pod.metadata.name().to_string();
        limitrange::apply_limit_ranges(&mut pod, &ranges).map_err(|errs| ApiError::Forbidden {
            obj: ObjRef::new("pods", "", &name),
            reason: admission::aggregate(&errs),
        })?;
        *obj = serde_json::to_value(&pod).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(pod)
    }

    /// Pod Security admission of a pod create or update: 403 when the namespace's `enforce`
    /// level refuses it, else the `warn` level's warnings; `audit` violations go to the audit
    /// log (a tracing event on target `kapsel::audit`).
    fn admit_pod_security(
        &self,
        ns: &str,
        pod: &Pod,
        old: Option<&Value>,
    ) -> Result<Vec<String>, ApiError> {
        let empty = Default::default();
        let spec = pod.spec.as_ref().unwrap_or(&empty);
        if let Some(old) = old {
            let old_spec = decode_pod(old)?.spec.unwrap_or_default();
            if !podsecurity::significant_update(&old_spec, spec) {
                return Ok(Vec::new());
            }
        }
        let labels = match self.store.get(&ns_def().key("", ns))? {
            Some(b) => NsView::decode(&b)?.metadata.labels.unwrap_or_default(),
            None => Default::default(),
        };
        let policy = podsecurity::policy(ns, &labels);
        let d = podsecurity::evaluate(&policy, &pod.metadata, spec);
        for (key, value) in &d.audit {
            tracing::info!(target: "kapsel::audit", namespace = ns, pod = pod.metadata.name(), key = %key, value = %value, "pod security");
        }
        if let Some(reason) = d.forbidden {
            return Err(ApiError::Forbidden {
                obj: ObjRef::new("pods", "", pod.metadata.name()),
                reason,
            });
        }
        Ok(d.warnings)
    }

    /// POST: create an object in namespace `ns` (`""` for cluster-scoped kinds).
    pub async fn create(
        &self,
        def: &'static ResourceDef,
        ns: &str,
        mut body: Value,
        opts: &WriteOpts,
    ) -> Result<Outcome, ApiError> {
        check_type_meta(def, &mut body)?;
        if def.namespaced {
            let body_ns = o::namespace(&body);
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            o::set_meta(&mut body, "namespace", ns.into());
        } else {
            o::remove_meta(&mut body, "namespace");
        }
        if !o::resource_version(&body).is_empty() {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        for f in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            o::remove_meta(&mut body, f);
        }
        let generated = o::name(&body).is_empty() && !o::meta_str(&body, "generateName").is_empty();
        if generated {
            let n = format!(
                "{}{}",
                o::meta_str(&body, "generateName"),
                o::random_suffix()
            );
            o::set_meta(&mut body, "name", n.into());
        }
        let (mut obj, warnings) = decode(def, body, opts.field_validation)?;
        normalize(def, &mut obj);
        status_on_create(def, &mut obj);
        let pod = if def.plural == "pods" {
            Some(self.admit_limit_ranges(ns, &mut obj)?)
        } else {
            None
        };
        let name = o::name(&obj).to_string();
        let mut errs = match &pod {
            Some(pod) => pod.validate(),
            None => def.ops.validate(&obj, None),
        };
        checks::merge_errors(&mut errs, checks::name_errors(def, &name));
        checks::merge_errors(&mut errs, checks::quantity_errors(def, &obj));
        if def.plural == "namespaces" {
            checks::merge_errors(&mut errs, podsecurity_label_errors(&obj));
        }
        if !errs.is_empty() {
            return Err(invalid(def, &name, errs));
        }
        let mut warnings = warnings;
        if let Some(pod) = &pod {
            warnings.extend(self.admit_pod_security(ns, pod, None)?);
        }
        // A v4 UUID from the thread-local CSPRNG: `Uuid::new_v4()` without uuid's `fast-rng`
        // feature makes a getrandom syscall per create.
        let uid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        o::set_meta(&mut obj, "uid", uid.to_string().into());
        o::set_meta(&mut obj, "creationTimestamp", o::now_string().into());
        o::set_meta(&mut obj, "generation", 1.into());
        if let Some(owner) = &opts.owner {
            record_create(def, owner, &mut obj);
        }
        let key = def.key(ns, &name);
        let ranges = &self.service_ranges;
        let ((object, encoded), committed) = self.store.write(|txn| {
            if def.plural == "services" {
                allocate_service(txn, ranges, def, &key, &mut obj, None)?;
            }
            write_object(txn, def, ns, &key, Change::Create(obj), opts.dry_run)
        })?;
        committed.durable().await?;
        Ok(Outcome {
            object,
            warnings,
            encoded,
        })
    }

    /// Turn a candidate for the new object into the object to store (Kubernetes'
    /// `PrepareForUpdate` + defaults + `ValidateUpdate`).
    #[allow(clippy::too_many_arguments)]
    fn prepare_update(
        &self,
        def: &ResourceDef,
        sub: Sub,
        ns: &str,
        name: &str,
        old: &Value,
        mut cand: Value,
        opts: &WriteOpts,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let fv = opts.field_validation;
        check_type_meta(def, &mut cand)?;
        let cand_name = o::name(&cand);
        if cand_name.is_empty() {
            o::set_meta(&mut cand, "name", name.into());
        } else if cand_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({cand_name}) does not match the name on the URL ({name})"
            )));
        }
        if def.namespaced {
            let cns = o::namespace(&cand);
            if !cns.is_empty() && cns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            o::set_meta(&mut cand, "namespace", ns.into());
        } else {
            o::remove_meta(&mut cand, "namespace");
        }
        let crv = o::resource_version(&cand);
        if !crv.is_empty() && crv != o::resource_version(old) {
            return Err(ApiError::stale(def.err_ref(name)));
        }
        let cand = match sub {
            Sub::Main => {
                if def.has_status {
                    o::set_top(&mut cand, "status", old.get("status").cloned());
                }
                cand
            }
            Sub::Status => {
                let mut n = old.clone();
                o::set_top(&mut n, "status", cand.get("status").cloned());
                if opts.owner.is_none() {
                    // Server-side apply to /status computed the ownership itself.
                    o::carry_meta(&cand, &mut n, "managedFields");
                }
                n
            }
            Sub::Internal => {
                // A server-authored change to the stored object (binding: spec.nodeName and the
                // PodScheduled condition, checked by its handler). As Kubernetes' `assignPod`,
                // it skips decoding, defaulting and update validation; ownership stays as it was.
                let mut new = cand;
                for f in SERVER_OWNED_META.iter().chain(&["managedFields"]) {
                    o::carry_meta(old, &mut new, f);
                }
                return Ok((new, Vec::new()));
            }
        };
        let (mut new, warnings) = decode(def, cand, fv)?;
        normalize(def, &mut new);
        for f in SERVER_OWNED_META {
            o::carry_meta(old, &mut new, f);
        }
        let mut errs = Vec::new();
        if o::is_deleting(old) {
            let old_f = o::finalizers(old);
            if o::finalizers(&new).iter().any(|f| !old_f.contains(f)) {
                errs.push(FieldError {
                    kind: FieldErrorKind::Forbidden,
                    field: "metadata.finalizers".into(),
                    value: None,
                    detail: "no new finalizers can be added if the object is being deleted".into(),
                });
            }
        }
        if sub == Sub::Main && def.has_spec && new.get("spec") != old.get("spec") {
            o::set_meta(&mut new, "generation", (o::generation(old) + 1).into());
        }
        checks::merge_errors(&mut errs, def.ops.validate(&new, Some(old)));
        checks::merge_errors(&mut errs, checks::quantity_errors(def, &new));
        if def.plural == "namespaces" && sub != Sub::Status {
            checks::merge_errors(&mut errs, podsecurity_label_errors(&new));
        }
        if !errs.is_empty() {
            return Err(invalid(def, name, errs));
        }
        let mut warnings = warnings;
        if def.plural == "pods" && sub == Sub::Main {
            let pod = decode_pod(&new)?;
            warnings.extend(self.admit_pod_security(ns, &pod, Some(old))?);
        }
        // Server-internal writes returned above, keeping their ownership.
        if let Some(owner) = &opts.owner {
            record_update(def, owner, old, &mut new);
        }
        Ok((new, warnings))
    }

    /// Update an object: `mutate` turns the current object into a candidate and says whether
    /// the candidate carries a resourceVersion precondition from the client.
    pub async fn update<F>(
        &self,
        def: &'static ResourceDef,
        ns: &str,
        name: &str,
        sub: Sub,
        opts: &WriteOpts,
        mut mutate: F,
    ) -> Result<Outcome, ApiError>
    where
        F: FnMut(&Value) -> Result<(Value, bool), ApiError>,
    {
        let key = def.key(ns, name);
        for _ in 0..MAX_ATTEMPTS {
            let (old, old_bytes) = self.get_object(def, ns, name)?;
            let (cand, precondition) = mutate(&old)?;
            let (new, warnings) = self.prepare_update(def, sub, ns, name, &old, cand, opts)?;
            if new == old {
                // Nothing changed: no write, no new resourceVersion (as Kubernetes).
                return Ok(Outcome {
                    object: old,
                    warnings,
                    encoded: None,
                });
            }
            let res = self
                .store
                .write(|txn| -> Result<(Value, Option<Bytes>), TxnErr> {
                    match txn.get(&key)? {
                        None => Err(ApiError::NotFound(def.err_ref(name)).into()),
                        Some(cur) if cur != old_bytes => {
                            if precondition {
                                Err(ApiError::stale(def.err_ref(name)).into())
                            } else {
                                Err(TxnErr::Retry)
                            }
                        }
                        Some(_) => {
                            let mut new = new;
                            if def.plural == "services" {
                                allocate_service(
                                    txn,
                                    &self.service_ranges,
                                    def,
                                    &key,
                                    &mut new,
                                    Some(&old),
                                )?;
                            }
                            Ok(write_object(
                                txn,
                                def,
                                ns,
                                &key,
                                Change::Update { old, new },
                                opts.dry_run,
                            )?)
                        }
                    }
                });
            match res {
                Ok(((object, encoded), committed)) => {
                    committed.durable().await?;
                    return Ok(Outcome {
                        object,
                        warnings,
                        encoded,
                    });
                }
                Err(TxnErr::Retry) => continue,
                Err(TxnErr::Api(e)) => return Err(e),
            }
        }
        Err(ApiError::stale(def.err_ref(name)))
    }

    /// DELETE one object. Returns the object as last stored and whether it is gone now (`false`:
    /// it is kept with a deletionTimestamp until finalizers or the kubelet finish it).
    pub async fn delete(
        &self,
        def: &'static ResourceDef,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
        dry_run: bool,
    ) -> Result<(Value, bool), ApiError> {
        if def.plural == "namespaces" {
            return self.delete_namespace(name, opts, dry_run).await;
        }
        let policy = match (opts.propagation_policy.as_deref(), opts.orphan_dependents) {
            (Some(p @ ("Orphan" | "Foreground" | "Background")), _) => p,
            (Some(other), _) => {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                )))
            }
            (None, Some(true)) => "Orphan",
            (None, _) => "Background",
        };
        if opts.grace_period_seconds.is_some_and(|g| g < 0) {
            return Err(ApiError::bad_request("gracePeriodSeconds must be >= 0"));
        }
        let key = def.key(ns, name);
        for _ in 0..MAX_ATTEMPTS {
            let (old, old_bytes) = self.get_object(def, ns, name)?;
            if let Some(p) = &opts.preconditions {
                if let Some(u) = p.uid.as_deref().filter(|u| *u != o::uid(&old)) {
                    return Err(precondition_failed(def, name, "uid", u, o::uid(&old)));
                }
                if let Some(r) = p
                    .resource_version
                    .as_deref()
                    .filter(|r| *r != o::resource_version(&old))
                {
                    return Err(precondition_failed(
                        def,
                        name,
                        "rv",
                        r,
                        o::resource_version(&old),
                    ));
                }
            }
            let mut fins = o::finalizers(&old);
            let wanted = match policy {
                "Orphan" => Some("orphan"),
                "Foreground" => Some("foregroundDeletion"),
                _ => None,
            };
            if let Some(f) = wanted {
                if !fins.iter().any(|x| x == f) && !o::is_deleting(&old) {
                    fins.push(f.to_string());
                }
            }
            let grace = if def.plural == "pods" {
                let node = old
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let phase = old
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let default = old
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(30);
                if node.is_empty() || phase == "Succeeded" || phase == "Failed" {
                    0
                } else {
                    opts.grace_period_seconds.unwrap_or(default).max(0)
                }
            } else {
                0
            };
            let change = if o::is_deleting(&old) {
                let cur_grace = o::meta_value(&old, "deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if def.plural == "pods" && grace < cur_grace {
                    // A shorter grace period (e.g. the kubelet's final delete with 0).
                    let mut new = old.clone();
                    let when = chrono::Utc::now() + chrono::Duration::seconds(grace);
                    o::set_meta(
                        &mut new,
                        "deletionTimestamp",
                        kapsel_api::Time(chrono::SubsecRound::trunc_subsecs(when, 0))
                            .to_string()
                            .into(),
                    );
                    o::set_meta(&mut new, "deletionGracePeriodSeconds", grace.into());
                    if grace == 0 && fins.is_empty() {
                        Change::Delete { old }
                    } else {
                        Change::Update { old, new }
                    }
                } else {
                    return Ok((old, false));
                }
            } else if grace > 0 || !fins.is_empty() {
                let mut new = old.clone();
                let when = chrono::Utc::now() + chrono::Duration::seconds(grace);
                o::set_meta(
                    &mut new,
                    "deletionTimestamp",
                    kapsel_api::Time(chrono::SubsecRound::trunc_subsecs(when, 0))
                        .to_string()
                        .into(),
                );
                o::set_meta(&mut new, "deletionGracePeriodSeconds", grace.into());
                o::set_finalizers(&mut new, &fins);
                let g = o::generation(&old);
                if g > 0 {
                    o::set_meta(&mut new, "generation", (g + 1).into());
                }
                Change::Update { old, new }
            } else {
                Change::Delete { old }
            };
            let gone = matches!(change, Change::Delete { .. });
            let res = self.store.write(|txn| -> Result<Value, TxnErr> {
                match txn.get(&key)? {
                    None => Err(ApiError::NotFound(def.err_ref(name)).into()),
                    Some(cur) if cur != old_bytes => Err(TxnErr::Retry),
                    Some(_) => Ok(write_object(txn, def, ns, &key, change, dry_run)?.0),
                }
            });
            match res {
                Ok((object, committed)) => {
                    committed.durable().await?;
                    return Ok((object, gone));
                }
                Err(TxnErr::Retry) => continue,
                Err(TxnErr::Api(e)) => return Err(e),
            }
        }
        Err(ApiError::stale(def.err_ref(name)))
    }

    /// Deleting a namespace marks it Terminating, deletes everything in it, then the namespace
    /// itself (unless finalizers keep it). Done inline: kapsel has no namespace controller.
    /// Objects in the namespace are removed at once, finalizers and grace periods notwithstanding.
    async fn delete_namespace(
        &self,
        name: &str,
        opts: &DeleteOptions,
        dry_run: bool,
    ) -> Result<(Value, bool), ApiError> {
        let nsd = ns_def();
        if UNDELETABLE_NAMESPACES.contains(&name) {
            return Err(ApiError::Forbidden {
                obj: nsd.err_ref(name),
                reason: "this namespace may not be deleted".into(),
            });
        }
        let (old, _) = self.get_object(nsd, "", name)?;
        if let Some(p) = &opts.preconditions {
            if let Some(u) = p.uid.as_deref().filter(|u| *u != o::uid(&old)) {
                return Err(precondition_failed(nsd, name, "uid", u, o::uid(&old)));
            }
            if let Some(r) = p
                .resource_version
                .as_deref()
                .filter(|r| *r != o::resource_version(&old))
            {
                return Err(precondition_failed(
                    nsd,
                    name,
                    "rv",
                    r,
                    o::resource_version(&old),
                ));
            }
        }
        if dry_run {
            return Ok((old, false));
        }
        let key = nsd.key("", name);
        let terminating = if o::is_deleting(&old) {
            old
        } else {
            let mut new = old.clone();
            o::set_meta(&mut new, "deletionTimestamp", o::now_string().into());
            o::set_meta(&mut new, "deletionGracePeriodSeconds", 0.into());
            new["status"] = serde_json::json!({"phase": "Terminating"});
            let (v, c) = self.store.write(|txn| -> Result<Value, ApiError> {
                let Some(cur) = txn.get(&key)? else {
                    return Err(ApiError::NotFound(nsd.err_ref(name)));
                };
                let cur = from_bytes(&cur)?;
                let mut new = new;
                if o::is_deleting(&cur) {
                    return Ok(cur);
                }
                // Keep anything written since we read it, except what we set.
                for f in ["finalizers", "labels", "annotations"] {
                    o::carry_meta(&cur, &mut new, f);
                }
                o::set_meta(
                    &mut new,
                    "resourceVersion",
                    txn.revision().to_string().into(),
                );
                txn.put(&key, to_bytes(&new)?);
                Ok(new)
            })?;
            c.durable().await?;
            v
        };
        // Purge the contents, then the namespace, in one transaction.
        let (gone, c) = self.store.write(|txn| -> Result<bool, ApiError> {
            let rv = Value::String(txn.revision().to_string());
            for def in registry::all().iter().filter(|d| d.namespaced) {
                for (k, b) in txn.list(&def.prefix(Some(name)))? {
                    let mut v = from_bytes(&b)?;
                    o::set_meta(&mut v, "resourceVersion", rv.clone());
                    txn.delete(&k, to_bytes(&v)?);
                }
            }
            let Some(cur) = txn.get(&key)? else {
                return Ok(true);
            };
            let mut cur = from_bytes(&cur)?;
            if o::finalizers(&cur).is_empty() {
                o::set_meta(&mut cur, "resourceVersion", rv);
                txn.delete(&key, to_bytes(&cur)?);
                Ok(true)
            } else {
                Ok(false)
            }
        })?;
        c.durable().await?;
        Ok((terminating, gone))
    }
}
