//! kapsel's API server: Kubernetes-shaped REST over a durable store.

pub mod store;
