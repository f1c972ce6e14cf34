//! Manifest parsing: YAML/JSON documents -> typed objects -> defaults and validation ->
//! re-encoding, and ImageProfile matching. Nothing may panic.
#![no_main]

use kapsel_api::codec::{from_value, parse_documents};
use kapsel_api::{ConfigMap, Defaults, Deployment, ImageProfile, Pod, Service, Validate};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

fn check<T: DeserializeOwned + Serialize + Validate + Defaults>(v: &serde_json::Value) {
    if let Ok((mut obj, _unknown)) = from_value::<T>(v.clone()) {
        obj.apply_defaults();
        let _ = obj.validate();
        let _ = obj.validate_update(&obj);
        let _ = serde_json::to_value(&obj);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(docs) = parse_documents(text) else {
        return;
    };
    for d in &docs {
        check::<Pod>(d);
        check::<Deployment>(d);
        check::<Service>(d);
        check::<ConfigMap>(d);
        check::<ImageProfile>(d);
        // Image profile matching: any spec.image against a few image references.
        if let Ok((p, _)) = from_value::<ImageProfile>(d.clone()) {
            for image in ["busybox", "busybox:1.36", "reg.io:5000/a/b@sha256:00", ""] {
                let _ = kapsel_api::profile::select(std::slice::from_ref(&p), image);
            }
        }
    }
});
