//! Watch: exact event sequences from a resourceVersion, 410 past the history, selectors,
//! bookmarks, timeouts, and list+watch consistency under 8 concurrent writers.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

async fn open_watch(base: &str, path_and_query: &str) -> reqwest::Response {
    let r = reqwest::Client::new()
        .get(format!("{base}{path_and_query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r
}

fn rv_of(ev: &Value) -> u64 {
    ev["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn watch_from_a_resource_version_delivers_exactly_the_later_events_in_order() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let first = h.post(CMS, &configmap("a")).await;
    let start = first.rv();
    // Later: b added, a modified, b deleted, c added (+ a write elsewhere that must not show).
    h.post(CMS, &configmap("b")).await;
    h.patch(
        &format!("{CMS}/a"),
        "application/merge-patch+json",
        &json!({"data": {"k": "2"}}),
    )
    .await;
    h.post(
        "/api/v1/namespaces/kube-system/configmaps",
        &configmap("other"),
    )
    .await;
    h.delete(&format!("{CMS}/b")).await;
    h.post(CMS, &configmap("c")).await;
    let mut w = open_watch(&srv.url, &format!("{CMS}?watch=1&resourceVersion={start}")).await;
    let evs = read_events(&mut w, 4, Duration::from_secs(5)).await;
    let got: Vec<(String, String)> = evs
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("ADDED".into(), "b".into()),
            ("MODIFIED".into(), "a".into()),
            ("DELETED".into(), "b".into()),
            ("ADDED".into(), "c".into())
        ]
    );
    let revs: Vec<u64> = evs.iter().map(rv_of).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    assert!(revs[0] > start.parse::<u64>().unwrap());
    assert_eq!(evs[0]["object"]["kind"], "ConfigMap");
    // And live events keep coming, nothing else in between.
    h.post(CMS, &configmap("d")).await;
    let more = read_events(&mut w, 1, Duration::from_secs(5)).await;
    assert_eq!(more[0]["type"], "ADDED");
    assert_eq!(more[0]["object"]["metadata"]["name"], "d");
}

#[tokio::test]
async fn a_backlog_arrives_as_batches_of_lines_in_order() {
    // Events already past the cursor go out as one chunk per store batch, not one chunk per
    // line (a line per chunk let a watcher fall seconds behind a busy server). Framing stays
    // newline-delimited JSON.
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let start = h.post(CMS, &configmap("first")).await.rv();
    for i in 0..100 {
        h.post(CMS, &configmap(&format!("cm-{i}"))).await;
    }
    let mut w = open_watch(&srv.url, &format!("{CMS}?watch=1&resourceVersion={start}")).await;
    let first = tokio::time::timeout(Duration::from_secs(5), w.chunk())
        .await
        .expect("a chunk within 5 s")
        .expect("no transport error")
        .expect("a chunk");
    let lines = first.iter().filter(|&&b| b == b'\n').count();
    assert!(lines >= 2, "first chunk carries {lines} line(s)");
    // All 100 arrive, in order (the first chunk's complete lines included).
    let mut text = String::from_utf8(first.to_vec()).expect("utf-8");
    while text.matches('\n').count() < 100 {
        let c = tokio::time::timeout(Duration::from_secs(5), w.chunk())
            .await
            .expect("more within 5 s")
            .expect("no transport error")
            .expect("a chunk");
        text.push_str(std::str::from_utf8(&c).expect("utf-8"));
    }
    let names: Vec<String> = text
        .lines()
        .map(|l| {
            let ev: Value = serde_json::from_str(l).expect("one JSON event per line");
            assert_eq!(ev["type"], "ADDED");
            ev["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let want: Vec<String> = (0..100).map(|i| format!("cm-{i}")).collect();
    assert_eq!(names, want);
}

#[tokio::test]
async fn an_expired_resource_version_gets_410() {
    let srv = start_test_server_with(|c| c.watch_history = 16).await;
    let h = Http::new(&srv);
    let first = h.post(CMS, &configmap("first")).await;
    for i in 0..40 {
        h.post(CMS, &configmap(&format!("x{i}"))).await;
    }
    let mut w = open_watch(
        &srv.url,
        &format!("{CMS}?watch=true&resourceVersion={}", first.rv()),
    )
    .await;
    let evs = read_events(&mut w, 1, Duration::from_secs(5)).await;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["type"], "ERROR");
    assert_eq!(evs[0]["object"]["kind"], "Status");
    assert_eq!(evs[0]["object"]["code"], 410);
    assert_eq!(evs[0]["object"]["reason"], "Expired");
    // The stream ends after the error.
    assert!(w.chunk().await.unwrap().is_none());
}

#[tokio::test]
async fn watch_without_version_starts_with_the_current_state() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    for n in ["a", "b"] {
        h.post(CMS, &configmap(n)).await;
    }
    let mut w = open_watch(&srv.url, &format!("{CMS}?watch=1")).await;
    let evs = read_events(&mut w, 2, Duration::from_secs(5)).await;
    assert!(evs.iter().all(|e| e["type"] == "ADDED"));
    h.post(CMS, &configmap("c")).await;
    let evs = read_events(&mut w, 1, Duration::from_secs(5)).await;
    assert_eq!(evs[0]["object"]["metadata"]["name"], "c");
}

#[tokio::test]
async fn selectors_turn_changes_into_added_and_deleted() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let pods = "/api/v1/namespaces/default/pods";
    let c = h.post(pods, &pod("p")).await; // app=web
    let mut w = open_watch(
        &srv.url,
        &format!(
            "{pods}?watch=1&resourceVersion={}&labelSelector=tier%3Dfront",
            c.rv()
        ),
    )
    .await;
    let lbl = |t: &str| json!({"metadata": {"labels": {"tier": t}}});
    h.patch(
        &format!("{pods}/p"),
        "application/merge-patch+json",
        &lbl("front"),
    )
    .await; // starts matching
    h.patch(
        &format!("{pods}/p"),
        "application/merge-patch+json",
        &json!({"metadata": {"annotations": {"x": "1"}}}),
    )
    .await;
    h.patch(
        &format!("{pods}/p"),
        "application/merge-patch+json",
        &lbl("back"),
    )
    .await; // stops matching
    h.patch(
        &format!("{pods}/p"),
        "application/merge-patch+json",
        &json!({"metadata": {"annotations": {"x": "2"}}}),
    )
    .await;
    let evs = read_events(&mut w, 3, Duration::from_secs(5)).await;
    let types: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["ADDED", "MODIFIED", "DELETED"]);
    // Field selector on spec.nodeName.
    let mut w2 = open_watch(
        &srv.url,
        "/api/v1/pods?watch=1&fieldSelector=spec.nodeName%3Dn1",
    )
    .await;
    h.post(pods, &pod("q")).await;
    h.post(
        &format!("{pods}/q/binding"),
        &json!({"target": {"name": "n1"}}),
    )
    .await;
    let evs = read_events(&mut w2, 1, Duration::from_secs(5)).await;
    assert_eq!(evs[0]["type"], "ADDED");
    assert_eq!(evs[0]["object"]["metadata"]["name"], "q");
}

