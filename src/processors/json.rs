//! `json`: decodes a JSON text field (the line, by default) into the event.
//!
//! On the hot path of JSON logs, so the usual case builds no tree at all: when the line is
//! merged at the root of an event that has no fields yet, one validating scan ([`scan`])
//! checks the object and its top-level names, and the event keeps the object's text (a slice
//! of the line, no copy) as its fields; outputs splice it, and it is decoded only if
//! something reads or changes a field by path. Anything outside the scan's strict subset of
//! JSON (or clashing with a name the agent builds) takes the decoding path: decoded once,
//! straight into the event's field map; when the event has no fields yet the decoded object
//! *becomes* its map (a swap, no copy), and only the handful of names the agent builds itself
//! are checked for clashes. Both paths give the same fields. With `target: ""` the decoded object replaces the text it came from: its key of
//! the same name (`message`, usually) becomes the new value, otherwise the field is removed,
//! so a JSON line is not shipped twice (raw and decoded). With a `target`, the text is kept
//! and the decoded value goes under `target`.
//!
//! Invariant: nothing is dropped silently. Invalid JSON, a non-object merged at the root,
//! nesting past `max_depth` keep the event unchanged and, with `add_error_key`, say why in
//! `error.message` / `error.type`; a decoded key that would overwrite an existing one while
//! `overwrite_keys` is false keeps the existing value and names the key in `error.message`.
//! Every failure is counted in `logferry_processor_errors_total{input,processor="json"}`.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Processor, record_error};
use crate::event::{Event, insert_path, lookup};

mod scan;

/// serde_json refuses deeper documents itself (its recursion limit), so no limit above it
/// could ever be reached.
const MAX_DEPTH_LIMIT: usize = 128;

/// `json: { field: message, target: "", overwrite_keys: false, add_error_key: true }`
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonConfig {
    /// The field holding the JSON text.
    #[serde(default = "default_field")]
    pub field: String,
    /// Where the decoded value goes; `""` merges a decoded object into the event's root and
    /// replaces `field` with the decoded key of the same name (or removes it).
    #[serde(default)]
    pub target: String,
    /// Let decoded keys replace fields the event already has (including `@timestamp` and the
    /// agent's scalar fields); otherwise the existing value is kept and the clash recorded.
    #[serde(default)]
    pub overwrite_keys: bool,
    /// On failure, set `error.message` and `error.type` on the event (it is kept either way).
    #[serde(default = "yes")]
    pub add_error_key: bool,
    /// Deepest nesting of objects and arrays accepted (1 = a flat object); deeper documents
    /// are left undecoded and recorded as errors. At most 128.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// Turn dotted keys (`"user.id": 7`) into nested objects (`user: { id: 7 }`); by default
    /// they stay literal keys.
    #[serde(default)]
    pub expand_keys: bool,
}

fn default_field() -> String {
    "message".into()
}
fn yes() -> bool {
    true
}
fn default_max_depth() -> usize {
    32
}

pub struct Json {
    cfg: JsonConfig,
    errors: metrics::Counter,
    /// The configuration allows the undecoded fast path (`field: message`, `target: ""`, no
    /// `expand_keys`).
    raw_ok: bool,
    scanner: scan::Scanner,
}

impl Json {
    pub fn new(cfg: &JsonConfig, input_id: &str) -> Result<Json, (String, String)> {
        if cfg.field.is_empty() {
            return Err(("field".into(), "must name a field".into()));
        }
        if cfg.max_depth == 0 || cfg.max_depth > MAX_DEPTH_LIMIT {
            return Err((
                "max_depth".into(),
                format!("must be between 1 and {MAX_DEPTH_LIMIT}"),
            ));
        }
        Ok(Json {
            cfg: cfg.clone(),
            errors: super::error_counter(input_id, "json"),
            raw_ok: cfg.field == "message" && cfg.target.is_empty() && !cfg.expand_keys,
            scanner: scan::Scanner::default(),
        })
    }

