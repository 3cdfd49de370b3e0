//! Loki's push request, built from a batch: events grouped into streams by their rendered
//! labels, entries sorted by time within each stream (stable, so equal timestamps keep file
//! order), then written as Loki's `logproto.PushRequest` protobuf (snappy *block* format, as
//! Loki's distributor expects — not the framed format) or as Loki's JSON push body.
//!
//! The protobuf messages are written by hand below, as in Loki's `pkg/push/push.proto`
//! (`PushRequest`, `StreamAdapter`, `EntryAdapter` with a `google.protobuf.Timestamp` and
//! `structuredMetadata`), so no `protoc` runs at build time. The hot path does not build those
//! structs (that would copy every line into a `String`): [`encode_protobuf`] writes the same
//! wire format straight from the events into the request buffer, and a test checks that its
//! bytes are exactly what prost's derived encoder produces and that they decode back.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use crate::event::{Event, Source, write_json_str};
use crate::outputs::template::Template;

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`: one stream (its label set as text) and its entries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
    #[prost(message, repeated, tag = "4")]
    pub parsed: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// What becomes a Loki entry's line.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LineMode {
    /// The event's `message`.
    #[default]
    Message,
    /// The whole event as JSON (ECS).
    Json,
}

/// How the request body is encoded.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `application/x-protobuf`, snappy-compressed (what Promtail and Alloy send).
    #[default]
    Protobuf,
    /// `application/json` (`{"streams":[{"stream":{..},"values":[[ns, line, {..}]]}]}`).
    Json,
}

/// One stream of a prepared request.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    /// Loki's text form, names sorted: `{host="h1", job="app"}`.
    pub labels: String,
    /// The same labels as pairs, sorted by name.
    pub pairs: Vec<(String, String)>,
    /// Indexes of the batch's events, sorted by timestamp (stable).
    pub entries: Vec<u32>,
}

/// Where an event of the batch went.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// Index into [`Prepared::streams`].
    Stream(u32),
    /// Cannot be sent (a label template field is missing, no label at all, ...).
    Rejected(String),
}

/// A batch grouped into streams, ready to encode.
#[derive(Debug, Default)]
pub struct Prepared {
    pub streams: Vec<Stream>,
    pub placement: Vec<Placement>,
    /// Structured metadata per event (empty when none is configured or rendered).
    pub metadata: Vec<Vec<(String, String)>>,
    /// `line: json`: every event's JSON back to back, and each one's range.
    json_lines: Vec<u8>,
    json_ranges: Vec<(u32, u32)>,
}

impl Prepared {
    /// The line of event `i`.
    pub fn line<'a>(&'a self, events: &'a [Event], i: usize) -> &'a [u8] {
        match self.json_ranges.get(i) {
            Some(&(a, b)) => &self.json_lines[a as usize..b as usize],
            None => events[i].message.as_ref().map_or(&[][..], |m| m.as_bytes()),
        }
    }

    /// Drops a stream's events from the request, rejecting them with `reason`.
    pub fn reject_stream(&mut self, stream: usize, reason: &str) {
        if let Some(s) = self.streams.get_mut(stream) {
            for &i in &s.entries {
                self.placement[i as usize] = Placement::Rejected(reason.to_owned());
            }
            s.entries.clear();
        }
    }

    /// Entries that will be sent.
    pub fn entry_count(&self) -> usize {
        self.streams.iter().map(|s| s.entries.len()).sum()
    }
}

/// Label and metadata templates, and the line mode.
#[derive(Debug, Clone)]
pub struct Shape {
    /// (name, template), sorted by name.
    pub labels: Vec<(String, Template)>,
    pub metadata: Vec<(String, Template)>,
    pub line: LineMode,
}

impl Shape {
    /// Groups `events` into streams. Allocates a `String` per new stream in the batch, not
    /// per event.
    pub fn prepare(&self, events: &[Event]) -> Prepared {
        let mut p = Prepared {
            placement: Vec::with_capacity(events.len()),
            ..Prepared::default()
        };
        let mut index: HashMap<String, u32> = HashMap::new();
        let mut key = String::new();
        let mut value = String::new();
        // The label values of the current event, concatenated; `pairs` holds (label, range).
        let mut values = String::new();
        let mut pairs: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        // Labels that only a source decides (`input.id`, `host.name`, ...) are rendered once
        // per run of events from one source: (that source, its stream).
        let per_source = self.labels.iter().all(|(_, t)| t.is_per_source());
        let mut last: Option<(*const Source, u32)> = None;
        'events: for e in events {
            if let Some((src, s)) = last
                && std::ptr::eq(src, Arc::as_ptr(&e.source))
            {
                p.streams[s as usize].entries.push(p.placement.len() as u32);
                p.placement.push(Placement::Stream(s));
                continue;
            }
            key.clear();
            key.push('{');
            pairs.clear();
            values.clear();
            for (n, (name, t)) in self.labels.iter().enumerate() {
                if let Err(reason) = t.render_into(e, &mut value) {
                    p.placement.push(Placement::Rejected(reason));
                    continue 'events;
                }
                // An empty value means "no such label" to Loki (as to Prometheus).
                if value.is_empty() {
                    continue;
                }
                if key.len() > 1 {
                    key.push_str(", ");
                }
                key.push_str(name);
                key.push('=');
                write_go_quoted(&mut key, &value);
                let at = values.len();
                values.push_str(&value);
                pairs.push((n, at..values.len()));
            }
            if key.len() == 1 {
                p.placement.push(Placement::Rejected(
                    "error at least one label pair is required per stream (every label rendered empty)"
                        .to_owned(),
                ));
                continue;
            }
            key.push('}');
            let i = p.placement.len() as u32;
            let s = match index.get(key.as_str()) {
                Some(&s) => s,
                None => {
                    let s = p.streams.len() as u32;
                    p.streams.push(Stream {
                        labels: key.clone(),
                        pairs: pairs
                            .drain(..)
                            .map(|(n, r)| (self.labels[n].0.clone(), values[r].to_owned()))
                            .collect(),
                        entries: Vec::new(),
                    });
                    index.insert(key.clone(), s);
                    s
                }
            };
            p.streams[s as usize].entries.push(i);
            p.placement.push(Placement::Stream(s));
            if per_source {
                last = Some((Arc::as_ptr(&e.source), s));
            }
        }
        for s in &mut p.streams {
            s.entries.sort_by_key(|&i| events[i as usize].timestamp);
        }
        if !self.metadata.is_empty() {
            p.metadata = events
                .iter()
                .map(|e| {
                    let mut v = Vec::new();
                    for (name, t) in &self.metadata {
                        // Metadata is optional per line (a trace id is on some lines only):
                        // a missing field leaves the pair out instead of rejecting the line.
                        if t.render_into(e, &mut value).is_ok() && !value.is_empty() {
                            v.push((name.clone(), value.clone()));
                        }
                    }
                    v
                })
                .collect();
        }
        if self.line == LineMode::Json {
            p.json_ranges.reserve(events.len());
            for e in events {
                let a = p.json_lines.len() as u32;
                e.write_json(&mut p.json_lines);
                p.json_ranges.push((a, p.json_lines.len() as u32));
            }
        }
        p
    }
}

/// Writes `v` as Go's `strconv.Quote` would for the characters that matter to Loki's label
/// parser (quotes, backslashes, control characters).
pub fn write_go_quoted(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn split_ts(nanos: i64) -> (i64, i32) {
    (
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000) as i32,
    )
}

fn len_field(tag: u32, len: usize) -> usize {
    encoded_len_varint(u64::from(tag << 3 | 2)) + encoded_len_varint(len as u64) + len
}

fn timestamp_len(nanos: i64) -> usize {
    let (s, n) = split_ts(nanos);
    let mut len = 0;
    if s != 0 {
        len += 1 + encoded_len_varint(s as u64);
    }
    if n != 0 {
        len += 1 + encoded_len_varint(n as i64 as u64);
    }
    len
}

fn pair_len(name: &str, value: &str) -> usize {
    let mut len = 0;
    if !name.is_empty() {
        len += len_field(1, name.len());
    }
    if !value.is_empty() {
        len += len_field(2, value.len());
    }
    len
}

fn entry_len(p: &Prepared, events: &[Event], i: usize) -> usize {
    let mut len = len_field(1, timestamp_len(events[i].timestamp));
    let line = p.line(events, i);
    if !line.is_empty() {
        len += len_field(2, line.len());
    }
    if let Some(md) = p.metadata.get(i) {
        for (n, v) in md {
            len += len_field(3, pair_len(n, v));
        }
    }
    len
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// Appends the `PushRequest` protobuf (uncompressed) for `p` to `out`.
pub fn encode_protobuf(events: &[Event], p: &Prepared, out: &mut Vec<u8>) {
    for s in &p.streams {
        if s.entries.is_empty() {
            continue;
        }
        let mut stream_len = len_field(1, s.labels.len());
        for &i in &s.entries {
            stream_len += len_field(2, entry_len(p, events, i as usize));
        }
        encode_key(1, WireType::LengthDelimited, out);
        encode_varint(stream_len as u64, out);
        put_bytes(out, 1, s.labels.as_bytes());
        for &i in &s.entries {
            let i = i as usize;
            let e = &events[i];
            encode_key(2, WireType::LengthDelimited, out);
            encode_varint(entry_len(p, events, i) as u64, out);
            encode_key(1, WireType::LengthDelimited, out);
            encode_varint(timestamp_len(e.timestamp) as u64, out);
            let (secs, nanos) = split_ts(e.timestamp);
            if secs != 0 {
                encode_key(1, WireType::Varint, out);
                encode_varint(secs as u64, out);
            }
            if nanos != 0 {
                encode_key(2, WireType::Varint, out);
                encode_varint(nanos as i64 as u64, out);
            }
            let line = p.line(events, i);
            if !line.is_empty() {
                put_bytes(out, 2, line);
            }
            if let Some(md) = p.metadata.get(i) {
                for (n, v) in md {
                    encode_key(3, WireType::LengthDelimited, out);
                    encode_varint(pair_len(n, v) as u64, out);
                    if !n.is_empty() {
                        put_bytes(out, 1, n.as_bytes());
                    }
                    if !v.is_empty() {
                        put_bytes(out, 2, v.as_bytes());
                    }
                }
            }
        }
    }
}

/// Reusable buffers and snappy state for [`encode_snappy`]: once warm, a request costs no
/// allocation, page faults or zeroing of the compression buffer.
pub struct Scratch {
    raw: Vec<u8>,
    z: Vec<u8>,
    encoder: snap::raw::Encoder,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            raw: Vec::new(),
            z: Vec::new(),
            encoder: snap::raw::Encoder::new(),
        }
    }
}

impl Scratch {
    /// Bytes held (kept across requests; a pool drops scratches that grew too large).
    pub fn capacity(&self) -> usize {
        self.raw.capacity() + self.z.capacity()
    }
}

/// The protobuf body, snappy block-compressed; borrowed from `s` until its next use.
pub fn encode_snappy<'s>(events: &[Event], p: &Prepared, s: &'s mut Scratch) -> &'s [u8] {
    s.raw.clear();
    encode_protobuf(events, p, &mut s.raw);
    // The buffer keeps its length between requests: growing it zeroes only the new part.
    let need = snap::raw::max_compress_len(s.raw.len());
    if s.z.len() < need {
        s.z.resize(need, 0);
    }
    match s.encoder.compress(&s.raw, &mut s.z) {
        Ok(n) => &s.z[..n],
        // Only an input over snappy's 4 GiB limit fails; batches are bounded far below it.
        Err(_) => &[],
    }
}

/// Appends Loki's JSON push body for `p` to `out`.
pub fn encode_json(events: &[Event], p: &Prepared, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"streams\":[");
    let mut first_stream = true;
    for s in &p.streams {
        if s.entries.is_empty() {
            continue;
        }
        if !first_stream {
            out.push(b',');
        }
        first_stream = false;
        out.extend_from_slice(b"{\"stream\":{");
        for (k, (n, v)) in s.pairs.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            write_json_str(out, n);
            out.push(b':');
            write_json_str(out, v);
        }
        out.extend_from_slice(b"},\"values\":[");
        for (k, &i) in s.entries.iter().enumerate() {
            let i = i as usize;
            if k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"[\"");
            out.extend_from_slice(events[i].timestamp.to_string().as_bytes());
            out.extend_from_slice(b"\",");
            let line = p.line(events, i);
            write_json_str(out, std::str::from_utf8(line).unwrap_or_default());
            if let Some(md) = p.metadata.get(i).filter(|m| !m.is_empty()) {
                out.extend_from_slice(b",{");
                for (k, (n, v)) in md.iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    write_json_str(out, n);
                    out.push(b':');
                    write_json_str(out, v);
                }
                out.push(b'}');
            }
            out.push(b']');
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}");
}

/// The same request built as prost structs (tests, and the reference for the fast encoder).
pub fn to_message(events: &[Event], p: &Prepared) -> PushRequest {
    PushRequest {
        streams: p
            .streams
            .iter()
            .filter(|s| !s.entries.is_empty())
            .map(|s| StreamAdapter {
                labels: s.labels.clone(),
                entries: s
                    .entries
                    .iter()
                    .map(|&i| {
                        let i = i as usize;
                        let (seconds, nanos) = split_ts(events[i].timestamp);
                        EntryAdapter {
                            timestamp: Some(Timestamp { seconds, nanos }),
                            line: String::from_utf8_lossy(p.line(events, i)).into_owned(),
                            structured_metadata: p
                                .metadata
                                .get(i)
                                .map(|m| {
                                    m.iter()
                                        .map(|(n, v)| LabelPairAdapter {
                                            name: n.clone(),
                                            value: v.clone(),
                                        })
                                        .collect()
                                })
                                .unwrap_or_default(),
                            parsed: Vec::new(),
                        }
                    })
                    .collect(),
                hash: 0,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use serde_json::Value;

    fn shape(line: LineMode) -> Shape {
        Shape {
            labels: vec![
                ("job".into(), Template::parse("{{ input.id }}").unwrap()),
                (
                    "level".into(),
                    Template::parse("{{ level | default: \"\" }}").unwrap(),
                ),
                ("team".into(), Template::parse("{{ team }}").unwrap()),
            ],
            metadata: vec![(
                "trace_id".into(),
                Template::parse("{{ trace.id }}").unwrap(),
            )],
            line,
        }
    }

    fn events() -> Vec<Event> {
        let mut v = Vec::new();
        for (i, (lvl, ts)) in [
            ("info", 30),
            ("error", 10),
            ("info", 10),
            ("", 20),
            ("info", -5),
        ]
        .iter()
        .enumerate()
        {
            let mut e = Event::synthetic("app", &format!("line {i} \"q\""));
            e.timestamp = 1_700_000_000_000_000_000 + ts;
            e.insert("team", Value::String("a\"b".into()));
            if !lvl.is_empty() {
                e.insert("level", Value::String((*lvl).into()));
            }
            if i == 2 {
                e.insert("trace.id", Value::String("abc123".into()));
            }
            v.push(e);
        }
        let mut missing = Event::synthetic("app", "no team");
        missing.timestamp = 1;
        v.push(missing);
        v
    }

    /// Labels fixed by the source are rendered once per run of one source's events, and the
    /// grouping is the same as rendering every event: runs of sources interleave, an event
    /// with its own fields changes nothing, a source-fixed field that is missing rejects each
    /// of its events.
    #[test]
    fn per_source_labels_group_like_rendering_every_event() {
        let a = Event::synthetic("a", "1");
        let b = Event::synthetic("b", "2");
        let mut own = a.clone();
        own.insert("input", Value::String("not this".into()));
        let ev = vec![a.clone(), a.clone(), b.clone(), own, a, b];
        let labels = |extra: bool| {
            let mut l = vec![
                ("host".into(), Template::parse("h-{{ host.name }}").unwrap()),
                ("job".into(), Template::parse("{{ input.id }}").unwrap()),
            ];
            if extra {
                // Not fixed by the source: every event is rendered.
                l.push((
                    "z".into(),
                    Template::parse("{{ nothing | default: \"z\" }}").unwrap(),
                ));
            }
            Shape {
                labels: l,
                metadata: Vec::new(),
                line: LineMode::Message,
            }
        };
        assert!(labels(false).labels.iter().all(|(_, t)| t.is_per_source()));
        assert!(!labels(true).labels.iter().all(|(_, t)| t.is_per_source()));
        let (fast, slow) = (labels(false).prepare(&ev), labels(true).prepare(&ev));
        let entries = |p: &Prepared| {
            p.streams
                .iter()
                .map(|s| s.entries.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(entries(&fast), vec![vec![0, 1, 3, 4], vec![2, 5]]);
        assert_eq!(entries(&fast), entries(&slow));
        assert_eq!(fast.streams[0].labels, r#"{host="h-", job="a"}"#);
        assert_eq!(fast.streams[1].labels, r#"{host="h-", job="b"}"#);

        let path_only = Shape {
            labels: vec![(
                "file".into(),
                Template::parse("{{ log.file.path }}").unwrap(),
            )],
            metadata: Vec::new(),
            line: LineMode::Message,
        };
        let p = path_only.prepare(&ev);
        assert!(p.streams.is_empty());
        assert_eq!(p.placement.len(), ev.len());
        assert!(
            p.placement
                .iter()
                .all(|pl| matches!(pl, Placement::Rejected(_)))
        );
    }

    #[test]
    fn groups_sorts_and_rejects() {
        let ev = events();
        let p = shape(LineMode::Message).prepare(&ev);
        assert_eq!(p.streams.len(), 3);
        assert_eq!(
            p.streams[0].labels,
            r#"{job="app", level="info", team="a\"b"}"#
        );
        // Sorted by time, stable: the -5 entry (index 4) first, then 2, then 0.
        assert_eq!(p.streams[0].entries, vec![4, 2, 0]);
        assert_eq!(p.streams[2].labels, r#"{job="app", team="a\"b"}"#);
        assert!(
            matches!(&p.placement[5], Placement::Rejected(r) if r.contains("team")),
            "{:?}",
            p.placement[5]
        );
        assert_eq!(p.metadata[2], vec![("trace_id".into(), "abc123".into())]);
        assert!(p.metadata[0].is_empty());
    }

    #[test]
    fn fast_encoder_matches_prost() {
        for mode in [LineMode::Message, LineMode::Json] {
            let ev = events();
            let p = shape(mode).prepare(&ev);
            let mut fast = Vec::new();
            encode_protobuf(&ev, &p, &mut fast);
            let reference = to_message(&ev, &p);
            assert_eq!(fast, reference.encode_to_vec(), "{mode:?}");
            let back = PushRequest::decode(fast.as_slice()).unwrap();
            assert_eq!(back, reference);
            let e = &back.streams[0].entries[0];
            assert_eq!(e.timestamp.as_ref().unwrap().nanos, 999_999_995);
            // And through snappy's block format.
            let mut s = Scratch::default();
            // Twice: a reused scratch (longer buffer from a bigger body) gives the same body.
            let big: Vec<Event> = ev.iter().chain(ev.iter()).cloned().collect();
            let _ = encode_snappy(&big, &shape(mode).prepare(&big), &mut s);
            let z = encode_snappy(&ev, &p, &mut s).to_vec();
            let unz = snap::raw::Decoder::new().decompress_vec(&z).unwrap();
            assert_eq!(unz, fast);
        }
    }

    #[test]
    fn json_body() {
        let ev = events();
        let p = shape(LineMode::Message).prepare(&ev);
        let mut out = Vec::new();
        encode_json(&ev, &p, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        let s0 = &v["streams"][0];
        assert_eq!(s0["stream"]["level"], "info");
        assert_eq!(s0["stream"]["team"], "a\"b");
        assert_eq!(s0["values"][0][0], "1699999999999999995");
        assert_eq!(s0["values"][1][2]["trace_id"], "abc123");
        assert_eq!(s0["values"][1][1], "line 2 \"q\"");
    }
}
