//! The event that flows from an input to the outputs, and its JSON encoding.
//!
//! An [`Event`] is cheap to build on the hot path: the message is a slice of the reader's
//! buffer ([`Text`], no copy), what every event of one file shares (input id, path, host name,
//! container metadata) sits behind one `Arc<Source>`, and the free-form fields are a map that
//! stays empty (no allocation) until a processor writes to it. The finalizer (see `ack.rs`)
//! travels with the event and must be resolved explicitly once the event is delivered; an
//! event dropped unresolved counts as *not* delivered, so a position can never pass it.
//!
//! Field paths (`user.email`) address nested objects; the ECS fields the agent fills itself
//! (`message`, `@timestamp`, `log.file.path`, `log.offset`, `host.name`, `input.id`,
//! `input.type`, `log.flags`) are readable by the same paths, so conditions and templates treat
//! them like any other field.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::ack::Finalizer;

/// Flag: the event joins several lines (`log.flags: [multiline]`).
pub const FLAG_MULTILINE: u8 = 1;
/// Flag: the line was cut at `max_line_bytes` (`log.flags: [truncated]`).
pub const FLAG_TRUNCATED: u8 = 2;
/// Flag: a timestamp processor found no format that fits (`log.flags: [timestamp_failed]`).
pub const FLAG_TIMESTAMP_FAILED: u8 = 4;

const FLAG_NAMES: [(u8, &str); 3] = [
    (FLAG_MULTILINE, "multiline"),
    (FLAG_TRUNCATED, "truncated"),
    (FLAG_TIMESTAMP_FAILED, "timestamp_failed"),
];

/// UTF-8 text backed by a shared byte buffer: slicing a line out of a read buffer costs no
/// copy. The invariant (valid UTF-8) is checked once, where the text is made.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Text(Bytes);

impl Text {
    /// Takes `bytes` if they are valid UTF-8; otherwise replaces invalid sequences with U+FFFD
    /// and returns `(text, true)`.
    pub fn from_bytes_lossy(bytes: Bytes) -> (Text, bool) {
        match std::str::from_utf8(&bytes) {
            Ok(_) => (Text(bytes), false),
            Err(_) => {
                let fixed = String::from_utf8_lossy(&bytes).into_owned();
                (Text(Bytes::from(fixed)), true)
            }
        }
    }

