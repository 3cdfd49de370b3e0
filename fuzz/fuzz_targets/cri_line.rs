//! The CRI line decoder: never panics; a decoded message is the tail of the line, after a
//! time, a known stream and a tag that says partial (`P`) or full (`F`).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use logferry::inputs::decode::{STDERR, decode_cri};

fuzz_target!(|data: &[u8]| {
    let line = Bytes::copy_from_slice(data);
    if let Ok(d) = decode_cri(&line) {
        assert!(data.ends_with(&d.text));
        let prefix = &data[..data.len() - d.text.len()];
        let mut parts = prefix.splitn(3, |&c| c == b' ');
        let _time = parts.next().unwrap_or_default();
        let stream = parts.next().unwrap_or_default();
        let want: &[u8] = if d.stream == STDERR { b"stderr" } else { b"stdout" };
        assert_eq!(stream, want);
        let tag = parts.next().unwrap_or_default();
        assert!(tag.starts_with(if d.partial { b"P" } else { b"F" }));
    }
});
