//! kapsel-apiserver's integration tests, one binary: each file is a module.

mod common;

mod admission;
mod authz;
mod bad_input;
mod crud;
mod durability;
mod group_commit;
mod imageprofile;
mod observability;
mod podsecurity;
mod security;
mod semantics;
mod services;
mod watch;
