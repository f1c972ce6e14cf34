//! Port of `pkg/controller/deployment/util/deployment_util.go` (and the bits of
//! `pkg/controller/controller_utils.go` it uses): fenceposts, revisions, template hashing,
//! conditions and the rollout predicates.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use kapsel_api::labels as wk;
use kapsel_api::{
    Condition, Deployment, DeploymentStatus, IntOrString, PodTemplateSpec, ReplicaSet, Time,
};

use crate::error::{Error, Result};

pub const ROLLING_UPDATE: &str = "RollingUpdate";
pub const RECREATE: &str = "Recreate";

/// Annotation of the (deprecated, `extensions/v1beta1`) `spec.rollbackTo`; Kubernetes' controller
/// still honours it on `apps/v1` objects.
pub const DEPRECATED_ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// `maxRevHistoryLengthInChars`.
pub const MAX_REV_HISTORY_LENGTH_IN_CHARS: usize = 2000;

// Condition types and reasons (deployment_util.go).
pub const COND_AVAILABLE: &str = "Available";
pub const COND_PROGRESSING: &str = "Progressing";
pub const COND_REPLICA_FAILURE: &str = "ReplicaFailure";
pub const REASON_MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const REASON_MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
pub const REASON_RS_UPDATED: &str = "ReplicaSetUpdated";
pub const REASON_FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
pub const REASON_NEW_RS: &str = "NewReplicaSetCreated";
pub const REASON_FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const REASON_NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const REASON_TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const REASON_PAUSED: &str = "DeploymentPaused";
pub const REASON_RESUMED: &str = "DeploymentResumed";
pub const REASON_ROLLBACK_REVISION_NOT_FOUND: &str = "DeploymentRollbackRevisionNotFound";
pub const REASON_ROLLBACK_TEMPLATE_UNCHANGED: &str = "DeploymentRollbackTemplateUnchanged";
pub const REASON_ROLLBACK_DONE: &str = "DeploymentRollback";

/// Annotations never copied between a Deployment and its ReplicaSets (`annotationsToSkip`).
pub fn skip_copy_annotation(key: &str) -> bool {
    matches!(
        key,
        wk::LAST_APPLIED
            | wk::REVISION
            | wk::REVISION_HISTORY
            | wk::DESIRED_REPLICAS
            | wk::MAX_REPLICAS
            | DEPRECATED_ROLLBACK_TO
    )
}

// ------------------------------------------------------------------ defaults

/// `spec.replicas` (default 1).
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn set_rs_replicas(rs: &mut ReplicaSet, n: i32) {
    rs.spec.get_or_insert_with(Default::default).replicas = Some(n);
}

pub fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}

pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

pub fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

pub fn strategy_type(d: &Deployment) -> &str {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or(ROLLING_UPDATE)
}

pub fn is_rolling_update(d: &Deployment) -> bool {
    strategy_type(d) == ROLLING_UPDATE
}

fn default_quarter() -> IntOrString {
    IntOrString::String("25%".into())
}

/// `(maxSurge, maxUnavailable)` as written, with the `apps/v1` defaults (25 %, 25 %).
pub fn surge_and_unavailable(d: &Deployment) -> (IntOrString, IntOrString) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    (
        ru.and_then(|r| r.max_surge.clone())
            .unwrap_or_else(default_quarter),
        ru.and_then(|r| r.max_unavailable.clone())
            .unwrap_or_else(default_quarter),
    )
}

pub fn min_ready_seconds(d: &Deployment) -> i32 {
    d.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

pub fn revision_history_limit(d: &Deployment) -> Option<i32> {
    Some(
        d.spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10),
    )
}

/// `progressDeadlineSeconds` (default 600); `None` when set to `MaxInt32` (no deadline).
pub fn progress_deadline_seconds(d: &Deployment) -> Option<i32> {
    let v = d
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(600);
    (v != i32::MAX).then_some(v)
}

/// `HasProgressDeadline`.
pub fn has_progress_deadline(d: &Deployment) -> bool {
    progress_deadline_seconds(d).is_some()
}

pub fn is_paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

