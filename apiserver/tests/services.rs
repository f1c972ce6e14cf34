//! ClusterIP and NodePort allocation through the server: concurrent creates never share an
//! address, user-given values are checked, deletes release, updates keep.

use crate::common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};

const SVCS: &str = "/api/v1/namespaces/default/services";

fn svc(name: &str, ty: &str, ip: Option<&str>, node_port: Option<i64>) -> Value {
    let mut port = json!({"port": 80, "targetPort": 8080});
    if let Some(n) = node_port {
        port["nodePort"] = json!(n);
    }
    let mut s = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": ty, "selector": {"app": name}, "ports": [port]}
    });
    if let Some(ip) = ip {
        s["spec"]["clusterIP"] = json!(ip);
    }
    s
}

#[tokio::test]
async fn concurrent_creates_get_distinct_addresses_and_ports_from_a_small_range() {
    let srv = start_test_server_with(|c| {
        c.service_ranges.cidr = "10.100.0.0/28".parse().unwrap(); // 14 usable
        c.service_ranges.node_ports = 30000..=30013;
    })
    .await;
    let h = Http::new(&srv);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let h = Http::new(&srv);
        tasks.push(tokio::spawn(async move {
            h.post(SVCS, &svc(&format!("s{i}"), "NodePort", None, None))
                .await
        }));
    }
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    let mut full = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.code() {
            201 => {
                let ip = r.body["spec"]["clusterIP"].as_str().unwrap().to_string();
                assert_eq!(r.body["spec"]["clusterIPs"], json!([ip]));
                assert!(ip.starts_with("10.100.0."), "{ip}");
                assert!(ips.insert(ip.clone()), "{ip} handed out twice");
                let np = r.body["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
                assert!((30000..=30013).contains(&np));
                assert!(ports.insert(np), "nodePort {np} handed out twice");
            }
            422 => {
                assert_eq!(r.reason(), "Invalid");
                assert!(r.message().contains("range is full"), "{}", r.message());
                full += 1;
            }
            c => panic!("unexpected {c}: {}", r.body),
        }
    }
    assert_eq!(
        ips.len(),
        14,
        "every usable address of the /28 is used once"
    );
    assert_eq!(full, 2);
    assert!(!ips.contains("10.100.0.0") && !ips.contains("10.100.0.15"));

    // A delete releases: the freed address and port can be asked for by name.
    let got = h.get(&format!("{SVCS}/s0")).await;
    let ip0 = got.body["spec"]["clusterIP"].as_str().unwrap().to_string();
    let np0 = got.body["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    let r = h
        .post(SVCS, &svc("again", "NodePort", Some(&ip0), Some(np0)))
        .await;
    assert_eq!(r.code(), 422, "taken: {}", r.body);
    assert_eq!(h.delete(&format!("{SVCS}/s0")).await.code(), 200);
    let r = h
        .post(SVCS, &svc("again", "NodePort", Some(&ip0), Some(np0)))
        .await;
    assert_eq!(r.code(), 201, "{}", r.body);
    assert_eq!(r.body["spec"]["clusterIP"], json!(ip0));
    assert_eq!(r.body["spec"]["ports"][0]["nodePort"], json!(np0));
}

#[tokio::test]
async fn user_given_values_are_checked_and_updates_keep_allocations() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let a = h
        .post(SVCS, &svc("a", "ClusterIP", Some("10.96.0.10"), None))
        .await;
    assert_eq!(a.code(), 201, "{}", a.body);

    let b = h
        .post(SVCS, &svc("b", "ClusterIP", Some("10.96.0.10"), None))
        .await;
    assert_eq!(b.code(), 422);
    assert_eq!(
        b.message(),
        "Service \"b\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.0.10\"}: failed to allocate IP 10.96.0.10: provided IP is already allocated"
    );
    assert_eq!(b.body["details"]["causes"][0]["field"], "spec.clusterIPs");
    assert_eq!(
        h.get(&format!("{SVCS}/b")).await.code(),
        404,
        "a rejected write changes nothing"
    );

    let c = h
        .post(SVCS, &svc("c", "ClusterIP", Some("192.168.1.1"), None))
        .await;
    assert_eq!(c.code(), 422);
    assert!(
        c.message()
            .contains("The range of valid IPs is 10.96.0.0/16"),
        "{}",
        c.message()
    );

    let headless = h
        .post(SVCS, &svc("h", "ClusterIP", Some("None"), None))
        .await;
    assert_eq!(headless.code(), 201);
    assert_eq!(headless.body["spec"]["clusterIPs"], json!(["None"]));

    let np = h
        .post(SVCS, &svc("np", "NodePort", None, Some(30080)))
        .await;
    assert_eq!(np.code(), 201, "{}", np.body);
    let dup = h
        .post(SVCS, &svc("np2", "NodePort", None, Some(30080)))
        .await;
    assert_eq!(dup.code(), 422);
    assert!(
        dup.message().contains(
            "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        ),
        "{}",
        dup.message()
    );

    // An update that leaves clusterIP and nodePort out keeps them.
    let ip = np.body["spec"]["clusterIP"].clone();
    let mut upd = svc("np", "NodePort", None, None);
    upd["metadata"]["resourceVersion"] = json!(np.rv());
    upd["spec"]["ports"][0]["targetPort"] = json!(9090);
    let u = h.put(&format!("{SVCS}/np"), &upd).await;
    assert_eq!(u.code(), 200, "{}", u.body);
    assert_eq!(u.body["spec"]["clusterIP"], ip);
    assert_eq!(u.body["spec"]["ports"][0]["nodePort"], 30080);
    assert_eq!(u.body["spec"]["ports"][0]["targetPort"], 9090);

    // Type ClusterIP releases the node port.
    let mut to_cip = u.body.clone();
    to_cip["spec"]["type"] = json!("ClusterIP");
    to_cip["spec"]["ports"][0]
        .as_object_mut()
        .unwrap()
        .remove("nodePort");
    to_cip["spec"]
        .as_object_mut()
        .unwrap()
        .remove("externalTrafficPolicy");
    let u = h.put(&format!("{SVCS}/np"), &to_cip).await;
    assert_eq!(u.code(), 200, "{}", u.body);
    assert!(u.body["spec"]["ports"][0].get("nodePort").is_none());
    let again = h
        .post(SVCS, &svc("np3", "NodePort", None, Some(30080)))
        .await;
    assert_eq!(again.code(), 201, "{}", again.body);
}
