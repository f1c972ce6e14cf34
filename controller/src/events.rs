//! Events: what a reconciler wants recorded, and the deduplicating recorder's pure core
//! (same involvedObject + reason + message + type → `count++` and a new `lastTimestamp`, as
//! client-go's `EventCorrelator` does).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kapsel_api::{Event, EventSource, ObjectMeta, ObjectReference, Resource, Time};

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

/// An event a decision function wants recorded about the object it reconciled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    pub type_: &'static str,
    pub reason: String,
    pub message: String,
}

impl EventSpec {
    pub fn normal(reason: impl Into<String>, message: impl Into<String>) -> Self {
        EventSpec {
            type_: NORMAL,
            reason: reason.into(),
            message: message.into(),
        }
    }
    pub fn warning(reason: impl Into<String>, message: impl Into<String>) -> Self {
        EventSpec {
            type_: WARNING,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// `ObjectReference` to a stored object.
pub fn object_ref<K: Resource>(o: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::API_VERSION.into()),
        kind: Some(K::KIND.into()),
        name: Some(o.name().into()),
        namespace: if K::NAMESPACED {
            Some(o.namespace().into())
        } else {
            None
        },
        uid: Some(o.uid().into()),
        resource_version: Some(o.resource_version().into()),
        field_path: None,
    }
}

/// Deduplication key: who, why, what.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub type_: String,
    pub reason: String,
    pub message: String,
}

/// The recorder's memory: key → the event last written for it.
#[derive(Default)]
pub struct Correlator {
    seen: HashMap<EventKey, Event>,
}

/// What to write for one recorded event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventWrite {
    Create(Box<Event>),
    /// Same event again: replace the stored one (its count is already incremented).
    Update(Box<Event>),
}

impl Correlator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Turn `spec` about `involved` into a write, deduplicating repeats.
    pub fn record(
        &mut self,
        involved: &ObjectReference,
        spec: &EventSpec,
        component: &str,
        now: DateTime<Utc>,
    ) -> EventWrite {
        let key = EventKey {
            kind: involved.kind.clone().unwrap_or_default(),
            namespace: involved.namespace.clone().unwrap_or_default(),
            name: involved.name.clone().unwrap_or_default(),
            uid: involved.uid.clone().unwrap_or_default(),
            type_: spec.type_.into(),
            reason: spec.reason.clone(),
            message: spec.message.clone(),
        };
        let now_t = Time(chrono::SubsecRound::trunc_subsecs(now, 0));
        if let Some(prev) = self.seen.get_mut(&key) {
            prev.count = Some(prev.count.unwrap_or(1) + 1);
            prev.last_timestamp = Some(now_t);
            return EventWrite::Update(Box::new(prev.clone()));
        }
        let ns = if key.namespace.is_empty() {
            "default".to_string()
        } else {
            key.namespace.clone()
        };
        let name = format!(
            "{}.{:x}",
            key.name,
            now.timestamp_nanos_opt().unwrap_or_default()
        );
        let mut ev = Event::with_meta(ObjectMeta::namespaced(ns, name));
        let mut inv = involved.clone();
        inv.resource_version = None;
        ev.involved_object = inv;
        ev.reason = Some(spec.reason.clone());
        ev.message = Some(spec.message.clone());
        ev.type_ = Some(spec.type_.to_string());
        ev.source = Some(EventSource {
            component: Some(component.to_string()),
            host: None,
        });
        ev.first_timestamp = Some(now_t);
        ev.last_timestamp = Some(now_t);
        ev.count = Some(1);
        ev.reporting_component = Some(component.to_string());
        self.seen.insert(key, ev.clone());
        EventWrite::Create(Box::new(ev))
    }

    /// Remember the stored version (resourceVersion) of a written event.
    pub fn stored(&mut self, ev: &Event) {
        for v in self.seen.values_mut() {
            if v.metadata.name == ev.metadata.name && v.metadata.namespace == ev.metadata.namespace
            {
                v.metadata.resource_version = ev.metadata.resource_version.clone();
            }
        }
    }

    /// Forget an event (it was deleted or could not be updated): the next repeat creates anew.
    pub fn forget(&mut self, ev: &Event) {
        self.seen.retain(|_, v| {
            !(v.metadata.name == ev.metadata.name && v.metadata.namespace == ev.metadata.namespace)
        });
    }

    /// Bound memory: drop entries last seen before `cutoff`.
    pub fn expire(&mut self, cutoff: DateTime<Utc>) {
        self.seen
            .retain(|_, v| v.last_timestamp.is_some_and(|t| t.0 >= cutoff));
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::Pod;

    #[test]
    fn repeats_increment_count() {
        let mut c = Correlator::new();
        let mut p = Pod::with_meta(ObjectMeta::namespaced("ns", "p"));
        p.metadata.uid = Some("u1".into());
        let r = object_ref(&p);
        let t0 = Utc::now();
        let e = EventSpec::normal("Killing", "Stopping container");
        let EventWrite::Create(first) = c.record(&r, &e, "test", t0) else {
            panic!("first must create")
        };
        assert_eq!(first.count, Some(1));
        let EventWrite::Update(second) =
            c.record(&r, &e, "test", t0 + chrono::Duration::seconds(3))
        else {
            panic!("repeat must update")
        };
        assert_eq!(second.count, Some(2));
        assert_eq!(second.metadata.name, first.metadata.name);
        assert!(second.last_timestamp > first.last_timestamp);
        // A different message is a different event.
        assert!(matches!(
            c.record(&r, &EventSpec::normal("Killing", "other"), "test", t0),
            EventWrite::Create(_)
        ));
    }
}
