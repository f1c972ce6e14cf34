//! kapsel-runtime's integration tests, one binary: each file is a module.

mod common;

mod container;
#[path = "escape/main.rs"]
mod escape;
mod exec;
#[path = "landlock.rs"]
mod landlock_tests;
