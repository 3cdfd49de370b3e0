//! Encoding one Lumberjack v2 window, byte for byte as Filebeat's go-lumber client writes it:
//! a `2W` window frame with the event count, then one `2J` JSON frame per event with sequence
//! numbers `1..=n` (they restart at 1 in every window), all of the `2J` frames wrapped in one
//! `2C` zlib frame when `compression_level` is above 0.
//!
//! Each event's JSON is written straight into the request buffer (no intermediate `String`),
//! with an `@metadata` object that Logstash pipelines use the way they use Filebeat's
//! (`%{[@metadata][beat]}`); Logstash strips `@metadata` before indexing.

use std::io::Write;

use flate2::Compression;
use flate2::write::ZlibEncoder;

use crate::event::{Event, MetaCache};

pub const VERSION: u8 = b'2';
pub const WINDOW: u8 = b'W';
pub const JSON: u8 = b'J';
pub const COMPRESSED: u8 = b'C';

const METADATA: &[u8] = concat!(
    ",\"@metadata\":{\"beat\":\"logferry\",\"type\":\"_doc\",\"version\":\"",
    env!("CARGO_PKG_VERSION"),
    "\"}}"
)
.as_bytes();

/// Reusable buffers for encoding windows (one per connection, so encoding allocates only
/// while the buffers grow).
#[derive(Debug, Default)]
pub struct WindowEncoder {
    frames: Vec<u8>,
}

impl WindowEncoder {
    pub fn new() -> WindowEncoder {
        WindowEncoder::default()
    }

    /// Clears `out` and writes the window for `events` into it.
    pub fn encode(&mut self, events: &[Event], compression_level: u32, out: &mut Vec<u8>) {
        out.clear();
        out.push(VERSION);
        out.push(WINDOW);
        out.extend_from_slice(&(events.len() as u32).to_be_bytes());
        if compression_level == 0 {
            write_json_frames(events, out);
            return;
        }
        self.frames.clear();
        write_json_frames(events, &mut self.frames);
        out.push(VERSION);
        out.push(COMPRESSED);
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let mut z = ZlibEncoder::new(&mut *out, Compression::new(compression_level.min(9)));
        // Writing into a Vec cannot fail; if it ever did the frame length below would be
        // wrong and the server would reject the window, which is then retried.
        let _ = z.write_all(&self.frames);
        let _ = z.finish();
        let len = (out.len() - len_at - 4) as u32;
        out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// Appends one `2J` frame per event, numbered from 1.
pub fn write_json_frames(events: &[Event], out: &mut Vec<u8>) {
    let mut meta = MetaCache::default();
    for (i, e) in events.iter().enumerate() {
        out.push(VERSION);
        out.push(JSON);
        out.extend_from_slice(&(i as u32 + 1).to_be_bytes());
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        write_event(e, out, &mut meta);
        let len = (out.len() - start) as u32;
        out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// The event's ECS JSON with `@metadata` added as its last member.
pub fn write_event(e: &Event, out: &mut Vec<u8>, meta: &mut MetaCache) {
    let start = out.len();
    e.write_json_cached(out, meta);
    if out.len() > start + 1 && out.last() == Some(&b'}') {
        out.pop();
        out.extend_from_slice(METADATA);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read;

    fn be32(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Parses `2J` frames: (seq, json).
    fn parse_frames(mut b: &[u8]) -> Vec<(u32, serde_json::Value)> {
        let mut v = Vec::new();
        while !b.is_empty() {
            assert_eq!(&b[..2], b"2J");
            let seq = be32(&b[2..]);
            let len = be32(&b[6..]) as usize;
            v.push((seq, serde_json::from_slice(&b[10..10 + len]).unwrap()));
            b = &b[10 + len..];
        }
        v
    }

    #[test]
    fn plain_and_compressed_windows() {
        let events: Vec<Event> = (0..5)
            .map(|i| Event::synthetic("app", &format!("line {i}")))
            .collect();
        let mut enc = WindowEncoder::new();
        let mut out = Vec::new();
        enc.encode(&events, 0, &mut out);
        assert_eq!(&out[..2], b"2W");
        assert_eq!(be32(&out[2..]), 5);
        let frames = parse_frames(&out[6..]);
        assert_eq!(frames.len(), 5);
        for (i, (seq, v)) in frames.iter().enumerate() {
            assert_eq!(*seq, i as u32 + 1);
            assert_eq!(v["message"], format!("line {i}"));
            assert_eq!(v["@metadata"]["beat"], "logferry");
            assert_eq!(v["input"]["id"], "app");
        }
        let plain = out.clone();
        enc.encode(&events, 3, &mut out);
        assert_eq!(&out[6..8], b"2C");
        let len = be32(&out[8..]) as usize;
        assert_eq!(out.len(), 12 + len);
        let mut inflated = Vec::new();
        ZlibDecoder::new(&out[12..])
            .read_to_end(&mut inflated)
            .unwrap();
        assert_eq!(inflated, plain[6..]);
    }
}
