//! ImageProfile rules (`kapsel.dev/v1`).

use std::collections::BTreeSet;

use super::field::*;
use super::meta::*;
use super::ErrorList;
use crate::profile::{ImagePattern, ImageProfile};

/// An absolute path without `..` components, NUL or `,` (the annotations' list separator).
fn path_errors(p: &str) -> Option<&'static str> {
    if !p.starts_with('/') {
        Some("must be an absolute path")
    } else if p.split('/').any(|c| c == "..") {
        Some("must not contain '..'")
    } else if p.contains(['\0', ',']) {
        Some("must not contain NUL or ','")
    } else {
        None
    }
}

fn validate_paths(paths: &[String], path: &str) -> ErrorList {
    let mut errs = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, p) in paths.iter().enumerate() {
        let f = index(path, i);
        if let Some(msg) = path_errors(p) {
            errs.push(invalid(f, p, msg));
        } else if !seen.insert(p.as_str()) {
            errs.push(duplicate(f, p));
        }
    }
    errs
}

pub fn validate_image_profile(p: &ImageProfile) -> ErrorList {
    let mut errs = validate_type_meta((&p.api_version, &p.kind), "kapsel.dev/v1", "ImageProfile");
    errs.extend(validate_object_meta(&p.metadata, false, "metadata"));
    let s = &p.spec;
    if s.image.is_empty() {
        errs.push(required("spec.image", ""));
    } else if let Err(msg) = ImagePattern::parse(&s.image) {
        errs.push(invalid("spec.image", &s.image, msg));
    }
    if let Some(exe) = &s.allowed_executables {
        if exe.is_empty() {
            errs.push(required(
                "spec.allowedExecutables",
                "must list at least one executable (omit the field to allow every executable)",
            ));
        }
        errs.extend(validate_paths(exe, "spec.allowedExecutables"));
    }
    if let Some(w) = &s.writable_paths {
        errs.extend(validate_paths(w, "spec.writablePaths"));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::ObjectMeta;
    use crate::profile::ImageProfileSpec;

    fn valid() -> ImageProfile {
        let mut p = ImageProfile::with_meta(ObjectMeta::named("busybox-httpd"));
        p.spec = ImageProfileSpec {
            image: "busybox:1.*".into(),
            allowed_executables: Some(vec!["/bin/httpd".into(), "/lib".into()]),
            writable_paths: Some(vec![]),
            read_only_root_filesystem: Some(true),
            best_effort: Some(false),
        };
        p
    }

    type Mutation = fn(&mut ImageProfile);

    #[test]
    fn image_profile_rules() {
        assert_eq!(validate_image_profile(&valid()), vec![]);
        let cases: Vec<(Mutation, &str)> =
            vec![
            (|p| p.spec.image.clear(), "spec.image: Required value"),
            (
                |p| p.spec.image = "busy box".into(),
                "spec.image: Invalid value: \"busy box\": must not contain whitespace",
            ),
            (
                |p| p.spec.allowed_executables = Some(vec![]),
                "spec.allowedExecutables: Required value: must list at least one executable",
            ),
            (
                |p| p.spec.allowed_executables = Some(vec!["bin/sh".into()]),
                "spec.allowedExecutables[0]: Invalid value: \"bin/sh\": must be an absolute path",
            ),
            (
                |p| p.spec.writable_paths = Some(vec!["/tmp".into(), "/tmp/../etc".into()]),
                "spec.writablePaths[1]: Invalid value: \"/tmp/../etc\": must not contain '..'",
            ),
            (
                |p| p.spec.writable_paths = Some(vec!["/a,/b".into()]),
                "spec.writablePaths[0]: Invalid value: \"/a,/b\": must not contain NUL or ','",
            ),
            (
                |p| p.spec.writable_paths = Some(vec!["/tmp".into(), "/tmp".into()]),
                "spec.writablePaths[1]: Duplicate value: \"/tmp\"",
            ),
            (
                |p| p.metadata.namespace = Some("default".into()),
                "metadata.namespace: Forbidden",
            ),
            (|p| p.kind = "Pod".into(), "kind: Unsupported value: \"Pod\""),
        ];
        for (mutate, want) in cases {
            let mut p = valid();
            mutate(&mut p);
            let errs: Vec<String> = validate_image_profile(&p)
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(errs.len(), 1, "{want}: {errs:?}");
            assert!(errs[0].starts_with(want), "{want}: {errs:?}");
        }
    }
}