    pub fn as_str(&self) -> &str {
        // The constructor only ever stores valid UTF-8; fall back to "" rather than panic.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(Bytes::from(s))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The JSON members (`,"k":v...`) of the last shared metadata map seen, keyed by its `Arc`
/// (kept alive here, so the pointer cannot be reused by another map while cached).
#[derive(Default)]
pub struct MetaCache {
    key: Option<Arc<Map<String, Value>>>,
    json: Vec<u8>,
    /// The last `log.file.path` seen, and its JSON string.
    path: Option<Arc<str>>,
    path_json: Vec<u8>,
}

impl MetaCache {
    fn path_json(&mut self, path: &Arc<str>) -> &[u8] {
        if !self.path.as_ref().is_some_and(|k| Arc::ptr_eq(k, path)) {
            self.path_json.clear();
            write_json_str(&mut self.path_json, path);
            self.path = Some(path.clone());
        }
        &self.path_json
    }

    fn json(&mut self, meta: &Arc<Map<String, Value>>) -> &[u8] {
        if !self.key.as_ref().is_some_and(|k| Arc::ptr_eq(k, meta)) {
            self.json.clear();
            for (k, v) in meta.iter() {
                write_member(&mut self.json, k, v);
            }
            self.key = Some(meta.clone());
        }
        &self.json
    }
}

/// What every event from one source (a file, a container stream) shares.
#[derive(Debug, Default, Clone)]
pub struct Source {
    pub input_id: Arc<str>,
    pub input_type: &'static str,
    pub host_name: Arc<str>,
    /// `log.file.path`; absent for sources that are not files.
    pub path: Option<Arc<str>>,
    /// Identity of the source file (fingerprint key), used for idempotent ids.
    pub file_key: Arc<str>,
    /// Read-only fields shared by every event of the source (input `fields`, container
    /// metadata). An event's own fields win over these; a processor that changes one of them
    /// first copies them into the event (see [`Event::materialize`]).
    pub meta: Option<Arc<Map<String, Value>>>,
    /// `stream` (stdout/stderr) for container logs.
    pub stream: Option<&'static str>,
}

/// One log event.
#[derive(Debug)]
pub struct Event {
    /// `@timestamp`, nanoseconds since the Unix epoch, UTC.
    pub timestamp: i64,
    /// `message`; `None` once a processor removed it.
    pub message: Option<Text>,
    /// `log.offset`: byte offset of the event's first byte in its source.
    pub offset: u64,
    pub flags: u8,
    pub source: Arc<Source>,
    /// Fields set by processors and inputs (nested JSON objects for dotted paths), possibly
    /// still as the JSON text they were decoded from (see [`Event::set_raw_fields`]).
    fields: Map<String, Value>,
    /// While `Some`, the event's fields are this undecoded object and `fields` is empty.
    /// Boxed so that events without one (plain lines) stay small: 8 bytes, not 48.
    raw: Option<Box<RawObject>>,
    /// Whether `source.meta` still applies (false once materialized into `fields`).
    meta_live: bool,
    pub finalizer: Finalizer,
}

impl Clone for Event {
    fn clone(&self) -> Self {
        Event {
            timestamp: self.timestamp,
            message: self.message.clone(),
            offset: self.offset,
            flags: self.flags,
            source: self.source.clone(),
            fields: self.fields.clone(),
            raw: self.raw.clone(),
            meta_live: self.meta_live,
            finalizer: self.finalizer.clone(),
        }
    }
}

/// An event's own fields still in the JSON text they came from.
///
/// The text form is what the `json` processor leaves on the hot path: the object was checked
/// (valid, no duplicate key, nothing clashing with what the agent builds) but not turned into
/// a tree, so encoding splices it whole and dropping it frees one box, not a tree. Any
/// read by path decodes it once (kept in `decoded`); any write turns it into the map for good.
#[derive(Debug, Clone)]
struct RawObject {
    /// The object's text, `{` to `}`: valid JSON, UTF-8, no line break, no duplicate key.
    text: Bytes,
    decoded: OnceLock<Map<String, Value>>,
}

impl RawObject {
    fn decode(&self) -> Map<String, Value> {
        // The text was validated by the json processor's scanner (a strict subset of what
        // serde_json accepts, checked by tests and fuzzing), so this does not fail; an empty
        // map is the safe answer should it ever.
        serde_json::from_slice(&self.text).unwrap_or_default()
    }

    fn map(&self) -> &Map<String, Value> {
        self.decoded.get_or_init(|| self.decode())
    }

    /// The members between the braces, trimmed (empty for `{}`).
    fn members(&self) -> &[u8] {
        let inner = self
            .text
            .get(1..self.text.len().saturating_sub(1))
            .unwrap_or(&[]);
        inner.trim_ascii()
    }
}

/// A field value as seen by conditions and templates.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldRef<'a> {
    Str(&'a str),
    Owned(String),
    Json(&'a Value),
}

impl FieldRef<'_> {
    /// The value as text: strings as they are, other JSON values in their JSON form.
    pub fn to_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            FieldRef::Str(s) => std::borrow::Cow::Borrowed(s),
            FieldRef::Owned(s) => std::borrow::Cow::Borrowed(s.as_str()),
            FieldRef::Json(Value::String(s)) => std::borrow::Cow::Borrowed(s.as_str()),
            FieldRef::Json(v) => std::borrow::Cow::Owned(v.to_string()),
        }
    }
}

impl Event {
    pub fn new(source: Arc<Source>, message: Text, offset: u64, timestamp: i64) -> Event {
        let meta_live = source.meta.is_some();
        Event {
            timestamp,
            message: Some(message),
            offset,
            flags: 0,
            source,
            fields: Map::new(),
            raw: None,
            meta_live,
            finalizer: Finalizer::none(),
        }
    }

    /// An event with no source file, for tests and synthetic events.
    pub fn synthetic(input_id: &str, message: &str) -> Event {
        let source = Arc::new(Source {
            input_id: Arc::from(input_id),
            input_type: "synthetic",
            host_name: Arc::from(""),
            ..Source::default()
        });
        Event::new(source, Text::from(message), 0, now_nanos())
    }

    pub fn message_str(&self) -> &str {
        self.message.as_ref().map(Text::as_str).unwrap_or("")
    }

    /// Approximate encoded size, for batching by bytes.
    pub fn size_hint(&self) -> usize {
        let mut n = 160 + self.message.as_ref().map_or(0, Text::len);
        n += self.source.path.as_ref().map_or(0, |p| p.len());
        if let Some(raw) = &self.raw {
            n += raw.text.len();
        } else if !self.fields.is_empty() {
            n += self.fields.len() * 32;
            for v in self.fields.values() {
                if let Value::String(s) = v {
                    n += s.len();
                }
            }
        }
        if self.meta_live {
            n += 64;
        }
        n
    }

