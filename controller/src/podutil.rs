//! Pod predicates shared by the controllers (`k8s.io/kubernetes/pkg/api/v1/pod` and
//! `pkg/controller/controller_utils.go`).

use chrono::{DateTime, Duration, Utc};
use kapsel_api::{Condition, ObjectMeta, OwnerReference, Pod, Resource};

pub const PHASE_PENDING: &str = "Pending";
pub const PHASE_RUNNING: &str = "Running";
pub const PHASE_SUCCEEDED: &str = "Succeeded";
pub const PHASE_FAILED: &str = "Failed";
pub const PHASE_UNKNOWN: &str = "Unknown";

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or(PHASE_PENDING)
}

/// `controller.IsPodActive`: not terminal and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let p = phase(pod);
    p != PHASE_SUCCEEDED && p != PHASE_FAILED && pod.metadata.deletion_timestamp.is_none()
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

pub fn ready_condition(pod: &Pod) -> Option<&Condition> {
    pod.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// `podutil.IsPodReady`.
pub fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// `podutil.IsPodAvailable`: ready for at least `min_ready_seconds`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: DateTime<Utc>) -> bool {
    let Some(c) = ready_condition(pod).filter(|c| c.status == "True") else {
        return false;
    };
    if min_ready_seconds <= 0 {
        return true;
    }
    match c.last_transition_time {
        Some(t) => t.0 + Duration::seconds(i64::from(min_ready_seconds)) <= now,
        None => false,
    }
}

/// When will a ready-but-not-yet-available pod become available? (for requeue-after)
pub fn available_at(pod: &Pod, min_ready_seconds: i32) -> Option<DateTime<Utc>> {
    let c = ready_condition(pod).filter(|c| c.status == "True")?;
    Some(c.last_transition_time?.0 + Duration::seconds(i64::from(min_ready_seconds)))
}

pub fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .map(|s| s.container_statuses.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// The owner reference with `controller: true`.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.controller_ref()
}

/// `metav1.NewControllerRef`.
pub fn controller_ref<K: Resource>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::API_VERSION.to_string(),
        kind: K::KIND.to_string(),
        name: owner.name().to_string(),
        uid: owner.uid().to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Is `meta` controlled by the object with this uid?
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|o| o.uid == uid)
}

/// Random suffix alphabet of `k8s.io/apimachinery/pkg/util/rand` (no vowels, no confusables).
pub const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `names.SimpleNameGenerator`: `prefix` + 5 random characters.
pub fn generate_name(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let suffix: String = (0..5)
        .map(|_| ALPHANUMS[rng.gen_range(0..ALPHANUMS.len())] as char)
        .collect();
    let max_prefix = 63 - 5;
    let p = if prefix.len() > max_prefix {
        &prefix[..max_prefix]
    } else {
        prefix
    };
    format!("{p}{suffix}")
}