pub fn template(d: &Deployment) -> PodTemplateSpec {
    d.spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default()
}

pub fn rs_template(rs: &ReplicaSet) -> PodTemplateSpec {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default()
}

pub fn generation(d: &Deployment) -> i64 {
    d.metadata.generation.unwrap_or(0)
}

// ------------------------------------------------------------------ fenceposts

/// `intstr.GetScaledValueFromIntOrPercent`: an integer as is, or `ceil`/`floor(pct·total/100)`.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let bad = |reason: &str| Error::InvalidIntOrPercent {
                field: "intOrPercent",
                value: s.clone(),
                reason: reason.to_string(),
            };
            let Some(num) = s.strip_suffix('%') else {
                return Err(bad("invalid type: string is not a percentage"));
            };
            let pct: i64 = num.parse().map_err(|_| bad("invalid percentage"))?;
            let prod = pct * i64::from(total);
            // Integer arithmetic, identical to math.Ceil/Floor(float64(v)*float64(total)/100)
            // for the ranges validation allows (both non-negative).
            let r = if round_up {
                (prod + 99).div_euclid(100)
            } else {
                prod.div_euclid(100)
            };
            i32::try_from(r).map_err(|_| bad("out of range"))
        }
    }
}

/// `ResolveFenceposts`: surge rounds up, unavailable rounds down; if both resolve to 0,
/// unavailable becomes 1 ("on the theory that surge might not work due to quota").
pub fn resolve_fenceposts(
    max_surge: &IntOrString,
    max_unavailable: &IntOrString,
    desired: i32,
) -> Result<(i32, i32)> {
    let surge = scaled_value(max_surge, desired, true)?;
    let mut unavailable = scaled_value(max_unavailable, desired, false)?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

/// `MaxUnavailable(deployment)`.
pub fn max_unavailable(d: &Deployment) -> i32 {
    let desired = replicas(d);
    if !is_rolling_update(d) || desired == 0 {
        return 0;
    }
    let (s, u) = surge_and_unavailable(d);
    let (_, mu) = resolve_fenceposts(&s, &u, desired).unwrap_or((0, 1));
    mu.min(desired)
}

/// `MaxSurge(deployment)`.
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling_update(d) {
        return 0;
    }
    let (s, u) = surge_and_unavailable(d);
    resolve_fenceposts(&s, &u, replicas(d))
        .map(|(s, _)| s)
        .unwrap_or(0)
}

/// Pods an RS may have right now as far as surge accounting is concerned. Kubernetes uses
/// `spec.replicas`; kapsel also counts pods the ReplicaSet controller has not removed yet
/// (`status.replicas` above a freshly lowered `spec.replicas`), so a stale cache can never let
/// the total exceed `replicas + maxSurge`.
pub fn rs_pods_upper_bound(rs: &ReplicaSet) -> i32 {
    rs_replicas(rs).max(rs_status_replicas(rs))
}

/// Available pods of an RS that will survive its current `spec.replicas` (kapsel's conservative
/// reading of a status computed before a scale-down was observed).
pub fn rs_available_bounded(rs: &ReplicaSet) -> i32 {
    rs_available(rs).min(rs_replicas(rs))
}

/// `NewRSNewReplicas`: how many replicas the new RS should have after one scale-up step.
pub fn new_rs_new_replicas(
    d: &Deployment,
    all_rss: &[&ReplicaSet],
    new_rs: &ReplicaSet,
) -> Result<i32> {
    let desired = replicas(d);
    match strategy_type(d) {
        ROLLING_UPDATE => {
            let (s, _) = surge_and_unavailable(d);
            let surge = scaled_value(&s, desired, true)?;
            let current: i32 = all_rss.iter().map(|rs| rs_pods_upper_bound(rs)).sum();
            let max_total = desired + surge;
            if current >= max_total {
                return Ok(rs_replicas(new_rs));
            }
            let up = (max_total - current).min(desired - rs_replicas(new_rs));
            Ok(rs_replicas(new_rs) + up)
        }
        RECREATE => Ok(desired),
        other => Err(Error::UnsupportedStrategy(other.to_string())),
    }
}