#[tokio::test]
async fn bookmarks_and_timeout() {
    let srv = start_test_server().await;
    let h = Http::new(&srv);
    let c = h.post(CMS, &configmap("a")).await;
    let mut w = open_watch(
        &srv.url,
        &format!(
            "{CMS}?watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds=3",
            c.rv()
        ),
    )
    .await;
    let t0 = std::time::Instant::now();
    let evs = read_events(&mut w, 1, Duration::from_secs(5)).await;
    assert_eq!(evs[0]["type"], "BOOKMARK");
    assert_eq!(evs[0]["object"]["kind"], "ConfigMap");
    assert!(rv_of(&evs[0]) >= c.rv().parse::<u64>().unwrap());
    // The stream closes after timeoutSeconds.
    let rest = read_events(&mut w, 100, Duration::from_secs(10)).await;
    assert!(rest.iter().all(|e| e["type"] == "BOOKMARK"));
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(2500) && elapsed < Duration::from_secs(8),
        "{elapsed:?}"
    );
}

/// A client lists, then watches from the list's resourceVersion while 8 writers create, update
/// and delete; the state it rebuilds equals the final list, with no event missed or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_then_watch_misses_and_repeats_nothing_under_8_writers() {
    let srv = start_test_server().await;
    let base = srv.url.clone();
    const WRITERS: usize = 8;
    const OPS: usize = 40;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let base = base.clone();
        writers.push(tokio::spawn(async move {
            let h = Http::at(&base);
            for i in 0..OPS {
                let name = format!("w{w}-{}", i % 10);
                match i % 4 {
                    0 | 1 => {
                        let _ = h.post(CMS, &configmap(&name)).await;
                    }
                    2 => {
                        let _ = h
                            .patch(
                                &format!("{CMS}/{name}"),
                                "application/merge-patch+json",
                                &json!({"data": {"i": i.to_string()}}),
                            )
                            .await;
                    }
                    _ => {
                        let _ = h.delete(&format!("{CMS}/w{w}-{}", (i + 3) % 10)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let h = Http::at(&base);
    let list = h.get(CMS).await;
    let start: u64 = list.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut state: BTreeMap<String, u64> = BTreeMap::new();
    for it in list.body["items"].as_array().unwrap() {
        state.insert(
            it["metadata"]["name"].as_str().unwrap().into(),
            it["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
        );
    }
    let mut w = open_watch(&base, &format!("{CMS}?watch=1&resourceVersion={start}")).await;
    for t in writers {
        t.await.unwrap();
    }
    let final_list = h.get(CMS).await;
    let final_rv: u64 = final_list.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut seen_revs: HashSet<(String, u64)> = HashSet::new();
    let mut last_rev = start;
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while last_rev < final_rv {
        let chunk = tokio::time::timeout_at(deadline, w.chunk())
            .await
            .expect("watch caught up in time")
            .unwrap()
            .unwrap();
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let ev: Value = serde_json::from_slice(&line).unwrap();
            let name = ev["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string();
            let rev = rv_of(&ev);
            assert!(rev > start, "event at {rev} not after the list's {start}");
            assert!(rev >= last_rev, "out of order: {rev} after {last_rev}");
            assert!(
                seen_revs.insert((name.clone(), rev)),
                "duplicate event {name}@{rev}"
            );
            last_rev = rev;
            match ev["type"].as_str().unwrap() {
                "ADDED" => {
                    assert!(!state.contains_key(&name), "ADDED for existing {name}");
                    state.insert(name, rev);
                }
                "MODIFIED" => {
                    assert!(state.contains_key(&name), "MODIFIED for unknown {name}");
                    state.insert(name, rev);
                }
                "DELETED" => {
                    assert!(state.remove(&name).is_some(), "DELETED for unknown {name}");
                }
                other => panic!("unexpected event {other}"),
            }
        }
    }
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for it in final_list.body["items"].as_array().unwrap() {
        want.insert(
            it["metadata"]["name"].as_str().unwrap().into(),
            it["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
        );
    }
    assert_eq!(state, want);
    assert!(
        final_rv > start + 50,
        "the writers overlapped the watch ({start}..{final_rv})"
    );
}
