//! Service proxy programming benchmark (root): render + `nft -f` of the whole table for
//! S Services × 3 endpoints, one endpoint changing per round, in a scratch network namespace
//! `kt-svc-bench`. Prints p50/p99 of render and of render+apply (the endpoint change → rules
//! live step on one node; the API watch hop is not included).
//!
//! `cargo run --release -p kapsel-agent --example bench_proxy -- [SERVICES] [ROUNDS]`
//!
//! The whole path (API write → watch → every node's rules) and requests through a NodePort
//! vs a pod IP are measured on the multi-node harness by `tests/tests/bench_net.rs`.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kapsel_agent::net::nft::{Nft, NftCli};
use kapsel_agent::net::proxy::{render, service_ports, teardown};
use kapsel_api::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};

const NS: &str = "kt-svc-bench";

fn world(services: usize, round: usize) -> (Vec<Arc<Service>>, Vec<Arc<Endpoints>>) {
    let mut ss = Vec::new();
    let mut es = Vec::new();
    for i in 0..services {
        let name = format!("s{i}");
        let mut s = Service::default();
        s.metadata.name = Some(name.clone());
        s.metadata.namespace = Some("default".into());
        s.spec = Some(ServiceSpec {
            type_: Some("NodePort".into()),
            cluster_ip: Some(format!("10.96.{}.{}", i / 250, i % 250 + 1)),
            ports: vec![ServicePort {
                port: 80,
                protocol: Some("TCP".into()),
                node_port: Some(30000 + i32::try_from(i).unwrap_or(0)),
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut e = Endpoints::default();
        e.metadata.name = Some(name);
        e.metadata.namespace = Some("default".into());
        // Endpoint 3 of service (round % services) moves each round.
        let moved = if i == round % services {
            round % 200
        } else {
            0
        };
        e.subsets = vec![EndpointSubset {
            addresses: (0..3)
                .map(|k| EndpointAddress {
                    ip: format!(
                        "10.88.{}.{}",
                        i % 250,
                        10 + k + if k == 2 { moved } else { 0 }
                    ),
                    ..Default::default()
                })
                .collect(),
            ports: vec![EndpointPort {
                port: 8080,
                protocol: Some("TCP".into()),
                ..Default::default()
            }],
            ..Default::default()
        }];
        ss.push(Arc::new(s));
        es.push(Arc::new(e));
    }
    (ss, es)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let services = args.first().copied().unwrap_or(100);
    let rounds = args.get(1).copied().unwrap_or(50);
    // a leftover of an interrupted run (missing is fine)
    let _ = Command::new("ip")
        .args(["netns", "del", NS])
        .stderr(std::process::Stdio::null())
        .status();
    assert!(Command::new("ip")
        .args(["netns", "add", NS])
        .status()
        .expect("ip")
        .success());
    let nft = NftCli {
        netns: Some(NS.into()),
    };
    let mut render_t = Vec::new();
    let mut total_t = Vec::new();
    let mut bytes = 0;
    for r in 0..rounds {
        let (ss, es) = world(services, r + 1);
        let t0 = Instant::now();
        let script = render("kt-svc-bench", "n1", &service_ports(&ss, &es));
        let t1 = Instant::now();
        nft.apply(&script).expect("nft apply");
        let t2 = Instant::now();
        render_t.push(t1 - t0);
        total_t.push(t2 - t0);
        bytes = script.len();
    }
    let _ = teardown(&nft, "kt-svc-bench");
    let _ = Command::new("ip").args(["netns", "del", NS]).status();
    println!(
        "services={services} endpoints/service=3 rounds={rounds} script={} KiB",
        bytes / 1024
    );
    println!(
        "render        p50 {:?} p99 {:?}",
        pct(&mut render_t, 0.5),
        pct(&mut render_t, 0.99)
    );
    println!(
        "render+apply  p50 {:?} p99 {:?}",
        pct(&mut total_t, 0.5),
        pct(&mut total_t, 0.99)
    );
}