// ------------------------------------------------------------------ counting

/// `GetReplicaCountForReplicaSets` (spec).
pub fn replica_count(rss: &[&ReplicaSet]) -> i32 {
    rss.iter().map(|rs| rs_replicas(rs)).sum()
}
/// `GetActualReplicaCountForReplicaSets` (status).
pub fn actual_replica_count(rss: &[&ReplicaSet]) -> i32 {
    rss.iter().map(|rs| rs_status_replicas(rs)).sum()
}
/// `GetReadyReplicaCountForReplicaSets`.
pub fn ready_replica_count(rss: &[&ReplicaSet]) -> i32 {
    rss.iter().map(|rs| rs_ready(rs)).sum()
}
/// `GetAvailableReplicaCountForReplicaSets`.
pub fn available_replica_count(rss: &[&ReplicaSet]) -> i32 {
    rss.iter().map(|rs| rs_available(rs)).sum()
}

/// `FilterActiveReplicaSets`: RSs with `spec.replicas > 0`.
pub fn is_active_rs(rs: &ReplicaSet) -> bool {
    rs_replicas(rs) > 0
}

// ------------------------------------------------------------------ revisions

/// `Revision(rs)`: the `deployment.kubernetes.io/revision` annotation, 0 when absent.
pub fn revision(meta: &kapsel_api::ObjectMeta) -> Option<i64> {
    match meta.annotations.get(wk::REVISION) {
        None => Some(0),
        Some(v) => v.parse().ok(),
    }
}

/// `MaxRevision`.
pub fn max_revision(rss: &[&ReplicaSet]) -> i64 {
    rss.iter()
        .filter_map(|rs| revision(&rs.metadata))
        .max()
        .unwrap_or(0)
}

/// `LastRevision`: the second-highest revision.
pub fn last_revision(rss: &[&ReplicaSet]) -> i64 {
    let (mut max, mut sec) = (0, 0);
    for v in rss.iter().filter_map(|rs| revision(&rs.metadata)) {
        if v >= max {
            sec = max;
            max = v;
        } else if v > sec {
            sec = v;
        }
    }
    sec
}

// ------------------------------------------------------------------ templates

fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    t.metadata.labels.remove(wk::POD_TEMPLATE_HASH);
    t
}

/// `EqualIgnoreHash`: templates equal apart from the `pod-template-hash` label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// FNV-1a, 32 bit (`hash/fnv.New32a`).
pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `rand.SafeEncodeString`: map each character onto an alphabet without vowels, so a hash never
/// spells a word.
pub fn safe_encode_string(s: &str) -> String {
    let a = crate::podutil::ALPHANUMS;
    s.chars()
        .map(|c| a[(c as usize) % a.len()] as char)
        .collect()
}

/// `controller.ComputeHash`: FNV-32a of the template (Kubernetes hashes a spew dump of the Go
/// struct; kapsel hashes its canonical JSON, which is equally deterministic), then the
/// collision count as 8 little-endian bytes, printed in decimal and safe-encoded.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut data = json;
    if let Some(c) = collision_count {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&(c as u32).to_le_bytes());
        data.extend_from_slice(&b);
    }
    safe_encode_string(&fnv32a(&data).to_string())
}

// ------------------------------------------------------------------ ordering

fn created(meta: &kapsel_api::ObjectMeta) -> Option<Time> {
    meta.creation_timestamp
}

/// `ReplicaSetsByCreationTimestamp` (ties by name).
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    created(&a.metadata)
        .cmp(&created(&b.metadata))
        .then_with(|| a.metadata.name().cmp(b.metadata.name()))
}

/// `ReplicaSetsBySizeOlder`: larger first, then older first.
pub fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(a, b))
}

/// `ReplicaSetsBySizeNewer`: larger first, then newer first.
pub fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(b, a))
}

/// `ReplicaSetsByRevision` (ties by creation).
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let ra = revision(&a.metadata).unwrap_or(0);
    let rb = revision(&b.metadata).unwrap_or(0);
    ra.cmp(&rb).then_with(|| by_creation(a, b))
}

