//! A kube-rs-style watcher and reflector: keep a local, eventually consistent view of a kind.
//!
//! [`watcher`] lists (paginated), then watches from the list's resourceVersion, re-watches from
//! the last seen resourceVersion when the server ends the stream (bookmarks advance it), relists
//! on `410 Gone`, and backs off exponentially (800 ms → 30 s) on errors. It never ends; errors are
//! yielded as items for logging and the watcher recovers by itself.
//!
//! [`reflector`] feeds a [`Store`] (a shared read-only cache) from a watcher stream:
//!
//! ```no_run
//! # async fn demo(client: kapsel_api::client::Client) {
//! use futures::StreamExt;
//! use kapsel_api::watcher::{self, reflector, watcher, WatcherConfig};
//! use kapsel_api::Pod;
//! let (store, writer) = watcher::store::<Pod>();
//! let events = reflector(writer, watcher(client.api::<Pod>(None), WatcherConfig::default()));
//! tokio::spawn(events.for_each(|_| async {}));
//! store.wait_until_ready().await;
//! let pod = store.get("default", "web-1");
//! # }
//! ```
//!
//! The store is a cache: it may be stale, and DELETE events can be missed across a relist (the
//! relist's `Restarted` replaces the whole content, so the store itself converges). Reconcilers
//! must treat what they read as a hint and rely on resourceVersion compare-and-swap for writes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::client::{Api, ClientError, ListParams};
use crate::meta::{List, WatchEvent, WatchEventType};
use crate::resource::Resource;

/// What the watcher reports.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<K> {
    /// A full (re)list: the complete current set of objects. Anything not in it is gone.
    Restarted(Vec<K>),
    /// Added or modified.
    Applied(K),
    /// Deleted (the object's last state).
    Deleted(K),
}

impl<K> Event<K> {
    /// The objects this event carries.
    pub fn objects(&self) -> Vec<&K> {
        match self {
            Event::Restarted(v) => v.iter().collect(),
            Event::Applied(k) | Event::Deleted(k) => vec![k],
        }
    }
    pub fn into_objects(self) -> Vec<K> {
        match self {
            Event::Restarted(v) => v,
            Event::Applied(k) | Event::Deleted(k) => vec![k],
        }
    }
}

/// The two calls a watcher makes. Implemented by [`Api<K>`]; tests use a fake.
pub trait ListWatch<K>: Send + Sync + 'static {
    fn list(&self, lp: &ListParams) -> impl Future<Output = Result<List<K>, ClientError>> + Send;
    fn watch(
        &self,
        lp: &ListParams,
        resource_version: &str,
    ) -> impl Future<
        Output = Result<BoxStream<'static, Result<WatchEvent<K>, ClientError>>, ClientError>,
    > + Send;
}

impl<K: Resource> ListWatch<K> for Api<K> {
    fn list(&self, lp: &ListParams) -> impl Future<Output = Result<List<K>, ClientError>> + Send {
        let api = self.clone();
        let lp = lp.clone();
        async move { Api::list(&api, &lp).await }
    }
    fn watch(
        &self,
        lp: &ListParams,
        resource_version: &str,
    ) -> impl Future<
        Output = Result<BoxStream<'static, Result<WatchEvent<K>, ClientError>>, ClientError>,
    > + Send {
        let api = self.clone();
        let lp = lp.clone();
        let rv = resource_version.to_string();
        async move { api.watch_boxed(&lp, &rv).await }
    }
}

/// Exponential backoff: `initial * factor^n` capped at `max`, optionally jittered (+0–100 %
/// of the step, like client-go), reset by the watcher after a success.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub factor: f64,
    pub jitter: bool,
    current: Option<Duration>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(800), Duration::from_secs(30))
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            factor: 2.0,
            jitter: true,
            current: None,
        }
    }
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }
    /// The next delay (without jitter, the sequence is initial, 2×, 4× … max).
    pub fn next_delay(&mut self) -> Duration {
        let next = match self.current {
            None => self.initial,
            Some(c) => c.mul_f64(self.factor).min(self.max),
        };
        self.current = Some(next);
        if self.jitter {
            let extra: f64 = rand::random::<f64>() * 0.2;
            next.mul_f64(1.0 + extra).min(self.max)
        } else {
            next
        }
    }
    pub fn reset(&mut self) {
        self.current = None;
    }
}

