//! Events expire: kube-apiserver stores them with an etcd lease of `--event-ttl` (1 h); here a
//! sweeper deletes every Event whose last occurrence is older than the TTL, so a crash-looping
//! pod cannot fill the store. A repeat of an event (count+1) renews it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kapsel_api::{DeleteOptions, Preconditions};
use serde_json::Value;

use crate::registry;
use crate::rest::Api;
use crate::store::Store;

/// kube-apiserver's default `--event-ttl`.
pub const DEFAULT_EVENT_TTL: Duration = Duration::from_secs(3600);

/// Parse a Go-style duration as `--event-ttl` takes it: `1h`, `30m`, `1h30m`, `90s`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 1h, 30m, 1h30m, 90s)");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        let tail = &rest[n..];
        let u = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let secs = match &tail[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(value * secs).map_err(|_| bad())?;
        rest = &tail[u..];
    }
    Ok(total)
}

/// When an event last happened: the latest of `lastTimestamp`, `series.lastObservedTime`,
/// `eventTime` and `firstTimestamp`; without any of them, `metadata.creationTimestamp`.
pub fn last_seen(ev: &Value) -> Option<DateTime<Utc>> {
    let at = |paths: &[&str]| {
        paths
            .iter()
            .filter_map(|p| ev.pointer(p).and_then(Value::as_str))
            .filter_map(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
            .max()
    };
    at(&[
        "/lastTimestamp",
        "/series/lastObservedTime",
        "/eventTime",
        "/firstTimestamp",
    ])
    .or_else(|| at(&["/metadata/creationTimestamp"]))
}

/// Is the event past its TTL at `now`? Events without any timestamp never expire by age.
pub fn expired(ev: &Value, now: DateTime<Utc>, ttl: Duration) -> bool {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    last_seen(ev).is_some_and(|t| now - t > ttl)
}

/// How often to sweep: a tenth of the TTL, between 100 ms and one minute.
pub fn sweep_interval(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Delete the expired events once; returns how many went.
pub async fn sweep(api: &Api, ttl: Duration) -> usize {
    let Some(def) = registry::find("", "v1", "events") else {
        return 0;
    };
    let items = match api.store.list(&def.prefix(None), None, 0) {
        Ok(l) => l.items,
        Err(e) => {
            tracing::warn!(error = %e, "event expiry: listing events failed");
            return 0;
        }
    };
    let now = Utc::now();
    let mut n = 0;
    for (_, b) in items {
        let Ok(ev) = serde_json::from_slice::<Value>(&b) else {
            continue;
        };
        if !expired(&ev, now, ttl) {
            continue;
        }
        let meta = |k: &str| {
            ev.pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        // Only this version: a repeat recorded meanwhile keeps the event.
        let opts = DeleteOptions {
            preconditions: Some(Preconditions {
                uid: None,
                resource_version: Some(meta("resourceVersion")),
            }),
            ..Default::default()
        };
        match api
            .delete(def, &meta("namespace"), &meta("name"), &opts, false)
            .await
        {
            Ok(_) => n += 1,
            Err(e) => tracing::debug!(error = %e, "event expiry: delete skipped"),
        }
    }
    n
}

/// Sweep every [`sweep_interval`] until the server shuts down.
pub fn spawn(api: Arc<Api>, ttl: Duration) {
    let mut stop = api.shutdown.clone();
    tokio::spawn(async move {
        let mut t = tokio::time::interval(sweep_interval(ttl));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = t.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let n = sweep(&api, ttl).await;
            if n > 0 {
                tracing::debug!(expired = n, "events expired");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expiry_uses_the_latest_occurrence() {
        let now: DateTime<Utc> = "2026-01-01T12:00:00Z".parse().unwrap();
        let h = Duration::from_secs(3600);
        let table = [
            (json!({"lastTimestamp": "2026-01-01T10:00:00Z"}), true),
            (json!({"lastTimestamp": "2026-01-01T11:30:00Z"}), false),
            // first long ago, repeated recently: kept
            (
                json!({"firstTimestamp": "2026-01-01T01:00:00Z", "lastTimestamp": "2026-01-01T11:59:00Z"}),
                false,
            ),
            (json!({"eventTime": "2026-01-01T10:59:59.123456Z"}), true),
            (
                json!({"eventTime": "2026-01-01T09:00:00.000000Z", "series": {"count": 3, "lastObservedTime": "2026-01-01T11:10:00.000000Z"}}),
                false,
            ),
            (
                json!({"metadata": {"creationTimestamp": "2026-01-01T10:00:00Z"}}),
                true,
            ),
            // the event's own times win over when the object was written
            (
                json!({"lastTimestamp": "2026-01-01T10:00:00Z", "metadata": {"creationTimestamp": "2026-01-01T11:59:00Z"}}),
                true,
            ),
            (json!({"lastTimestamp": "garbage"}), false),
            (json!({}), false),
        ];
        for (ev, want) in table {
            assert_eq!(expired(&ev, now, h), want, "{ev}");
        }
        assert_eq!(sweep_interval(h), Duration::from_secs(60));
        assert_eq!(parse_duration("1h"), Ok(h));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "1", "h", "1d", "-1h", "1h-"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            sweep_interval(Duration::from_millis(1)),
            Duration::from_millis(100)
        );
    }
}
