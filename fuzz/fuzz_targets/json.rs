//! The json processor on any line, with and without expand_keys and a target: never panics,
//! never loses the event, and the event still encodes to valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry::event::Event;
use logferry::processors::{Chain, ProcessorConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let line = String::from_utf8_lossy(rest);
    let cfg = serde_json::json!([{ "json": {
        "target": if sel & 1 == 0 { "" } else { "doc" },
        "expand_keys": sel & 2 != 0,
        "overwrite_keys": sel & 4 != 0,
        "max_depth": 1 + usize::from(sel >> 3),
    }}]);
    let cfgs: Vec<ProcessorConfig> = serde_json::from_value(cfg).expect("valid config");
    let mut chain = Chain::build(&cfgs, "fuzz").expect("valid chain");
    let mut events = vec![Event::synthetic("fuzz", &line)];
    chain.run(&mut events);
    assert_eq!(events.len(), 1);
    let mut out = Vec::new();
    events[0].write_json(&mut out);
    serde_json::from_slice::<serde_json::Value>(&out).expect("the event encodes to valid JSON");
});
