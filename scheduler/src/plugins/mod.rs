//! The plugins. Each is a unit struct implementing `FilterPlugin` and/or `ScorePlugin`, with its
//! table tests next to it.

pub mod fit;
pub mod node_affinity;
pub mod node_selector;
pub mod ports;
pub mod spread;
pub mod taints;
pub mod unschedulable;