    /// Copies the shared `source.meta` fields into this event's own fields, so that they can
    /// be changed or removed. Called by every mutating accessor.
    pub fn materialize(&mut self) {
        if !self.meta_live {
            return;
        }
        self.meta_live = false;
        if let Some(meta) = self.source.meta.clone() {
            let fields = self.fields_mut();
            for (k, v) in meta.iter() {
                if !fields.contains_key(k) {
                    fields.insert(k.clone(), v.clone());
                }
            }
        }
    }

    /// The event's own fields (not the source's shared ones). Fields still in their JSON text
    /// form are decoded on first use and the result kept, so prefer [`Event::get`] for one
    /// field and [`Event::raw_fields`] for a scan.
    pub fn fields(&self) -> &Map<String, Value> {
        match &self.raw {
            Some(raw) => raw.map(),
            None => &self.fields,
        }
    }

    /// The event's own fields, for changing them (decodes a JSON text form for good).
    pub fn fields_mut(&mut self) -> &mut Map<String, Value> {
        if let Some(mut raw) = self.raw.take() {
            self.fields = raw.decoded.take().unwrap_or_else(|| raw.decode());
        }
        &mut self.fields
    }

    /// Replaces the event's own fields.
    pub fn set_fields(&mut self, fields: Map<String, Value>) {
        self.raw = None;
        self.fields = fields;
    }

    /// Whether the event has no fields of its own (the source's shared ones aside).
    pub fn fields_is_empty(&self) -> bool {
        match &self.raw {
            Some(raw) => raw.members().is_empty(),
            None => self.fields.is_empty(),
        }
    }

    /// The event's own fields as the text of a JSON object, while they are still in the form
    /// the `json` processor left them (not decoded, not changed): a processor can scan them
    /// without building the tree. `None` once they are a map.
    pub fn raw_fields(&self) -> Option<&[u8]> {
        self.raw.as_ref().map(|raw| &raw.text[..])
    }

    /// Sets the event's own fields to the JSON object `text`, undecoded (the `json`
    /// processor's fast path). The caller guarantees what [`write_json`](Event::write_json)
    /// relies on to splice it: `text` is exactly one valid JSON object (`{` to `}`) that
    /// serde_json decodes, with no line break, no duplicate key at any level, and no top-level
    /// key that the agent builds (`@timestamp`, `message`, `log`, `host`, `input`), that the
    /// source's `stream` or live shared metadata holds.
    pub fn set_raw_fields(&mut self, text: Bytes) {
        self.fields = Map::new();
        self.raw = Some(Box::new(RawObject {
            text,
            decoded: OnceLock::new(),
        }));
    }

    /// Writes the event's own fields as one JSON object (`{}` when there are none).
    pub fn write_fields_json(&self, out: &mut Vec<u8>) {
        match &self.raw {
            Some(raw) => out.extend_from_slice(&raw.text),
            // Serializing a Map into a Vec cannot fail.
            None => {
                let _ = serde_json::to_writer(&mut *out, &self.fields);
            }
        }
    }

    /// Whether `source.meta` still applies to this event (false once [`materialize`]d into
    /// its own fields). The disk buffer reads it to rebuild the event faithfully.
    ///
    /// [`materialize`]: Event::materialize
    pub fn meta_is_live(&self) -> bool {
        self.meta_live
    }

    /// The source's shared fields while they still apply to this event (not yet copied into
    /// its own fields), so a processor can inspect them without materializing.
    pub fn shared_meta(&self) -> Option<&Arc<Map<String, Value>>> {
        if self.meta_live {
            self.source.meta.as_ref()
        } else {
            None
        }
    }

    fn meta(&self) -> Option<&Map<String, Value>> {
        if self.meta_live {
            self.source.meta.as_deref()
        } else {
            None
        }
    }

