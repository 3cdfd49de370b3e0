//! The json-file line decoder: never panics; a decoder kept across the input's lines (arena,
//! timestamp cache) agrees with a fresh one on every line; and wherever serde_json reads a line
//! as an object with a string `log`, a known `stream` and a time we parse, the decoder agrees
//! on the message and on whether it is a partial piece (differential check).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use logferry::inputs::decode::{Decoder, decode_docker, parse_rfc3339};

fuzz_target!(|data: &[u8]| {
    let mut dec = Decoder::default();
    dec.set_compact(data.first().is_some_and(|b| b & 1 == 1));
    for raw in data.split(|&c| c == b'\n') {
        let line = Bytes::copy_from_slice(raw);
        let ours = dec.docker(&line);
        assert_eq!(ours, decode_docker(&line), "kept state changed the result");
        check(raw, ours);
    }
});

fn check(
    data: &[u8],
    ours: Result<logferry::inputs::decode::Decoded, logferry::inputs::decode::DecodeError>,
) {
    let Ok(serde_json::Value::Object(o)) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let (
        Some(serde_json::Value::String(log)),
        Some(serde_json::Value::String(stream)),
        Some(serde_json::Value::String(time)),
    ) = (o.get("log"), o.get("stream"), o.get("time"))
    else {
        return;
    };
    if !(stream == "stdout" || stream == "stderr") || parse_rfc3339(time.as_bytes()).is_none() {
        return;
    }
    let d = ours.expect("serde_json reads this line; the decoder must too");
    let mut want = log.as_str();
    let partial = !want.ends_with('\n');
    if !partial {
        want = &want[..want.len() - 1];
        want = want.strip_suffix('\r').unwrap_or(want);
    }
    assert_eq!(d.partial, partial);
    assert_eq!(d.text.as_ref(), want.as_bytes());
    assert_eq!(d.time, parse_rfc3339(time.as_bytes()).unwrap());
}
