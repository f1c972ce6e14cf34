//! Hollow agents: the real agent with `kapsel_runtime::HollowRuntime` (which starts nothing and
//! reports containers running) — for scale tests and benchmarks. Many can run in one process.
//! Pods can ask for behaviour with annotations: `hollow.kapsel.io/never-ready: "true"` keeps
//! readiness probes failing; tests make containers exit through [`HollowRuntime::exit`].

use std::path::Path;
use std::sync::Arc;

use kapsel_runtime::HollowRuntime;

use crate::{Agent, AgentConfig, AgentHandle, HollowImages, Result};

/// A running hollow agent and its fake runtime (to make containers exit or fail on command).
pub struct HollowAgent {
    pub runtime: Arc<HollowRuntime>,
    pub handle: AgentHandle,
    pub node_name: String,
}

/// Start one hollow agent for `node_name` against `server`.
pub fn start(
    server: &str,
    node_name: &str,
    data_dir: &Path,
    adjust: impl FnOnce(&mut AgentConfig),
) -> Result<HollowAgent> {
    let mut cfg = AgentConfig::new(server, node_name, data_dir.join(node_name));
    cfg.hollow = true;
    cfg.node_ip = Some("10.244.0.1".into());
    adjust(&mut cfg);
    let runtime = Arc::new(HollowRuntime::new());
    let agent = Agent::connect(cfg, runtime.clone(), Arc::new(HollowImages))?;
    Ok(HollowAgent {
        runtime,
        handle: agent.spawn(),
        node_name: node_name.to_string(),
    })
}

/// Start `n` hollow agents named `<prefix>-<i>`.
pub fn start_many(
    server: &str,
    prefix: &str,
    n: usize,
    data_dir: &Path,
) -> Result<Vec<HollowAgent>> {
    (0..n)
        .map(|i| start(server, &format!("{prefix}-{i}"), data_dir, |_| {}))
        .collect()
}
