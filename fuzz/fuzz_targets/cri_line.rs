//! The CRI line decoder: never panics; a decoder kept across the input's lines (timestamp
//! cache) agrees with a fresh one on every line; a decoded message is the tail of the line,
//! after a time, a known stream and a tag that says partial (`P`) or full (`F`), and the time
//! is what a fresh parse of the first field gives.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use logferry::inputs::decode::{Decoder, STDERR, decode_cri, parse_rfc3339};

fuzz_target!(|data: &[u8]| {
    let mut dec = Decoder::default();
    for raw in data.split(|&c| c == b'\n') {
        let line = Bytes::copy_from_slice(raw);
        let ours = dec.cri(&line);
        assert_eq!(ours, decode_cri(&line), "kept state changed the result");
        if let Ok(d) = ours {
            assert!(raw.ends_with(&d.text));
            let prefix = &raw[..raw.len() - d.text.len()];
            let mut parts = prefix.splitn(3, |&c| c == b' ');
            let time = parts.next().unwrap_or_default();
            assert_eq!(parse_rfc3339(time), Some(d.time));
            let stream = parts.next().unwrap_or_default();
            let want: &[u8] = if d.stream == STDERR {
                b"stderr"
            } else {
                b"stdout"
            };
            assert_eq!(stream, want);
            let tag = parts.next().unwrap_or_default();
            assert!(tag.starts_with(if d.partial { b"P" } else { b"F" }));
        }
    }
});