    /// Reads a field by path. Built-in ECS fields first, then the event's fields (a literal
    /// dotted key wins over nesting), then the source's shared metadata.
    pub fn get(&self, path: &str) -> Option<FieldRef<'_>> {
        match path {
            "message" => {
                if let Some(m) = &self.message {
                    return Some(FieldRef::Str(m.as_str()));
                }
            }
            "@timestamp" => return Some(FieldRef::Owned(format_rfc3339_nanos(self.timestamp))),
            "log.file.path" => {
                if let Some(p) = &self.source.path {
                    return Some(FieldRef::Str(p));
                }
            }
            "log.offset" if self.source.path.is_some() => {
                return Some(FieldRef::Owned(self.offset.to_string()));
            }
            "host.name" => return Some(FieldRef::Str(&self.source.host_name)),
            "input.id" => return Some(FieldRef::Str(&self.source.input_id)),
            "input.type" => return Some(FieldRef::Str(self.source.input_type)),
            "stream" => {
                // Undecoded fields never hold `stream` when the source has one.
                if let Some(s) = self.source.stream
                    && (self.raw.is_some() || !self.fields.contains_key("stream"))
                {
                    return Some(FieldRef::Str(s));
                }
            }
            _ => {}
        }
        if let Some(raw) = &self.raw
            && raw.decoded.get().is_none()
        {
            // A top-level text value (an index template's `{{ service }}`, a condition on
            // `level`) is read straight from the undecoded object; anything else decodes it.
            match raw_member(&raw.text, path) {
                Some([b'"', inner @ .., b'"']) if !inner.contains(&b'\\') => {
                    if let Ok(s) = std::str::from_utf8(inner) {
                        return Some(FieldRef::Str(s));
                    }
                }
                None if !path.contains('.') => {
                    return self
                        .meta()
                        .and_then(|m| lookup(m, path))
                        .map(FieldRef::Json);
                }
                _ => {}
            }
        }
        if let Some(v) = lookup(self.fields(), path) {
            return Some(FieldRef::Json(v));
        }
        self.meta()
            .and_then(|m| lookup(m, path))
            .map(FieldRef::Json)
    }

    /// Reads a field as a JSON value (for processors that need the value itself).
    pub fn get_value(&self, path: &str) -> Option<Value> {
        match self.get(path)? {
            FieldRef::Str(s) => Some(Value::String(s.to_owned())),
            FieldRef::Owned(s) => Some(Value::String(s)),
            FieldRef::Json(v) => Some(v.clone()),
        }
    }

    /// Sets a field by path, creating intermediate objects. `message` sets the message.
    pub fn insert(&mut self, path: &str, value: Value) {
        if path == "message" {
            match value {
                Value::String(s) => {
                    self.message = Some(Text::from(s));
                    return;
                }
                other => {
                    self.message = None;
                    self.materialize();
                    self.fields_mut().insert("message".to_owned(), other);
                    return;
                }
            }
        }
        self.materialize();
        insert_path(self.fields_mut(), path, value);
    }

    /// Removes a field by path and returns it. `message` removes the message.
    pub fn remove(&mut self, path: &str) -> Option<Value> {
        if path == "message"
            && let Some(m) = self.message.take()
        {
            return Some(Value::String(m.as_str().to_owned()));
        }
        self.materialize();
        remove_path(self.fields_mut(), path)
    }

    /// Mutable access to every string field of the event (message first), for redaction.
    pub fn for_each_string_mut(&mut self, mut f: impl FnMut(&str, &mut String)) {
        if let Some(m) = &self.message {
            let mut s = m.as_str().to_owned();
            let before = s.len();
            let original = m.clone();
            f("message", &mut s);
            if s.len() != before || s != original.as_str() {
                self.message = Some(Text::from(s));
            }
        }
        self.materialize();
        let mut path = String::new();
        walk_strings_mut(self.fields_mut(), &mut path, &mut f);
    }

    /// The names in `log.flags`.
    pub fn flag_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        FLAG_NAMES
            .iter()
            .filter(move |(bit, _)| self.flags & bit != 0)
            .map(|(_, name)| *name)
    }

    /// Writes the event as one JSON object (no trailing newline) straight into `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_json_with(out, None);
    }

    /// [`write_json`](Self::write_json), taking the shared metadata's JSON from `cache`: a
    /// batch's events mostly share one source's metadata (a container's id, name, labels),
    /// which is then serialized once per batch instead of once per event.
    pub fn write_json_cached(&self, out: &mut Vec<u8>, cache: &mut MetaCache) {
        self.write_json_with(out, Some(cache));
    }

    /// Without a cache, the path and the shared metadata are written straight into `out`.
    fn write_json_with(&self, out: &mut Vec<u8>, mut cache: Option<&mut MetaCache>) {
        // Fields still in their text form hold none of the agent's own top-level names, nor
        // `stream` or a shared metadata key (see `set_raw_fields`): only the map is looked at.
        let fields = &self.fields;
        let meta = self.meta();
        // Top-level keys the agent builds itself; a decoded field of the same name is merged
        // into them (slow path, rare) instead of producing a duplicate key.
        let clash = |k: &str| fields.contains_key(k) || meta.is_some_and(|m| m.contains_key(k));
        if clash("log") || clash("host") || clash("input") || clash("@timestamp") {
            let v = self.to_value();
            // Serializing a Value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &v);
            return;
        }
        out.extend_from_slice(b"{\"@timestamp\":\"");
        write_rfc3339_cached(out, self.timestamp);
        out.push(b'"');
        if let Some(m) = &self.message {
            out.extend_from_slice(b",\"message\":");
            write_json_utf8(out, m.as_bytes());
        }
        out.extend_from_slice(b",\"log\":{");
        let mut first = true;
        if let Some(p) = &self.source.path {
            out.extend_from_slice(b"\"file\":{\"path\":");
            match cache.as_deref_mut() {
                Some(c) => out.extend_from_slice(c.path_json(p)),
                None => write_json_str(out, p),
            }
            out.extend_from_slice(b"},\"offset\":");
            out.extend_from_slice(itoa_u64(self.offset).as_bytes());
            first = false;
        }
        if self.flags != 0 {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(b"\"flags\":[");
            for (i, name) in self.flag_names().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'"');
                out.extend_from_slice(name.as_bytes());
                out.push(b'"');
            }
            out.push(b']');
        }
        out.extend_from_slice(b"},\"host\":{\"name\":");
        write_json_str(out, &self.source.host_name);
        out.extend_from_slice(b"},\"input\":{\"id\":");
        write_json_str(out, &self.source.input_id);
        out.extend_from_slice(b",\"type\":\"");
        out.extend_from_slice(self.source.input_type.as_bytes());
        out.extend_from_slice(b"\"}");
        if let Some(s) = self.source.stream
            && !fields.contains_key("stream")
        {
            out.extend_from_slice(b",\"stream\":\"");
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        }
        match (self.shared_meta(), cache) {
            // No own field overrides a shared one: the cached text is exact.
            (Some(shared), Some(c)) if fields.is_empty() => out.extend_from_slice(c.json(shared)),
            _ => {
                if let Some(meta) = meta {
                    for (k, v) in meta {
                        if fields.contains_key(k) {
                            continue;
                        }
                        write_member(out, k, v);
                    }
                }
            }
        }
        if let Some(raw) = &self.raw {
            let members = raw.members();
            if !members.is_empty() {
                out.push(b',');
                out.extend_from_slice(members);
            }
        }
        for (k, v) in fields {
            write_member(out, k, v);
        }
        out.push(b'}');
    }

    /// The event as a JSON value (tests, dead letters, slow paths).
    pub fn to_value(&self) -> Value {
        let mut root = Map::new();
        root.insert(
            "@timestamp".into(),
            Value::String(format_rfc3339_nanos(self.timestamp)),
        );
        if let Some(m) = &self.message {
            root.insert("message".into(), Value::String(m.as_str().to_owned()));
        }
        let mut log = Map::new();
        if let Some(p) = &self.source.path {
            let mut file = Map::new();
            file.insert("path".into(), Value::String(p.to_string()));
            log.insert("file".into(), Value::Object(file));
            log.insert("offset".into(), Value::from(self.offset));
        }
        if self.flags != 0 {
            log.insert(
                "flags".into(),
                Value::Array(
                    self.flag_names()
                        .map(|n| Value::String(n.to_owned()))
                        .collect(),
                ),
            );
        }
        root.insert("log".into(), Value::Object(log));
        let mut host = Map::new();
        host.insert(
            "name".into(),
            Value::String(self.source.host_name.to_string()),
        );
        root.insert("host".into(), Value::Object(host));
        let mut input = Map::new();
        input.insert("id".into(), Value::String(self.source.input_id.to_string()));
        input.insert(
            "type".into(),
            Value::String(self.source.input_type.to_owned()),
        );
        root.insert("input".into(), Value::Object(input));
        if let Some(s) = self.source.stream {
            root.insert("stream".into(), Value::String(s.to_owned()));
        }
        if let Some(meta) = self.meta() {
            for (k, v) in meta {
                merge_value(&mut root, k, v.clone());
            }
        }
        for (k, v) in self.fields() {
            merge_value(&mut root, k, v.clone());
        }
        Value::Object(root)
    }
}

