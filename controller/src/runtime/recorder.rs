//! The event recorder: reconcilers hand events to a channel; one task deduplicates them with
//! [`Correlator`] and writes them (create, or replace with `count+1` for a repeat).

use std::sync::Arc;

use kapsel_api::client::Client;
use kapsel_api::{Event, ObjectReference};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::events::{Correlator, EventSpec, EventWrite};

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<(ObjectReference, EventSpec)>,
}

impl Recorder {
    pub fn start(
        client: Client,
        component: String,
        clock: Arc<dyn Clock>,
        tasks: &mut JoinSet<()>,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<(ObjectReference, EventSpec)>(4096);
        tasks.spawn(async move {
            let mut c = Correlator::new();
            let mut writes = 0u64;
            while let Some((obj, spec)) = rx.recv().await {
                let now = clock.now();
                let w = c.record(&obj, &spec, &component, now);
                let (ev, update) = match w {
                    EventWrite::Create(e) => (*e, false),
                    EventWrite::Update(e) => (*e, true),
                };
                let ns = ev.metadata.namespace().to_string();
                let api = client.api::<Event>(Some(&ns));
                let res = if update {
                    match api.replace(ev.metadata.name(), &ev).await {
                        Ok(stored) => Ok(stored),
                        Err(_) => {
                            // Lost or changed underneath: start a fresh event.
                            c.forget(&ev);
                            match c.record(&obj, &spec, &component, now) {
                                EventWrite::Create(e) | EventWrite::Update(e) => {
                                    api.create(&e).await
                                }
                            }
                        }
                    }
                } else {
                    api.create(&ev).await
                };
                match res {
                    Ok(stored) => c.stored(&stored),
                    Err(e) => {
                        c.forget(&ev);
                        tracing::debug!(error = %e, reason = %spec.reason, "event not recorded");
                    }
                }
                writes += 1;
                if writes & 1023 == 0 {
                    c.expire(now - chrono::Duration::hours(1));
                }
            }
        });
        Recorder { tx }
    }

    /// Record an event about `obj` (dropped when the recorder is overloaded, like client-go).
    pub fn record(&self, obj: ObjectReference, spec: EventSpec) {
        tracing::debug!(kind = ?obj.kind, name = ?obj.name, reason = %spec.reason, message = %spec.message, "event");
        let _ = self.tx.try_send((obj, spec));
    }
}