/// Watcher settings.
#[derive(Clone, Debug)]
pub struct WatcherConfig {
    /// `label_selector` / `field_selector` apply to both list and watch; the rest is ignored.
    pub selector: ListParams,
    /// List page size (`limit`); `None` lists everything in one request.
    pub page_size: Option<u32>,
    /// `timeoutSeconds` of each watch request; the watcher re-watches when it ends.
    pub watch_timeout: Option<u32>,
    pub backoff: Backoff,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            selector: ListParams::default(),
            page_size: Some(500),
            watch_timeout: Some(290),
            backoff: Backoff::default(),
        }
    }
}

impl WatcherConfig {
    pub fn labels(mut self, selector: &str) -> Self {
        self.selector.label_selector = Some(selector.to_string());
        self
    }
    pub fn fields(mut self, selector: &str) -> Self {
        self.selector.field_selector = Some(selector.to_string());
        self
    }
}

enum State<K> {
    /// Start (or restart) the initial list.
    Empty,
    /// Listing: more pages follow.
    InitPage {
        continue_token: String,
        objects: Vec<K>,
    },
    /// Listed (or a watch ended): start a watch from this resourceVersion.
    InitListed { resource_version: String },
    Watching {
        resource_version: String,
        stream: BoxStream<'static, Result<WatchEvent<K>, ClientError>>,
    },
}

struct Machine<K, L> {
    api: L,
    config: WatcherConfig,
    state: State<K>,
    /// Sleep before the next request (set after an error).
    pending_backoff: Option<Duration>,
}

impl<K: Resource, L: ListWatch<K>> Machine<K, L> {
    fn list_params(&self, continue_token: Option<String>) -> ListParams {
        ListParams {
            label_selector: self.config.selector.label_selector.clone(),
            field_selector: self.config.selector.field_selector.clone(),
            limit: self.config.page_size,
            continue_token,
            ..Default::default()
        }
    }

    fn watch_params(&self) -> ListParams {
        ListParams {
            label_selector: self.config.selector.label_selector.clone(),
            field_selector: self.config.selector.field_selector.clone(),
            timeout_seconds: self.config.watch_timeout,
            disable_bookmarks: self.config.selector.disable_bookmarks,
            ..Default::default()
        }
    }

    fn fail(&mut self, next: State<K>, e: ClientError) -> Option<Result<Event<K>, ClientError>> {
        self.state = next;
        self.pending_backoff = Some(self.config.backoff.next_delay());
        Some(Err(e))
    }

