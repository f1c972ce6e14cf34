//! The end-to-end tests, one binary: each file is a module (`e2e chaos::…`, `e2e server::…`).

mod bench_e2e;
mod bench_net;
mod chaos;
mod compose;
mod examples;
mod exec;
mod image_profile;
mod kubectl;
mod network;
mod observability;
mod security;
mod server;
mod services;
mod zero_downtime;
