//! Multiline joining: any lines, any preset or pattern config. Checks the partition invariant
//! (joining the events' lines gives back the input, offsets contiguous, limits respected).
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use logferry::processors::multiline::{Joiner, LineIn, MultilineConfig};

/// One joiner per selector byte, compiled once (regex compilation would dominate each run).
fn joiners() -> &'static Vec<Joiner> {
    static J: OnceLock<Vec<Joiner>> = OnceLock::new();
    J.get_or_init(|| (0..=255u8).map(build).collect())
}

fn build(sel: u8) -> Joiner {
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
    let mut cfg = rule;
    cfg["max_lines"] = max_lines(sel).into();
    cfg["max_bytes"] = (64 + usize::from(sel) * 4).into();
    let cfg = serde_json::from_value::<MultilineConfig>(cfg).expect("valid config");
    cfg.joiner(1 << 20).expect("valid joiner")
}

fn max_lines(sel: u8) -> usize {
    usize::from(sel >> 3) + 1
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let max_lines = max_lines(sel);
    let mut j = joiners()[usize::from(sel)].clone();
    let lines: Vec<&[u8]> = rest.split(|b| *b == b'\n').collect();
    let mut out = Vec::new();
    let mut off = 0u64;
    let now = Instant::now();
    for l in &lines {
        let end = off + l.len() as u64 + 1;
        j.push(
            LineIn {
                text: Bytes::copy_from_slice(l),
                offset: off,
                end,
                truncated: false,
            },
            now,
            &mut out,
        );
        off = end;
    }
    j.flush_into(&mut out);
    let joined: Vec<&[u8]> = out.iter().map(|e| e.text.as_ref()).collect();
    assert_eq!(
        joined.join(&b'\n'),
        rest,
        "events do not partition the lines"
    );
    assert_eq!(out.iter().map(|e| e.lines).sum::<usize>(), lines.len());
    let mut expect = 0;
    for e in &out {
        assert_eq!(e.offset, expect);
        assert!(e.lines <= max_lines);
        expect = e.end;
    }
});
