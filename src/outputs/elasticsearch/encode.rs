//! The `_bulk` body: one action line and one document line per event, written straight into
//! the request buffer (`Event::write_json`, no per-event `String`).
//!
//! The action line is cached: a static index costs nothing per event, a time-only template
//! (`logs-%Y.%m.%d`) is rendered again only when the event's hour changes, and a template with
//! fields is rendered per event but the action line is rebuilt only when the name changes.
//! An event whose template field is missing is left out of the body and reported with the
//! reason, for the dead letters.
//!
//! Idempotent ids: `_id` = 20 hex digits of SHA-256(input id, 0, file fingerprint), `-`, the
//! event's byte offset. The same line of the same file always gets the same `_id`, so a
//! redelivery after a crash meets a 409 on `create` instead of a second copy.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::event::{Event, MetaCache, Source, write_json_str};
use crate::outputs::template::Template;

/// The bulk operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Index,
    Create,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Index => "index",
            Op::Create => "create",
        }
    }
}

/// Encodes batches for one output.
#[derive(Debug, Clone)]
pub struct Encoder {
    template: Template,
    op: Op,
    idempotent: bool,
    /// How the template depends on the event.
    kind: TemplateKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TemplateKind {
    Static,
    TimeOnly,
    Fields,
}

/// The body of one request.
#[derive(Debug, Default)]
pub struct Body {
    pub bytes: Vec<u8>,
    /// Documents in the body.
    pub docs: usize,
    /// Events left out (index of the event in the batch, reason), in batch order.
    pub skipped: Vec<(usize, String)>,
}

impl Encoder {
    pub fn new(template: Template, op: Op, idempotent: bool) -> Encoder {
        let kind = if template.is_static() {
            TemplateKind::Static
        } else if template.parts_use_fields() {
            TemplateKind::Fields
        } else {
            TemplateKind::TimeOnly
        };
        Encoder {
            template,
            op,
            idempotent,
            kind,
        }
    }

    pub fn op(&self) -> Op {
        self.op
    }

    /// Encodes `events` into a new body.
    pub fn encode(&self, events: &[Event]) -> Body {
        let estimate: usize = events.iter().map(|e| e.size_hint() + 96).sum();
        let mut body = Body {
            bytes: Vec::with_capacity(estimate),
            ..Body::default()
        };
        let mut name = String::new();
        let mut last_name = String::new();
        // The action line up to where `_id` would go, for `last_name`.
        let mut action: Vec<u8> = Vec::new();
        let mut last_hour: Option<i64> = None;
        let mut ids = IdPrefix::default();
        let mut meta = MetaCache::default();
        for (i, e) in events.iter().enumerate() {
            let fresh = match self.kind {
                TemplateKind::Static => action.is_empty(),
                TemplateKind::TimeOnly => {
                    let hour = e.timestamp.div_euclid(3_600_000_000_000);
                    last_hour.replace(hour) != Some(hour)
                }
                TemplateKind::Fields => true,
            };
            if fresh {
                if let Err(reason) = self.template.render_into(e, &mut name) {
                    body.skipped.push((i, reason));
                    continue;
                }
                if action.is_empty() || name != last_name {
                    std::mem::swap(&mut name, &mut last_name);
                    action.clear();
                    action.extend_from_slice(b"{\"");
                    action.extend_from_slice(self.op.name().as_bytes());
                    action.extend_from_slice(b"\":{\"_index\":");
                    write_json_str(&mut action, &last_name);
                }
            }
            let out = &mut body.bytes;
            out.extend_from_slice(&action);
            if self.idempotent {
                out.extend_from_slice(b",\"_id\":\"");
                out.extend_from_slice(ids.get(&e.source));
                out.push(b'-');
                out.extend_from_slice(itoa(e.offset, &mut [0u8; 20]));
                out.push(b'"');
            }
            out.extend_from_slice(b"}}\n");
            e.write_json_cached(out, &mut meta);
            out.push(b'\n');
            body.docs += 1;
        }
        body
    }
}

/// The `_id` of an event under `idempotent: true` (for tests and tools).
pub fn idempotent_id(e: &Event) -> String {
    let mut ids = IdPrefix::default();
    let mut s = String::from_utf8_lossy(ids.get(&e.source)).into_owned();
    s.push('-');
    s.push_str(&e.offset.to_string());
    s
}

/// Caches the id prefix of the last source seen (a batch is mostly one file).
#[derive(Default)]
struct IdPrefix {
    source: Option<Arc<Source>>,
    hex: [u8; 20],
}

impl IdPrefix {
    fn get(&mut self, source: &Arc<Source>) -> &[u8] {
        let same = self
            .source
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, source) || same_identity(s, source));
        if !same {
            let mut h = Sha256::new();
            h.update(source.input_id.as_bytes());
            h.update([0u8]);
            h.update(source.file_key.as_bytes());
            let digest = h.finalize();
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for (k, b) in digest.iter().take(10).enumerate() {
                self.hex[2 * k] = HEX[(b >> 4) as usize];
                self.hex[2 * k + 1] = HEX[(b & 0xf) as usize];
            }
            self.source = Some(source.clone());
        }
        &self.hex
    }
}