/// The text of top-level member `key`'s value in `text`, an object validated as
/// [`Event::set_raw_fields`] requires (so no key is escaped and no key repeats).
fn raw_member<'a>(text: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let ws = |b: &[u8], mut i: usize| {
        while matches!(b.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        i
    };
    // The index just past the string starting at `i` (a `"`).
    let string_end = |b: &[u8], mut i: usize| {
        i += 1;
        while let Some(at) = memchr::memchr2(b'"', b'\\', b.get(i..)?) {
            if b[i + at] == b'"' {
                return Some(i + at + 1);
            }
            i += at + 2;
        }
        None
    };
    let mut i = ws(text, 1);
    loop {
        if text.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(text, i)?;
        let name = text.get(i + 1..key_end - 1)?;
        i = ws(text, key_end);
        if text.get(i) != Some(&b':') {
            return None;
        }
        let start = ws(text, i + 1);
        i = start;
        match *text.get(i)? {
            b'"' => i = string_end(text, i)?,
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match *text.get(i)? {
                        b'"' => {
                            i = string_end(text, i)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {
                while !matches!(text.get(i), None | Some(b',' | b'}' | b' ' | b'\t')) {
                    i += 1;
                }
            }
        }
        if name == key.as_bytes() {
            return text.get(start..i);
        }
        i = ws(text, i);
        if text.get(i) != Some(&b',') {
            return None;
        }
        i = ws(text, i + 1);
    }
}

fn merge_value(root: &mut Map<String, Value>, key: &str, value: Value) {
    match (root.get_mut(key), value) {
        (Some(Value::Object(existing)), Value::Object(incoming)) => {
            for (k, v) in incoming {
                merge_value(existing, &k, v);
            }
        }
        (_, value) => {
            root.insert(key.to_owned(), value);
        }
    }
}

fn write_member(out: &mut Vec<u8>, key: &str, value: &Value) {
    out.push(b',');
    write_json_str(out, key);
    out.push(b':');
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Looks a path up in a map: the literal key first (`user.email` as one key), then nested.
pub fn lookup<'a>(map: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = map.get(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    match map.get(head)? {
        Value::Object(inner) => lookup(inner, rest),
        _ => None,
    }
}

