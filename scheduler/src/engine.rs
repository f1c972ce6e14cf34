//! The scheduler's state machine, without I/O: watch events and bind outcomes go in, actions
//! (bind this pod to that node, report this pod unschedulable) come out. Time is passed in, so
//! the backoff and assume expiry are testable without sleeping. The async driver in `lib.rs`
//! feeds it and performs the actions.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use kapsel_api::watcher::Event;
use kapsel_api::{Node, Pod};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::cache::{is_terminal, Cache, NodeChange};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::queue::{QState, Queue};
use crate::resources::format_key;
use crate::schedule::{schedule_with, Framework, Scratch};
use crate::snapshot::{NodeName, PodInfo};

/// What the driver feeds the engine.
#[derive(Debug)]
pub enum Input {
    Nodes(Box<Event<Node>>),
    Pods(Box<Event<Pod>>),
    BindDone { key: String, result: BindResult },
}

/// How a bind ended.
#[derive(Debug)]
pub enum BindResult {
    Bound,
    /// 409: the pod changed (or was bound by someone else). Carries the refreshed pod, `None`
    /// when it no longer exists.
    Conflict(Option<Box<Pod>>),
    /// 404: the pod is gone.
    Gone,
    Failed(String),
}

/// What the engine asks the driver to do.
#[derive(Debug)]
pub enum Action {
    Bind {
        key: String,
        pod: Arc<Pod>,
        node: NodeName,
    },
    /// Set PodScheduled=False/Unschedulable with `message`, and record a FailedScheduling event.
    Unschedulable { pod: Arc<Pod>, message: String },
}

pub struct Engine {
    config: Config,
    framework: Framework,
    cache: Cache,
    queue: Queue,
    rng: StdRng,
    scratch: Scratch,
    metrics: Arc<Metrics>,
    nodes_synced: bool,
    pods_synced: bool,
    in_flight: usize,
}

