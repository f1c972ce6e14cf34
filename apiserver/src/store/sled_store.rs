//! [`Store`] on sled, with group commit.
//!
//! Writes are serialised by one lock: a transaction reads, decides, and applies one atomic
//! `sled::Batch` holding its objects *and* the new revision counter, so a crash can never
//! separate an object from the revision it was written at. Durability is a separate step: a
//! flusher thread calls `Db::flush()` (write + fsync of sled's log) for everything committed so
//! far, then wakes every writer whose revision is covered — one fsync for a whole batch of
//! concurrent writes (group commit). Watch events are published only after they are durable, so
//! no watcher ever sees a write that a crash could take back.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::watch;

use super::{
    Committed, DurableState, EventKind, EventRing, ListResult, Revision, Store, StoreError,
    StoreEvent, Txn, WatchCursor,
};

const REVISION_KEY: &[u8] = b"\x00meta/revision";

/// Tuning knobs.
#[derive(Clone, Debug)]
pub struct SledOptions {
    /// Events kept for watchers.
    pub watch_history: usize,
    /// sled page cache, bytes.
    pub cache_bytes: u64,
    /// Group commit: when the previous fsync covered more than one write (writers are
    /// concurrent), the flusher waits this long before the next fsync so that it covers more.
    /// A lone writer never waits.
    pub commit_delay: std::time::Duration,
    /// Secrets at rest: values under [`super::encryption::ENCRYPTED_PREFIXES`] are stored
    /// encrypted (and decrypted on every read).
    pub encryption: Option<Arc<super::encryption::Encryption>>,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            watch_history: 10_000,
            cache_bytes: 32 * 1024 * 1024,
            commit_delay: std::time::Duration::from_micros(500),
            encryption: None,
        }
    }
}

struct Inner {
    db: sled::Db,
    /// Held for writing during a write transaction; holds the latest committed revision.
    lock: RwLock<Revision>,
    /// Committed (in memory) but not yet durable events, in revision order.
    pending: Mutex<Vec<StoreEvent>>,
    ring: Arc<EventRing>,
    durable: watch::Sender<DurableState>,
    dirty: Mutex<bool>,
    wake: Condvar,
    closed: AtomicBool,
    stats: Mutex<FlushStats>,
    commit_delay: std::time::Duration,
    encryption: Option<Arc<super::encryption::Encryption>>,
}

/// Group-commit counters, for benchmarks and metrics.
#[derive(Clone, Debug, Default)]
pub struct FlushStats {
    pub flushes: u64,
    pub flushed_revisions: u64,
    pub flush_micros_total: u64,
}

/// sled-backed store. Cheap to clone.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
    flusher: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl SledStore {
    pub fn open(dir: &Path, opts: SledOptions) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(opts.cache_bytes)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let rev = match db.get(REVISION_KEY)? {
            Some(v) => {
                let arr: [u8; 8] = v
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Backend("corrupt revision counter".into()))?;
                u64::from_be_bytes(arr)
            }
            None => 0,
        };
        let (durable, _) = watch::channel(DurableState {
            revision: rev,
            error: None,
            closed: false,
        });
        let inner = Arc::new(Inner {
            db,
            lock: RwLock::new(rev),
            pending: Mutex::new(Vec::new()),
            ring: EventRing::new(opts.watch_history, rev),
            durable,
            dirty: Mutex::new(false),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
            stats: Mutex::new(FlushStats::default()),
            commit_delay: opts.commit_delay,
            encryption: opts.encryption.clone(),
        });
        let thread_inner = Arc::clone(&inner);
        let handle = std::thread::Builder::new()
            .name("kapsel-store-flush".into())
            .spawn(move || flusher(thread_inner))
            .map_err(|e| StoreError::Backend(format!("spawning flusher: {e}")))?;
        Ok(SledStore {
            inner,
            flusher: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// Flush outstanding writes and stop the flusher. Later writes fail with `Closed`.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        {
            let mut d = self.inner.dirty.lock().unwrap_or_else(|p| p.into_inner());
            *d = true;
        }
        self.inner.wake.notify_all();
        let handle = self
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    pub fn flush_stats(&self) -> FlushStats {
        self.inner
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }
}

impl Inner {
    /// A stored value as the API sees it (decrypted where encryption applies).
    fn plain(&self, key: &[u8], stored: &[u8]) -> Result<Bytes, StoreError> {
        match &self.encryption {
            Some(enc) if super::encryption::Encryption::applies(key) => enc.open(stored),
            _ => Ok(Bytes::copy_from_slice(stored)),
        }
    }
}

