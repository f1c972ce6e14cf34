//! [`Store`] on sled, with group commit.
//!
//! Writes are serialised by one lock. A transaction reads, decides, and *stages* its writes:
//! they go into an in-memory map of committed-but-not-yet-applied writes (`staged`) that every
//! read consults before sled, so the write is visible to later transactions and reads at once.
//! Durability is a separate step: a flusher thread appends the writes of every revision
//! committed since its last round to the write-ahead log ([`super::wal`]) as one record, with one
//! `write` + `fdatasync`, and then wakes every writer whose revision is covered — one fsync for a
//! whole group of concurrent writes (group commit). The writes stay staged. At a checkpoint the
//! flusher applies everything staged to sled as **one** `sled::Batch` together with the revision
//! counter, calls `Db::flush()`, drops what it applied from `staged` and starts the log over.
//! sled's cost is mostly per batch, not per key (`examples/store_bench.rs`: ~230 µs per
//! single-write batch + flush, ~13 µs per write in batches of 64), so checkpoints of thousands of
//! keys are what make writes cheap.
//!
//! A crash can never separate an object from the revision it was written at: a log record and a
//! sled batch each hold whole transactions and the revision they reach. Watch events are
//! published only after they are durable, so no watcher ever sees a write that a crash could
//! take back.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::watch;

use super::wal::{self, Replayed, Wal};
use super::{
    Committed, DurableState, EventKind, EventRing, ListResult, Revision, Store, StoreError,
    StoreEvent, Txn, WatchCursor,
};

const REVISION_KEY: &[u8] = b"\x00meta/revision";

/// Kinds that are few in any cluster but looked up on the hot path: every pod create lists its
/// namespace's LimitRanges and ResourceQuotas, nearly always to find none. The store keeps the
/// keys under these prefixes in memory, so a list that can only come back empty does not walk
/// sled (a sled range scan costs several µs even when empty).
const SPARSE_PREFIXES: [&str; 2] = [
    "/registry/core/limitranges/",
    "/registry/core/resourcequotas/",
];

