//! [`Store`] on sled, with group commit.
//!
//! Writes are serialised by one lock. A transaction reads, decides, and *stages* its writes:
//! they go into an in-memory map of committed-but-not-yet-applied writes (`staged`) that every
//! read consults before sled, so the write is visible to later transactions and reads at once.
//! Durability is a separate step: a flusher thread takes everything staged, applies it to sled
//! as **one** `sled::Batch` together with the revision counter, calls `Db::flush()` (write +
//! fsync of sled's log), and then wakes every writer whose revision is covered — one batch and
//! one fsync for a whole group of concurrent writes (group commit). sled's cost is mostly per
//! batch, not per key (`examples/store_bench.rs`: ~230 µs per single-write batch + flush, ~28 µs
//! per write in batches of 16), so applying a group as one batch is what makes writes cheap.
//!
//! A crash can never separate an object from the revision it was written at: both are in the
//! same batch, and a batch holds whole transactions. Watch events are published only after
//! they are durable, so no watcher ever sees a write that a crash could take back.

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

/// A committed write that is not yet applied to sled: the newest value of its key.
struct Staged {
    revision: Revision,
    /// `None`: the key was deleted.
    value: Option<Bytes>,
}

/// What the write lock protects.
struct State {
    /// The latest committed revision.
    revision: Revision,
    /// Committed writes not yet applied to sled, by key (plaintext). Reads look here first.
    staged: BTreeMap<String, Staged>,
}

struct Inner {
    db: sled::Db,
    /// Held for writing during a write transaction.
    lock: RwLock<State>,
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
            lock: RwLock::new(State {
                revision: rev,
                staged: BTreeMap::new(),
            }),
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

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner.lock.read().unwrap_or_else(|p| p.into_inner())
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

    /// The committed value of `key`: staged, else in sled. The caller holds the lock, so the
    /// flusher cannot remove a staged write between the two lookups.
    fn read(&self, st: &State, key: &str) -> Result<Option<Bytes>, StoreError> {
        if let Some(s) = st.staged.get(key) {
            return Ok(s.value.clone());
        }
        self.db
            .get(key.as_bytes())?
            .map(|v| self.plain(key.as_bytes(), &v))
            .transpose()
    }

    /// The committed keys under `prefix` after `start_after`, in key order: sled's merged with
    /// the staged writes (which win). At most `limit` items (0: all); `true` when more exist.
    /// The caller holds the lock. sled may be mid-way through applying a batch, but every key
    /// of that batch is still staged, so the merge never shows half of one.
    fn scan(
        &self,
        st: &State,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, Bytes)>, bool), StoreError> {
        let after = start_after.filter(|k| k.starts_with(prefix));
        let lower: Bound<Vec<u8>> = match after {
            Some(k) => Bound::Excluded(k.as_bytes().to_vec()),
            None => Bound::Included(prefix.as_bytes().to_vec()),
        };
        let staged_lower: Bound<&str> = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Included(prefix),
        };
        let mut on_disk = self.db.range::<Vec<u8>, _>((lower, Bound::Unbounded));
        let mut next_on_disk = || -> Result<Option<(String, sled::IVec)>, StoreError> {
            match on_disk.next() {
                Some(kv) => {
                    let (k, v) = kv?;
                    if !k.starts_with(prefix.as_bytes()) {
                        return Ok(None);
                    }
                    Ok(Some((String::from_utf8_lossy(&k).into_owned(), v)))
                }
                None => Ok(None),
            }
        };
        let mut staged = st
            .staged
            .range::<str, _>((staged_lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut disk = next_on_disk()?;
        let mut items = Vec::new();
        loop {
            // The smaller key of the two heads; on a tie the staged write wins and sled's
            // (older) value is skipped.
            let take_staged = match (&disk, staged.peek()) {
                (None, None) => break,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some((dk, _)), Some((sk, _))) => {
                    if dk.as_str() == sk.as_str() {
                        disk = next_on_disk()?;
                        true
                    } else {
                        sk.as_str() < dk.as_str()
                    }
                }
            };
            let item = if take_staged {
                let Some((k, s)) = staged.next() else { break };
                match &s.value {
                    Some(v) => (k.clone(), v.clone()),
                    None => continue,
                }
            } else {
                let Some((k, v)) = disk.take() else { break };
                disk = next_on_disk()?;
                let v = self.plain(k.as_bytes(), &v)?;
                (k, v)
            };
            if limit > 0 && items.len() == limit {
                return Ok((items, true));
            }
            items.push(item);
        }
        Ok((items, false))
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
        // Everything committed up to `target` is staged or already in sled.
        let (target, writes): (Revision, Vec<(String, Option<Bytes>)>) = {
            let st = inner.lock.read().unwrap_or_else(|p| p.into_inner());
            let writes = st
                .staged
                .iter()
                .map(|(k, s)| (k.clone(), s.value.clone()))
                .collect();
            (st.revision, writes)
        };
        let started = Instant::now();
        let result = apply_and_flush(&inner, target, writes);
        let elapsed = started.elapsed();
        match result {
            Ok(()) => {
                // Applied: sled has every staged write up to `target` now.
                inner
                    .lock
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .staged
                    .retain(|_, s| s.revision > target);
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

/// Apply the staged writes and the revision counter as one sled batch, then fsync.
fn apply_and_flush(
    inner: &Inner,
    target: Revision,
    writes: Vec<(String, Option<Bytes>)>,
) -> Result<(), StoreError> {
    if !writes.is_empty() {
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(v) => match &inner.encryption {
                    Some(enc) if super::encryption::Encryption::applies(key.as_bytes()) => {
                        batch.insert(key.as_bytes(), enc.seal(&v)?);
                    }
                    _ => batch.insert(key.as_bytes(), v.as_ref()),
                },
                None => batch.remove(key.as_bytes()),
            }
        }
        batch.insert(REVISION_KEY, &target.to_be_bytes());
        inner.db.apply_batch(batch)?;
    }
    inner.db.flush()?;
    Ok(())
}

struct SledTxn<'a> {
    inner: &'a Inner,
    state: &'a State,
    revision: Revision,
    /// key → Some(value) | None (deleted), with tombstones for events.
    writes: BTreeMap<String, Write>,
}

