//! Turns a batch of events into PutLogEvents requests that CloudWatch Logs accepts.
//!
//! Events are grouped by their rendered `(log_group, log_stream)` (first-seen order), sorted by
//! time *stably* within a stream (so events of one file with the same millisecond keep file
//! order), and cut into requests that keep every PutLogEvents limit: at most 10,000 events, at
//! most 1,048,576 bytes counted as the message's UTF-8 bytes plus 26 per event, and a span of
//! less than 24 hours. One event's message may hold at most 262,118 bytes (256 KiB minus the
//! 26): a longer plain message is split into consecutive parts with the same timestamp (no byte
//! is lost); a longer JSON event has its `message` cut and is flagged `truncated`.
//!
//! Every CloudWatch event remembers the index of the batch event it came from, so the
//! response can be mapped back to one outcome per event.

use std::collections::HashMap;

use crate::event::{Event, FLAG_TRUNCATED};
use crate::outputs::template::Template;

use super::LineMode;

/// Most events in one PutLogEvents request.
pub const MAX_EVENTS: usize = 10_000;
/// Most bytes in one request: the sum of message bytes plus [`EVENT_OVERHEAD`] per event.
pub const MAX_BYTES: usize = 1_048_576;
/// What CloudWatch adds to each event's message when counting a request's size.
pub const EVENT_OVERHEAD: usize = 26;
/// Most message bytes in one event: 256 KiB minus the overhead.
pub const MAX_MESSAGE_BYTES: usize = 262_144 - EVENT_OVERHEAD;
/// A request's events must span less than this (24 h, in milliseconds).
pub const MAX_SPAN_MS: i64 = 24 * 3600 * 1000;

/// One event as CloudWatch sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CwEvent {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub message: String,
    /// Index of the batch event it came from.
    pub source: usize,
}

/// The requests for one stream, to be sent in order.
#[derive(Debug)]
pub struct StreamPlan {
    pub group: String,
    pub stream: String,
    pub requests: Vec<Vec<CwEvent>>,
}

/// A batch, planned.
#[derive(Debug, Default)]
pub struct Plan {
    pub streams: Vec<StreamPlan>,
    /// Events that cannot be sent at all (a template field missing, an empty message).
    pub rejected: Vec<(usize, String)>,
}

/// Plans `events`: renders group and stream, encodes, splits oversize events, groups, sorts
/// and cuts into requests.
pub fn plan(events: &[Event], group: &Template, stream: &Template, line: LineMode) -> Plan {
    let mut out = Plan::default();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut per_stream: Vec<Vec<CwEvent>> = Vec::new();
    let mut g = String::new();
    let mut s = String::new();
    let mut json = Vec::new();
    let mut last: Option<usize> = None;
    for (i, e) in events.iter().enumerate() {
        if let Err(reason) = group.render_into(e, &mut g) {
            out.rejected.push((i, format!("log_group: {reason}")));
            continue;
        }
        if let Err(reason) = stream.render_into(e, &mut s) {
            out.rejected.push((i, format!("log_stream: {reason}")));
            continue;
        }
        if g.is_empty() || s.is_empty() {
            out.rejected
                .push((i, "log_group or log_stream rendered empty".to_owned()));
            continue;
        }
        let timestamp = e.timestamp.div_euclid(1_000_000);
        // Consecutive events almost always share their stream: compare with the last one
        // before building a key for the map.
        let same_as_last = last.is_some_and(|k: usize| {
            let sp = &out.streams[k];
            sp.group == g && sp.stream == s
        });
        let slot = match last.filter(|_| same_as_last) {
            Some(k) => k,
            None => match index.get(&(g.clone(), s.clone())) {
                Some(&k) => k,
                None => {
                    index.insert((g.clone(), s.clone()), out.streams.len());
                    out.streams.push(StreamPlan {
                        group: g.clone(),
                        stream: s.clone(),
                        requests: Vec::new(),
                    });
                    per_stream.push(Vec::new());
                    out.streams.len() - 1
                }
            },
        };
        last = Some(slot);
        let sink = &mut per_stream[slot];
        match line {
            LineMode::Message => {
                let msg = e.message_str();
                if msg.is_empty() {
                    out.rejected.push((
                        i,
                        "empty message: CloudWatch Logs does not accept empty events".to_owned(),
                    ));
                    continue;
                }
                for part in split_utf8(msg, MAX_MESSAGE_BYTES) {
                    sink.push(CwEvent {
                        timestamp,
                        message: part.to_owned(),
                        source: i,
                    });
                }
            }
            LineMode::Json => {
                json.clear();
                e.write_json(&mut json);
                if json.len() > MAX_MESSAGE_BYTES {
                    json = cut_json(e, json.len());
                }
                // `write_json` only ever writes UTF-8.
                let message = String::from_utf8_lossy(&json).into_owned();
                sink.push(CwEvent {
                    timestamp,
                    message,
                    source: i,
                });
            }
        }
    }
    for (sp, evs) in out.streams.iter_mut().zip(per_stream) {
        sp.requests = split_requests(evs);
    }
    out
}