fn is_sparse(key: &str) -> bool {
    SPARSE_PREFIXES.iter().any(|p| key.starts_with(p))
}

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
    /// A checkpoint (staged writes applied to sled, the log started over) at the first group
    /// commit after this long ...
    pub checkpoint_interval: std::time::Duration,
    /// ... or once this many keys are staged.
    pub checkpoint_keys: usize,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            watch_history: 10_000,
            cache_bytes: 32 * 1024 * 1024,
            commit_delay: std::time::Duration::from_micros(500),
            encryption: None,
            checkpoint_interval: wal::CHECKPOINT_INTERVAL,
            checkpoint_keys: wal::CHECKPOINT_KEYS,
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
    /// Every committed key under [`SPARSE_PREFIXES`].
    sparse: std::collections::BTreeSet<String>,
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
    checkpoint_interval: std::time::Duration,
    checkpoint_keys: usize,
    /// Tests: the flusher stops at once, without a checkpoint (what a crash leaves).
    halted: AtomicBool,
    /// Bytes in the write-ahead log (since the last checkpoint).
    log_bytes: AtomicU64,
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
        let (mut wal, records) = Wal::open(dir)?;
        let rev = replay(&db, rev, records)?;
        if wal.size() > 0 {
            // Everything the log held is in sled now: make it durable there, then start over.
            db.flush()?;
            wal.rewind();
        }
        let sparse = sparse_keys(&db)?;
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
                sparse,
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
            checkpoint_interval: opts.checkpoint_interval,
            checkpoint_keys: opts.checkpoint_keys,
            halted: AtomicBool::new(false),
            log_bytes: AtomicU64::new(0),
        });
        let thread_inner = Arc::clone(&inner);
        let handle = std::thread::Builder::new()
            .name("kapsel-store-flush".into())
            .spawn(move || flusher(thread_inner, wal))
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

    /// Tests: stop the flusher where it is, without a checkpoint, as a crash would. Writes it
    /// has not logged yet are never acknowledged.
    #[cfg(test)]
    fn halt(&self) {
        self.inner.halted.store(true, Ordering::SeqCst);
        self.inner.closed.store(true, Ordering::SeqCst);
        *self.inner.dirty.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.inner.wake.notify_all();
        if let Some(h) = self
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
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

    /// Bytes the store uses on disk: sled's files and the write-ahead log.
    pub fn size_on_disk(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0) + self.inner.log_bytes.load(Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner.lock.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// A value as sled (and the log) store it: sealed where encryption applies. The inverse
    /// of [`Inner::plain`].
    fn sealed<'a>(
        &self,
        key: &[u8],
        value: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, StoreError> {
        match &self.encryption {
            Some(enc) if super::encryption::Encryption::applies(key) => {
                Ok(std::borrow::Cow::Owned(enc.seal(value)?))
            }
            _ => Ok(std::borrow::Cow::Borrowed(value)),
        }
    }

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
        if is_sparse(prefix)
            && !st
                .sparse
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .next()
                .is_some_and(|k| k.starts_with(prefix))
        {
            return Ok((Vec::new(), false));
        }
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

/// The keys under [`SPARSE_PREFIXES`] in sled.
fn sparse_keys(db: &sled::Db) -> Result<std::collections::BTreeSet<String>, StoreError> {
    let mut keys = std::collections::BTreeSet::new();
    for p in SPARSE_PREFIXES {
        for kv in db.scan_prefix(p.as_bytes()).keys() {
            keys.insert(String::from_utf8_lossy(&kv?).into_owned());
        }
    }
    Ok(keys)
}

/// Re-applies the log's records after sled's recovered revision `rev`, in order, as one batch;
/// returns the revision reached. A record that starts after `rev` means the log and sled
/// disagree about history: refuse to start rather than serve a store with a hole in it.
fn replay(
    db: &sled::Db,
    mut rev: Revision,
    records: Vec<Replayed>,
) -> Result<Revision, StoreError> {
    let mut batch = sled::Batch::default();
    let mut replayed = 0usize;
    for rec in records {
        if rec.to <= rev {
            continue; // already in sled (the log was not started over since)
        }
        if rec.from > rev {
            return Err(StoreError::Backend(format!(
                "write-ahead log jumps from revision {rev} to {}: refusing to open a store with a gap in its history",
                rec.from + 1
            )));
        }
        for op in rec.ops {
            match op.value {
                Some(v) => batch.insert(op.key, v),
                None => batch.remove(op.key),
            }
        }
        rev = rec.to;
        replayed += 1;
    }
    if replayed > 0 {
        batch.insert(REVISION_KEY, &rev.to_be_bytes());
        db.apply_batch(batch)?;
        tracing::info!(replayed, revision = rev, "replayed the write-ahead log");
    }
    Ok(rev)
}

fn flusher(inner: Arc<Inner>, mut wal: Wal) {
    // Revisions the previous fsync made durable: more than one means concurrent writers.
    let mut last_batch: u64 = 0;
    let mut last_checkpoint = Instant::now();
    loop {
        {
            let mut dirty = inner.dirty.lock().unwrap_or_else(|p| p.into_inner());
            while !*dirty {
                dirty = inner.wake.wait(dirty).unwrap_or_else(|p| p.into_inner());
            }
            *dirty = false;
        }
        if inner.halted.load(Ordering::SeqCst) {
            return;
        }
        let closing = inner.closed.load(Ordering::SeqCst);
        if !closing && last_batch > 1 && !inner.commit_delay.is_zero() {
            // Let the writers that are on their way join this fsync.
            std::thread::sleep(inner.commit_delay);
        }
        let started = Instant::now();
        let previous = inner.durable.borrow().revision;
        // Everything committed up to `target` is staged (or already in sled) and its events are
        // in `pending`: writers add both under the write lock.
        let (target, checkpoint) = {
            let st = inner.lock.read().unwrap_or_else(|p| p.into_inner());
            let due = closing
                || st.staged.len() >= inner.checkpoint_keys
                || wal.size() >= wal::CHECKPOINT_BYTES
                || last_checkpoint.elapsed() >= inner.checkpoint_interval;
            let writes: Option<Vec<(String, Option<Bytes>)>> = due.then(|| {
                st.staged
                    .iter()
                    .map(|(k, s)| (k.clone(), s.value.clone()))
                    .collect()
            });
            (st.revision, writes)
        };
        let ready: Vec<StoreEvent> = {
            let mut pending = inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            let split = pending.partition_point(|e| e.revision <= target);
            pending.drain(..split).collect()
        };
        let result = match checkpoint {
            // sled gets everything staged and is flushed: that makes `ready` durable too.
            Some(writes) => apply_and_flush(&inner, target, writes).map(|()| {
                inner
                    .lock
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .staged
                    .retain(|_, s| s.revision > target);
                last_checkpoint = Instant::now();
                wal.rewind();
            }),
            None if target > previous => log_record(&inner, previous, target, &ready)
                .and_then(|record| wal.append_durably(&record)),
            None => Ok(()),
        };
        let elapsed = started.elapsed();
        inner.log_bytes.store(wal.size(), Ordering::Relaxed);
        match result {
            Ok(()) => {
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

/// The log record of revisions `from+1 ..= to`: their writes in revision order, with values
/// as sled stores them (sealed where encryption applies).
fn log_record(
    inner: &Inner,
    from: Revision,
    to: Revision,
    events: &[StoreEvent],
) -> Result<Vec<u8>, StoreError> {
    let mut record = wal::Record::new(from, to);
    for e in events {
        let key = e.key.as_bytes();
        match e.kind {
            EventKind::Deleted => record.delete(key),
            EventKind::Added | EventKind::Modified => {
                record.put(key, &inner.sealed(key, &e.value)?)
            }
        }
    }
    Ok(record.frame())
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
                Some(v) => batch.insert(key.as_bytes(), &*inner.sealed(key.as_bytes(), &v)?),
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
            if is_sparse(&key) {
                if value.is_some() {
                    guard.sparse.insert(key.clone());
                } else {
                    guard.sparse.remove(&key);
                }
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
        // Every group commit a checkpoint: durable writes are in sled, not staged.
        let opts = SledOptions {
            checkpoint_keys: 1,
            ..SledOptions::default()
        };
        let s = SledStore::open(dir.path(), opts).unwrap();
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

    fn no_timed_checkpoints() -> SledOptions {
        SledOptions {
            checkpoint_interval: std::time::Duration::from_secs(3600),
            ..SledOptions::default()
        }
    }

    /// The records a reopen would replay over sled at revision `rev`.
    fn logged_after(dir: &Path, rev: Revision) -> Vec<Replayed> {
        let bytes = std::fs::read(dir.join(wal::FILE_NAME)).unwrap();
        wal::parse(&bytes)
            .0
            .into_iter()
            .filter(|r| r.to > rev)
            .collect()
    }

    /// Between checkpoints an acknowledged write is only in the log (and staged in memory):
    /// sled has not seen it. A clean close checkpoints and empties the log.
    #[tokio::test]
    async fn acknowledged_writes_are_in_the_log_until_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), no_timed_checkpoints()).unwrap();
        for i in 0..50 {
            put(&s, &format!("/r/{i:02}"), &i.to_string())
                .durable()
                .await
                .unwrap();
        }
        let bytes = std::fs::read(dir.path().join(wal::FILE_NAME)).unwrap();
        let (recs, _) = wal::parse(&bytes);
        // The records cover revisions 1..=50 without a hole, each op at its key's value.
        assert_eq!(recs.first().map(|r| r.from), Some(0));
        assert_eq!(recs.last().map(|r| r.to), Some(50));
        assert!(recs.windows(2).all(|w| w[0].to == w[1].from));
        let ops: Vec<_> = recs.iter().flat_map(|r| &r.ops).collect();
        assert_eq!(ops.len(), 50);
        assert_eq!(ops[7].key, b"/r/07");
        assert_eq!(ops[7].value.as_deref(), Some(&b"7"[..]));
        assert!(
            s.inner.db.get(b"/r/07").unwrap().is_none(),
            "not in sled yet"
        );
        assert_eq!(s.get("/r/07").unwrap().as_deref(), Some(&b"7"[..]));
        s.close();
        assert!(logged_after(dir.path(), 50).is_empty());
        drop(s);
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        assert_eq!(s.list("/r/", None, 0).unwrap().items.len(), 50);
        assert_eq!(s.current_revision(), 50);
        s.close();
    }

    /// What a crash between checkpoints leaves: sled without the latest writes, the log with
    /// them. Reopening replays the log: every acknowledged write is back at its revision.
    #[tokio::test]
    async fn a_crash_between_checkpoints_loses_no_acknowledged_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), no_timed_checkpoints()).unwrap();
        put(&s, "/r/gone", "x").durable().await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..20 {
                    let key = format!("/r/{w}-{i}");
                    let rev = put(&s, &key, &format!("{w}.{i}")).durable().await.unwrap();
                    acked.push((key, rev));
                }
                acked
            }));
        }
        let mut acked = Vec::new();
        for t in tasks {
            acked.extend(t.await.unwrap());
        }
        let (_, c) = s
            .write(|t| -> Result<(), StoreError> {
                t.delete("/r/gone", Bytes::from_static(b"x"));
                Ok(())
            })
            .unwrap();
        let last = c.durable().await.unwrap();
        s.halt();
        assert_eq!(logged_after(dir.path(), 0).last().map(|r| r.to), Some(last));
        drop(s);
        let s = SledStore::open(dir.path(), no_timed_checkpoints()).unwrap();
        assert_eq!(s.current_revision(), last);
        assert!(s.get("/r/gone").unwrap().is_none());
        for (key, _) in &acked {
            assert!(s.get(key).unwrap().is_some(), "{key} lost");
        }
        assert_eq!(s.list("/r/", None, 0).unwrap().items.len(), acked.len());
        // Replayed into sled and flushed: the log starts over at `last`.
        assert_eq!(put(&s, "/r/next", "n").durable().await.unwrap(), last + 1);
        let after = logged_after(dir.path(), 0);
        assert_eq!(after.len(), 1);
        assert_eq!((after[0].from, after[0].to), (last, last + 1));
        s.close();
    }

    /// Sled at some revision, the log holding records before and after it and a torn record
    /// at the end: opening replays exactly the intact records after sled's revision.
    #[tokio::test]
    async fn open_replays_the_log_after_sleds_revision() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
            put(&s, "/r/a", "1").durable().await.unwrap();
            s.close(); // checkpoint: sled at revision 1, empty log
        }
        let mut log = Vec::new();
        // (0, 1] is already in sled: skipped. Then (1, 3] and (3, 4], then a torn (4, 5].
        let mut r = wal::Record::new(0, 1);
        r.put(b"/r/a", b"stale");
        log.extend(r.frame());
        let mut r = wal::Record::new(1, 3);
        r.put(b"/r/b", b"2");
        r.put(b"/r/a", b"3");
        log.extend(r.frame());
        let mut r = wal::Record::new(3, 4);
        r.delete(b"/r/b");
        log.extend(r.frame());
        let mut torn = wal::Record::new(4, 5);
        torn.put(b"/r/c", b"never acknowledged");
        let torn = torn.frame();
        log.extend(&torn[..torn.len() - 3]);
        std::fs::write(dir.path().join(wal::FILE_NAME), &log).unwrap();

        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        assert_eq!(s.current_revision(), 4);
        assert_eq!(s.get("/r/a").unwrap().as_deref(), Some(&b"3"[..]));
        assert!(s.get("/r/b").unwrap().is_none());
        assert!(s.get("/r/c").unwrap().is_none());
        assert_eq!(put(&s, "/r/d", "5").durable().await.unwrap(), 5);
        let after = logged_after(dir.path(), 0);
        assert_eq!(after.len(), 1, "the replayed records are not read again");
        assert_eq!((after[0].from, after[0].to), (4, 5));
        s.close();
        drop(s);
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        assert_eq!(s.current_revision(), 5);
        s.close();
    }

    #[tokio::test]
    async fn a_gap_between_sled_and_the_log_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        SledStore::open(dir.path(), SledOptions::default())
            .unwrap()
            .close();
        let mut r = wal::Record::new(1, 2); // sled is at 0: revision 1 is missing
        r.put(b"/r/a", b"1");
        std::fs::write(dir.path().join(wal::FILE_NAME), r.frame()).unwrap();
        let err = SledStore::open(dir.path(), SledOptions::default())
            .err()
            .expect("a gap must refuse to open");
        assert!(err.to_string().contains("gap"), "{err}");
    }

    /// Enough staged keys make the next group commit a checkpoint: sled gets them in one
    /// batch and the log starts over.
    #[tokio::test]
    async fn staged_keys_past_the_limit_checkpoint_into_sled() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(
            dir.path(),
            SledOptions {
                checkpoint_keys: 10,
                ..no_timed_checkpoints()
            },
        )
        .unwrap();
        for i in 0..25 {
            put(&s, &format!("/r/{i:02}"), "v").durable().await.unwrap();
        }
        // Checkpoints at 10 and 20 staged keys: the first 20 are in sled, the rest logged.
        assert!(s.inner.db.get(b"/r/19").unwrap().is_some());
        assert!(s.inner.db.get(b"/r/24").unwrap().is_none());
        let (recs, _) = wal::parse(&std::fs::read(dir.path().join(wal::FILE_NAME)).unwrap());
        assert_eq!(recs.first().map(|r| r.from), Some(20));
        assert_eq!(recs.last().map(|r| r.to), Some(25));
        assert!(s.inner.lock.read().unwrap().staged.len() < 10);
        s.close();
    }

    /// Lists under the sparse prefixes answer from the in-memory key set when it has nothing
    /// there, and stay right through deletes, a crash and the log's replay.
    #[tokio::test]
    async fn sparse_prefix_lists_follow_writes_deletes_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let lr = "/registry/core/limitranges/";
        let count = |s: &SledStore, p: &str| s.list(p, None, 0).unwrap().items.len();
        let s = SledStore::open(dir.path(), no_timed_checkpoints()).unwrap();
        put(&s, &format!("{lr}a/x"), "1").durable().await.unwrap();
        put(&s, &format!("{lr}ab/y"), "1").durable().await.unwrap();
        assert_eq!(count(&s, &format!("{lr}a/")), 1);
        assert_eq!(count(&s, &format!("{lr}b/")), 0);
        assert_eq!(count(&s, lr), 2);
        let (_, c) = s
            .write(|t| -> Result<(), StoreError> {
                t.delete(&format!("{lr}a/x"), Bytes::from_static(b"1"));
                assert!(t.list(&format!("{lr}a/"))?.is_empty());
                Ok(())
            })
            .unwrap();
        c.durable().await.unwrap();
        assert_eq!(count(&s, &format!("{lr}a/")), 0);
        put(&s, &format!("{lr}a/z"), "2").durable().await.unwrap();
        s.halt();
        drop(s);
        // Reopened from sled (checkpointed keys) plus the replayed log.
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        assert_eq!(count(&s, &format!("{lr}a/")), 1);
        assert_eq!(count(&s, lr), 2);
        s.close();
        drop(s);
        let s = SledStore::open(dir.path(), SledOptions::default()).unwrap();
        assert_eq!(count(&s, lr), 2);
        s.close();
    }
}
