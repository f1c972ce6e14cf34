//! A deduplicating work queue with client-go `workqueue` semantics: a key is queued at most once,
//! a key being processed is never handed out again until `done` (an `add` meanwhile marks it dirty
//! and it is requeued on `done`), delayed adds for requeue-after, and per-key exponential backoff
//! for failures.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

struct State<K> {
    queue: VecDeque<K>,
    dirty: HashSet<K>,
    processing: HashSet<K>,
    failures: HashMap<K, u32>,
    /// Earliest pending delayed add per key (a later, longer delay is dropped).
    delayed: HashMap<K, tokio::time::Instant>,
    /// When each dirty key was added (for `workqueue_queue_duration_seconds`).
    added: HashMap<K, std::time::Instant>,
    shut: bool,
}

pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
    base_backoff: Duration,
    max_backoff: Duration,
    /// The `name` label of the `workqueue_*` metrics (`""`: not exported).
    name: &'static str,
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<K> {
    pub fn new() -> Arc<Self> {
        Self::with_backoff(Duration::from_millis(5), Duration::from_secs(30))
    }

    /// A queue whose depth, adds, waits and retries are exported as `workqueue_*{name}`.
    pub fn named(name: &'static str) -> Arc<Self> {
        Self::build(Duration::from_millis(5), Duration::from_secs(30), name)
    }

    pub fn with_backoff(base: Duration, max: Duration) -> Arc<Self> {
        Self::build(base, max, "")
    }

    fn build(base: Duration, max: Duration, name: &'static str) -> Arc<Self> {
        Arc::new(WorkQueue {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                delayed: HashMap::new(),
                added: HashMap::new(),
                shut: false,
            }),
            notify: Notify::new(),
            base_backoff: base,
            max_backoff: max,
            name,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, key: K) {
        let mut s = self.lock();
        if s.shut || s.dirty.contains(&key) {
            return;
        }
        s.dirty.insert(key.clone());
        if !self.name.is_empty() {
            crate::metrics::queue_add(self.name);
            s.added.insert(key.clone(), std::time::Instant::now());
        }
        if s.processing.contains(&key) {
            return;
        }
        s.queue.push_back(key);
        if !self.name.is_empty() {
            crate::metrics::queue_depth(self.name, s.queue.len());
        }
        drop(s);
        self.notify.notify_one();
    }

    /// Add after `d` (deduplicated: only the earliest pending delayed add per key is kept).
    pub fn add_after(self: &Arc<Self>, key: K, d: Duration) {
        if d.is_zero() {
            return self.add(key);
        }
        let at = tokio::time::Instant::now() + d;
        {
            let mut s = self.lock();
            if s.shut {
                return;
            }
            match s.delayed.get(&key) {
                Some(prev) if *prev <= at => return,
                _ => {
                    s.delayed.insert(key.clone(), at);
                }
            }
        }
        let q = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(q) = q.upgrade() {
                let fire = {
                    let mut s = q.lock();
                    if s.delayed.get(&key) == Some(&at) {
                        s.delayed.remove(&key);
                        true
                    } else {
                        false
                    }
                };
                if fire {
                    q.add(key);
                }
            }
        });
    }

    /// Requeue after a failure, with per-key exponential backoff.
    pub fn add_rate_limited(self: &Arc<Self>, key: K) {
        let n = {
            let mut s = self.lock();
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        if !self.name.is_empty() {
            crate::metrics::queue_retry(self.name);
        }
        let exp = 2u32.saturating_pow(n.saturating_sub(1).min(20));
        let d = self.base_backoff.saturating_mul(exp).min(self.max_backoff);
        self.add_after(key, d);
    }

    /// Clear the failure count of `key` (after a successful reconcile).
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// The next key to process; `None` after shutdown.
    pub async fn get(&self) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if s.shut {
                    return None;
                }
                if let Some(k) = s.queue.pop_front() {
                    s.dirty.remove(&k);
                    if !self.name.is_empty() {
                        if let Some(t) = s.added.remove(&k) {
                            crate::metrics::queue_wait(self.name, t.elapsed());
                        }
                        crate::metrics::queue_depth(self.name, s.queue.len());
                    }
                    s.processing.insert(k.clone());
                    if !s.queue.is_empty() {
                        self.notify.notify_one();
                    }
                    return Some(k);
                }
            }
            notified.await;
        }
    }

    /// Processing of `key` finished; requeue it if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.clone());
            if !self.name.is_empty() {
                crate::metrics::queue_depth(self.name, s.queue.len());
            }
            drop(s);
            self.notify.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn shutdown(&self) {
        self.lock().shut = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedups_and_holds_in_flight_keys() {
        let q = WorkQueue::<&str>::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.get().await.unwrap();
        assert_eq!(k, "a");
        // Added while in flight: not handed out again until done.
        q.add("a");
        assert_eq!(q.get().await.unwrap(), "b");
        assert_eq!(q.len(), 0);
        q.done(&"a");
        assert_eq!(q.get().await.unwrap(), "a");
        q.done(&"a");
        q.done(&"b");
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_adds_keep_the_earliest() {
        let q = WorkQueue::<u32>::new();
        q.add_after(1, Duration::from_secs(10));
        q.add_after(1, Duration::from_secs(3));
        q.add_after(1, Duration::from_secs(20));
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(q.len(), 1);
        let k = q.get().await.unwrap();
        q.done(&k);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(q.len(), 0, "later delayed adds were superseded");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially() {
        let q = WorkQueue::<u32>::with_backoff(Duration::from_secs(1), Duration::from_secs(8));
        for want in [1u64, 2, 4, 8, 8] {
            let start = tokio::time::Instant::now();
            q.add_rate_limited(7);
            let k = q.get().await.unwrap();
            assert_eq!(start.elapsed().as_secs(), want);
            q.done(&k);
        }
        q.forget(&7);
        let start = tokio::time::Instant::now();
        q.add_rate_limited(7);
        q.get().await.unwrap();
        assert_eq!(start.elapsed().as_secs(), 1);
    }
}