// ------------------------------------------------------------------ annotations

/// `SetReplicasAnnotations`: desired- and max-replicas; true when something changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = &mut rs.metadata.annotations;
    let mut changed = false;
    for (k, v) in [(wk::DESIRED_REPLICAS, desired), (wk::MAX_REPLICAS, max)] {
        let v = v.to_string();
        if a.get(k) != Some(&v) {
            a.insert(k.to_string(), v);
            changed = true;
        }
    }
    changed
}

/// `ReplicasAnnotationsNeedUpdate`.
pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    let a = &rs.metadata.annotations;
    a.get(wk::DESIRED_REPLICAS) != Some(&desired.to_string())
        || a.get(wk::MAX_REPLICAS) != Some(&max.to_string())
}

fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.get(key)?.parse().ok()
}

/// `GetDesiredReplicasAnnotation`.
pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation_i32(rs, wk::DESIRED_REPLICAS)
}

/// `copyDeploymentAnnotationsToReplicaSet`.
pub fn copy_deployment_annotations_to_rs(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let mut changed = false;
    for (k, v) in &d.metadata.annotations {
        if skip_copy_annotation(k) || rs.metadata.annotations.get(k) == Some(v) {
            continue;
        }
        rs.metadata.annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// `SetNewReplicaSetAnnotations`: copy the deployment's annotations, bump the revision (keeping
/// the previous numbers in `revision-history` when an old RS is reused) and, for a RS about to be
/// created, the replicas annotations.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = copy_deployment_annotations_to_rs(d, rs);
    let old = rs.metadata.annotations.get(wk::REVISION).cloned();
    let old_int = match &old {
        None => 0,
        Some(s) if s.is_empty() => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(v) => v,
            Err(_) => return false,
        },
    };
    if old_int < new_revision {
        rs.metadata
            .annotations
            .insert(wk::REVISION.into(), new_revision.to_string());
        changed = true;
    }
    if let (Some(old), true) = (&old, old_int < new_revision) {
        let hist = rs
            .metadata
            .annotations
            .get(wk::REVISION_HISTORY)
            .cloned()
            .unwrap_or_default();
        if hist.is_empty() {
            rs.metadata
                .annotations
                .insert(wk::REVISION_HISTORY.into(), old.clone());
        } else {
            let mut olds: Vec<&str> = hist.split(',').collect();
            let mut total = hist.len() + old.len() + 1;
            let mut start = 0;
            while total > MAX_REV_HISTORY_LENGTH_IN_CHARS && start < olds.len() {
                total = total - olds[start].len() - 1;
                start += 1;
            }
            if total <= MAX_REV_HISTORY_LENGTH_IN_CHARS {
                olds = olds.split_off(start);
                olds.push(old);
                rs.metadata
                    .annotations
                    .insert(wk::REVISION_HISTORY.into(), olds.join(","));
            }
        }
    }
    if !exists && set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

/// `SetDeploymentRevision`: true when the deployment's revision annotation changed.
pub fn set_deployment_revision(d: &mut Deployment, rev: &str) -> bool {
    if d.metadata.annotations.get(wk::REVISION).map(String::as_str) != Some(rev) {
        d.metadata
            .annotations
            .insert(wk::REVISION.into(), rev.to_string());
        return true;
    }
    false
}

/// `SetFromReplicaSetTemplate`: the deployment's template becomes the RS's, minus the hash label.
pub fn set_from_rs_template(d: &mut Deployment, t: &PodTemplateSpec) {
    let spec = d.spec.get_or_insert_with(Default::default);
    spec.template = Some(without_hash(t));
}

/// `SetDeploymentAnnotationsTo`: keep the deployment's skipped annotations, take the rest from the RS.
pub fn set_deployment_annotations_to(d: &mut Deployment, rs: &ReplicaSet) {
    let kept: BTreeMap<String, String> = d
        .metadata
        .annotations
        .iter()
        .filter(|(k, _)| skip_copy_annotation(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    d.metadata.annotations = kept;
    for (k, v) in &rs.metadata.annotations {
        if !skip_copy_annotation(k) {
            d.metadata.annotations.insert(k.clone(), v.clone());
        }
    }
}

// ------------------------------------------------------------------ conditions

pub fn get_condition<'a>(s: &'a DeploymentStatus, t: &str) -> Option<&'a Condition> {
    s.conditions.iter().find(|c| c.type_ == t)
}

/// `NewDeploymentCondition`.
pub fn new_condition(
    t: &str,
    status: &str,
    reason: &str,
    msg: String,
    now: DateTime<Utc>,
) -> Condition {
    let now = Time(now.trunc_subsecs_compat());
    Condition {
        type_: t.into(),
        status: status.into(),
        last_update_time: Some(now),
        last_transition_time: Some(now),
        reason: Some(reason.into()),
        message: Some(msg),
        ..Default::default()
    }
}

trait TruncSecs {
    fn trunc_subsecs_compat(self) -> Self;
}
impl TruncSecs for DateTime<Utc> {
    fn trunc_subsecs_compat(self) -> Self {
        use chrono::SubsecRound;
        self.trunc_subsecs(0)
    }
}

/// `SetDeploymentCondition`: no-op when status and reason are unchanged; keeps
/// `lastTransitionTime` when only the reason changes.
pub fn set_condition(s: &mut DeploymentStatus, mut c: Condition) {
    if let Some(cur) = get_condition(s, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time;
        }
    }
    s.conditions.retain(|x| x.type_ != c.type_);
    s.conditions.push(c);
}

