//! Internal counters and the end-to-end latency histogram (first seen → bound). Cheap to update
//! from any task; `Display` prints them. [`prom`] holds the Prometheus metrics (`/metrics`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Bucket upper bounds grow by 25 % from 100 µs; the last bucket catches everything above ~8 min.
const BUCKETS: usize = 64;
const FIRST_BOUND_MICROS: f64 = 100.0;
const FACTOR: f64 = 1.25;

fn bound_micros(i: usize) -> f64 {
    FIRST_BOUND_MICROS * FACTOR.powi(i as i32)
}

#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros() as f64;
        let i = if us <= FIRST_BOUND_MICROS {
            0
        } else {
            ((us / FIRST_BOUND_MICROS).ln() / FACTOR.ln()).ceil() as usize
        };
        self.buckets[i.min(BUCKETS - 1)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }
    pub fn mean(&self) -> Duration {
        let n = self.count();
        if n == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.sum_micros.load(Relaxed) / n)
    }
    /// Upper bound of the bucket holding quantile `q` (within 25 %).
    pub fn quantile(&self, q: f64) -> Duration {
        let n = self.count();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= rank {
                return Duration::from_micros(bound_micros(i) as u64);
            }
        }
        Duration::from_micros(bound_micros(BUCKETS - 1) as u64)
    }
}

/// What the scheduler counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Scheduling cycles run (one per pod popped from the active queue).
    pub attempts: AtomicU64,
    /// Binds the API server accepted.
    pub bound: AtomicU64,
    /// Cycles that found no node.
    pub unschedulable: AtomicU64,
    /// Bind or status write errors other than conflicts, invalid pods.
    pub errors: AtomicU64,
    /// Binds refused with 409 Conflict (then refreshed and retried).
    pub bind_conflicts: AtomicU64,
    /// First seen by the scheduler → bind accepted.
    pub e2e_latency: Histogram,
    /// Time inside `schedule()` (filter + score) per cycle.
    pub algorithm_latency: Histogram,
}

impl Metrics {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.e2e_latency;
        let a = &self.algorithm_latency;
        write!(
            f,
            "attempts={} bound={} unschedulable={} errors={} bind_conflicts={} \
             e2e_p50={:?} e2e_p99={:?} e2e_mean={:?} algo_p50={:?} algo_p99={:?}",
            Self::get(&self.attempts),
            Self::get(&self.bound),
            Self::get(&self.unschedulable),
            Self::get(&self.errors),
            Self::get(&self.bind_conflicts),
            h.quantile(0.5),
            h.quantile(0.99),
            h.mean(),
            a.quantile(0.5),
            a.quantile(0.99),
        )
    }
}

// ------------------------------------------------------------------------------------------
// Prometheus exposition (kube-scheduler's names)
// ------------------------------------------------------------------------------------------

/// kube-scheduler's metrics, process-wide (every scheduler in the process adds to them).
pub mod prom {
    use std::sync::LazyLock;
    use std::time::Duration;

    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
    use prometheus_client::registry::Registry;

    type Labels = [(&'static str, &'static str); 1];

    struct M {
        attempts: Family<Labels, Counter>,
        e2e: Family<Labels, Histogram>,
        algorithm: Histogram,
        pending: Family<Labels, Gauge>,
    }

    static M: LazyLock<M> = LazyLock::new(|| M {
        attempts: Family::default(),
        e2e: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 15))),
        algorithm: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
        pending: Family::default(),
    });

    /// A scheduling attempt ended: `scheduled`, `unschedulable` or `error`.
    pub fn attempt(result: &'static str) {
        M.attempts.get_or_create(&[("result", result)]).inc();
    }

    /// First seen → bound.
    pub fn e2e(result: &'static str, d: Duration) {
        M.e2e
            .get_or_create(&[("result", result)])
            .observe(d.as_secs_f64());
    }

    /// Time inside filter + score.
    pub fn algorithm(d: Duration) {
        M.algorithm.observe(d.as_secs_f64());
    }

    /// Pods waiting to be scheduled, by queue.
    pub fn pending(active: usize, backoff: usize) {
        let g = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        M.pending
            .get_or_create(&[("queue", "active")])
            .set(g(active));
        M.pending
            .get_or_create(&[("queue", "backoff")])
            .set(g(backoff));
    }

    /// Add the scheduler's metrics to `reg`.
    pub fn register(reg: &mut Registry) {
        let m = &*M;
        // Every result appears from the start, so rates work before the first failure.
        for r in ["scheduled", "unschedulable", "error"] {
            let _ = m.attempts.get_or_create(&[("result", r)]);
        }
        reg.register(
            "scheduler_schedule_attempts",
            "Number of attempts to schedule pods, by the result",
            m.attempts.clone(),
        );
        reg.register(
            "scheduler_e2e_scheduling_duration_seconds",
            "E2e scheduling latency in seconds (first seen by the scheduler to bound)",
            m.e2e.clone(),
        );
        reg.register(
            "scheduler_scheduling_algorithm_duration_seconds",
            "Scheduling algorithm (filter and score) latency in seconds",
            m.algorithm.clone(),
        );
        reg.register(
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type",
            m.pending.clone(),
        );
    }

    /// The exposition of these metrics alone (the standalone binary's `/metrics`).
    pub fn render() -> String {
        let mut reg = Registry::default();
        register(&mut reg);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_bucket_bounds() {
        let h = Histogram::default();
        for ms in 1..=100 {
            h.observe(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5);
        let p99 = h.quantile(0.99);
        assert!(
            p50 >= Duration::from_millis(50) && p50 <= Duration::from_millis(63),
            "{p50:?}"
        );
        assert!(
            p99 >= Duration::from_millis(99) && p99 <= Duration::from_millis(125),
            "{p99:?}"
        );
        assert_eq!(h.count(), 100);
        assert_eq!(Histogram::default().quantile(0.5), Duration::ZERO);
    }
}
