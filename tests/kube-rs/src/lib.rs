//! Only tests (tests/kube.rs): the Rust `kube` crate against `kapsel server`.
