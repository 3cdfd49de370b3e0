//! Multiline joining: any lines, any preset or pattern config. Checks the partition invariant
//! (joining the events' lines gives back the input, offsets contiguous, limits respected).
#![no_main]

use std::time::Instant;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use logferry::processors::multiline::{LineIn, MultilineConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let rule = match sel % 8 {
        0 => serde_json::json!({ "preset": "java" }),
        1 => serde_json::json!({ "preset": "python" }),
        2 => serde_json::json!({ "preset": "go" }),
        3 => serde_json::json!({ "preset": "ruby" }),
        4 => serde_json::json!({ "pattern": r"^\s", "match": "after" }),
        5 => serde_json::json!({ "pattern": r"^\d{4}-", "negate": true, "match": "after" }),
        6 => serde_json::json!({ "pattern": r"\\$", "match": "before" }),
        _ => serde_json::json!({ "pattern": r"^$", "negate": true, "match": "before" }),
    };
    let max_lines = usize::from(sel >> 3) + 1;
    let mut cfg = rule;
    cfg["max_lines"] = max_lines.into();
    cfg["max_bytes"] = (64 + usize::from(sel) * 4).into();
    let Ok(cfg) = serde_json::from_value::<MultilineConfig>(cfg) else { return };
    let Ok(mut j) = cfg.joiner(1 << 20) else { return };
    let lines: Vec<&[u8]> = rest.split(|b| *b == b'\n').collect();
    let mut out = Vec::new();
    let mut off = 0u64;
    let now = Instant::now();
    for l in &lines {
        let end = off + l.len() as u64 + 1;
        j.push(LineIn { text: Bytes::copy_from_slice(l), offset: off, end, truncated: false }, now, &mut out);
        off = end;
    }
    j.flush_into(&mut out);
    let joined: Vec<&[u8]> = out.iter().map(|e| e.text.as_ref()).collect();
    assert_eq!(joined.join(&b'\n'), rest, "events do not partition the lines");
    assert_eq!(out.iter().map(|e| e.lines).sum::<usize>(), lines.len());
    let mut expect = 0;
    for e in &out {
        assert_eq!(e.offset, expect);
        assert!(e.lines <= max_lines);
        expect = e.end;
    }
});
