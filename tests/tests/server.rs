//! `kapsel server` as a process: it starts, writes tokens and the client config, its local
//! (hollow) agent registers a Ready node, the example Deployment runs, a SIGTERM stops it
//! cleanly, and a restart on the same data dir resumes the cluster with the pods untouched.

use std::time::Duration;

use kapsel_api::client::{Api, ListParams};
use kapsel_api::Pod;
use kapsel_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_runs_example_and_resumes_after_restart() {
    let dir = tempdir("kt-server-");
    let opts = ServerOpts {
        hollow: true,
        node_name: Some("kt-hollow-0".into()),
        ..Default::default()
    };
    let mut server = Server::start(dir.path(), &opts);
    println!("kapsel server at {}", server.url);
    assert!(
        server.node_token.starts_with("K10") && server.node_token.contains("::"),
        "join token written: {}",
        server.node_token
    );
    assert!(server.kubeconfig().exists(), "client config written");

    let client = server.client();
    let nodes = wait_nodes_ready(&client, 1, Duration::from_secs(30)).await;
    assert_eq!(nodes[0].metadata.name(), "kt-hollow-0");

    let out = server.kapsel(&["apply", "-f", "examples/deployment.yaml"]);
    assert!(out.contains("deployment.apps/web"), "{out}");
    let before = wait_deployment_ready(
        &client,
        "default",
        "web",
        "app=web",
        Duration::from_secs(60),
    )
    .await;
    let mut uids: Vec<String> = before
        .iter()
        .map(|p| p.metadata.uid.clone().unwrap_or_default())
        .collect();
    uids.sort();
    println!("3 pods Ready: {uids:?}");

    // Clean shutdown on SIGTERM: exit status 0, quickly.
    assert!(
        server.proc.terminate(Duration::from_secs(15)),
        "kapsel server exits 0 on SIGTERM:\n{}",
        server.proc.log_tail(20)
    );
    let tokens = (server.admin_token.clone(), server.node_token.clone());

    // Restart on the same data dir: same tokens, same objects, pods untouched.
    let server = Server::start(dir.path(), &opts);
    assert_eq!(
        (server.admin_token.clone(), server.node_token.clone()),
        tokens,
        "tokens are kept"
    );
    let client = server.client();
    wait_nodes_ready(&client, 1, Duration::from_secs(30)).await;
    let after = wait_deployment_ready(
        &client,
        "default",
        "web",
        "app=web",
        Duration::from_secs(60),
    )
    .await;
    let mut uids2: Vec<String> = after
        .iter()
        .map(|p| p.metadata.uid.clone().unwrap_or_default())
        .collect();
    uids2.sort();
    assert_eq!(uids, uids2, "the same pods after the restart");
    for p in &after {
        assert_eq!(restart_count(p), 0, "pod {} untouched", p.metadata.name());
        assert_eq!(pod_phase(p), "Running");
    }
    // and nothing else appeared
    let pods: Api<Pod> = client.api(Some("default"));
    let all = pods.list(&ListParams::default()).await.expect("list");
    assert_eq!(all.items.len(), 3);
    println!("invariants: exit 0 on SIGTERM; tokens kept; pods {uids2:?} kept, 0 restarts");
}

/// The agents' gRPC API wants the join token: a `kapsel agent` with a wrong token never
/// registers; with the right one it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_joins_with_token_only() {
    let dir = tempdir("kt-join-");
    let server = Server::start(
        dir.path(),
        &ServerOpts {
            no_agent: true,
            ..Default::default()
        },
    );
    let client = server.client();
    let spawn_agent = |name: &str, token: &str| {
        let mut cmd = std::process::Command::new(binary("kapsel"));
        cmd.arg("agent")
            .args([
                "--server",
                &server.url,
                "--token",
                token,
                "--hollow",
                "--node-name",
                name,
            ])
            .arg("--data-dir")
            .arg(dir.path().join(name));
        Proc::spawn(name, cmd, dir.path().join(format!("{name}.log")))
    };
    let _bad = spawn_agent("kt-bad", "not-the-token");
    let _good = spawn_agent("kt-good", &server.node_token);
    let nodes = wait_nodes_ready(&client, 1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let names: Vec<String> = kapsel_api::client::Api::<kapsel_api::Node>::list(
        &client.api(None),
        &ListParams::default(),
    )
    .await
    .expect("nodes")
    .items
    .iter()
    .map(|n| n.metadata.name().to_string())
    .collect();
    assert_eq!(
        names,
        vec!["kt-good".to_string()],
        "only the agent with the token joined ({nodes:?})"
    );
}