fn same_identity(a: &Source, b: &Source) -> bool {
    a.input_id == b.input_id && a.file_key == b.file_key
}

fn itoa(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Text;
    use serde_json::Value;

    fn src(file: &str) -> Arc<Source> {
        Arc::new(Source {
            input_id: Arc::from("app"),
            input_type: "file",
            host_name: Arc::from("h"),
            path: Some(Arc::from("/l/a.log")),
            file_key: Arc::from(file),
            meta: None,
            stream: None,
        })
    }

    fn lines(body: &Body) -> Vec<Value> {
        body.bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn static_index() {
        let enc = Encoder::new(Template::parse("bench").unwrap(), Op::Index, false);
        let s = src("k1");
        let events: Vec<Event> = (0..3)
            .map(|i| Event::new(s.clone(), Text::from("m\"q"), i * 10, 0))
            .collect();
        let body = enc.encode(&events);
        assert_eq!(body.docs, 3);
        assert!(body.bytes.ends_with(b"\n"));
        let l = lines(&body);
        assert_eq!(l.len(), 6);
        assert_eq!(l[0], serde_json::json!({"index": {"_index": "bench"}}));
        assert_eq!(l[1]["message"], "m\"q");
    }

    #[test]
    fn templates_and_ids() {
        let enc = Encoder::new(
            Template::parse("logs-{{ service }}-%Y.%m.%d").unwrap(),
            Op::Create,
            true,
        );
        let s = src("k1");
        let day = 86_400 * 1_000_000_000i64;
        let mut a = Event::new(s.clone(), Text::from("a"), 0, 0);
        a.insert("service", Value::String("api".into()));
        let b = Event::new(s.clone(), Text::from("b"), 2, 0);
        let mut c = Event::new(s.clone(), Text::from("c"), 4, day);
        c.insert("service", Value::String("db".into()));
        let body = enc.encode(&[a, b, c]);
        assert_eq!(body.docs, 2);
        assert_eq!(body.skipped.len(), 1);
        assert_eq!(body.skipped[0].0, 1);
        assert!(body.skipped[0].1.contains("service"));
        let l = lines(&body);
        assert_eq!(l[0]["create"]["_index"], "logs-api-1970.01.01");
        assert_eq!(l[2]["create"]["_index"], "logs-db-1970.01.02");
        let id0 = l[0]["create"]["_id"].as_str().unwrap().to_owned();
        let id2 = l[2]["create"]["_id"].as_str().unwrap().to_owned();
        assert!(id0.ends_with("-0") && id2.ends_with("-4"));
        assert_eq!(id0.split('-').next(), id2.split('-').next());
        // Deterministic: a fresh Source with the same identity gives the same id.
        let again = Event::new(src("k1"), Text::from("a"), 0, 0);
        assert_eq!(idempotent_id(&again), id0);
        let other = Event::new(src("k2"), Text::from("a"), 0, 0);
        assert_ne!(idempotent_id(&other), id0);
    }

    #[test]
    fn time_only_template_follows_the_hour() {
        let enc = Encoder::new(Template::parse("t-%Y.%m.%d.%H").unwrap(), Op::Index, false);
        let s = src("k");
        let hour = 3_600_000_000_000i64;
        let events = vec![
            Event::new(s.clone(), Text::from("a"), 0, 0),
            Event::new(s.clone(), Text::from("b"), 1, hour - 1),
            Event::new(s.clone(), Text::from("c"), 2, hour),
        ];
        let l = lines(&enc.encode(&events));
        assert_eq!(l[0]["index"]["_index"], "t-1970.01.01.00");
        assert_eq!(l[2]["index"]["_index"], "t-1970.01.01.00");
        assert_eq!(l[4]["index"]["_index"], "t-1970.01.01.01");
    }
}
