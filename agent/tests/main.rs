//! kapsel-agent's integration tests, one binary: each file is a module.

mod common;
#[path = "../runtime/tests/common/mod.rs"]
mod rt;

mod certs;
mod hollow;
mod images;
mod linux;
mod proxy;