    fn fail(&self, e: &mut Event, msg: String) {
        self.errors.increment(1);
        if self.cfg.add_error_key {
            record_error(e, "json", msg);
        }
    }

    /// The fast path: keeps the message's object undecoded as the event's fields when that
    /// gives what decoding would (see the module doc); false when it does not apply.
    fn keep_raw(&mut self, e: &mut Event) -> bool {
        if !self.raw_ok || e.raw_fields().is_some() || !e.fields_is_empty() {
            return false;
        }
        let Some(m) = &e.message else {
            return false;
        };
        let stream = e.source.stream.is_some();
        let meta = e.shared_meta();
        let mut key_ok = |k: &[u8]| {
            let agent_builds =
                matches!(k, b"@timestamp" | b"message" | b"log" | b"host" | b"input")
                    || (stream && k == b"stream");
            !agent_builds
                && meta
                    .is_none_or(|meta| std::str::from_utf8(k).is_ok_and(|k| !meta.contains_key(k)))
        };
        let max_depth = self.cfg.max_depth;
        let Some((start, end)) = self
            .scanner
            .object_span(m.as_bytes(), max_depth, &mut key_ok)
        else {
            return false;
        };
        let text = m.bytes().slice(start..end);
        // The text the object came from is consumed (it has no `message` of its own).
        e.message = None;
        e.set_raw_fields(text);
        true
    }

    fn decode_one(&mut self, e: &mut Event) {
        if self.keep_raw(e) {
            return;
        }
        let field = self.cfg.field.as_str();
        let parsed = {
            let text = if field == "message" {
                match &e.message {
                    Some(m) => m.as_str(),
                    None => match lookup(e.fields(), field) {
                        Some(v) => return self.not_text(e, v.clone()),
                        None => return,
                    },
                }
            } else {
                match e.get(field) {
                    Some(crate::event::FieldRef::Json(Value::String(s))) => s.as_str(),
                    Some(crate::event::FieldRef::Str(s)) => s,
                    Some(other) => {
                        let v = Value::String(other.to_text().into_owned());
                        return self.not_text(e, v);
                    }
                    None => return,
                }
            };
            serde_json::from_str::<Value>(text)
        };
        let value = match parsed {
            Ok(v) => v,
            Err(err) => return self.fail(e, format!("json: `{field}` is not valid JSON: {err}")),
        };
        if exceeds_depth(&value, self.cfg.max_depth) {
            return self.fail(
                e,
                format!(
                    "json: `{field}` nests deeper than max_depth ({}); left undecoded",
                    self.cfg.max_depth
                ),
            );
        }
        let value = if self.cfg.expand_keys {
            expand(value)
        } else {
            value
        };
        if self.cfg.target.is_empty() {
            match value {
                Value::Object(obj) => self.merge_root(e, obj),
                other => self.fail(
                    e,
                    format!(
                        "json: `{field}` holds a JSON {}, not an object; set `target` to keep it",
                        kind(&other)
                    ),
                ),
            }
        } else {
            let target = self.cfg.target.as_str();
            if !self.cfg.overwrite_keys && e.get(target).is_some() {
                return self.fail(
                    e,
                    format!("json: `{target}` exists; kept it (overwrite_keys is false)"),
                );
            }
            e.insert(target, value);
        }
    }

    fn not_text(&self, e: &mut Event, v: Value) {
        self.fail(
            e,
            format!(
                "json: `{}` is a JSON {}, not text; left as it is",
                self.cfg.field,
                kind(&v)
            ),
        );
    }