enum Write {
    Put(Bytes),
    Delete(Bytes),
}

impl Txn for SledTxn<'_> {
    fn get(&mut self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self.writes.get(key) {
            Some(Write::Put(v)) => Ok(Some(v.clone())),
            Some(Write::Delete(_)) => Ok(None),
            None => self.inner.read(self.state, key),
        }
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<(String, Bytes)>, StoreError> {
        let (items, _) = self.inner.scan(self.state, prefix, None, 0)?;
        let mut out: BTreeMap<String, Bytes> = items.into_iter().collect();
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
        let v = {
            let st = self.state();
            self.inner.read(&st, key)?
        };
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
        let st = self.state();
        let revision = st.revision;
        let (items, more) = self.inner.scan(&st, prefix, start_after, limit)?;
        drop(st);
        crate::metrics::observe_store("list", t);
        Ok(ListResult {
            items,
            revision,
            more,
        })
    }

    fn current_revision(&self) -> Revision {
        self.state().revision
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
        let current = guard.revision;
        let revision = current + 1;
        let (out, writes) = {
            let mut txn = SledTxn {
                inner: &self.inner,
                state: &guard,
                revision,
                writes: BTreeMap::new(),
            };
            let out = f(&mut txn)?;
            (out, txn.writes)
        };
        if writes.is_empty() {
            return Ok((out, Committed::ready(current)));
        }
        // Read every previous value first: a failed read must leave nothing staged.
        let mut prevs = Vec::with_capacity(writes.len());
        for key in writes.keys() {
            prevs.push(self.inner.read(&guard, key).map_err(E::from)?);
        }
        let mut events = Vec::with_capacity(writes.len());
        for ((key, w), prev) in writes.into_iter().zip(prevs) {
            let (value, event) = match w {
                Write::Put(v) => {
                    let kind = if prev.is_some() {
                        EventKind::Modified
                    } else {
                        EventKind::Added
                    };
                    (Some(v.clone()), Some((kind, v)))
                }
                // Deleting a key that does not exist is no event.
                Write::Delete(tombstone) => (
                    None,
                    prev.is_some().then_some((EventKind::Deleted, tombstone)),
                ),
            };
            if let Some((kind, v)) = event {
                events.push(StoreEvent {
                    revision,
                    kind,
                    key: Arc::from(key.as_str()),
                    value: v,
                    prev,
                });
            }
            guard.staged.insert(key, Staged { revision, value });
        }
        guard.revision = revision;
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
    /// Reads merge sled with the staged (not yet applied) writes: staged values win, staged
    /// deletions hide sled's keys, and pages split anywhere in the merge.
    #[tokio::test]
    async fn reads_merge_staged_writes_over_sled() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        for k in ["a", "c", "e", "g"] {
            put(&s, &format!("/m/{k}"), "disk").durable().await.unwrap();
        }
        put(&s, "/n/x", "other").durable().await.unwrap();
        assert!(s.inner.db.get("/m/a").unwrap().is_some(), "applied to sled");
        {
            // Stage writes by hand, as a transaction would, without letting the flusher run.
            let mut st = s.inner.lock.write().unwrap();
            assert!(st.staged.is_empty(), "a durable write is no longer staged");
            let mut stage = |k: &str, v: Option<&'static [u8]>| {
                st.staged.insert(
                    format!("/m/{k}"),
                    Staged {
                        revision: 100,
                        value: v.map(Bytes::from_static),
                    },
                );
            };
            stage("b", Some(b"new"));
            stage("c", None);
            stage("e", Some(b"staged"));
            stage("h", Some(b"new"));
            stage("z", None);
        }
        let all = s.list("/m/", None, 0).unwrap();
        let got: Vec<(&str, &[u8])> = all
            .items
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_ref()))
            .collect();
        let want: Vec<(&str, &[u8])> = vec![
            ("/m/a", b"disk"),
            ("/m/b", b"new"),
            ("/m/e", b"staged"),
            ("/m/g", b"disk"),
            ("/m/h", b"new"),
        ];
        assert_eq!(got, want);
        assert!(!all.more);
        // Every page size and every start key gives the same sequence.
        for limit in 1..=6 {
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = s.list("/m/", after.as_deref(), limit).unwrap();
                assert!(page.items.len() <= limit);
                seen.extend(page.items.iter().map(|(k, _)| k.clone()));
                if !page.more {
                    break;
                }
                after = page.items.last().map(|(k, _)| k.clone());
            }
            let keys: Vec<String> = want.iter().map(|(k, _)| k.to_string()).collect();
            assert_eq!(seen, keys, "limit {limit}");
        }
        assert_eq!(s.get("/m/b").unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(s.get("/m/c").unwrap(), None);
        assert_eq!(s.get("/m/e").unwrap().as_deref(), Some(&b"staged"[..]));
        assert_eq!(s.get("/m/g").unwrap().as_deref(), Some(&b"disk"[..]));
        // Transactions see the same merge, plus their own writes.
        let (names, _) = s
            .write(|t| -> Result<Vec<String>, StoreError> {
                t.delete("/m/a", Bytes::from_static(b"disk"));
                t.put("/m/f", Bytes::from_static(b"txn"));
                assert_eq!(t.get("/m/c")?, None);
                Ok(t.list("/m/")?.into_iter().map(|(k, _)| k).collect())
            })
            .unwrap();
        assert_eq!(names, ["/m/b", "/m/e", "/m/f", "/m/g", "/m/h"]);
        s.close();
    }

    /// Concurrent writers overwrite and delete the same keys; after a reopen the store holds
    /// exactly the last acknowledged value of every key, and the revision counter.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn group_applied_writes_survive_reopen_with_the_last_value() {
        let dir = tempfile::tempdir().unwrap();
        let expected = {
            let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
            let mut tasks = Vec::new();
            for w in 0..8u32 {
                let s = s.clone();
                tasks.push(tokio::spawn(async move {
                    // Writer w owns keys k{w}-0..k{w}-9 and rewrites each several times.
                    let mut last = BTreeMap::new();
                    for round in 0..5u32 {
                        for i in 0..10u32 {
                            let key = format!("/k/{w}-{i}");
                            let (_, c) = s
                                .write(|t| -> Result<(), StoreError> {
                                    if (round + i) % 4 == 3 {
                                        t.delete(&key, Bytes::new());
                                    } else {
                                        t.put(&key, Bytes::from(format!("{round}")));
                                    }
                                    Ok(())
                                })
                                .unwrap();
                            c.durable().await.unwrap();
                            let v = ((round + i) % 4 != 3).then(|| format!("{round}"));
                            last.insert(key, v);
                        }
                    }
                    last
                }));
            }
            let mut expected = BTreeMap::new();
            for t in tasks {
                expected.extend(t.await.unwrap());
            }
            s.close();
            expected
        };
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        assert_eq!(s.current_revision(), 8 * 5 * 10);
        for (k, v) in &expected {
            let got = s
                .get(k)
                .unwrap()
                .map(|b| String::from_utf8(b.to_vec()).unwrap());
            assert_eq!(&got, v, "{k}");
        }
        let listed = s.list("/k/", None, 0).unwrap().items.len();
        assert_eq!(listed, expected.values().filter(|v| v.is_some()).count());
        s.close();
    }
}
