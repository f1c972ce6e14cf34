//! The storage layer: a key-value store with one cluster-wide revision, atomic multi-key
//! transactions, durable (group-committed) writes, and watch from a revision.
//!
//! The API server stores objects as JSON under keys like `/registry/core/pods/default/web-1`.
//! Every write transaction gets the next revision; every object written carries it as its
//! `metadata.resourceVersion`. Watch events fan out from an in-memory ring of recent events
//! ([`ring::EventRing`]); a watcher that falls behind the ring gets [`StoreError::Gone`] (HTTP 410)
//! and never slows writers.
//!
//! [`Store`] is the seam that keeps sled swappable (etcd is the way past one machine): its
//! transaction model (read, then conditionally write, all at one revision) maps onto etcd's STM.

pub mod encryption;
pub mod ring;
pub mod sled_store;
pub mod wal;

use std::sync::Arc;

use bytes::Bytes;

pub use ring::{EventRing, WatchCursor};
pub use sled_store::SledStore;

/// A cluster-wide revision (etcd's `mod_revision`).
pub type Revision = u64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The requested revision is older than the kept history.
    #[error("too old resource version: {requested} ({oldest})")]
    Gone {
        requested: Revision,
        oldest: Revision,
    },
    #[error("storage error: {0}")]
    Backend(String),
    #[error("the store is shutting down")]
    Closed,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One change, as kept in the watch ring.
#[derive(Clone, Debug)]
pub struct StoreEvent {
    pub revision: Revision,
    pub kind: EventKind,
    pub key: Arc<str>,
    /// The new value; for `Deleted`, the last value (with the deletion's revision stamped by the caller).
    pub value: Bytes,
    /// The previous value, when there was one (lets watchers with selectors emit DELETED when an
    /// object stops matching).
    pub prev: Option<Bytes>,
}

/// The view a write transaction has: reads see the transaction's own writes.
pub trait Txn {
    fn get(&mut self, key: &str) -> Result<Option<Bytes>, StoreError>;
    /// All keys under `prefix`, in key order, with the transaction's own writes applied.
    fn list(&mut self, prefix: &str) -> Result<Vec<(String, Bytes)>, StoreError>;
    /// Write `value` under `key`. The value must already carry [`Txn::revision`] as its resourceVersion.
    fn put(&mut self, key: &str, value: Bytes);
    /// Delete `key`; `tombstone` is the object as it is reported in the DELETED event.
    fn delete(&mut self, key: &str, tombstone: Bytes);
    /// The revision this transaction commits at.
    fn revision(&self) -> Revision;
}

/// A consistent list answer.
#[derive(Debug, Default)]
pub struct ListResult {
    pub items: Vec<(String, Bytes)>,
    /// The store revision the list reflects.
    pub revision: Revision,
    /// More items exist after the last one returned.
    pub more: bool,
}

/// A committed write: resolve [`Committed::durable`] before acknowledging it.
#[derive(Debug)]
pub struct Committed {
    revision: Revision,
    durable: Option<tokio::sync::watch::Receiver<DurableState>>,
    /// When the write started (for `etcd_request_duration_seconds{operation="write"}`).
    started: Option<std::time::Instant>,
}

/// What the flusher has made durable so far.
#[derive(Clone, Debug, Default)]
pub struct DurableState {
    pub revision: Revision,
    pub error: Option<String>,
    pub closed: bool,
}

impl Committed {
    /// A write that consumed no revision (nothing was written) or is durable already.
    pub fn ready(revision: Revision) -> Self {
        Committed {
            revision,
            durable: None,
            started: None,
        }
    }
    pub fn pending(revision: Revision, rx: tokio::sync::watch::Receiver<DurableState>) -> Self {
        Committed {
            revision,
            durable: Some(rx),
            started: None,
        }
    }
    /// Time the write from `started` until it is durable.
    pub fn timed(mut self, started: std::time::Instant) -> Self {
        self.started = Some(started);
        self
    }
    pub fn revision(&self) -> Revision {
        self.revision
    }
    /// Wait until the write is on disk.
    pub async fn durable(self) -> Result<Revision, StoreError> {
        let Some(mut rx) = self.durable else {
            return Ok(self.revision);
        };
        loop {
            {
                let st = rx.borrow_and_update();
                if st.revision >= self.revision {
                    if let Some(t) = self.started {
                        crate::metrics::observe_store("write", t);
                    }
                    return Ok(self.revision);
                }
                if let Some(e) = &st.error {
                    return Err(StoreError::Backend(e.clone()));
                }
                if st.closed {
                    return Err(StoreError::Closed);
                }
            }
            rx.changed().await.map_err(|_| StoreError::Closed)?;
        }
    }
}

pub trait Store: Send + Sync + 'static {
    /// Read one key (the latest committed value).
    fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;

    /// List keys under `prefix`, starting strictly after `start_after`, at most `limit` items
    /// (0 = no limit), consistent with [`ListResult::revision`].
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult, StoreError>;

    /// The latest committed revision.
    fn current_revision(&self) -> Revision;

    /// Run `f` atomically against the latest state. If `f` returns `Err`, nothing is written.
    /// If `f` wrote nothing, no revision is consumed. The returned future resolves once the
    /// write is durable (fsync'd); callers must not acknowledge before it resolves.
    fn write<T, E, F>(&self, f: F) -> Result<(T, Committed), E>
    where
        F: FnOnce(&mut dyn Txn) -> Result<T, E>,
        E: From<StoreError>;

    /// Watch events with revision > `from` under `prefix`.
    fn watch(&self, prefix: &str, from: Revision) -> Result<WatchCursor, StoreError>;
}
