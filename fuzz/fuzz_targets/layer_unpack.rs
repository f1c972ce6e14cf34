//! Layer unpacking: arbitrary bytes as a (gzip/zstd/plain) tar layer are unpacked into a fresh
//! directory. Nothing may panic, and nothing may be written outside the destination (the
//! destination's parent must hold only the destination afterwards).
#![no_main]

use kapsel_image::{unpack_layer, UnpackOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parent = tempfile::Builder::new()
        .prefix("kapsel-fuzz-")
        .tempdir_in(std::env::temp_dir())
        .expect("temp dir");
    let dest = parent.path().join("root");
    std::fs::create_dir(&dest).expect("dest dir");
    let _ = unpack_layer(data, &dest, &[], UnpackOptions::default());
    let names: Vec<_> = std::fs::read_dir(parent.path())
        .expect("read parent")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("root")],
        "unpack wrote outside its root"
    );
});
