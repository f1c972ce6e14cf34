//! The scheduling queue: an active heap (priority, then FIFO), a backoff set (1 s → 10 s,
//! doubling per failed attempt), and in-flight pods (popped, being bound). Flushing moves every
//! backing-off pod to the active heap at once — done when the cluster changed in a way that can
//! make a pod fit (a node added or changed, a pod deleted).

use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kapsel_api::Pod;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QState {
    Active,
    Backoff(Instant),
    InFlight,
}

#[derive(Debug)]
pub struct Queued {
    pub pod: Arc<Pod>,
    pub state: QState,
    /// Failed scheduling attempts (drives the backoff).
    pub attempts: u32,
    /// Bind attempts refused with a conflict in a row.
    pub bind_conflicts: u32,
    pub first_seen: Instant,
    seq: u64,
}

#[derive(Debug)]
pub struct Queue {
    pods: HashMap<String, Queued>,
    /// (priority, reverse sequence, key); stale entries are skipped on pop.
    active: BinaryHeap<(i32, std::cmp::Reverse<u64>, String)>,
    backoff: BTreeSet<(Instant, u64, String)>,
    seq: u64,
    initial_backoff: Duration,
    max_backoff: Duration,
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

impl Queue {
    pub fn new(initial_backoff: Duration, max_backoff: Duration) -> Self {
        Queue {
            pods: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BTreeSet::new(),
            seq: 0,
            initial_backoff,
            max_backoff,
        }
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
    pub fn get(&self, key: &str) -> Option<&Queued> {
        self.pods.get(key)
    }
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Queued> {
        self.pods.get_mut(key)
    }
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.pods.keys()
    }
    /// Pods waiting out a backoff (cheap: the backoff set holds exactly those).
    pub fn backoff_len(&self) -> usize {
        self.backoff.len()
    }
    pub fn active_len(&self) -> usize {
        self.pods
            .values()
            .filter(|q| q.state == QState::Active)
            .count()
    }

    fn push_active(&mut self, key: &str) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(q) = self.pods.get_mut(key) {
            q.state = QState::Active;
            q.seq = seq;
            self.active
                .push((priority(&q.pod), std::cmp::Reverse(seq), key.to_string()));
        }
    }

    /// Add a new pending pod (active) or refresh the object of a known one (state unchanged).
    pub fn upsert(&mut self, key: &str, pod: Arc<Pod>, now: Instant) {
        if let Some(q) = self.pods.get_mut(key) {
            q.pod = pod;
            return;
        }
        self.pods.insert(
            key.to_string(),
            Queued {
                pod,
                state: QState::Active,
                attempts: 0,
                bind_conflicts: 0,
                first_seen: now,
                seq: 0,
            },
        );
        self.push_active(key);
    }

    pub fn remove(&mut self, key: &str) -> Option<Queued> {
        let q = self.pods.remove(key)?;
        if let QState::Backoff(until) = q.state {
            self.backoff.remove(&(until, q.seq, key.to_string()));
        }
        Some(q)
    }

    /// The next active pod, now in flight.
    pub fn pop(&mut self) -> Option<(String, &mut Queued)> {
        while let Some((_, std::cmp::Reverse(seq), key)) = self.active.pop() {
            let live =
                matches!(self.pods.get(&key), Some(q) if q.state == QState::Active && q.seq == seq);
            if live {
                let q = self.pods.get_mut(&key)?;
                q.state = QState::InFlight;
                return Some((key, q));
            }
        }
        None
    }

    /// Back to the active heap right away (bind conflict retry).
    pub fn requeue_now(&mut self, key: &str) {
        self.push_active(key);
    }

    /// A failed attempt: back off `initial · 2^(attempts−1)`, capped.
    pub fn backoff(&mut self, key: &str, now: Instant) -> Option<Duration> {
        self.seq += 1;
        let seq = self.seq;
        let q = self.pods.get_mut(key)?;
        q.attempts += 1;
        let shift = q.attempts.saturating_sub(1).min(20);
        let d = self
            .initial_backoff
            .saturating_mul(1u32 << shift)
            .min(self.max_backoff);
        let until = now + d;
        q.state = QState::Backoff(until);
        q.seq = seq;
        self.backoff.insert((until, seq, key.to_string()));
        Some(d)
    }

    /// Move pods whose backoff expired to the active heap.
    pub fn tick(&mut self, now: Instant) {
        while let Some(first) = self.backoff.first() {
            if first.0 > now {
                break;
            }
            let Some((_, _, key)) = self.backoff.pop_first() else {
                break;
            };
            self.push_active(&key);
        }
    }

    /// Move every backing-off pod to the active heap (the cluster changed).
    pub fn flush(&mut self) {
        let all = std::mem::take(&mut self.backoff);
        for (_, _, key) in all {
            self.push_active(&key);
        }
    }

    pub fn next_backoff_expiry(&self) -> Option<Instant> {
        self.backoff.first().map(|(t, _, _)| *t)
    }

    pub fn has_active(&self) -> bool {
        // The heap may hold stale entries; pop() skips them.
        !self.active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::PodBuilder;

    fn pod(name: &str, prio: i32) -> Arc<Pod> {
        let mut p = PodBuilder::new(name).build();
        if let Some(s) = p.spec.as_mut() {
            s.priority = Some(prio);
        }
        Arc::new(p)
    }

    #[test]
    fn priority_then_fifo() {
        let now = Instant::now();
        let mut q = Queue::new(Duration::from_secs(1), Duration::from_secs(10));
        q.upsert("a", pod("a", 0), now);
        q.upsert("b", pod("b", 10), now);
        q.upsert("c", pod("c", 0), now);
        let order: Vec<String> = std::iter::from_fn(|| q.pop().map(|(k, _)| k)).collect();
        assert_eq!(order, ["b", "a", "c"]);
    }

    #[test]
    fn backoff_doubles_and_caps_and_flush_releases() {
        let t0 = Instant::now();
        let mut q = Queue::new(Duration::from_secs(1), Duration::from_secs(10));
        q.upsert("a", pod("a", 0), t0);
        let mut ds = Vec::new();
        for _ in 0..6 {
            assert!(q.pop().is_some());
            ds.push(q.backoff("a", t0).expect("queued").as_secs());
            q.tick(t0 + Duration::from_secs(60));
        }
        assert_eq!(ds, [1, 2, 4, 8, 10, 10]);

        // In backoff: not poppable until expiry or flush.
        assert!(q.pop().is_some());
        q.backoff("a", t0);
        assert!(q.pop().is_none());
        q.tick(t0 + Duration::from_millis(500));
        assert!(q.pop().is_none());
        q.flush();
        assert_eq!(q.pop().map(|(k, _)| k), Some("a".to_string()));
    }

    #[test]
    fn upsert_keeps_state_and_remove_clears_backoff() {
        let t0 = Instant::now();
        let mut q = Queue::new(Duration::from_secs(1), Duration::from_secs(10));
        q.upsert("a", pod("a", 0), t0);
        assert!(q.pop().is_some());
        q.upsert("a", pod("a", 0), t0);
        assert_eq!(q.get("a").map(|x| x.state), Some(QState::InFlight));
        q.backoff("a", t0);
        q.remove("a");
        assert!(q.next_backoff_expiry().is_none());
        q.flush();
        assert!(q.pop().is_none());
    }
}
