//! Patch application: the input is `DOCUMENT \0 PATCH`; the patch is decoded as each media type
//! the API server accepts (merge, JSON patch, strategic merge, apply YAML) and applied to the
//! document. Nothing may panic; a patched document still serializes.
//!
//! `apiserver/src/patch.rs` is compiled into this target directly (with the two items it takes
//! from its crate, below) instead of depending on kapsel-apiserver: the whole server (tonic,
//! axum, sled, rustls...) built with sanitizer instrumentation would more than double the fuzz
//! build's time in CI. A change to what patch.rs uses from its crate breaks this build, loudly.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../apiserver/src/patch.rs"]
mod patch;

/// The part of kapsel-apiserver's error type patch.rs uses.
mod errors {
    #[derive(Debug)]
    #[allow(dead_code)]
    pub enum ApiError {
        BadRequest(String),
        UnsupportedMediaType(String),
        UnprocessablePatch(String),
    }
    impl ApiError {
        pub fn bad_request(msg: impl Into<String>) -> Self {
            ApiError::BadRequest(msg.into())
        }
    }
}

/// kapsel-apiserver's `apply::decode` (apply.rs): a YAML or JSON object.
mod apply {
    use crate::errors::ApiError;
    use serde_json::Value;
    pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
        let v: Value = serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if !v.is_object() {
            return Err(ApiError::bad_request(
                "an apply patch must be a YAML or JSON object",
            ));
        }
        Ok(v)
    }
}

use patch::{PatchBody, APPLY, JSON, MERGE, STRATEGIC};

fuzz_target!(|data: &[u8]| {
    let (doc, patch) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"{}"[..], data),
    };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(doc) else {
        return;
    };
    for ct in [MERGE, JSON, STRATEGIC, APPLY] {
        if let Ok(p) = PatchBody::decode(ct, patch) {
            let _ = p.sets_resource_version();
            let mut d = doc.clone();
            if p.apply(&mut d).is_ok() {
                let _ = serde_json::to_vec(&d);
            }
        }
    }
});
