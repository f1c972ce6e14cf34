//! Label and field selector parsing: never panics; a parsed label selector prints again.
#![no_main]

use kapsel_api::selector::{FieldSelector, Selector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sel) = Selector::parse(s) {
        let _ = sel.to_string();
    }
    let _ = FieldSelector::parse(s);
});