    /// Merges a decoded object into the event's root; see the module doc for the rules.
    fn merge_root(&self, e: &mut Event, mut obj: Map<String, Value>) {
        let field = self.cfg.field.as_str();
        // The text the object came from is consumed: its decoded namesake replaces it.
        let replacement = obj.remove(field);
        if field == "message" {
            // Not `e.remove`: that would copy the text just to drop it.
            e.message = None;
        } else {
            e.remove(field);
        }
        e.materialize();
        let mut kept: Vec<String> = Vec::new();
        let overwrite = self.cfg.overwrite_keys;
        if e.fields_is_empty() {
            // The usual case: the decoded map becomes the event's map, then only the names
            // the agent builds itself need a look.
            e.set_fields(obj);
            for k in BUILT_IN {
                if let Some(v) = e.fields().get(*k)
                    && builtin_clash(k, v)
                    && let Some(v) = e.fields_mut().remove(*k)
                {
                    self.place(e, k, v, overwrite, &mut kept);
                }
            }
            if let Some(v) = e.fields_mut().remove("message") {
                self.place(e, "message", v, overwrite, &mut kept);
            }
        } else {
            for (k, v) in obj {
                self.place(e, &k, v, overwrite, &mut kept);
            }
        }
        if let Some(v) = replacement {
            e.insert(field, v);
        }
        if !kept.is_empty() {
            let list = kept.join("`, `");
            self.fail(
                e,
                format!("json: kept the existing `{list}` (overwrite_keys is false)"),
            );
        }
    }

    /// Puts one decoded top-level key into the event, unless it clashes and may not overwrite.
    fn place(&self, e: &mut Event, k: &str, v: Value, overwrite: bool, kept: &mut Vec<String>) {
        let clash = e.fields().contains_key(k)
            || (k == "message" && e.message.is_some())
            || (BUILT_IN.contains(&k) && builtin_clash(k, &v));
        if clash && !overwrite {
            kept.push(k.to_owned());
            return;
        }
        if k == "message" {
            e.insert("message", v);
        } else {
            e.fields_mut().insert(k.to_owned(), v);
        }
    }
}

/// Top-level names the agent fills itself (`write_json` merges objects into them).
const BUILT_IN: &[&str] = &["@timestamp", "log", "host", "input"];

/// Whether a decoded `k` would replace something the agent set: `@timestamp` always; `log`,
/// `host`, `input` unless the decoded value is an object (ECS logging's `log.level` merges).
fn builtin_clash(k: &str, v: &Value) -> bool {
    k == "@timestamp" || !v.is_object()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether objects/arrays nest deeper than `max` (a flat object is depth 1).
fn exceeds_depth(v: &Value, max: usize) -> bool {
    fn depth_over(v: &Value, left: usize) -> bool {
        match v {
            Value::Object(m) => left == 0 || m.values().any(|c| depth_over(c, left - 1)),
            Value::Array(a) => left == 0 || a.iter().any(|c| depth_over(c, left - 1)),
            _ => false,
        }
    }
    depth_over(v, max)
}

/// Turns dotted keys into nested objects, recursively.
fn expand(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let v = expand(v);
                if k.contains('.') {
                    insert_path(&mut out, &k, v);
                } else {
                    out.insert(k, v);
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(expand).collect()),
        other => other,
    }
}

