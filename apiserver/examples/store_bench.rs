//! Store-only benchmark: durable writes/s of kapsel's `SledStore` (sled + group commit) with
//! N concurrent writers, no HTTP and no API logic — the ceiling the API server's creates/s can
//! reach on this machine. Also raw sled (`insert` + `flush` per write from N threads) for
//! comparison.
//!
//! ```text
//! cargo build --release -p kapsel-apiserver --example store_bench
//! target/release/examples/store_bench [--writes 20000] [--writers 32] [--value-bytes 1500]
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kapsel_apiserver::store::sled_store::SledOptions;
use kapsel_apiserver::store::{SledStore, Store, StoreError};

mod common;

fn cpu_secs() -> f64 {
    common::cpu_secs(std::process::id())
}

/// A fresh sled database as the store opens it, without the store.
fn raw_sled(base: &str) -> (tempfile::TempDir, sled::Db) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .flush_every_ms(None)
        .mode(sled::Mode::HighThroughput)
        .open()
        .unwrap();
    (dir, db)
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let writes = arg("--writes", 20_000);
    let writers = arg("--writers", 32);
    let value = Bytes::from(vec![b'x'; arg("--value-bytes", 1500)]);
    let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| "/tmp".into());

    // kapsel's store: one transaction per write, acknowledged after the group-commit fsync.
    let dir = tempfile::tempdir_in(&base).unwrap();
    let store = SledStore::open(dir.path(), SledOptions::default()).unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let (t0, c0) = (Instant::now(), cpu_secs());
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (store, next, value) = (store.clone(), next.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= writes {
                    return;
                }
                let key = format!("/registry/pods/default/p-{i}");
                let ((), committed) = store
                    .write(|txn| {
                        if txn.get(&key)?.is_some() {
                            return Err(StoreError::Backend("exists".into()));
                        }
                        txn.put(&key, value.clone());
                        Ok::<_, StoreError>(())
                    })
                    .unwrap();
                committed.durable().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (d, c) = (t0.elapsed(), cpu_secs() - c0);
    println!(
        "SledStore, {writers} writers: {:.0} durable writes/s ({writes} in {:.2} s; CPU {:.0} us/write)",
        writes as f64 / d.as_secs_f64(),
        d.as_secs_f64(),
        c * 1e6 / writes as f64
    );
    let st = store.flush_stats();
    println!(
        "  group commit: {} flushes, {:.1} writes/flush, {:.0} us/flush",
        st.flushes,
        st.flushed_revisions as f64 / st.flushes.max(1) as f64,
        st.flush_micros_total as f64 / st.flushes.max(1) as f64
    );
    store.close();

    // The same writes with no flush at all (not durable): what sled's apply costs.
    let (_dir, db) = raw_sled(&base);
    let (t0, c0) = (Instant::now(), cpu_secs());
    for i in 0..writes {
        let mut b = sled::Batch::default();
        b.insert(
            format!("/registry/pods/default/p-{i}").as_bytes(),
            value.as_ref(),
        );
        b.insert(b"\x00meta/revision", &(i as u64).to_be_bytes());
        db.apply_batch(b).unwrap();
    }
    let (d, c) = (t0.elapsed(), cpu_secs() - c0);
    println!(
        "raw sled apply_batch, 1 thread, no flush: {:.0} writes/s (CPU {:.0} us/write)",
        writes as f64 / d.as_secs_f64(),
        c * 1e6 / writes as f64
    );
    let (t0, c0) = (Instant::now(), cpu_secs());
    db.flush().unwrap();
    println!(
        "  then one flush of everything: {:.1} ms (CPU {:.0} ms)",
        t0.elapsed().as_secs_f64() * 1e3,
        (cpu_secs() - c0) * 1e3
    );
    drop(db);

    // Batches of `--group` (16) writes, one flush per batch: what a group-applied commit costs.
    let (_dir, db) = raw_sled(&base);
    let group = arg("--group", 16);
    let (t0, c0) = (Instant::now(), cpu_secs());
    for g in 0..writes / group {
        let mut b = sled::Batch::default();
        for i in g * group..(g + 1) * group {
            b.insert(
                format!("/registry/pods/default/p-{i}").as_bytes(),
                value.as_ref(),
            );
        }
        b.insert(b"\x00meta/revision", &(g as u64).to_be_bytes());
        db.apply_batch(b).unwrap();
        db.flush().unwrap();
    }
    let (d, c) = (t0.elapsed(), cpu_secs() - c0);
    println!(
        "raw sled, batches of {group} + flush each: {:.0} durable writes/s (CPU {:.0} us/write)",
        writes as f64 / d.as_secs_f64(),
        c * 1e6 / writes as f64
    );
}