    /// Advance until there is something to report.
    async fn step(&mut self) -> Option<Result<Event<K>, ClientError>> {
        loop {
            if let Some(d) = self.pending_backoff.take() {
                tokio::time::sleep(d).await;
            }
            match std::mem::replace(&mut self.state, State::Empty) {
                State::Empty => {
                    let lp = self.list_params(None);
                    match self.api.list(&lp).await {
                        Ok(list) => {
                            if let Some(r) = self.listed(Vec::new(), list) {
                                return Some(r);
                            }
                        }
                        Err(e) => return self.fail(State::Empty, e),
                    }
                }
                State::InitPage {
                    continue_token,
                    objects,
                } => {
                    let lp = self.list_params(Some(continue_token.clone()));
                    match self.api.list(&lp).await {
                        Ok(list) => {
                            if let Some(r) = self.listed(objects, list) {
                                return Some(r);
                            }
                        }
                        // An expired continue token: start the list over.
                        Err(e) if e.is_gone() => {
                            tracing::debug!("continue token expired, relisting");
                            self.state = State::Empty;
                        }
                        Err(e) => return self.fail(State::Empty, e),
                    }
                }
                State::InitListed { resource_version } => {
                    let lp = self.watch_params();
                    match self.api.watch(&lp, &resource_version).await {
                        Ok(stream) => {
                            self.state = State::Watching {
                                resource_version,
                                stream,
                            }
                        }
                        Err(e) if e.is_gone() => {
                            tracing::debug!(%resource_version, "watch answered 410 Gone, relisting");
                            self.state = State::Empty;
                        }
                        Err(e) => return self.fail(State::InitListed { resource_version }, e),
                    }
                }
                State::Watching {
                    mut resource_version,
                    mut stream,
                } => match stream.next().await {
                    Some(Ok(ev)) => {
                        self.config.backoff.reset();
                        let rv = ev.object.resource_version();
                        if !rv.is_empty() {
                            resource_version = rv.to_string();
                        }
                        self.state = State::Watching {
                            resource_version,
                            stream,
                        };
                        match ev.type_ {
                            WatchEventType::Added | WatchEventType::Modified => {
                                return Some(Ok(Event::Applied(ev.object)))
                            }
                            WatchEventType::Deleted => return Some(Ok(Event::Deleted(ev.object))),
                            WatchEventType::Bookmark | WatchEventType::Error => {}
                        }
                    }
                    Some(Err(e)) if e.is_gone() => {
                        tracing::debug!(%resource_version, "watch expired (410), relisting");
                        self.state = State::Empty;
                    }
                    // One undecodable event: report it and keep reading the stream.
                    Some(Err(e @ ClientError::Decode { .. })) => {
                        self.state = State::Watching {
                            resource_version,
                            stream,
                        };
                        return Some(Err(e));
                    }
                    Some(Err(e)) => return self.fail(State::InitListed { resource_version }, e),
                    // The server ended the watch (timeout): watch again from where we are.
                    None => self.state = State::InitListed { resource_version },
                },
            }
        }
    }

    /// A list page arrived; returns the `Restarted` event once the last page is in.
    fn listed(
        &mut self,
        mut objects: Vec<K>,
        list: List<K>,
    ) -> Option<Result<Event<K>, ClientError>> {
        self.config.backoff.reset();
        objects.extend(list.items);
        match list.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(continue_token) => {
                self.state = State::InitPage {
                    continue_token,
                    objects,
                };
                None
            }
            None => {
                self.state = State::InitListed {
                    resource_version: list.metadata.resource_version.unwrap_or_default(),
                };
                Some(Ok(Event::Restarted(objects)))
            }
        }
    }
}

/// Watch a kind forever: see the module documentation. The stream never ends by itself.
pub fn watcher<K, L>(
    api: L,
    config: WatcherConfig,
) -> impl Stream<Item = Result<Event<K>, ClientError>> + Send
where
    K: Resource,
    L: ListWatch<K>,
{
    let machine = Machine {
        api,
        config,
        state: State::Empty,
        pending_backoff: None,
    };
    futures::stream::unfold(machine, |mut m| async move {
        let item = m.step().await;
        item.map(|i| (i, m))
    })
}

// ---------------------------------------------------------------------------------------------
// Reflector store
// ---------------------------------------------------------------------------------------------

/// Namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
    pub fn of<K: Resource>(k: &K) -> Self {
        ObjectKey::new(k.namespace(), k.name())
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

type Map<K> = Arc<RwLock<HashMap<ObjectKey, Arc<K>>>>;

/// A read-only, cloneable view of the cache.
pub struct Store<K> {
    map: Map<K>,
    ready: tokio::sync::watch::Receiver<bool>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            map: self.map.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<K> std::fmt::Debug for Store<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("len", &self.map.read().map(|m| m.len()).unwrap_or(0))
            .field("ready", &*self.ready.borrow())
            .finish()
    }
}

/// The single writer of a [`Store`].
pub struct Writer<K> {
    map: Map<K>,
    ready: tokio::sync::watch::Sender<bool>,
}

/// A new empty store and its writer.
pub fn store<K>() -> (Store<K>, Writer<K>) {
    let map: Map<K> = Arc::new(RwLock::new(HashMap::new()));
    let (tx, rx) = tokio::sync::watch::channel(false);
    (
        Store {
            map: map.clone(),
            ready: rx,
        },
        Writer { map, ready: tx },
    )
}

fn read<K>(m: &Map<K>) -> std::sync::RwLockReadGuard<'_, HashMap<ObjectKey, Arc<K>>> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