impl Processor for Json {
    fn process(&mut self, events: &mut Vec<Event>) {
        for e in events.iter_mut() {
            self.decode_one(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(yaml: &str) -> Json {
        Json::new(&serde_yaml_ng::from_str(yaml).unwrap(), "t").unwrap()
    }

    fn run(p: &mut Json, line: &str) -> Event {
        let mut v = vec![Event::synthetic("t", line)];
        p.process(&mut v);
        v.pop().unwrap()
    }

    #[test]
    fn merges_at_root_and_replaces_message() {
        let mut p = json("{}");
        let e = run(
            &mut p,
            r#"{"message":"hi","level":"info","user":{"id":7},"a.b":1}"#,
        );
        assert_eq!(e.message_str(), "hi");
        assert_eq!(e.get("level").unwrap().to_text(), "info");
        assert_eq!(e.get("user.id").unwrap().to_text(), "7");
        assert!(e.fields().contains_key("a.b"), "dotted keys stay literal");
        assert!(e.get("error.message").is_none());
        let e = run(&mut p, r#"{"msg":"x"}"#);
        assert!(e.message.is_none(), "the raw line is consumed");
        assert_eq!(e.get("msg").unwrap().to_text(), "x");
    }

    #[test]
    fn invalid_json_keeps_event_and_says_why() {
        let mut p = json("{}");
        let e = run(&mut p, r#"{"a": tru"#);
        assert_eq!(e.message_str(), r#"{"a": tru"#);
        let msg = e.get("error.message").unwrap().to_text().into_owned();
        assert!(msg.contains("not valid JSON"), "{msg}");
        assert_eq!(e.get("error.type").unwrap().to_text(), "json");
        let mut quiet = json("{ add_error_key: false }");
        let e = run(&mut quiet, "nope");
        assert_eq!(e.message_str(), "nope");
        assert!(e.get("error.message").is_none());
    }

    #[test]
    fn non_object_needs_a_target() {
        let mut p = json("{}");
        let e = run(&mut p, "[1,2]");
        assert_eq!(e.message_str(), "[1,2]");
        assert!(e.get("error.message").is_some());
        let mut t = json("{ target: doc }");
        let e = run(&mut t, "[1,2]");
        assert_eq!(e.message_str(), "[1,2]", "with a target the text is kept");
        assert_eq!(e.get_value("doc").unwrap(), serde_json::json!([1, 2]));
    }

    #[test]
    fn clashes_respect_overwrite_keys() {
        let line = r#"{"@timestamp":"x","host":"h","log":{"level":"warn"},"env":"dev"}"#;
        let mk = || {
            let mut e = Event::synthetic("t", line);
            e.insert("env", Value::String("prod".into()));
            e
        };
        let mut p = json("{}");
        let mut v = vec![mk()];
        p.process(&mut v);
        let e = &v[0];
        assert_eq!(e.get("env").unwrap().to_text(), "prod");
        assert_eq!(e.get("log.level").unwrap().to_text(), "warn");
        let msg = e.get("error.message").unwrap().to_text().into_owned();
        assert!(
            msg.contains("@timestamp") && msg.contains("host") && msg.contains("env"),
            "{msg}"
        );
        assert!(!msg.contains("log"), "{msg}");
        let mut p = json("{ overwrite_keys: true }");
        let mut v = vec![mk()];
        p.process(&mut v);
        assert_eq!(v[0].get("env").unwrap().to_text(), "dev");
        assert!(v[0].get("error.message").is_none());
        let out = v[0].to_value();
        assert_eq!(out["host"], "h");
        // The fast path (no fields yet) applies the same rules.
        let e = run(&mut json("{}"), line);
        let msg = e.get("error.message").unwrap().to_text().into_owned();
        assert!(msg.contains("@timestamp") && msg.contains("host"), "{msg}");
        assert_eq!(e.to_value()["host"]["name"], "");
    }

    #[test]
    fn depth_limit_and_expand_keys() {
        let mut p = json("{ max_depth: 2 }");
        let e = run(&mut p, r#"{"a":{"b":1}}"#);
        assert_eq!(e.get("a.b").unwrap().to_text(), "1");
        let e = run(&mut p, r#"{"a":{"b":[1]}}"#);
        assert!(e.get("a").is_none());
        assert!(
            e.get("error.message")
                .unwrap()
                .to_text()
                .contains("max_depth")
        );
        let mut x = json("{ expand_keys: true }");
        let e = run(&mut x, r#"{"user.id":7,"user.name":"a"}"#);
        assert_eq!(
            e.get_value("user").unwrap(),
            serde_json::json!({"id": 7, "name": "a"})
        );
        assert!(Json::new(&serde_yaml_ng::from_str("{ max_depth: 0 }").unwrap(), "t").is_err());
    }

    /// The undecoded fast path and the decoding path give the same event, and the cases
    /// the fast path must not take (names the agent builds, duplicates, escapes, exponents,
    /// depth) are decoded.
    #[test]
    fn undecoded_path_matches_decoding() {
        let cases: &[(&str, bool)] = &[
            (
                r#"{"ts":"2026-01-01T00:00:00Z","level":"info","seq":7,"lat":105.5,"ok":true,"n":null,"tags":["a","b"],"user":{"id":7,"name":"q\"x\"\/y"},"a.b":1}"#,
                true,
            ),
            ("  {}  \r", true),
            (r#"{"msg":"x","stream":"out"}"#, true),
            (r#"{"message":"hi","level":"info"}"#, false),
            (r#"{"log":{"level":"warn"},"x":1}"#, false),
            (r#"{"host":"h"}"#, false),
            (r#"{"@timestamp":"x"}"#, false),
            (r#"{"a":1,"a":2}"#, false),
            (r#"{"a":"\u00e9"}"#, false),
            (r#"{"a":1e3}"#, false),
            (r#"{"a":{"b":{"c":{}}}}"#, false),
        ];
        for (line, raw) in cases {
            let mut fast = json("{ max_depth: 3 }");
            let mut slow = json("{ max_depth: 3 }");
            slow.raw_ok = false;
            let (mut a, b) = (run(&mut fast, line), run(&mut slow, line));
            a.timestamp = b.timestamp;
            assert_eq!(a.raw_fields().is_some(), *raw, "{line}");
            assert!(b.raw_fields().is_none());
            assert_eq!(a.to_value(), b.to_value(), "{line}");
            assert_eq!(a.message, b.message, "{line}");
            let (mut x, mut y) = (Vec::new(), Vec::new());
            a.write_json(&mut x);
            b.write_json(&mut y);
            let (x, y): (Value, Value) = (
                serde_json::from_slice(&x).unwrap(),
                serde_json::from_slice(&y).unwrap(),
            );
            assert_eq!(x, y, "{line}");
            assert_eq!(x, a.to_value(), "{line}");
        }
    }

    /// Shared metadata and a source `stream` keep their names off the fast path; a second
    /// json processor, or any field change, decodes the kept text first.
    #[test]
    fn undecoded_fields_respect_meta_and_later_changes() {
        let mut meta = Map::new();
        meta.insert("env".into(), Value::String("prod".into()));
        let src = std::sync::Arc::new(crate::event::Source {
            meta: Some(std::sync::Arc::new(meta)),
            stream: Some("stdout"),
            ..Default::default()
        });
        let mk = |line: &str| Event::new(src.clone(), line.into(), 0, 0);
        let mut p = json("{}");
        let mut v = vec![
            mk(r#"{"env":"dev"}"#),
            mk(r#"{"stream":"x"}"#),
            mk(r#"{"k":"v"}"#),
        ];
        p.process(&mut v);
        assert!(v[0].raw_fields().is_none() && v[1].raw_fields().is_none());
        assert!(
            v[0].get("error.message").is_some(),
            "env clashes with metadata"
        );
        let e = &mut v[2];
        assert!(e.raw_fields().is_some());
        assert_eq!(e.get("env").unwrap().to_text(), "prod");
        assert_eq!(e.get("stream").unwrap().to_text(), "stdout");
        assert_eq!(e.get("k").unwrap().to_text(), "v");
        assert!(e.raw_fields().is_some(), "reading keeps the text");
        e.insert("k2", Value::from(2));
        assert!(e.raw_fields().is_none());
        assert_eq!(e.to_value()["k"], "v", "a change keeps the decoded fields");
        let mut second = json("{ field: k2, target: t }");
        let mut one = vec![mk(r#"{"k":"v"}"#)];
        p.process(&mut one);
        one[0].insert("k2", Value::String("[1]".into()));
        second.process(&mut one);
        assert_eq!(one[0].get_value("t").unwrap(), serde_json::json!([1]));
        assert_eq!(one[0].get("k").unwrap().to_text(), "v");
    }

    #[test]
    fn other_source_field() {
        let mut p = json("{ field: payload, target: p }");
        let mut e = Event::synthetic("t", "line");
        e.insert("payload", Value::String(r#"{"k":1}"#.into()));
        let mut v = vec![e];
        p.process(&mut v);
        assert_eq!(v[0].get("p.k").unwrap().to_text(), "1");
        assert_eq!(v[0].message_str(), "line");
    }
}