/// Inserts at a dotted path, creating (or replacing non-object) intermediate objects.
pub fn insert_path(map: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            map.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let slot = map
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(inner) = slot {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Removes a dotted path (literal key first); empty parents are left in place.
pub fn remove_path(map: &mut Map<String, Value>, path: &str) -> Option<Value> {
    if let Some(v) = map.remove(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    match map.get_mut(head)? {
        Value::Object(inner) => remove_path(inner, rest),
        _ => None,
    }
}

fn walk_strings_mut(
    map: &mut Map<String, Value>,
    path: &mut String,
    f: &mut impl FnMut(&str, &mut String),
) {
    for (k, v) in map.iter_mut() {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(k);
        walk_value_mut(v, path, f);
        path.truncate(len);
    }
}

fn walk_value_mut(v: &mut Value, path: &mut String, f: &mut impl FnMut(&str, &mut String)) {
    match v {
        Value::String(s) => f(path, s),
        Value::Object(inner) => walk_strings_mut(inner, path, f),
        Value::Array(items) => {
            for item in items {
                walk_value_mut(item, path, f);
            }
        }
        _ => {}
    }
}

/// A mask with the high bit set in (at least) the lowest byte of `x` that needs escaping in
/// JSON (`"`, `\\`, or below 0x20); 0 when none does. Bits above the lowest flagged byte may
/// be false positives (borrow propagation), so only the lowest one is used.
#[inline(always)]
pub(crate) fn escape_mask8(x: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Bytes with the high bit set (UTF-8 beyond ASCII) never need escaping: `!x` masks them.
    let below_space = x.wrapping_sub(LO * 0x20) & !x & HI;
    let quote = x ^ (LO * b'"' as u64);
    let backslash = x ^ (LO * b'\\' as u64);
    let has_quote = quote.wrapping_sub(LO) & !quote & HI;
    let has_backslash = backslash.wrapping_sub(LO) & !backslash & HI;
    below_space | has_quote | has_backslash
}

/// Writes `s` as a JSON string literal, escaping only what JSON requires. Scans 8 bytes at a
/// time (SWAR) and copies clean runs whole: messages rarely need escaping.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    write_json_utf8(out, s.as_bytes())
}

/// [`write_json_str`] for bytes known to be UTF-8 (a [`Text`]'s), without checking again.
fn write_json_utf8(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if i + 8 <= bytes.len() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[i..i + 8]);
            let mask = escape_mask8(u64::from_le_bytes(word));
            if mask == 0 {
                i += 8;
                continue;
            }
            // Jump straight to the first byte that needs escaping.
            i += (mask.trailing_zeros() / 8) as usize;
        }
        let b = bytes[i];
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
                i += 1;
                start = i;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn itoa_u64(v: u64) -> String {
    v.to_string()
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_nanos() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` into `out`.
pub fn write_rfc3339_nanos(out: &mut Vec<u8>, nanos: i64) {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let mut buf = [0u8; 30];
    let y = y.clamp(0, 9999) as u32;
    put_digits(&mut buf[0..4], y);
    buf[4] = b'-';
    put_digits(&mut buf[5..7], m);
    buf[7] = b'-';
    put_digits(&mut buf[8..10], d);
    buf[10] = b'T';
    put_digits(&mut buf[11..13], sod / 3600);
    buf[13] = b':';
    put_digits(&mut buf[14..16], (sod / 60) % 60);
    buf[16] = b':';
    put_digits(&mut buf[17..19], sod % 60);
    buf[19] = b'.';
    put_digits(&mut buf[20..29], frac);
    buf[29] = b'Z';
    out.extend_from_slice(&buf);
}

fn put_digits(slot: &mut [u8], mut v: u32) {
    for b in slot.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

thread_local! {
    /// The last timestamp formatted on this thread: events of one read share their read time.
    static LAST_TS: std::cell::Cell<(i64, [u8; 30])> = const { std::cell::Cell::new((i64::MIN, [0; 30])) };
}

/// As [`write_rfc3339_nanos`], reusing the previous result when the time is the same.
pub fn write_rfc3339_cached(out: &mut Vec<u8>, nanos: i64) {
    let (last, text) = LAST_TS.get();
    if last == nanos {
        out.extend_from_slice(&text);
        return;
    }
    let mut buf = Vec::with_capacity(30);
    write_rfc3339_nanos(&mut buf, nanos);
    let mut text = [0u8; 30];
    if buf.len() == 30 {
        text.copy_from_slice(&buf);
        LAST_TS.set((nanos, text));
    }
    out.extend_from_slice(&buf);
}

pub fn format_rfc3339_nanos(nanos: i64) -> String {
    let mut out = Vec::with_capacity(30);
    write_rfc3339_nanos(&mut out, nanos);
    String::from_utf8(out).unwrap_or_default()
}

/// Renders a `Display` into a reusable `String` (avoids a fresh allocation per call).
pub fn render_into(buf: &mut String, v: impl std::fmt::Display) {
    buf.clear();
    let _ = write!(buf, "{v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Arc<Source> {
        Arc::new(Source {
            input_id: Arc::from("app"),
            input_type: "file",
            host_name: Arc::from("h1"),
            path: Some(Arc::from("/var/log/a.log")),
            file_key: Arc::from("k"),
            meta: None,
            stream: None,
        })
    }

    #[test]
    fn encodes_ecs_shape() {
        let mut e = Event::new(
            source(),
            Text::from("hi \"x\"\n"),
            42,
            1_700_000_000_123_456_789,
        );
        e.flags = FLAG_TRUNCATED;
        e.insert("service", Value::String("api".into()));
        let mut out = Vec::new();
        e.write_json(&mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["@timestamp"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(v["message"], "hi \"x\"\n");
        assert_eq!(v["log"]["file"]["path"], "/var/log/a.log");
        assert_eq!(v["log"]["offset"], 42);
        assert_eq!(v["log"]["flags"][0], "truncated");
        assert_eq!(v["host"]["name"], "h1");
        assert_eq!(v["input"]["id"], "app");
        assert_eq!(v["service"], "api");
        assert_eq!(v, e.to_value());
    }

    #[test]
    fn clashing_keys_merge() {
        let mut e = Event::new(source(), Text::from("m"), 0, 0);
        e.insert("log.level", Value::String("warn".into()));
        let mut out = Vec::new();
        e.write_json(&mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["log"]["level"], "warn");
        assert_eq!(v["log"]["file"]["path"], "/var/log/a.log");
    }

    #[test]
    fn field_paths() {
        let mut e = Event::new(source(), Text::from("m"), 0, 0);
        e.insert("user.email", Value::String("a@b".into()));
        assert_eq!(e.get("user.email").unwrap().to_text(), "a@b");
        assert_eq!(e.get("input.id").unwrap().to_text(), "app");
        assert!(e.remove("user.email").is_some());
        assert!(e.get("user.email").is_none());
        assert_eq!(e.remove("message"), Some(Value::String("m".into())));
        assert!(e.get("message").is_none());
    }

    #[test]
    fn meta_is_copy_on_write() {
        let mut meta = Map::new();
        meta.insert("service".into(), Value::String("api".into()));
        let src = Arc::new(Source {
            meta: Some(Arc::new(meta)),
            ..Source::default()
        });
        let mut e = Event::new(src.clone(), Text::from("m"), 0, 0);
        assert_eq!(e.get("service").unwrap().to_text(), "api");
        e.remove("service");
        assert!(e.get("service").is_none());
        let e2 = Event::new(src, Text::from("m"), 0, 0);
        assert_eq!(e2.get("service").unwrap().to_text(), "api");
    }

    /// One cache across a batch of events from several sources, some with their own fields
    /// overriding a shared one: each event encodes exactly as without the cache.
    #[test]
    fn cached_metadata_encodes_like_the_map() {
        let source_with = |name: &str| {
            let mut c = Map::new();
            c.insert("name".into(), Value::String(name.into()));
            let mut meta = Map::new();
            meta.insert("container".into(), Value::Object(c));
            meta.insert("service".into(), Value::String("api".into()));
            Arc::new(Source {
                meta: Some(Arc::new(meta)),
                path: Some(Arc::from(format!("/var/log/{name}.log"))),
                ..Source::default()
            })
        };
        let (a, b) = (source_with("a"), source_with("b\"q"));
        let mut events = Vec::new();
        for (i, src) in [&a, &a, &b, &a, &b].into_iter().enumerate() {
            events.push(Event::new(src.clone(), Text::from("m"), i as u64, 0));
        }
        events[3].insert("service", Value::String("own".into()));
        let mut cache = MetaCache::default();
        for e in &events {
            let (mut cached, mut plain) = (Vec::new(), Vec::new());
            e.write_json_cached(&mut cached, &mut cache);
            e.write_json(&mut plain);
            assert_eq!(cached, plain);
        }
        let mut out = Vec::new();
        events[3].write_json_cached(&mut out, &mut cache);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["service"], "own");
        assert_eq!(v["container"]["name"], "a");
        assert_eq!(v["log"]["file"]["path"], "/var/log/a.log");
    }

    /// Undecoded fields read, change, clone, encode and survive the disk buffer's codec like
    /// decoded ones.
    #[test]
    fn raw_fields_behave_like_decoded_ones() {
        let line = Bytes::from_static(br#"  {"b":1,"a":{"x":"y"},"s":"t"}"#);
        let mut e = Event::new(source(), Text::from("m"), 0, 0);
        e.message = None;
        e.set_raw_fields(line.slice(2..));
        assert_eq!(e.get("s"), Some(FieldRef::Str("t")), "read from the text");
        assert!(e.get("missing").is_none());
        assert!(e.raw.as_ref().unwrap().decoded.get().is_none());
        assert!(!e.fields_is_empty());
        assert!(e.size_hint() > 160);
        let mut out = Vec::new();
        e.write_json(&mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, e.to_value());
        assert_eq!(v["a"]["x"], "y");
        assert_eq!(e.get("a.x").unwrap().to_text(), "y");
        assert_eq!(e.get("b"), Some(FieldRef::Json(&Value::from(1))));
        let mut fields = Vec::new();
        e.write_fields_json(&mut fields);
        assert_eq!(fields, br#"{"b":1,"a":{"x":"y"},"s":"t"}"#);

        let mut enc = crate::buffer::disk::codec::Encoder::default();
        let mut payload = Vec::new();
        enc.encode(&e, &mut payload);
        let back = crate::buffer::disk::codec::Decoder::default()
            .decode(&Bytes::from(payload))
            .unwrap();
        assert_eq!(back.to_value(), e.to_value());

        let mut c = e.clone();
        c.for_each_string_mut(|_, s| s.make_ascii_uppercase());
        assert!(c.raw_fields().is_none());
        assert_eq!(c.get("s").unwrap().to_text(), "T");
        assert_eq!(
            e.get("s").unwrap().to_text(),
            "t",
            "the clone changed alone"
        );
        assert_eq!(e.remove("b"), Some(Value::from(1)));
        assert!(e.get("b").is_none());
        assert_eq!(e.fields().len(), 2);

        let mut empty = Event::new(source(), Text::from("m"), 0, 0);
        empty.set_raw_fields(Bytes::from_static(b"{ }"));
        assert!(empty.fields_is_empty());
        let mut out = Vec::new();
        empty.write_json(&mut out);
        assert!(serde_json::from_slice::<Value>(&out).is_ok());
    }

    #[test]
    fn raw_member_finds_top_level_values() {
        let text = br#"{ "a" : {"s":"}\"","n":[1,{"b":2}]} , "b":"x\"y","c":-1.5,"d":[],"e":"e"}"#;
        assert_eq!(
            raw_member(text, "a"),
            Some(&br#"{"s":"}\"","n":[1,{"b":2}]}"#[..])
        );
        assert_eq!(raw_member(text, "b"), Some(&br#""x\"y""#[..]));
        assert_eq!(raw_member(text, "c"), Some(&b"-1.5"[..]));
        assert_eq!(raw_member(text, "d"), Some(&b"[]"[..]));
        assert_eq!(raw_member(text, "e"), Some(&br#""e""#[..]));
        assert_eq!(raw_member(text, "s"), None, "nested keys are not top-level");
        assert_eq!(raw_member(b"{}", "a"), None);
    }

    #[test]
    fn json_escaping_matches_serde() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "ctl\u{1}\u{1f}",
            "tab\tnl\n",
            "é✓",
        ] {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn escaping_matches_serde_for_any_string(s in ".*") {
            let mut out = Vec::new();
            write_json_str(&mut out, &s);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap());
        }
    }

    #[test]
    fn lossy_text() {
        let (t, bad) = Text::from_bytes_lossy(Bytes::from_static(b"a\xffb"));
        assert!(bad);
        assert_eq!(t.as_str(), "a\u{fffd}b");
    }
}