impl<K: Resource> Writer<K> {
    /// A reader of this writer's store.
    pub fn as_reader(&self) -> Store<K> {
        Store {
            map: self.map.clone(),
            ready: self.ready.subscribe(),
        }
    }

    pub fn apply(&mut self, event: &Event<K>) {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Restarted(objs) => {
                let new: HashMap<_, _> = objs
                    .iter()
                    .map(|o| (ObjectKey::of(o), Arc::new(o.clone())))
                    .collect();
                *m = new;
                drop(m);
                self.ready.send_replace(true);
            }
            Event::Applied(o) => {
                m.insert(ObjectKey::of(o), Arc::new(o.clone()));
            }
            Event::Deleted(o) => {
                m.remove(&ObjectKey::of(o));
            }
        }
    }
}

impl<K: Resource> Store<K> {
    /// `namespace` is `""` for cluster-scoped kinds.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        read(&self.map)
            .get(&ObjectKey::new(namespace, name))
            .cloned()
    }
    pub fn get_key(&self, key: &ObjectKey) -> Option<Arc<K>> {
        read(&self.map).get(key).cloned()
    }
    /// Everything, in no particular order.
    pub fn list(&self) -> Vec<Arc<K>> {
        read(&self.map).values().cloned().collect()
    }
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        read(&self.map)
            .iter()
            .filter(|(k, _)| k.namespace == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }
    pub fn find(&self, pred: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        read(&self.map)
            .values()
            .filter(|v| pred(v))
            .cloned()
            .collect()
    }
    pub fn len(&self) -> usize {
        read(&self.map).len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// True once the first full list has been applied.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }
    /// Wait until the first full list has been applied. Returns at once if it has; never
    /// returns if the writer is dropped before that.
    pub async fn wait_until_ready(&self) {
        let mut rx = self.ready.clone();
        if rx.wait_for(|r| *r).await.is_err() {
            futures::future::pending::<()>().await;
        }
    }
}