pub fn remove_condition(s: &mut DeploymentStatus, t: &str) {
    s.conditions.retain(|c| c.type_ != t);
}

fn st(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// `DeploymentComplete`.
pub fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let r = replicas(d);
    st(s.updated_replicas) == r
        && st(s.replicas) == r
        && st(s.available_replicas) == r
        && s.observed_generation.unwrap_or(0) >= generation(d)
}

/// `DeploymentProgressing`: more updated, fewer old, more ready or more available replicas.
pub fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = st(old.replicas) - st(old.updated_replicas);
    let new_old = st(new.replicas) - st(new.updated_replicas);
    st(new.updated_replicas) > st(old.updated_replicas)
        || new_old < old_old
        || st(new.ready_replicas) > st(old.ready_replicas)
        || st(new.available_replicas) > st(old.available_replicas)
}

/// `DeploymentTimedOut`.
pub fn deployment_timed_out(d: &Deployment, new: &DeploymentStatus, now: DateTime<Utc>) -> bool {
    let Some(deadline) = progress_deadline_seconds(d) else {
        return false;
    };
    let Some(c) = get_condition(new, COND_PROGRESSING) else {
        return false;
    };
    match c.reason.as_deref() {
        Some(REASON_NEW_RS_AVAILABLE) => false,
        Some(REASON_TIMED_OUT) => true,
        _ => match c.last_update_time {
            Some(from) => from.0 + Duration::seconds(i64::from(deadline)) < now,
            None => false,
        },
    }
}

/// `IsSaturated`: the new RS runs all desired replicas and they are all available.
pub fn is_saturated(d: &Deployment, rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = rs else { return false };
    let Some(desired) = desired_replicas_annotation(rs) else {
        return false;
    };
    let r = replicas(d);
    rs_replicas(rs) == r && desired == r && rs_available(rs) == r
}

/// `GetReplicaSetProportion` / `getReplicaSetFraction`.
pub fn rs_proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = rs_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

fn rs_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    if replicas(d) == 0 {
        return -rs_replicas(rs);
    }
    let max_now = replicas(d) + max_surge(d);
    let before = match annotation_i32(rs, wk::MAX_REPLICAS) {
        Some(v) if v != 0 => v,
        _ => {
            let v = st(d.status.as_ref().and_then(|s| s.replicas));
            if v == 0 {
                return 0;
            }
            v
        }
    };
    let size = f64::from(rs_replicas(rs)) * f64::from(max_now) / f64::from(before);
    // integer.RoundToInt32 = math.Round: half away from zero.
    size.round() as i32 - rs_replicas(rs)
}
