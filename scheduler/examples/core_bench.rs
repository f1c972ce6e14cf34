//! The scheduling engine alone, no API server: how many pods per second the decision core
//! (filter + score + assume) places. This is the ceiling for the end-to-end benchmark
//! (`examples/bench.rs`).
//!
//! cargo run --release -p kapsel-scheduler --example core_bench -- [nodes] [pods] [pct]

use std::sync::Arc;
use std::time::Instant;

use kapsel_api::watcher::Event;
use kapsel_scheduler::engine::{Action, BindResult, Engine, Input};
use kapsel_scheduler::testing::{hollow_node, PodBuilder};
use kapsel_scheduler::{Config, Metrics};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let nodes = args.first().copied().unwrap_or(1000);
    let pods = args.get(1).copied().unwrap_or(30_000);
    let pct = args.get(2).copied().unwrap_or(0) as u32;

    let metrics = Arc::new(Metrics::default());
    let mut engine = Engine::new(
        Config {
            seed: Some(1),
            percentage_of_nodes_to_score: pct,
            parallel_binds: usize::MAX,
            ..Config::default()
        },
        metrics.clone(),
    );
    let t0 = Instant::now();
    let node_objs = (0..nodes)
        .map(|i| hollow_node(&format!("node-{i}"), "32", "128Gi", "110"))
        .collect();
    engine.handle(Input::Nodes(Box::new(Event::Restarted(node_objs))), t0);
    engine.handle(Input::Pods(Box::new(Event::Restarted(vec![]))), t0);
    for i in 0..pods {
        let pod = PodBuilder::new(&format!("p{i}"))
            .owner(&format!("rs-{}", i % 100))
            .container("100m", "256Mi")
            .build();
        engine.handle(Input::Pods(Box::new(Event::Applied(pod))), t0);
    }
    let start = Instant::now();
    let mut bound = 0;
    while let Some(action) = engine.next_action(Instant::now()) {
        if let Action::Bind { key, .. } = action {
            bound += 1;
            engine.handle(
                Input::BindDone {
                    key,
                    result: BindResult::Bound,
                },
                Instant::now(),
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "core: {nodes} nodes, {pods} pods, percentageOfNodesToScore={pct}: bound {bound} in {secs:.3}s = {:.0} pods/s; algorithm p50 {:?} p99 {:?}",
        bound as f64 / secs,
        metrics.algorithm_latency.quantile(0.5),
        metrics.algorithm_latency.quantile(0.99),
    );
    let max_pods = engine
        .cache()
        .snapshot()
        .nodes()
        .iter()
        .map(|n| n.requested.pods)
        .max()
        .unwrap_or(0);
    let min_pods = engine
        .cache()
        .snapshot()
        .nodes()
        .iter()
        .map(|n| n.requested.pods)
        .min()
        .unwrap_or(0);
    println!("pods per node: min {min_pods} max {max_pods}");
}
