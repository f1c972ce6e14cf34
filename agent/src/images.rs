//! Images as the agent needs them: read-only lower dirs plus the image config defaults.
//! [`Images`] is the seam for `kapsel-image`; [`DirImages`] serves plain rootfs directories
//! (`dir:///path/to/rootfs`, or names mapped with `--image-dir NAME=PATH`) until then.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{AgentError, Result};

/// What the runtime needs from an image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// Lowest first.
    pub lower_dirs: Vec<PathBuf>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// Resolves (and if needed fetches) images. Blocking; called from `spawn_blocking`.
pub trait Images: Send + Sync + 'static {
    fn ensure(&self, image: &str) -> Result<ImageInfo>;
}

/// Rootfs directories as images.
#[derive(Clone, Debug, Default)]
pub struct DirImages {
    pub dirs: BTreeMap<String, PathBuf>,
}

impl DirImages {
    pub fn new(dirs: BTreeMap<String, PathBuf>) -> Self {
        DirImages { dirs }
    }
}

/// `busybox`, `busybox:latest` and `docker.io/library/busybox:latest` are one image.
fn normalize(image: &str) -> &str {
    let s = image
        .strip_prefix("docker.io/library/")
        .or_else(|| image.strip_prefix("docker.io/"))
        .unwrap_or(image);
    s.strip_suffix(":latest").unwrap_or(s)
}

impl Images for DirImages {
    fn ensure(&self, image: &str) -> Result<ImageInfo> {
        let path = if let Some(p) = image.strip_prefix("dir://") {
            PathBuf::from(p)
        } else if let Some(p) = self
            .dirs
            .get(image)
            .or_else(|| self.dirs.get(normalize(image)))
        {
            p.clone()
        } else {
            return Err(AgentError::Image {
                image: image.into(),
                message:
                    "unknown image (no --image-dir for it, and kapsel-image is not wired in yet)"
                        .into(),
            });
        };
        if !path.is_dir() {
            return Err(AgentError::Image {
                image: image.into(),
                message: format!("{} is not a directory", path.display()),
            });
        }
        Ok(ImageInfo {
            lower_dirs: vec![path],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..Default::default()
        })
    }
}

/// Every image "exists" (for the hollow runtime, which runs nothing).
#[derive(Clone, Copy, Debug, Default)]
pub struct HollowImages;

impl Images for HollowImages {
    fn ensure(&self, _image: &str) -> Result<ImageInfo> {
        Ok(ImageInfo {
            lower_dirs: vec![PathBuf::from("/hollow")],
            cmd: vec!["/hollow".into()],
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_images_resolve_by_url_and_name() {
        let d = tempfile::tempdir().unwrap();
        let mut m = BTreeMap::new();
        m.insert("busybox".to_string(), d.path().to_path_buf());
        let imgs = DirImages::new(m);
        assert_eq!(
            imgs.ensure("busybox:latest").unwrap().lower_dirs[0],
            d.path()
        );
        assert_eq!(
            imgs.ensure("docker.io/library/busybox").unwrap().lower_dirs[0],
            d.path()
        );
        let url = format!("dir://{}", d.path().display());
        assert_eq!(imgs.ensure(&url).unwrap().lower_dirs[0], d.path());
        assert!(matches!(
            imgs.ensure("nginx"),
            Err(AgentError::Image { .. })
        ));
    }
}
