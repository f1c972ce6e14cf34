//! `apps/v1` kinds (ReplicaSet, Deployment), `coordination.k8s.io/v1` Lease and `autoscaling/v1` Scale.

use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::core::PodTemplateSpec;
use crate::kind;
use crate::meta::{Condition, IntOrString, LabelSelector, MicroTime};

kind! {
    ReplicaSet { group: "apps", version: "v1", api_version: "apps/v1", plural: "replicasets", singular: "replicaset", namespaced: true, short: ["rs"] }
    {
        pub spec: Option<ReplicaSetSpec>,
        pub status: Option<ReplicaSetStatus>,
    }
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetSpec {
    pub replicas: Option<i32>,
    pub min_ready_seconds: Option<i32>,
    pub selector: Option<LabelSelector>,
    pub template: Option<PodTemplateSpec>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetStatus {
    #[serde(default)]
    pub replicas: i32,
    pub fully_labeled_replicas: Option<i32>,
    pub ready_replicas: Option<i32>,
    pub available_replicas: Option<i32>,
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

kind! {
    Deployment { group: "apps", version: "v1", api_version: "apps/v1", plural: "deployments", singular: "deployment", namespaced: true, short: ["deploy"] }
    {
        pub spec: Option<DeploymentSpec>,
        pub status: Option<DeploymentStatus>,
    }
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    pub replicas: Option<i32>,
    pub selector: Option<LabelSelector>,
    pub template: Option<PodTemplateSpec>,
    pub strategy: Option<DeploymentStrategy>,
    pub min_ready_seconds: Option<i32>,
    pub revision_history_limit: Option<i32>,
    pub paused: Option<bool>,
    pub progress_deadline_seconds: Option<i32>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStrategy {
    /// `RollingUpdate` (default) or `Recreate`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub rolling_update: Option<RollingUpdateDeployment>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdateDeployment {
    pub max_unavailable: Option<IntOrString>,
    pub max_surge: Option<IntOrString>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    pub observed_generation: Option<i64>,
    pub replicas: Option<i32>,
    pub updated_replicas: Option<i32>,
    pub ready_replicas: Option<i32>,
    pub available_replicas: Option<i32>,
    pub unavailable_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    pub collision_count: Option<i32>,
}

kind! {
    Lease { group: "coordination.k8s.io", version: "v1", api_version: "coordination.k8s.io/v1", plural: "leases", singular: "lease", namespaced: true, short: [] }
    {
        pub spec: Option<LeaseSpec>,
    }
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSpec {
    pub holder_identity: Option<String>,
    pub lease_duration_seconds: Option<i32>,
    pub acquire_time: Option<MicroTime>,
    pub renew_time: Option<MicroTime>,
    pub lease_transitions: Option<i32>,
}

kind! {
    /// `autoscaling/v1 Scale`, the body of the `/scale` subresource.
    Scale { group: "autoscaling", version: "v1", api_version: "autoscaling/v1", plural: "scales", singular: "scale", namespaced: true, short: [] }
    {
        #[serde(default)]
        pub spec: ScaleSpec,
        #[serde(default)]
        pub status: ScaleStatus,
    }
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSpec {
    pub replicas: Option<i32>,
}

#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleStatus {
    #[serde(default)]
    pub replicas: i32,
    pub selector: Option<String>,
}

/// Well-known labels and annotations.
pub mod labels {
    pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
    pub const REVISION: &str = "deployment.kubernetes.io/revision";
    pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
    pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
    pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
    pub const HOSTNAME: &str = "kubernetes.io/hostname";
    pub const OS: &str = "kubernetes.io/os";
    pub const ARCH: &str = "kubernetes.io/arch";
    pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
    pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
    pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
    pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
    pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
    pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
}
