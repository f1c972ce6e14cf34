//! Group commit: concurrent durable writes share fsyncs.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kapsel_apiserver::store::sled_store::SledOptions;
use kapsel_apiserver::store::{SledStore, Store, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_durable_writes_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(SledStore::open(dir.path(), SledOptions::default()).unwrap());
    const WRITERS: usize = 32;
    const PER: usize = 50;
    let t0 = Instant::now();
    let slow = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        let slow = slow.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER {
                let tw = Instant::now();
                let (_, c) = s
                    .write(|t| -> Result<(), StoreError> {
                        t.put(&format!("/k/{w}/{i}"), Bytes::from(vec![b'x'; 600]));
                        Ok(())
                    })
                    .unwrap();
                if tw.elapsed().as_micros() > 500 {
                    slow.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                c.durable().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let el = t0.elapsed();
    let st = s.flush_stats();
    eprintln!(
        "synchronous write() calls over 500us: {}",
        slow.load(std::sync::atomic::Ordering::Relaxed)
    );
    eprintln!(
        "{} writes in {el:?} ({:.0}/s): {} flushes, {:.1} writes/flush, {:.0} us/flush",
        WRITERS * PER,
        (WRITERS * PER) as f64 / el.as_secs_f64(),
        st.flushes,
        st.flushed_revisions as f64 / st.flushes.max(1) as f64,
        st.flush_micros_total as f64 / st.flushes.max(1) as f64
    );
    assert!(
        st.flushes * 4 <= (WRITERS * PER) as u64,
        "group commit should batch: {st:?}"
    );
    s.close();
}
