//! Timestamp parsing: any value against every kind of format and zone; never panics, and the
//! processor keeps the event (flagging it when nothing fits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry::event::{Event, FLAG_TIMESTAMP_FAILED};
use logferry::processors::timestamp::fuzz_parse;
use logferry::processors::{Chain, ProcessorConfig};

const FORMATS: &[&str] = &[
    "rfc3339",
    "unix",
    "unix_ms",
    "unix_us",
    "unix_ns",
    "%d/%b/%Y:%H:%M:%S %z",
    "%b %e %H:%M:%S",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d",
    "%s",
];
const ZONES: &[&str] = &["UTC", "Local", "+02:00", "-11:30"];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let value = String::from_utf8_lossy(rest);
    let format = FORMATS[usize::from(sel) % FORMATS.len()];
    let zone = ZONES[usize::from(sel >> 4) % ZONES.len()];
    let _ = fuzz_parse(format, &value, zone);
    let cfg = serde_json::json!([{ "timestamp": {
        "field": "message", "formats": [format], "timezone": zone
    }}]);
    let cfgs: Vec<ProcessorConfig> = serde_json::from_value(cfg).expect("valid config");
    let mut chain = Chain::build(&cfgs, "fuzz").expect("valid chain");
    let mut events = vec![Event::synthetic("fuzz", &value)];
    let read_time = events[0].timestamp;
    chain.run(&mut events);
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert!(e.flags & FLAG_TIMESTAMP_FAILED == 0 || e.timestamp == read_time);
});
