//! Prometheus metrics of the controllers, with client-go's work-queue names
//! (`workqueue_depth`, `workqueue_adds_total`, `workqueue_queue_duration_seconds`,
//! `workqueue_work_duration_seconds`, `workqueue_retries_total`, by `name`) and
//! controller-runtime's reconcile names (`controller_runtime_reconcile_total{controller,result}`,
//! `controller_runtime_reconcile_errors_total`, `controller_runtime_reconcile_time_seconds`).
//! Process-wide: every controller manager in the process adds to them.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Name = [(&'static str, &'static str); 1];
type Result2 = [(&'static str, &'static str); 2];

struct M {
    depth: Family<Name, Gauge>,
    adds: Family<Name, Counter>,
    retries: Family<Name, Counter>,
    queue_duration: Family<Name, Histogram>,
    work_duration: Family<Name, Histogram>,
    reconciles: Family<Result2, Counter>,
    errors: Family<Name, Counter>,
    reconcile_time: Family<Name, Histogram>,
}

fn seconds() -> Histogram {
    // 100 µs .. ~6.5 min
    Histogram::new(exponential_buckets(0.0001, 3.0, 12))
}

static M: LazyLock<M> = LazyLock::new(|| M {
    depth: Family::default(),
    adds: Family::default(),
    retries: Family::default(),
    queue_duration: Family::new_with_constructor(seconds),
    work_duration: Family::new_with_constructor(seconds),
    reconciles: Family::default(),
    errors: Family::default(),
    reconcile_time: Family::new_with_constructor(seconds),
});

/// A key was added to the queue `name`.
pub fn queue_add(name: &'static str) {
    M.adds.get_or_create(&[("name", name)]).inc();
}

/// A failed key was requeued with backoff.
pub fn queue_retry(name: &'static str) {
    M.retries.get_or_create(&[("name", name)]).inc();
}

pub fn queue_depth(name: &'static str, depth: usize) {
    M.depth
        .get_or_create(&[("name", name)])
        .set(i64::try_from(depth).unwrap_or(i64::MAX));
}

/// How long a key waited in the queue before a worker took it.
pub fn queue_wait(name: &'static str, d: Duration) {
    M.queue_duration
        .get_or_create(&[("name", name)])
        .observe(d.as_secs_f64());
}

/// A reconcile ended: `result` is `success`, `requeue_after` or `error`.
pub fn reconciled(controller: &'static str, result: &'static str, d: Duration) {
    M.reconciles
        .get_or_create(&[("controller", controller), ("result", result)])
        .inc();
    if result == "error" {
        M.errors.get_or_create(&[("controller", controller)]).inc();
    }
    M.reconcile_time
        .get_or_create(&[("controller", controller)])
        .observe(d.as_secs_f64());
    M.work_duration
        .get_or_create(&[("name", controller)])
        .observe(d.as_secs_f64());
}

/// Add the controllers' metrics to `reg`.
pub fn register(reg: &mut Registry) {
    let m = &*M;
    reg.register(
        "workqueue_depth",
        "Current depth of the work queue",
        m.depth.clone(),
    );
    reg.register(
        "workqueue_adds",
        "Total number of adds handled by the work queue",
        m.adds.clone(),
    );
    reg.register(
        "workqueue_retries",
        "Total number of retries (rate-limited requeues) handled by the work queue",
        m.retries.clone(),
    );
    reg.register(
        "workqueue_queue_duration_seconds",
        "How long in seconds an item stays in the work queue before being requested",
        m.queue_duration.clone(),
    );
    reg.register(
        "workqueue_work_duration_seconds",
        "How long in seconds processing an item from the work queue takes",
        m.work_duration.clone(),
    );
    reg.register(
        "controller_runtime_reconcile",
        "Total number of reconciliations per controller and result",
        m.reconciles.clone(),
    );
    reg.register(
        "controller_runtime_reconcile_errors",
        "Total number of reconciliation errors per controller",
        m.errors.clone(),
    );
    reg.register(
        "controller_runtime_reconcile_time_seconds",
        "Length of time per reconciliation per controller",
        m.reconcile_time.clone(),
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