fn flusher(inner: Arc<Inner>) {
    // Revisions the previous fsync made durable: more than one means concurrent writers.
    let mut last_batch: u64 = 0;
    loop {
        {
            let mut dirty = inner.dirty.lock().unwrap_or_else(|p| p.into_inner());
            while !*dirty {
                dirty = inner.wake.wait(dirty).unwrap_or_else(|p| p.into_inner());
            }
            *dirty = false;
        }
        let closing = inner.closed.load(Ordering::SeqCst);
        if !closing && last_batch > 1 && !inner.commit_delay.is_zero() {
            // Let the writers that are on their way join this fsync.
            std::thread::sleep(inner.commit_delay);
        }
        // Everything committed up to `target` is in sled's buffers and in `pending`.
        let target = *inner.lock.read().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let result = inner.db.flush();
        let elapsed = started.elapsed();
        match result {
            Ok(_) => {
                let ready: Vec<StoreEvent> = {
                    let mut pending = inner.pending.lock().unwrap_or_else(|p| p.into_inner());
                    let split = pending.partition_point(|e| e.revision <= target);
                    pending.drain(..split).collect()
                };
                let previous = inner.durable.borrow().revision;
                last_batch = target.saturating_sub(previous);
                inner.ring.publish(ready);
                inner.durable.send_modify(|st| {
                    st.revision = st.revision.max(target);
                    st.closed = closing;
                });
                let mut stats = inner.stats.lock().unwrap_or_else(|p| p.into_inner());
                stats.flushes += 1;
                stats.flushed_revisions += target.saturating_sub(previous);
                stats.flush_micros_total += u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            }
            Err(e) => {
                tracing::error!(error = %e, "store flush failed; writes are not acknowledged");
                inner
                    .durable
                    .send_modify(|st| st.error = Some(e.to_string()));
            }
        }
        if closing {
            inner.durable.send_modify(|st| st.closed = true);
            return;
        }
    }
}

struct SledTxn<'a> {
    db: &'a sled::Db,
    inner: &'a Inner,
    revision: Revision,
    /// key → Some(value) | None (deleted), with tombstones for events.
    writes: BTreeMap<String, Write>,
}

enum Write {
    Put(Bytes),
    Delete(Bytes),
}

impl SledTxn<'_> {
    fn committed(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.db
            .get(key.as_bytes())?
            .map(|v| self.inner.plain(key.as_bytes(), &v))
            .transpose()
    }
}

