//! kapsel's image service: what containerd's image side does for the kubelet.
//!
//! - [`ImageRef`]: references normalised like docker (`busybox` →
//!   `docker.io/library/busybox:latest`); [`PullPolicy`] with Kubernetes' defaults.
//! - [`ImageStore`]: pulls over the OCI distribution API (`oci-client`: bearer-token auth,
//!   image index → this node's manifest, OCI and Docker v2 schema 2, plain HTTP only for
//!   `--insecure-registry` hosts, mirrors), verifies every blob's sha256 while it streams,
//!   unpacks each layer once into a shared read-only snapshot (an overlayfs lower dir) with the
//!   safety rules of [`unpack`], coalesces concurrent pulls, survives crashes, and does image GC.
//! - [`ImageInfo`]: what a container start needs — digest, image ID, [`ImageConfig`],
//!   lower dirs bottom first, size; [`effective_command`] applies Kubernetes' command rules.
//! - [`ImageService`]: the trait the agent calls (and fakes in its tests).
//! - [`ImageStore::import_archive`]: OCI layout and `docker save` tars, for air-gapped nodes.
//! - `testing` (feature): a throwaway `docker-registry` on loopback and a busybox image built
//!   with umoci and skopeo.

pub mod auth;
pub mod config;
pub mod error;
mod import;
pub mod pull;
pub mod reference;
pub mod service;
pub mod store;
pub mod unpack;

#[cfg(feature = "testing")]
pub mod testing;

pub use auth::{Credentials, RegistryConfig, RegistryCredential};
pub use config::{effective_command, effective_working_dir, merge_env, ExposedPort, ImageConfig};
pub use error::{ImageError, Result};
pub use pull::{node_platform, Progress, PullEvent};
pub use reference::{ImageRef, PullPolicy};
pub use service::ImageService;
pub use store::{
    chain_ids, DiskUsage, GcReport, ImageInfo, ImageRecord, ImageStore, PullStats, StoreOptions,
};
pub use unpack::{unpack_layer, UnpackOptions, UnpackStats};
