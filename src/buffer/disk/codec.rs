//! The payload of a disk-buffer record: one event, with everything needed to rebuild it.
//!
//! Layout (version 1, integers little-endian, `str` = `u32` length + UTF-8 bytes):
//!
//! ```text
//! u8 version | i64 timestamp | u64 offset | u8 flags
//! u32 source length | source: str input_id, str input_type, str host_name, opt str path,
//!                             str file_key, opt str stream, opt bytes meta (JSON object)
//! opt bytes message | u32 fields length | fields (JSON object, absent when empty)
//! ```
//!
//! `opt` is a `u8` tag (0 absent, 1 present) before the value. The source travels with every
//! record, so any record can be read alone (a restart resumes mid-segment); the encoder copies
//! the bytes of a source it already encoded in the batch, and the [`Decoder`] hands out one
//! shared `Arc<Source>` for identical source bytes, so rebuilt events share their source as the
//! originals did. An event whose shared `meta` was materialized into its own fields is encoded
//! with its source's meta left out: rebuilt, it reads and serializes exactly as before.
//!
//! Decoding never trusts a length: every read is bounds-checked and bad bytes are an error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::event::{Event, Source, Text};

const VERSION: u8 = 1;

/// Distinct decoded sources kept for sharing; the cache starts over beyond this.
const SOURCE_CACHE: usize = 4096;

/// Distinct `input_type` / `stream` names interned beyond the built-in ones.
const INTERN_LIMIT: usize = 64;

