//! The narrow interface the agent uses, so its tests can use a fake.

use std::path::Path;

use futures::future::BoxFuture;

use crate::auth::{Credentials, RegistryConfig};
use crate::error::Result;
use crate::pull::Progress;
use crate::reference::{ImageRef, PullPolicy};
use crate::store::{GcReport, ImageInfo, ImageRecord, ImageStore};

/// What the agent needs from the node's images. [`ImageStore`] is the real thing.
pub trait ImageService: Send + Sync {
    /// Make the image available according to `policy` and return what a container start needs.
    fn ensure_image<'a>(
        &'a self,
        image: &'a ImageRef,
        policy: PullPolicy,
        creds: &'a Credentials,
        registry: &'a RegistryConfig,
        progress: Progress,
    ) -> BoxFuture<'a, Result<ImageInfo>>;
    /// The image if present, without contacting any registry.
    fn get<'a>(&'a self, image: &'a ImageRef) -> BoxFuture<'a, Result<Option<ImageInfo>>>;
    fn list(&self) -> BoxFuture<'_, Result<Vec<ImageRecord>>>;
    /// Remove by name, image ID or digest; returns the names removed.
    fn remove<'a>(&'a self, name_or_digest: &'a str) -> BoxFuture<'a, Result<Vec<String>>>;
    fn import_archive<'a>(
        &'a self,
        path: &'a Path,
        name: Option<&'a ImageRef>,
    ) -> BoxFuture<'a, Result<Vec<ImageInfo>>>;
    /// Image GC (`--image-gc-high-threshold` / `--image-gc-low-threshold`, in percent).
    fn gc<'a>(
        &'a self,
        high_percent: u64,
        low_percent: u64,
        in_use: &'a [String],
    ) -> BoxFuture<'a, Result<GcReport>>;
}

impl ImageService for ImageStore {
    fn ensure_image<'a>(
        &'a self,
        image: &'a ImageRef,
        policy: PullPolicy,
        creds: &'a Credentials,
        registry: &'a RegistryConfig,
        progress: Progress,
    ) -> BoxFuture<'a, Result<ImageInfo>> {
        Box::pin(ImageStore::ensure_image(
            self, image, policy, creds, registry, progress,
        ))
    }
    fn get<'a>(&'a self, image: &'a ImageRef) -> BoxFuture<'a, Result<Option<ImageInfo>>> {
        Box::pin(ImageStore::get(self, image))
    }
    fn list(&self) -> BoxFuture<'_, Result<Vec<ImageRecord>>> {
        Box::pin(async move { ImageStore::list(self) })
    }
    fn remove<'a>(&'a self, name_or_digest: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(ImageStore::remove(self, name_or_digest))
    }
    fn import_archive<'a>(
        &'a self,
        path: &'a Path,
        name: Option<&'a ImageRef>,
    ) -> BoxFuture<'a, Result<Vec<ImageInfo>>> {
        Box::pin(ImageStore::import_archive(self, path, name))
    }
    fn gc<'a>(
        &'a self,
        high_percent: u64,
        low_percent: u64,
        in_use: &'a [String],
    ) -> BoxFuture<'a, Result<GcReport>> {
        Box::pin(ImageStore::gc(self, high_percent, low_percent, in_use))
    }
}
