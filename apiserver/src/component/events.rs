//! Deduplication of the agents' events (what client-go's `EventCorrelator` does in the
//! kubelet): the same event about the same object (type, reason, message, source) gets one
//! stored Event whose `count` and `lastTimestamp` move, instead of a new object each time. The
//! name is derived from those fields, so repeats find their event without any memory here
//! (and across API server restarts), until it expires (`--event-ttl`).

use serde_json::Value;

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// FNV-1a, 64 bit: stable across builds (std's hasher is not promised to be).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// `{involvedObject.name}.{hash}`: one name per (object, type, reason, message, source).
pub fn dedup_name(ev: &Value) -> String {
    let h = fnv1a(&[
        s(ev, "/involvedObject/kind"),
        s(ev, "/involvedObject/namespace"),
        s(ev, "/involvedObject/name"),
        s(ev, "/involvedObject/uid"),
        s(ev, "/involvedObject/fieldPath"),
        s(ev, "/type"),
        s(ev, "/reason"),
        s(ev, "/message"),
        s(ev, "/source/component"),
        s(ev, "/source/host"),
    ]);
    let mut base = s(ev, "/involvedObject/name").to_string();
    if base.is_empty() {
        base = "event".into();
    }
    // A name is at most 253 characters.
    base.truncate(253 - 17);
    format!("{base}.{h:016x}")
}

/// Fold a repeat (`new`) into the stored event: `count` grows by the repeat's count, and
/// `lastTimestamp` (and `series`, when the stored one has it) move forward.
pub fn merge_repeat(stored: &mut Value, new: &Value) {
    let add = new.get("count").and_then(Value::as_i64).unwrap_or(1).max(1);
    let count = stored.get("count").and_then(Value::as_i64).unwrap_or(1) + add;
    let Some(m) = stored.as_object_mut() else {
        return;
    };
    m.insert("count".into(), count.into());
    if let Some(t) = new.get("lastTimestamp").filter(|t| !t.is_null()) {
        m.insert("lastTimestamp".into(), t.clone());
    }
    if let Some(series) = m.get_mut("series").and_then(Value::as_object_mut) {
        series.insert("count".into(), count.into());
        if let Some(t) = new.get("eventTime").filter(|t| !t.is_null()) {
            series.insert("lastObservedTime".into(), t.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(reason: &str, msg: &str, uid: &str) -> Value {
        json!({
            "involvedObject": {"kind": "Pod", "namespace": "d", "name": "web-1", "uid": uid},
            "type": "Warning", "reason": reason, "message": msg,
            "source": {"component": "kapsel-agent", "host": "n1"},
            "count": 1, "lastTimestamp": "2026-01-01T00:00:01Z", "firstTimestamp": "2026-01-01T00:00:01Z",
        })
    }

    #[test]
    fn same_event_same_name_others_differ() {
        let a = dedup_name(&ev("BackOff", "Back-off restarting", "u1"));
        assert_eq!(a, dedup_name(&ev("BackOff", "Back-off restarting", "u1")));
        assert!(a.starts_with("web-1."), "{a}");
        assert_ne!(a, dedup_name(&ev("BackOff", "Back-off restarting", "u2")));
        assert_ne!(a, dedup_name(&ev("Started", "Back-off restarting", "u1")));
        assert_ne!(a, dedup_name(&ev("BackOff", "other message", "u1")));
        let long = json!({"involvedObject": {"name": "x".repeat(300)}});
        assert!(dedup_name(&long).len() <= 253);
        assert!(dedup_name(&json!({})).starts_with("event."));
    }

    #[test]
    fn repeats_count_up_and_move_last_timestamp() {
        let mut stored = ev("BackOff", "m", "u1");
        let mut again = ev("BackOff", "m", "u1");
        again["lastTimestamp"] = json!("2026-01-01T00:05:00Z");
        merge_repeat(&mut stored, &again);
        merge_repeat(&mut stored, &again);
        assert_eq!(stored["count"], json!(3));
        assert_eq!(stored["lastTimestamp"], json!("2026-01-01T00:05:00Z"));
        assert_eq!(stored["firstTimestamp"], json!("2026-01-01T00:00:01Z"));
        let mut with_series = json!({"count": 2, "series": {"count": 2}});
        merge_repeat(
            &mut with_series,
            &json!({"eventTime": "2026-01-01T00:06:00.000000Z"}),
        );
        assert_eq!(with_series["series"]["count"], json!(3));
        assert_eq!(
            with_series["series"]["lastObservedTime"],
            json!("2026-01-01T00:06:00.000000Z")
        );
    }
}