/// Apply every event of `stream` to the store behind `writer`, passing the items through.
pub fn reflector<K, S>(mut writer: Writer<K>, stream: S) -> impl Stream<Item = S::Item>
where
    K: Resource,
    S: Stream<Item = Result<Event<K>, ClientError>>,
{
    stream.inspect(move |item| {
        if let Ok(ev) = item {
            writer.apply(ev);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Pod;
    use crate::meta::{ListMeta, ObjectMeta, Status};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    type WatchResult = Result<Vec<Result<WatchEvent<Pod>, ClientError>>, ClientError>;
    type ListResult = Result<List<Pod>, ClientError>;

    /// A scripted fake: each call pops the next answer and records its arguments.
    #[derive(Clone, Default)]
    struct Fake {
        lists: Arc<Mutex<VecDeque<ListResult>>>,
        watches: Arc<Mutex<VecDeque<WatchResult>>>,
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl Fake {
        fn list(self, r: Result<List<Pod>, ClientError>) -> Self {
            self.lists.lock().unwrap().push_back(r);
            self
        }
        fn watch(self, r: WatchResult) -> Self {
            self.watches.lock().unwrap().push_back(r);
            self
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl ListWatch<Pod> for Fake {
        fn list(
            &self,
            lp: &ListParams,
        ) -> impl Future<Output = Result<List<Pod>, ClientError>> + Send {
            self.calls.lock().unwrap().push(format!(
                "list limit={:?} continue={}",
                lp.limit,
                lp.continue_token.clone().unwrap_or_default()
            ));
            let r = self.lists.lock().unwrap().pop_front();
            async move {
                match r {
                    Some(r) => r,
                    None => futures::future::pending().await,
                }
            }
        }
        fn watch(
            &self,
            lp: &ListParams,
            rv: &str,
        ) -> impl Future<
            Output = Result<BoxStream<'static, Result<WatchEvent<Pod>, ClientError>>, ClientError>,
        > + Send {
            self.calls.lock().unwrap().push(format!(
                "watch rv={rv} labels={}",
                lp.label_selector.clone().unwrap_or_default()
            ));
            let r = self.watches.lock().unwrap().pop_front();
            async move {
                match r {
                    Some(Ok(evs)) => Ok(futures::stream::iter(evs).boxed()),
                    Some(Err(e)) => Err(e),
                    None => futures::future::pending().await,
                }
            }
        }
    }

    fn pod(name: &str, rv: &str) -> Pod {
        let mut p = Pod::with_meta(ObjectMeta::namespaced("default", name));
        p.metadata.resource_version = Some(rv.into());
        p
    }

    fn list(items: Vec<Pod>, rv: &str, cont: Option<&str>) -> List<Pod> {
        List {
            api_version: "v1".into(),
            kind: "PodList".into(),
            metadata: ListMeta {
                resource_version: Some(rv.into()),
                continue_: cont.map(str::to_string),
                remaining_item_count: None,
            },
            items,
        }
    }

    fn ev(t: WatchEventType, p: Pod) -> Result<WatchEvent<Pod>, ClientError> {
        Ok(WatchEvent {
            type_: t,
            object: p,
        })
    }

    fn gone() -> ClientError {
        ClientError::from(Status::failure(410, "Expired", "too old resource version"))
    }

    fn fast() -> WatcherConfig {
        WatcherConfig {
            backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(4))
                .without_jitter(),
            ..Default::default()
        }
    }

    fn names(e: &Event<Pod>) -> Vec<String> {
        e.objects().iter().map(|p| p.name().to_string()).collect()
    }

    async fn take(
        s: &mut (impl Stream<Item = Result<Event<Pod>, ClientError>> + Unpin),
        n: usize,
    ) -> Vec<Result<Event<Pod>, ClientError>> {
        let mut v = Vec::new();
        for _ in 0..n {
            let item = tokio::time::timeout(Duration::from_secs(5), s.next())
                .await
                .expect("watcher stalled")
                .expect("watcher ended");
            v.push(item);
        }
        v
    }

    #[tokio::test]
    async fn paginated_list_then_watch_from_list_rv() {
        let fake = Fake::default()
            .list(Ok(list(vec![pod("a", "3")], "10", Some("c1"))))
            .list(Ok(list(vec![pod("b", "4")], "10", None)))
            .watch(Ok(vec![
                ev(WatchEventType::Added, pod("c", "11")),
                ev(WatchEventType::Modified, pod("a", "12")),
                ev(WatchEventType::Deleted, pod("b", "13")),
            ]));
        let mut cfg = fast().labels("app=web");
        cfg.page_size = Some(1);
        let mut w = Box::pin(watcher(fake.clone(), cfg));
        let items = take(&mut w, 4).await;
        let items: Vec<_> = items.into_iter().map(Result::unwrap).collect();
        assert!(matches!(&items[0], Event::Restarted(v) if v.len() == 2));
        assert_eq!(names(&items[0]), vec!["a", "b"]);
        assert!(matches!(&items[1], Event::Applied(p) if p.name() == "c"));
        assert!(matches!(&items[2], Event::Applied(p) if p.name() == "a"));
        assert!(matches!(&items[3], Event::Deleted(p) if p.name() == "b"));
        assert_eq!(
            fake.calls()[..3],
            [
                "list limit=Some(1) continue=".to_string(),
                "list limit=Some(1) continue=c1".to_string(),
                "watch rv=10 labels=app=web".to_string(),
            ]
        );
    }

    #[tokio::test]
    async fn rewatches_from_last_rv_and_bookmarks_advance_it() {
        let fake = Fake::default()
            .list(Ok(list(vec![], "5", None)))
            .watch(Ok(vec![ev(WatchEventType::Added, pod("a", "6"))]))
            // Stream ended (server timeout) -> rewatch from 6.
            .watch(Ok(vec![ev(WatchEventType::Bookmark, pod("", "20"))]))
            // Ended again -> rewatch from the bookmark's 20.
            .watch(Ok(vec![ev(WatchEventType::Modified, pod("a", "21"))]));
        let mut w = Box::pin(watcher(fake.clone(), fast()));
        let items = take(&mut w, 3).await;
        assert!(matches!(items[2], Ok(Event::Applied(ref p)) if p.resource_version() == "21"));
        let calls = fake.calls();
        assert_eq!(calls[1], "watch rv=5 labels=");
        assert_eq!(calls[2], "watch rv=6 labels=");
        assert_eq!(calls[3], "watch rv=20 labels=");
    }

    #[tokio::test]
    async fn gone_during_watch_relists() {
        let fake = Fake::default()
            .list(Ok(list(vec![pod("a", "1")], "5", None)))
            .watch(Ok(vec![
                ev(WatchEventType::Added, pod("b", "6")),
                Err(gone()),
            ]))
            .list(Ok(list(vec![pod("b", "30")], "30", None)))
            // The watch call itself may also answer 410.
            .watch(Err(gone()))
            .list(Ok(list(vec![pod("c", "40")], "40", None)))
            .watch(Ok(vec![]));
        let mut w = Box::pin(watcher(fake.clone(), fast()));
        let items = take(&mut w, 4).await;
        let items: Vec<_> = items.into_iter().map(Result::unwrap).collect();
        assert_eq!(names(&items[0]), vec!["a"]);
        assert!(matches!(&items[1], Event::Applied(p) if p.name() == "b"));
        assert!(matches!(&items[2], Event::Restarted(_)));
        assert_eq!(names(&items[2]), vec!["b"]);
        assert_eq!(names(&items[3]), vec!["c"]);
        let calls = fake.calls();
        assert_eq!(calls[3], "watch rv=30 labels=");
        assert_eq!(calls[4], "list limit=Some(500) continue=");
    }

    #[tokio::test]
    async fn errors_are_reported_and_retried_with_backoff() {
        let boom = || ClientError::from(Status::failure(500, "InternalError", "boom"));
        let fake = Fake::default()
            .list(Err(boom()))
            .list(Ok(list(vec![], "5", None)))
            .watch(Err(boom()))
            .watch(Ok(vec![ev(WatchEventType::Added, pod("a", "6"))]));
        let mut w = Box::pin(watcher(fake.clone(), fast()));
        let items = take(&mut w, 4).await;
        assert!(items[0].is_err());
        assert!(matches!(items[1], Ok(Event::Restarted(_))));
        assert!(items[2].is_err());
        assert!(matches!(items[3], Ok(Event::Applied(_))));
        // The failed watch is retried from the same resourceVersion, not relisted.
        let calls = fake.calls();
        assert_eq!(calls.len(), 4);
        assert_eq!(calls[2], "watch rv=5 labels=");
        assert_eq!(calls[3], "watch rv=5 labels=");
    }

    #[test]
    fn backoff_sequence() {
        let mut b = Backoff::default().without_jitter();
        let seq: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seq, vec![800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 800);
        let mut j = Backoff::default();
        for _ in 0..20 {
            let d = j.next_delay();
            assert!(d >= Duration::from_millis(800) && d <= Duration::from_secs(30));
        }
    }

    #[tokio::test]
    async fn reflector_keeps_the_store_in_sync() {
        let fake = Fake::default()
            .list(Ok(list(vec![pod("a", "1"), pod("b", "2")], "5", None)))
            .watch(Ok(vec![
                ev(WatchEventType::Added, pod("c", "6")),
                ev(WatchEventType::Deleted, pod("a", "7")),
                ev(WatchEventType::Modified, pod("b", "8")),
                Err(gone()),
            ]))
            .list(Ok(list(vec![pod("z", "9")], "9", None)));
        let (store, writer) = store::<Pod>();
        assert!(!store.is_ready());
        let mut s = Box::pin(reflector(writer, watcher(fake, fast())));
        let _ = take(&mut s, 1).await;
        store.wait_until_ready().await;
        assert!(store.is_ready());
        assert_eq!(store.len(), 2);
        let _ = take(&mut s, 3).await;
        assert!(store.get("default", "a").is_none());
        assert_eq!(store.get("default", "b").unwrap().resource_version(), "8");
        assert!(store.get("default", "c").is_some());
        assert_eq!(store.list_namespace("default").len(), 2);
        assert_eq!(store.find(|p| p.name() == "c").len(), 1);
        // The relist replaces everything.
        let _ = take(&mut s, 1).await;
        let mut names: Vec<_> = store.list().iter().map(|p| p.name().to_string()).collect();
        names.sort();
        assert_eq!(names, vec!["z"]);
    }
}