impl Txn for SledTxn<'_> {
    fn get(&mut self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self.writes.get(key) {
            Some(Write::Put(v)) => Ok(Some(v.clone())),
            Some(Write::Delete(_)) => Ok(None),
            None => self.committed(key),
        }
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<(String, Bytes)>, StoreError> {
        let mut out: BTreeMap<String, Bytes> = BTreeMap::new();
        for kv in self.db.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv?;
            let v = self.inner.plain(&k, &v)?;
            out.insert(String::from_utf8_lossy(&k).into_owned(), v);
        }
        for (k, w) in self.writes.range(prefix.to_string()..) {
            if !k.starts_with(prefix) {
                break;
            }
            match w {
                Write::Put(v) => {
                    out.insert(k.clone(), v.clone());
                }
                Write::Delete(_) => {
                    out.remove(k);
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    fn put(&mut self, key: &str, value: Bytes) {
        self.writes.insert(key.to_string(), Write::Put(value));
    }

    fn delete(&mut self, key: &str, tombstone: Bytes) {
        self.writes
            .insert(key.to_string(), Write::Delete(tombstone));
    }

    fn revision(&self) -> Revision {
        self.revision
    }
}

impl Store for SledStore {
    fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let t = std::time::Instant::now();
        let v = self
            .inner
            .db
            .get(key.as_bytes())?
            .map(|v| self.inner.plain(key.as_bytes(), &v))
            .transpose()?;
        crate::metrics::observe_store("get", t);
        Ok(v)
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult, StoreError> {
        let t = std::time::Instant::now();
        // The read lock keeps writers out while we scan, so items and revision agree.
        let guard = self.inner.lock.read().unwrap_or_else(|p| p.into_inner());
        let revision = *guard;
        let lower = match start_after {
            Some(k) if k.starts_with(prefix) => Bound::Excluded(k.as_bytes().to_vec()),
            _ => Bound::Included(prefix.as_bytes().to_vec()),
        };
        let mut items = Vec::new();
        let mut more = false;
        for kv in self.inner.db.range::<Vec<u8>, _>((lower, Bound::Unbounded)) {
            let (k, v) = kv?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            if limit > 0 && items.len() == limit {
                more = true;
                break;
            }
            let v = self.inner.plain(&k, &v)?;
            items.push((String::from_utf8_lossy(&k).into_owned(), v));
        }
        drop(guard);
        crate::metrics::observe_store("list", t);
        Ok(ListResult {
            items,
            revision,
            more,
        })
    }

    fn current_revision(&self) -> Revision {
        *self.inner.lock.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write<T, E, F>(&self, f: F) -> Result<(T, Committed), E>
    where
        F: FnOnce(&mut dyn Txn) -> Result<T, E>,
        E: From<StoreError>,
    {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed.into());
        }
        let started = std::time::Instant::now();
        let mut guard = self.inner.lock.write().unwrap_or_else(|p| p.into_inner());
        let current = *guard;
        let mut txn = SledTxn {
            db: &self.inner.db,
            inner: &self.inner,
            revision: current + 1,
            writes: BTreeMap::new(),
        };
        let out = f(&mut txn)?;
        if txn.writes.is_empty() {
            return Ok((out, Committed::ready(current)));
        }
        let revision = current + 1;
        let mut batch = sled::Batch::default();
        let mut events = Vec::with_capacity(txn.writes.len());
        for (key, w) in std::mem::take(&mut txn.writes) {
            let prev = txn.committed(&key).map_err(E::from)?;
            match w {
                Write::Put(v) => {
                    match &self.inner.encryption {
                        Some(enc) if super::encryption::Encryption::applies(key.as_bytes()) => {
                            batch.insert(key.as_bytes(), enc.seal(&v).map_err(E::from)?);
                        }
                        _ => batch.insert(key.as_bytes(), v.as_ref()),
                    }
                    events.push(StoreEvent {
                        revision,
                        kind: if prev.is_some() {
                            EventKind::Modified
                        } else {
                            EventKind::Added
                        },
                        key: key.into(),
                        value: v,
                        prev,
                    });
                }
                Write::Delete(tombstone) => {
                    batch.remove(key.as_bytes());
                    if prev.is_some() {
                        events.push(StoreEvent {
                            revision,
                            kind: EventKind::Deleted,
                            key: key.into(),
                            value: tombstone,
                            prev,
                        });
                    }
                }
            }
        }
        batch.insert(REVISION_KEY, &revision.to_be_bytes());
        self.inner
            .db
            .apply_batch(batch)
            .map_err(|e| E::from(StoreError::from(e)))?;
        *guard = revision;
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(events);
        drop(guard);
        {
            let mut d = self.inner.dirty.lock().unwrap_or_else(|p| p.into_inner());
            *d = true;
        }
        self.inner.wake.notify_one();
        Ok((
            out,
            Committed::pending(revision, self.inner.durable.subscribe()).timed(started),
        ))
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<WatchCursor, StoreError> {
        self.inner.ring.cursor(prefix, from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(s: &SledStore, key: &str, val: &str) -> Committed {
        let (_, c) = s
            .write(|t| -> Result<(), StoreError> {
                t.put(key, Bytes::from(val.to_string()));
                Ok(())
            })
            .unwrap();
        c
    }

    #[tokio::test]
    async fn revisions_are_global_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
            assert_eq!(put(&s, "/r/a", "1").durable().await.unwrap(), 1);
            assert_eq!(put(&s, "/r/b", "2").durable().await.unwrap(), 2);
            let (_, c) = s
                .write(|t| -> Result<(), StoreError> {
                    t.delete("/r/a", Bytes::from_static(b"1"));
                    Ok(())
                })
                .unwrap();
            assert_eq!(c.durable().await.unwrap(), 3);
            s.close();
        }
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        assert_eq!(s.current_revision(), 3);
        let l = s.list("/r/", None, 0).unwrap();
        assert_eq!(l.items.len(), 1);
        assert_eq!(l.revision, 3);
        // History before the restart is gone; watching from the current revision works.
        assert!(matches!(s.watch("/r/", 1), Err(StoreError::Gone { .. })));
        assert!(s.watch("/r/", 3).is_ok());
        s.close();
    }

    #[tokio::test]
    async fn failed_transactions_write_nothing_and_consume_no_revision() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        let r: Result<((), Committed), StoreError> = s.write(|t| {
            t.put("/x", Bytes::from_static(b"v"));
            Err(StoreError::Backend("no".into()))
        });
        assert!(r.is_err());
        assert_eq!(s.current_revision(), 0);
        assert!(s.get("/x").unwrap().is_none());
        s.close();
    }

    #[tokio::test]
    async fn watch_sees_durable_events_in_order_with_prev_values() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        let mut w = s.watch("/p/", 0).unwrap();
        put(&s, "/p/a", "1");
        put(&s, "/q/a", "x");
        put(&s, "/p/a", "2").durable().await.unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            got.extend(w.next_batch(10).await.unwrap());
        }
        assert_eq!(got[0].kind, EventKind::Added);
        assert_eq!(got[1].kind, EventKind::Modified);
        assert_eq!(got[1].revision, 3);
        assert_eq!(got[1].prev.as_deref(), Some(&b"1"[..]));
        s.close();
    }

    #[tokio::test]
    async fn list_pages_with_start_after() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        for i in 0..5 {
            put(&s, &format!("/l/{i}"), "v");
        }
        let p1 = s.list("/l/", None, 2).unwrap();
        assert!(p1.more);
        let p2 = s
            .list("/l/", Some(&p1.items.last().unwrap().0), 10)
            .unwrap();
        assert_eq!(p2.items.len(), 3);
        assert!(!p2.more);
        s.close();
    }
}