fn node_name_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl Engine {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Engine {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        Engine {
            framework: Framework::new(&config),
            queue: Queue::new(config.initial_backoff(), config.max_backoff()),
            cache: Cache::new(),
            rng,
            scratch: Scratch::default(),
            metrics,
            nodes_synced: false,
            pods_synced: false,
            in_flight: 0,
            config,
        }
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }
    pub fn queue(&self) -> &Queue {
        &self.queue
    }
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
    pub fn synced(&self) -> bool {
        self.nodes_synced && self.pods_synced
    }

    /// Is this unbound pod ours to schedule?
    pub fn is_ours(&self, pod: &Pod) -> bool {
        let Some(spec) = &pod.spec else { return false };
        let name = spec.scheduler_name.as_deref().unwrap_or("");
        (name.is_empty() || name == self.config.scheduler_name)
            && node_name_of(pod).is_none()
            && !is_terminal(pod)
            && pod.metadata.deletion_timestamp.is_none()
    }

    pub fn handle(&mut self, input: Input, now: Instant) {
        match input {
            Input::Nodes(ev) => self.on_nodes(*ev),
            Input::Pods(ev) => self.on_pods(*ev, now),
            Input::BindDone { key, result } => self.on_bind(key, result, now),
        }
    }

    fn on_nodes(&mut self, ev: Event<Node>) {
        match ev {
            Event::Applied(node) => self.apply_node(node),
            Event::Deleted(node) => {
                self.cache
                    .remove_node(&NodeName(node.metadata.name.unwrap_or_default()));
            }
            Event::Restarted(nodes) => {
                self.nodes_synced = true;
                let keep: HashSet<&str> = nodes.iter().map(|n| n.metadata.name()).collect();
                for name in self.cache.node_names() {
                    if !keep.contains(name.as_str()) {
                        self.cache.remove_node(&name);
                    }
                }
                for n in nodes {
                    self.apply_node(n);
                }
                self.queue.flush();
            }
        }
    }

    fn apply_node(&mut self, node: Node) {
        let name = node.metadata.name().to_string();
        match self.cache.upsert_node(Arc::new(node)) {
            Ok(NodeChange::Added | NodeChange::Relevant) => self.queue.flush(),
            Ok(NodeChange::Irrelevant) => {}
            Err(e) => tracing::warn!(node = %name, error = %e, "ignoring node update"),
        }
    }

    fn on_pods(&mut self, ev: Event<Pod>, now: Instant) {
        match ev {
            Event::Applied(pod) => self.apply_pod(pod, now),
            Event::Deleted(pod) => {
                let key = format_key(&pod);
                if self.cache.remove_pod(&key) {
                    self.queue.flush();
                }
                self.queue.remove(&key);
            }
            Event::Restarted(pods) => {
                self.pods_synced = true;
                let keep: HashSet<String> = pods.iter().map(format_key).collect();
                let mut freed = false;
                for key in self.cache.placed_keys() {
                    if !keep.contains(&key) && !self.cache.is_assumed(&key) {
                        freed |= self.cache.remove_pod(&key);
                    }
                }
                let gone: Vec<String> = self
                    .queue
                    .keys()
                    .filter(|k| !keep.contains(*k))
                    .cloned()
                    .collect();
                for k in gone {
                    if self.queue.get(&k).map(|q| q.state) != Some(QState::InFlight) {
                        self.queue.remove(&k);
                    }
                }
                for p in pods {
                    self.apply_pod(p, now);
                }
                if freed {
                    self.queue.flush();
                }
            }
        }
    }

    fn apply_pod(&mut self, pod: Pod, now: Instant) {
        let key = format_key(&pod);
        let pod = Arc::new(pod);
        if node_name_of(&pod).is_some() || is_terminal(&pod) {
            match self.cache.observe_pod(&key, &pod) {
                Ok(true) => self.queue.flush(),
                Ok(false) => {}
                Err(e) => tracing::warn!(pod = %key, error = %e, "cannot account bound pod"),
            }
            // Bound (by us or anyone): no longer pending. An in-flight entry is settled by its
            // bind result.
            if self.queue.get(&key).map(|q| q.state) != Some(QState::InFlight) {
                self.queue.remove(&key);
            }
            return;
        }
        if !self.is_ours(&pod) {
            self.queue.remove(&key);
            return;
        }
        if self.cache.is_placed(&key) {
            // A stale unbound view of a pod we assumed: refresh the object, keep the assumption.
            if let Some(q) = self.queue.get_mut(&key) {
                q.pod = pod;
            }
            return;
        }
        self.queue.upsert(&key, pod, now);
    }

    fn on_bind(&mut self, key: String, result: BindResult, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match result {
            BindResult::Bound => {
                Metrics::inc(&self.metrics.bound);
                crate::metrics::prom::attempt("scheduled");
                self.cache.finish_binding(&key, now);
                if let Some(q) = self.queue.remove(&key) {
                    let d = now.saturating_duration_since(q.first_seen);
                    self.metrics.e2e_latency.observe(d);
                    crate::metrics::prom::e2e("scheduled", d);
                }
            }
            BindResult::Conflict(fresh) => {
                Metrics::inc(&self.metrics.bind_conflicts);
                self.cache.forget(&key);
                match fresh {
                    None => {
                        self.queue.remove(&key);
                    }
                    Some(pod) if node_name_of(&pod).is_some() => {
                        self.queue.remove(&key);
                        self.apply_pod(*pod, now);
                    }
                    Some(pod) => {
                        let retries = self.config.bind_retries;
                        let Some(q) = self.queue.get_mut(&key) else {
                            return;
                        };
                        q.pod = Arc::new(*pod);
                        q.bind_conflicts += 1;
                        if q.bind_conflicts <= retries {
                            self.queue.requeue_now(&key);
                        } else {
                            q.bind_conflicts = 0;
                            self.queue.backoff(&key, now);
                        }
                    }
                }
            }
            BindResult::Gone => {
                self.cache.forget(&key);
                self.queue.remove(&key);
            }
            BindResult::Failed(msg) => {
                Metrics::inc(&self.metrics.errors);
                crate::metrics::prom::attempt("error");
                tracing::warn!(pod = %key, error = %msg, "bind failed");
                self.cache.forget(&key);
                self.queue.backoff(&key, now);
            }
        }
    }

    /// Backoff expiry and assume expiry.
    pub fn tick(&mut self, now: Instant) {
        self.queue.tick(now);
        if self.cache.expire(now) > 0 {
            self.queue.flush();
        }
        let backoff = self.queue.backoff_len();
        crate::metrics::prom::pending(self.queue.len().saturating_sub(backoff), backoff);
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.next_backoff_expiry()
    }

    /// Run one scheduling cycle if a pod is waiting, the caches are synced and the bind budget
    /// allows.
    pub fn next_action(&mut self, now: Instant) -> Option<Action> {
        if !self.synced() || self.in_flight >= self.config.parallel_binds {
            return None;
        }
        loop {
            let (key, q) = self.queue.pop()?;
            let pod = q.pod.clone();
            if self.cache.is_placed(&key) {
                self.queue.remove(&key);
                continue;
            }
            let info = match PodInfo::new(pod.clone()) {
                Ok(i) => i,
                Err(e) => {
                    Metrics::inc(&self.metrics.errors);
                    crate::metrics::prom::attempt("error");
                    self.queue.backoff(&key, now);
                    return Some(Action::Unschedulable {
                        pod,
                        message: e.to_string(),
                    });
                }
            };
            Metrics::inc(&self.metrics.attempts);
            let t0 = Instant::now();
            let result = schedule_with(
                &info,
                self.cache.snapshot(),
                &self.framework,
                &mut self.rng,
                &mut self.scratch,
            );
            self.metrics.algorithm_latency.observe(t0.elapsed());
            crate::metrics::prom::algorithm(t0.elapsed());
            return match result {
                Ok(node) => {
                    self.cache.assume(info, node.clone());
                    self.in_flight += 1;
                    Some(Action::Bind { key, pod, node })
                }
                Err(fit) => {
                    Metrics::inc(&self.metrics.unschedulable);
                    crate::metrics::prom::attempt("unschedulable");
                    self.queue.backoff(&key, now);
                    Some(Action::Unschedulable {
                        pod,
                        message: fit.to_string(),
                    })
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use std::time::Duration;

    fn pods(ev: Event<Pod>) -> Input {
        Input::Pods(Box::new(ev))
    }

    fn nodes(ev: Event<Node>) -> Input {
        Input::Nodes(Box::new(ev))
    }

    fn engine() -> Engine {
        Engine::new(
            Config {
                seed: Some(1),
                events: false,
                ..Config::default()
            },
            Arc::new(Metrics::default()),
        )
    }

    fn synced(e: &mut Engine, list: Vec<Node>, now: Instant) {
        e.handle(nodes(Event::Restarted(list)), now);
        e.handle(pods(Event::Restarted(vec![])), now);
    }

    fn drain(e: &mut Engine, now: Instant) -> Vec<Action> {
        std::iter::from_fn(|| e.next_action(now)).collect()
    }

    #[test]
    fn waits_for_sync_before_scheduling() {
        let t = Instant::now();
        let mut e = engine();
        let pod = PodBuilder::new("p").build();
        e.handle(pods(Event::Applied(pod.clone())), t);
        e.handle(
            nodes(Event::Restarted(vec![NodeBuilder::new("n").build()])),
            t,
        );
        assert!(e.next_action(t).is_none(), "pods not listed yet");
        e.handle(pods(Event::Restarted(vec![pod])), t);
        assert!(matches!(e.next_action(t), Some(Action::Bind { .. })));
    }

    #[test]
    fn burst_never_overcommits_thanks_to_assumed_pods() {
        let t = Instant::now();
        let mut e = engine();
        // Two nodes with 1 cpu each; ten pods of 400m: only 4 fit (2 per node).
        synced(
            &mut e,
            vec![
                NodeBuilder::new("a").allocatable("1", "1Gi", "110").build(),
                NodeBuilder::new("b").allocatable("1", "1Gi", "110").build(),
            ],
            t,
        );
        for i in 0..10 {
            e.handle(
                pods(Event::Applied(
                    PodBuilder::new(&format!("p{i}"))
                        .container("400m", "")
                        .build(),
                )),
                t,
            );
        }
        let actions = drain(&mut e, t);
        let binds = actions
            .iter()
            .filter(|a| matches!(a, Action::Bind { .. }))
            .count();
        assert_eq!(binds, 4);
        let msg = actions
            .iter()
            .find_map(|a| match a {
                Action::Unschedulable { message, .. } => Some(message.clone()),
                _ => None,
            })
            .expect("some unschedulable");
        assert_eq!(msg, "0/2 nodes are available: 2 Insufficient cpu.");
        for n in e.cache().snapshot().nodes() {
            assert!(n.requested.cpu <= n.allocatable.resources.cpu);
        }
    }

    #[test]
    fn unschedulable_pod_retries_on_node_add_and_backs_off_otherwise() {
        let t = Instant::now();
        let mut e = engine();
        synced(&mut e, vec![], t);
        e.handle(
            pods(Event::Applied(
                PodBuilder::new("p").container("1", "").build(),
            )),
            t,
        );
        let a = drain(&mut e, t);
        assert!(
            matches!(&a[..], [Action::Unschedulable { message, .. }] if message == "no nodes available to schedule pods")
        );
        // Still backing off.
        e.tick(t + Duration::from_millis(500));
        assert!(e.next_action(t).is_none());
        // A node arrives: flushed, scheduled at once.
        e.handle(
            nodes(Event::Applied(NodeBuilder::new("n").build())),
            t + Duration::from_millis(600),
        );
        assert!(matches!(
            e.next_action(t + Duration::from_millis(600)),
            Some(Action::Bind { .. })
        ));
    }

    #[test]
    fn bind_conflict_refreshes_and_retries_then_bound_confirms() {
        let t = Instant::now();
        let mut e = engine();
        synced(&mut e, vec![NodeBuilder::new("n").build()], t);
        let pod = PodBuilder::new("p").container("1", "").build();
        e.handle(pods(Event::Applied(pod.clone())), t);
        let Some(Action::Bind { key, .. }) = e.next_action(t) else {
            panic!("expected a bind");
        };
        let cpu = |e: &Engine| e.cache().snapshot().nodes()[0].requested.cpu.0;
        assert_eq!(cpu(&e), 1000);
        e.handle(
            Input::BindDone {
                key: key.clone(),
                result: BindResult::Conflict(Some(Box::new(pod.clone()))),
            },
            t,
        );
        assert_eq!(cpu(&e), 0, "assumption forgotten");
        let Some(Action::Bind { key, .. }) = e.next_action(t) else {
            panic!("expected a retry");
        };
        e.handle(
            Input::BindDone {
                key: key.clone(),
                result: BindResult::Bound,
            },
            t,
        );
        // The watch confirms; still counted exactly once.
        let mut bound = pod;
        bound.spec.as_mut().expect("spec").node_name = Some("n".into());
        e.handle(pods(Event::Applied(bound)), t);
        assert_eq!(cpu(&e), 1000);
        assert!(e.queue().is_empty());
        assert_eq!(Metrics::get(&e.metrics.bound), 1);
        assert_eq!(Metrics::get(&e.metrics.bind_conflicts), 1);
    }

    #[test]
    fn failed_bind_forgets_and_backs_off_deleted_pod_frees_room() {
        let t = Instant::now();
        let mut e = engine();
        synced(
            &mut e,
            vec![NodeBuilder::new("n").allocatable("1", "1Gi", "110").build()],
            t,
        );
        let big = PodBuilder::new("big")
            .container("1", "")
            .node_name("n")
            .build();
        e.handle(pods(Event::Applied(big.clone())), t);
        e.handle(
            pods(Event::Applied(
                PodBuilder::new("p").container("1", "").build(),
            )),
            t,
        );
        assert!(matches!(
            e.next_action(t),
            Some(Action::Unschedulable { .. })
        ));
        // Deleting the bound pod flushes the backoff queue.
        e.handle(pods(Event::Deleted(big)), t);
        let Some(Action::Bind { key, .. }) = e.next_action(t) else {
            panic!("expected a bind after the delete");
        };
        e.handle(
            Input::BindDone {
                key,
                result: BindResult::Failed("boom".into()),
            },
            t,
        );
        assert_eq!(e.cache().snapshot().nodes()[0].requested.cpu.0, 0);
        assert!(e.next_action(t).is_none(), "backing off");
        e.tick(t + Duration::from_secs(3));
        assert!(matches!(e.next_action(t), Some(Action::Bind { .. })));
    }

    #[test]
    fn other_schedulers_pods_and_bound_pods_are_not_queued() {
        let t = Instant::now();
        let mut e = engine();
        synced(&mut e, vec![NodeBuilder::new("n").build()], t);
        let mut other = PodBuilder::new("o").build();
        other.spec.as_mut().expect("spec").scheduler_name = Some("volcano".into());
        e.handle(pods(Event::Applied(other)), t);
        e.handle(
            pods(Event::Applied(PodBuilder::new("b").node_name("n").build())),
            t,
        );
        let mut mine = PodBuilder::new("m").build();
        mine.spec.as_mut().expect("spec").scheduler_name = Some("kapsel".into());
        e.handle(pods(Event::Applied(mine)), t);
        assert_eq!(e.queue().len(), 1);
    }
}
