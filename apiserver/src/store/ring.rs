//! The in-memory ring of recent events that watches are served from.
//!
//! Writers publish in revision order and never wait for watchers: a watcher is just a cursor (a
//! revision) into the ring. A watcher whose cursor falls behind the oldest kept event gets
//! [`StoreError::Gone`] — the client relists, exactly as with etcd compaction in Kubernetes.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::{Revision, StoreError, StoreEvent};

struct RingInner {
    events: VecDeque<Arc<StoreEvent>>,
    /// Every event with revision <= `compacted` is gone from the ring.
    compacted: Revision,
}

pub struct EventRing {
    inner: RwLock<RingInner>,
    capacity: usize,
    latest: watch::Sender<Revision>,
}

impl EventRing {
    /// A ring holding at most `capacity` events; history starts after `start` (events at or
    /// before it are not available).
    pub fn new(capacity: usize, start: Revision) -> Arc<Self> {
        let (latest, _) = watch::channel(start);
        Arc::new(EventRing {
            inner: RwLock::new(RingInner {
                events: VecDeque::with_capacity(capacity.min(4096)),
                compacted: start,
            }),
            capacity: capacity.max(1),
            latest,
        })
    }

    /// Append events (in revision order), evicting the oldest beyond capacity.
    pub fn publish(&self, events: impl IntoIterator<Item = StoreEvent>) {
        let mut last = None;
        {
            let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
            for ev in events {
                last = Some(ev.revision);
                inner.events.push_back(Arc::new(ev));
            }
            while inner.events.len() > self.capacity {
                if let Some(old) = inner.events.pop_front() {
                    // Drop whole revisions only, so a revision is never half-available.
                    inner.compacted = inner.compacted.max(old.revision);
                }
            }
            while inner
                .events
                .front()
                .is_some_and(|e| e.revision <= inner.compacted)
            {
                inner.events.pop_front();
            }
        }
        if let Some(rev) = last {
            self.latest.send_replace(rev);
        }
    }

    /// Mark `rev` as the latest revision without events (used at startup).
    pub fn latest(&self) -> Revision {
        *self.latest.borrow()
    }

    /// The oldest revision a watch may start from.
    pub fn compacted(&self) -> Revision {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .compacted
    }

    /// A cursor delivering events with revision > `from` whose key starts with `prefix`.
    pub fn cursor(
        self: &Arc<Self>,
        prefix: &str,
        from: Revision,
    ) -> Result<WatchCursor, StoreError> {
        let compacted = self.compacted();
        if from < compacted {
            return Err(StoreError::Gone {
                requested: from,
                oldest: compacted,
            });
        }
        Ok(WatchCursor {
            ring: Arc::clone(self),
            prefix: prefix.to_string(),
            position: from,
            latest: self.latest.subscribe(),
        })
    }
}

/// A watcher's position in the ring.
pub struct WatchCursor {
    ring: Arc<EventRing>,
    prefix: String,
    position: Revision,
    latest: watch::Receiver<Revision>,
}

impl WatchCursor {
    /// The revision of the last event delivered (or the start revision).
    pub fn position(&self) -> Revision {
        self.position
    }

    /// Events after the current position, matching the prefix, without waiting.
    /// `Err(Gone)` when the ring has moved past this cursor.
    pub fn poll_batch(&mut self, max: usize) -> Result<Vec<Arc<StoreEvent>>, StoreError> {
        let inner = self.ring.inner.read().unwrap_or_else(|p| p.into_inner());
        if self.position < inner.compacted {
            return Err(StoreError::Gone {
                requested: self.position,
                oldest: inner.compacted,
            });
        }
        let start = inner
            .events
            .partition_point(|e| e.revision <= self.position);
        let mut out = Vec::new();
        let mut last = self.position;
        for ev in inner.events.range(start..) {
            if out.len() >= max && ev.revision != last {
                break;
            }
            last = ev.revision;
            if ev.key.starts_with(self.prefix.as_str()) {
                out.push(Arc::clone(ev));
            }
        }
        self.position = last;
        Ok(out)
    }

    /// Wait for the next batch of matching events (at most about `max`; a revision is never split).
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<Arc<StoreEvent>>, StoreError> {
        loop {
            let batch = self.poll_batch(max)?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            // Nothing (matching) yet: wait for a newer revision to be published.
            if *self.latest.borrow_and_update() > self.position {
                continue;
            }
            self.latest
                .changed()
                .await
                .map_err(|_| StoreError::Closed)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventKind;
    use bytes::Bytes;

    fn ev(rev: Revision, key: &str) -> StoreEvent {
        StoreEvent {
            revision: rev,
            kind: EventKind::Added,
            key: key.into(),
            value: Bytes::from_static(b"{}"),
            prev: None,
        }
    }

    #[test]
    fn cursor_delivers_later_events_in_order_and_filters_by_prefix() {
        let ring = EventRing::new(100, 0);
        ring.publish((1..=5).map(|r| ev(r, if r % 2 == 0 { "/a/x" } else { "/b/x" })));
        let mut c = ring.cursor("/a/", 1).unwrap();
        let got: Vec<_> = c
            .poll_batch(100)
            .unwrap()
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(got, vec![2, 4]);
        assert_eq!(c.position(), 5);
        assert!(c.poll_batch(100).unwrap().is_empty());
    }

    #[test]
    fn a_cursor_behind_the_ring_is_gone() {
        let ring = EventRing::new(3, 0);
        let mut slow = ring.cursor("/", 0).unwrap();
        ring.publish((1..=10).map(|r| ev(r, "/k")));
        assert!(matches!(slow.poll_batch(10), Err(StoreError::Gone { .. })));
        assert!(matches!(ring.cursor("/", 6), Err(StoreError::Gone { .. })));
        let mut ok = ring.cursor("/", 7).unwrap();
        let revs: Vec<_> = ok
            .poll_batch(10)
            .unwrap()
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(revs, vec![8, 9, 10]);
    }

    #[tokio::test]
    async fn next_batch_waits_for_publication() {
        let ring = EventRing::new(10, 0);
        let mut c = ring.cursor("/", 0).unwrap();
        let r2 = Arc::clone(&ring);
        let h = tokio::spawn(async move { c.next_batch(10).await.unwrap().len() });
        tokio::task::yield_now().await;
        r2.publish([ev(1, "/k"), ev(1, "/j")]);
        assert_eq!(h.await.unwrap(), 2);
    }
}