/// Encodes `e` as JSON with its message cut (and flagged `truncated`) so that the whole object
/// fits [`MAX_MESSAGE_BYTES`]. The cut is found by walking the message with the escaped size
/// of each byte, then checked by encoding; a few rounds at most.
fn cut_json(e: &Event, encoded_len: usize) -> Vec<u8> {
    let mut copy = e.clone();
    // The copy only feeds the encoder; its share of the acknowledgement is released at once.
    copy.finalizer.resolve();
    copy.flags |= FLAG_TRUNCATED;
    let full = e.message_str();
    // Bytes of the object that are not the message's escaped text, plus room for the flag.
    let overhead = encoded_len.saturating_sub(escaped_len(full.as_bytes())) + 32;
    let mut budget = MAX_MESSAGE_BYTES.saturating_sub(overhead);
    let mut buf = Vec::new();
    for _ in 0..8 {
        let keep = floor_char_boundary(full, escaped_prefix(full.as_bytes(), budget));
        copy.message = Some(full[..keep].into());
        buf.clear();
        copy.write_json(&mut buf);
        if buf.len() <= MAX_MESSAGE_BYTES {
            return buf;
        }
        budget = budget.saturating_sub(buf.len() - MAX_MESSAGE_BYTES);
    }
    // The message alone cannot make it fit (huge fields): send what fits of the JSON text.
    // It is no longer valid JSON, but it is flagged by the cut and never dropped silently.
    let keep = floor_char_boundary(std::str::from_utf8(&buf).unwrap_or(""), MAX_MESSAGE_BYTES);
    buf.truncate(keep);
    buf
}

/// Bytes one byte takes in a JSON string (see `event::write_json_str`).
fn escaped_byte(b: u8) -> usize {
    match b {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
        0..=0x1f => 6,
        _ => 1,
    }
}

fn escaped_len(bytes: &[u8]) -> usize {
    bytes.iter().map(|&b| escaped_byte(b)).sum()
}

/// The longest prefix of `bytes` whose escaped form fits `budget`.
fn escaped_prefix(bytes: &[u8], budget: usize) -> usize {
    let mut used = 0;
    for (i, &b) in bytes.iter().enumerate() {
        used += escaped_byte(b);
        if used > budget {
            return i;
        }
    }
    bytes.len()
}

/// The largest char boundary of `s` at or below `at`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    let mut i = at.min(s.len());
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Splits `s` into parts of at most `max` bytes, each on a char boundary.
pub fn split_utf8(s: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut at = floor_char_boundary(rest, max);
        if at == 0 {
            // max smaller than one char: take the char whole rather than loop forever.
            at = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (part, tail) = rest.split_at(at);
        rest = tail;
        Some(part)
    })
}