/// Why a payload is not an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown record version {0} (written by a newer logferry?)")]
    Version(u8),
    #[error("record ends early: needed {needed} more bytes for {what}")]
    Short { what: &'static str, needed: usize },
    #[error("invalid UTF-8 in {0}")]
    Utf8(&'static str),
    #[error("invalid {what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("bad presence tag {0}")]
    Tag(u8),
    #[error("{0} trailing bytes after the event")]
    Trailing(usize),
}

/// Encodes events, reusing the bytes of sources already seen.
#[derive(Default)]
pub struct Encoder {
    /// (source, whether its meta is included, encoded bytes); a handful per batch at most.
    sources: Vec<(Arc<Source>, bool, Vec<u8>)>,
}

impl Encoder {
    /// Appends the payload of `e` to `out`.
    pub fn encode(&mut self, e: &Event, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.extend_from_slice(&e.timestamp.to_le_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.push(e.flags);
        let live = e.meta_is_live();
        let idx = match self
            .sources
            .iter()
            .position(|(s, l, _)| Arc::ptr_eq(s, &e.source) && *l == live)
        {
            Some(i) => i,
            None => {
                if self.sources.len() >= 16 {
                    self.sources.clear();
                }
                let mut bytes = Vec::with_capacity(128);
                encode_source(&e.source, live, &mut bytes);
                self.sources.push((e.source.clone(), live, bytes));
                self.sources.len() - 1
            }
        };
        let src = &self.sources[idx].2;
        put_len(out, src.len());
        out.extend_from_slice(src);
        match &e.message {
            Some(m) => {
                out.push(1);
                put_bytes(out, m.as_bytes());
            }
            None => out.push(0),
        }
        if e.fields_is_empty() {
            put_len(out, 0);
        } else {
            let at = out.len();
            put_len(out, 0);
            e.write_fields_json(out);
            let n = out.len() - at - 4;
            out[at..at + 4].copy_from_slice(&(n as u32).to_le_bytes());
        }
    }
}

fn encode_source(s: &Source, with_meta: bool, out: &mut Vec<u8>) {
    put_bytes(out, s.input_id.as_bytes());
    put_bytes(out, s.input_type.as_bytes());
    put_bytes(out, s.host_name.as_bytes());
    put_opt(out, s.path.as_deref().map(str::as_bytes));
    put_bytes(out, s.file_key.as_bytes());
    put_opt(out, s.stream.map(str::as_bytes));
    match s.meta.as_deref().filter(|_| with_meta) {
        Some(meta) => {
            let json = serde_json::to_vec(meta).unwrap_or_else(|_| b"{}".to_vec());
            put_opt(out, Some(&json));
        }
        None => put_opt(out, None),
    }
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

fn put_opt(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            out.push(1);
            put_bytes(out, b);
        }
        None => out.push(0),
    }
}

/// Rebuilds events from payloads, sharing one `Arc<Source>` per distinct source.
#[derive(Default)]
pub struct Decoder {
    sources: HashMap<Box<[u8]>, Arc<Source>>,
}

impl Decoder {
    /// Decodes one payload. `payload` is a slice of a read buffer: the message is taken from
    /// it without a copy.
    pub fn decode(&mut self, payload: &Bytes) -> Result<Event, DecodeError> {
        let mut c = Cursor {
            buf: payload,
            pos: 0,
        };
        let version = c.u8("version")?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let timestamp = i64::from_le_bytes(c.array("timestamp")?);
        let offset = u64::from_le_bytes(c.array("offset")?);
        let flags = c.u8("flags")?;
        let src_len = c.len("source")?;
        let src_bytes = c.take(src_len, "source")?;
        let source = match self.sources.get(src_bytes) {
            Some(s) => s.clone(),
            None => {
                let s = Arc::new(decode_source(src_bytes)?);
                if self.sources.len() >= SOURCE_CACHE {
                    self.sources.clear();
                }
                self.sources.insert(src_bytes.into(), s.clone());
                s
            }
        };
        let message = match c.u8("message tag")? {
            0 => None,
            1 => {
                let n = c.len("message")?;
                let start = c.pos;
                c.take(n, "message")?;
                // Messages are valid UTF-8 when written: invalid bytes here are corruption.
                let (text, replaced) = Text::from_bytes_lossy(payload.slice(start..start + n));
                if replaced {
                    return Err(DecodeError::Utf8("message"));
                }
                Some(text)
            }
            t => return Err(DecodeError::Tag(t)),
        };
        let fields_len = c.len("fields")?;
        let fields = if fields_len == 0 {
            Map::new()
        } else {
            let raw = c.take(fields_len, "fields")?;
            serde_json::from_slice::<Map<String, Value>>(raw).map_err(|source| {
                DecodeError::Json {
                    what: "fields",
                    source,
                }
            })?
        };
        if c.pos != payload.len() {
            return Err(DecodeError::Trailing(payload.len() - c.pos));
        }
        let mut e = Event::new(source, Text::default(), offset, timestamp);
        e.message = message;
        e.flags = flags;
        e.set_fields(fields);
        Ok(e)
    }
}

fn decode_source(bytes: &[u8]) -> Result<Source, DecodeError> {
    let mut c = Cursor { buf: bytes, pos: 0 };
    let input_id = c.str("input.id")?;
    let input_type = intern(c.str("input.type")?);
    let host_name = c.str("host.name")?;
    let path = c.opt_str("log.file.path")?;
    let file_key = c.str("file key")?;
    let stream = c.opt_str("stream")?.map(intern);
    let meta = match c.opt("meta")? {
        Some(raw) => Some(Arc::new(
            serde_json::from_slice::<Map<String, Value>>(raw).map_err(|source| {
                DecodeError::Json {
                    what: "source meta",
                    source,
                }
            })?,
        )),
        None => None,
    };
    if c.pos != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - c.pos));
    }
    Ok(Source {
        input_id: Arc::from(input_id),
        input_type,
        host_name: Arc::from(host_name),
        path: path.map(Arc::from),
        file_key: Arc::from(file_key),
        meta,
        stream,
    })
}

