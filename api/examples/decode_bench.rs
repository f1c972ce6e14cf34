//! Micro-benchmark: ways to decode a typical Pod from a `serde_json::Value`.
use std::time::Instant;

use kapsel_api::Pod;
use serde::Deserialize;
use serde_json::{json, Value};

fn pod() -> Value {
    json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-12345","namespace":"default",
      "labels":{"app":"web","pod-template-hash":"abc"},
      "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-abc","uid":"0b5e4c1e-6a3e-4f55-9d2a-8d2f7c1d0e11","controller":true}]},
      "spec":{"containers":[{"name":"app","image":"registry.local/web:1.0","ports":[{"containerPort":8080}],
        "resources":{"requests":{"cpu":"100m","memory":"128Mi"},"limits":{"cpu":"200m","memory":"256Mi"}},
        "env":[{"name":"A","value":"1"},{"name":"B","value":"2"}]}],
        "restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst"}})
}

/// A Pod as the API server stores and watches it: with status, defaults and a `managedFields`
/// entry (about half of its bytes).
const STORED_POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"creationTimestamp":"2026-11-29T23:07:00Z","generation":1,"labels":{"app":"bench"},"managedFields":[{"apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{"f:app":{}},"f:ownerReferences":{"k:{\"uid\":\"0b5e4c1e-6a3e-4f55-9d2a-8d2f7c1d0e11\"}":{".":{},"f:apiVersion":{},"f:controller":{},"f:kind":{},"f:name":{},"f:uid":{}}}},"f:spec":{"f:containers":{"k:{\"name\":\"c\"}":{".":{},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:resources":{"f:requests":{"f:cpu":{},"f:memory":{}}},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:restartPolicy":{},"f:terminationGracePeriodSeconds":{}}},"manager":"curl","operation":"Update","time":"2026-11-29T23:07:00Z"}],"name":"p1","namespace":"default","ownerReferences":[{"apiVersion":"apps/v1","controller":true,"kind":"ReplicaSet","name":"rs","uid":"0b5e4c1e-6a3e-4f55-9d2a-8d2f7c1d0e11"}],"resourceVersion":"18","uid":"f44ab66f-afb0-44dc-8586-e4cd217198ec"},"spec":{"containers":[{"image":"x","imagePullPolicy":"Always","name":"c","resources":{"requests":{"cpu":"100m","memory":"128Mi"}},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File"}],"dnsPolicy":"ClusterFirst","enableServiceLinks":true,"restartPolicy":"Always","terminationGracePeriodSeconds":30},"status":{"phase":"Pending"}}"#;

fn main() {
    let n = 100_000;
    let v = pod();
    let t = Instant::now();
    for _ in 0..n {
        let _ = std::hint::black_box(kapsel_api::codec::from_value::<Pod>(v.clone()));
    }
    println!(
        "codec::from_value (ignored+path) owned: {:?}",
        t.elapsed() / n
    );
    let t = Instant::now();
    for _ in 0..n {
        let _ = std::hint::black_box(v.clone());
    }
    println!("clone alone: {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        let mut unknown = Vec::new();
        let x = v.clone();
        let r: Result<Pod, _> = serde_ignored::deserialize(x, |p| unknown.push(p.to_string()));
        let _ = std::hint::black_box(r);
    }
    println!("serde_ignored owned: {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        let mut unknown = Vec::new();
        let x = v.clone();
        let r: Result<Pod, _> = serde_ignored::deserialize(&x, |p| unknown.push(p.to_string()));
        let _ = std::hint::black_box(r);
    }
    println!("serde_ignored borrowed: {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        let x = v.clone();
        let _ = std::hint::black_box(Pod::deserialize(x));
    }
    println!("plain owned: {:?}", t.elapsed() / n);
    let bytes = serde_json::to_vec(&v).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        let _ = std::hint::black_box(serde_json::from_slice::<Value>(&bytes));
    }
    println!("bytes->Value: {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        let _ = std::hint::black_box(serde_json::from_slice::<Pod>(&bytes));
    }
    println!("bytes->Pod: {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        let p = serde_json::from_slice::<Pod>(STORED_POD.as_bytes()).unwrap();
        drop(std::hint::black_box(p));
    }
    println!(
        "stored bytes->Pod (with managedFields), incl. drop: {:?}",
        t.elapsed() / n
    );
    let pod = serde_json::from_slice::<Pod>(STORED_POD.as_bytes()).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        let _ = std::hint::black_box(serde_json::to_vec(&pod));
    }
    println!("Pod (with managedFields)->bytes: {:?}", t.elapsed() / n);
}