/// Sorts one stream's events by time (stable) and cuts them into requests within the limits.
pub fn split_requests(mut events: Vec<CwEvent>) -> Vec<Vec<CwEvent>> {
    events.sort_by_key(|e| e.timestamp);
    let mut requests = Vec::new();
    let mut cur: Vec<CwEvent> = Vec::new();
    let mut bytes = 0usize;
    for e in events {
        let size = e.message.len() + EVENT_OVERHEAD;
        let full = cur.len() >= MAX_EVENTS
            || bytes + size > MAX_BYTES
            || cur
                .first()
                .is_some_and(|f| e.timestamp - f.timestamp >= MAX_SPAN_MS);
        if full && !cur.is_empty() {
            requests.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += size;
        cur.push(e);
    }
    if !cur.is_empty() {
        requests.push(cur);
    }
    requests
}

/// The size of a request as CloudWatch counts it.
pub fn request_bytes(events: &[CwEvent]) -> usize {
    events
        .iter()
        .map(|e| e.message.len() + EVENT_OVERHEAD)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: i64, msg: &str, source: usize) -> CwEvent {
        CwEvent {
            timestamp: ts,
            message: msg.to_owned(),
            source,
        }
    }

    fn check_limits(reqs: &[Vec<CwEvent>]) {
        for r in reqs {
            assert!(!r.is_empty());
            assert!(r.len() <= MAX_EVENTS, "{} events", r.len());
            assert!(request_bytes(r) <= MAX_BYTES, "{} bytes", request_bytes(r));
            let span = r.last().unwrap().timestamp - r[0].timestamp;
            assert!(span < MAX_SPAN_MS, "span {span}");
            assert!(r.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
            assert!(r.iter().all(|e| e.message.len() <= MAX_MESSAGE_BYTES));
        }
    }

    #[test]
    fn cuts_at_ten_thousand_events() {
        let evs: Vec<CwEvent> = (0..25_001).map(|i| ev(1000, "x", i)).collect();
        let reqs = split_requests(evs);
        check_limits(&reqs);
        let sizes: Vec<usize> = reqs.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![10_000, 10_000, 5_001]);
    }

    #[test]
    fn cuts_at_the_byte_limit_counting_26_per_event() {
        // 4 events of (262,118 + 26) = 262,144 bytes fill exactly 1,048,576; a fifth is cut.
        let big = "y".repeat(MAX_MESSAGE_BYTES);
        let evs: Vec<CwEvent> = (0..9).map(|i| ev(5, &big, i)).collect();
        let reqs = split_requests(evs);
        check_limits(&reqs);
        let sizes: Vec<usize> = reqs.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![4, 4, 1]);
        assert_eq!(request_bytes(&reqs[0]), MAX_BYTES);
        // One byte more than fits: the overhead is counted.
        let evs = vec![
            ev(1, &big, 0),
            ev(1, &"z".repeat(MAX_BYTES - 262_144 - 26 + 1), 1),
        ];
        assert_eq!(split_requests(evs).len(), 2);
    }

    #[test]
    fn sorts_stably_and_cuts_at_24_hours() {
        let day = MAX_SPAN_MS;
        let evs = vec![
            ev(day + 5, "c", 2),
            ev(10, "a1", 0),
            ev(10, "a2", 1),
            ev(10, "a3", 3),
            ev(day + 10, "d", 4),
            ev(2 * day + 20, "e", 5),
        ];
        let reqs = split_requests(evs);
        check_limits(&reqs);
        let flat: Vec<Vec<&str>> = reqs
            .iter()
            .map(|r| r.iter().map(|e| e.message.as_str()).collect())
            .collect();
        // Equal timestamps keep input order; c is 24 h - 5 ms after a1 and stays with it, d is
        // exactly 24 h after and starts a new request.
        assert_eq!(
            flat,
            vec![vec!["a1", "a2", "a3", "c"], vec!["d"], vec!["e"]]
        );
    }

    #[test]
    fn splits_oversize_messages_on_char_boundaries() {
        let s = "é".repeat(MAX_MESSAGE_BYTES); // 2 bytes a char
        let parts: Vec<&str> = split_utf8(&s, MAX_MESSAGE_BYTES).collect();
        assert_eq!(parts.concat(), s);
        assert!(parts.iter().all(|p| p.len() <= MAX_MESSAGE_BYTES));
        assert_eq!(parts.len(), 2 * MAX_MESSAGE_BYTES / MAX_MESSAGE_BYTES);
        assert_eq!(split_utf8("", 10).count(), 0);
        assert_eq!(split_utf8("€", 1).collect::<Vec<_>>(), vec!["€"]);
    }

    fn event(ts_ns: i64, msg: &str, service: Option<&str>) -> Event {
        let mut e = Event::synthetic("app", msg);
        e.timestamp = ts_ns;
        if let Some(s) = service {
            e.insert("service", serde_json::json!(s));
        }
        e
    }

    #[test]
    fn plans_streams_splits_and_rejects() {
        let group = Template::parse("/app/{{ service }}").unwrap();
        let stream = Template::parse("{{ input.id }}").unwrap();
        let huge = "h".repeat(MAX_MESSAGE_BYTES * 2 + 10);
        let events = vec![
            event(3_000_000, "b1", Some("b")),
            event(2_000_000, "a1", Some("a")),
            event(1_000_000, "b0", Some("b")),
            event(1_000_000, "orphan", None),
            event(4_000_000, &huge, Some("a")),
            event(5_000_000, "", Some("a")),
        ];
        let p = plan(&events, &group, &stream, LineMode::Message);
        assert_eq!(p.rejected.len(), 2);
        assert_eq!(p.rejected[0].0, 3);
        assert!(p.rejected[0].1.contains("service"), "{}", p.rejected[0].1);
        assert_eq!(p.rejected[1].0, 5);
        let names: Vec<(&str, &str)> = p
            .streams
            .iter()
            .map(|s| (s.group.as_str(), s.stream.as_str()))
            .collect();
        assert_eq!(names, vec![("/app/b", "app"), ("/app/a", "app")]);
        let b: Vec<&str> = p.streams[0].requests[0]
            .iter()
            .map(|e| e.message.as_str())
            .collect();
        assert_eq!(b, vec!["b0", "b1"]);
        let a: Vec<&CwEvent> = p.streams[1].requests.iter().flatten().collect();
        assert_eq!(a.len(), 4);
        assert_eq!(a[0].message, "a1");
        assert!(a[1..].iter().all(|e| e.source == 4 && e.timestamp == 4));
        let joined: String = a[1..].iter().map(|e| e.message.as_str()).collect();
        assert_eq!(joined, huge);
        for s in &p.streams {
            check_limits(&s.requests);
        }
    }

    #[test]
    fn json_events_over_the_limit_are_cut_and_flagged() {
        let group = Template::parse("g").unwrap();
        let stream = Template::parse("s").unwrap();
        let huge = "\"q\"".repeat(MAX_MESSAGE_BYTES); // escaping doubles the quotes
        let events = vec![event(1_000_000, &huge, None)];
        let p = plan(&events, &group, &stream, LineMode::Json);
        let e = &p.streams[0].requests[0][0];
        assert!(e.message.len() <= MAX_MESSAGE_BYTES);
        let v: serde_json::Value = serde_json::from_str(&e.message).unwrap();
        assert_eq!(v["log"]["flags"], serde_json::json!(["truncated"]));
        let m = v["message"].as_str().unwrap();
        assert!(huge.starts_with(m), "a prefix of the message");
        assert!(m.len() > 100_000, "cut to {} bytes", m.len());
    }
}