/// `input_type` and `stream` are `&'static str` in a [`Source`]: the names logferry uses map
/// to their constants; any other is leaked once, up to a small bound (a corrupt buffer cannot
/// grow memory), then reads as `unknown`.
fn intern(s: &str) -> &'static str {
    for known in [
        "file",
        "docker",
        "kubernetes",
        "synthetic",
        "backfill",
        "stdout",
        "stderr",
        "",
    ] {
        if s == known {
            return known;
        }
    }
    static EXTRA: OnceLock<Mutex<Vec<&'static str>>> = OnceLock::new();
    let Ok(mut extra) = EXTRA.get_or_init(|| Mutex::new(Vec::new())).lock() else {
        return "unknown";
    };
    if let Some(found) = extra.iter().find(|e| **e == s) {
        return found;
    }
    if extra.len() >= INTERN_LIMIT {
        return "unknown";
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    extra.push(leaked);
    leaked
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(DecodeError::Short {
                what,
                needed: n - left,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn len(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?) as usize)
    }

    fn str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let n = self.len(what)?;
        std::str::from_utf8(self.take(n, what)?).map_err(|_| DecodeError::Utf8(what))
    }

    fn opt(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => {
                let n = self.len(what)?;
                Ok(Some(self.take(n, what)?))
            }
            t => Err(DecodeError::Tag(t)),
        }
    }

    fn opt_str(&mut self, what: &'static str) -> Result<Option<&'a str>, DecodeError> {
        match self.opt(what)? {
            Some(b) => std::str::from_utf8(b)
                .map(Some)
                .map_err(|_| DecodeError::Utf8(what)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FLAG_MULTILINE;

    fn source(meta: Option<Map<String, Value>>) -> Arc<Source> {
        Arc::new(Source {
            input_id: Arc::from("app"),
            input_type: "file",
            host_name: Arc::from("h1"),
            path: Some(Arc::from("/var/log/a.log")),
            file_key: Arc::from("fp:abc"),
            meta: meta.map(Arc::new),
            stream: Some("stderr"),
        })
    }

    fn round_trip(events: &[Event]) -> Vec<Event> {
        let mut enc = Encoder::default();
        let mut dec = Decoder::default();
        events
            .iter()
            .map(|e| {
                let mut out = Vec::new();
                enc.encode(e, &mut out);
                dec.decode(&Bytes::from(out)).unwrap()
            })
            .collect()
    }

    #[test]
    fn events_round_trip_with_shared_sources_and_meta() {
        let mut meta = Map::new();
        meta.insert("service".into(), Value::String("api".into()));
        let src = source(Some(meta));
        let mut a = Event::new(
            src.clone(),
            Text::from("first ✓"),
            7,
            1_700_000_000_000_000_001,
        );
        a.flags = FLAG_MULTILINE;
        a.insert("user.id", Value::from(42));
        let mut b = Event::new(src.clone(), Text::from("second"), 99, -5);
        b.remove("service");
        let mut c = Event::new(src.clone(), Text::from("third"), 120, 0);
        c.remove("message");
        let d = Event::new(src, Text::from("fourth"), 130, 0);
        let back = round_trip(&[a.clone(), b.clone(), c.clone(), d.clone()]);
        for (orig, got) in [a, b, c, d].iter().zip(&back) {
            assert_eq!(orig.to_value(), got.to_value());
            let (mut x, mut y) = (Vec::new(), Vec::new());
            orig.write_json(&mut x);
            got.write_json(&mut y);
            assert_eq!(x, y);
            assert_eq!(got.source.file_key.as_ref(), "fp:abc");
            assert_eq!(got.source.stream, Some("stderr"));
        }
        // a and b materialized the shared meta into their own fields; c and d still share it.
        assert!(Arc::ptr_eq(&back[0].source, &back[1].source));
        assert!(Arc::ptr_eq(&back[2].source, &back[3].source));
        assert!(back[3].source.meta.is_some() && back[3].meta_is_live());
        assert!(!back[0].meta_is_live());
        assert_eq!(back[3].get("service").unwrap().to_text(), "api");
        assert!(back[1].get("service").is_none());
        assert_eq!(back[0].get("service").unwrap().to_text(), "api");
    }

    #[test]
    fn bad_payloads_are_errors() {
        let mut enc = Encoder::default();
        let mut out = Vec::new();
        enc.encode(&Event::synthetic("x", "m"), &mut out);
        let mut dec = Decoder::default();
        for cut in 0..out.len() {
            assert!(dec.decode(&Bytes::copy_from_slice(&out[..cut])).is_err());
        }
        let mut extra = out.clone();
        extra.push(0);
        assert!(matches!(
            dec.decode(&Bytes::from(extra)),
            Err(DecodeError::Trailing(1))
        ));
        out[0] = 9;
        assert!(matches!(
            dec.decode(&Bytes::from(out)),
            Err(DecodeError::Version(9))
        ));
    }
}
