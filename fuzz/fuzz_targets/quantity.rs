//! Quantity parsing: never panics.
#![no_main]

use kapsel_api::quantity::parse_quantity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_quantity(s);
});
