//! The disk buffer end to end: the real binary, a log file being written, `file` outputs.
//!
//! - kill -9 at random moments (seeded, the seed is printed; `DISK_KILL_SEED` replays one)
//!   while lines are appended: every line arrives at least once.
//! - a slow output (its `file` path lies under a regular FILE, so every open fails and the
//!   driver retries) with a disk buffer does not hold back a fast output fed by the same input;
//!   the file positions advance once events are durable in the disk buffer, so after a restart
//!   the backlog comes from the buffer, not from re-reading the file.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Appender, Rng, Sandbox, app_config, append_lines, line, wait_until};

/// Reads an NDJSON output that a killed agent may have left with a torn line: the next run
/// appends after the torn bytes, so a line can be `<torn part>{"@timestamp"...}`. The torn part
/// was never acknowledged (it is sent again); the event after it is kept.
fn read_output(path: &Path) -> (Vec<Value>, usize) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return (Vec::new(), 0);
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let mut events = Vec::new();
    let mut torn = 0;
    for l in complete.lines().filter(|l| !l.is_empty()) {
        match serde_json::from_str(l) {
            Ok(v) => events.push(v),
            Err(_) => {
                torn += 1;
                if let Some(i) = l.rfind("{\"@timestamp\"")
                    && let Ok(v) = serde_json::from_str(&l[i..])
                {
                    events.push(v);
                }
            }
        }
    }
    (events, torn)
}

fn counts(events: &[Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for e in events {
        if let Some(s) = e["message"].as_str() {
            *m.entry(s.to_owned()).or_default() += 1;
        }
    }
    m
}

fn kill_config(fsync: &str) -> String {
    app_config(
        "positions: { flush_interval: 200ms }",
        "",
        &format!(
            r#"  - id: out
    type: file
    path: "{{dir}}/out.ndjson"
    batch: {{ max_events: 300, timeout: 50ms }}
    buffer: {{ type: disk, max_bytes: 8MiB, segment_bytes: 128KiB, fsync: {fsync} }}"#
        ),
    )
}

#[test]
fn kill_9_at_random_moments_loses_nothing() {
    let mut rng = Rng::from_env("DISK_KILL_SEED");
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.join("logs")).unwrap();
    let log = sb.join("logs/app.log");
    let out = sb.join("out.ndjson");

    // The writer appends numbered lines the whole time the agent is being killed.
    let writer = Appender::start(&log, "k9", 40, Duration::from_millis(15), 200_000);

    let policies = ["always", "interval", "never"];
    let kills = 12;
    for k in 0..kills {
        sb.config(&kill_config(policies[k % policies.len()]));
        let mut agent = sb.start();
        // A random moment: during recovery and startup, or well into shipping.
        let delay = Duration::from_millis(20 + rng.below(900));
        std::thread::sleep(delay);
        assert!(
            agent.is_running(),
            "agent exited early:\n{}",
            agent.stderr()
        );
        agent.kill9();
    }
    let total = writer.stop();

    sb.config(&kill_config("always"));
    let mut agent = sb.start();
    let want: Vec<String> = (0..total).map(|i| line("k9", i)).collect();
    wait_until(
        Duration::from_secs(120),
        "every line after the kills",
        || {
            let c = counts(&read_output(&out).0);
            want.iter().all(|m| c.contains_key(m))
        },
    );
    assert!(agent.stop().success(), "{}", agent.stderr());
    let (events, torn) = read_output(&out);
    let c = counts(&events);
    let missing = want.iter().filter(|m| !c.contains_key(*m)).count();
    assert_eq!(missing, 0);
    let dups: usize = c.values().map(|n| n - 1).sum();
    let max_copies = c.values().copied().max().unwrap_or(0);
    let cut_tails = std::fs::read_dir(sb.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".stderr"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .matches("cutting a torn or corrupt tail")
                .count()
        })
        .sum::<usize>();
    eprintln!(
        "disk buffer kill -9 x{kills} (seed {}): {total} lines, 0 lost, {dups} duplicates, \
         {torn} torn output lines, {cut_tails} torn buffer tails cut on recovery, at most \
         {max_copies} copies of a line",
        rng.seed()
    );
    let segments = std::fs::read_dir(sb.join("data/buffers/out"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        .count();
    assert!(
        segments <= 2,
        "acknowledged segments are deleted ({segments} left)"
    );
}

const TWO_OUTPUTS: &str = r#"
data_dir: {dir}/data
api: { enabled: false }
shutdown_timeout: 2s
positions: { flush_interval: 200ms }
inputs:
  - id: app
    type: file
    paths: ["{dir}/logs/*.log"]
    start_at: beginning
    scan_interval: 100ms
outputs:
  - id: fast
    type: file
    path: "{dir}/fast.ndjson"
    batch: { max_events: 1000, timeout: 50ms }
    buffer: { type: memory, max_events: 2000 }
  - id: slow
    type: file
    path: "{dir}/blocked/slow.ndjson"
    batch: { max_events: 1000, timeout: 50ms }
    retry: { initial: 50ms, max: 300ms }
    buffer: { type: disk, max_bytes: 64MiB, segment_bytes: 512KiB }
"#;

#[test]
fn a_slow_output_with_a_disk_buffer_does_not_hold_back_a_fast_one() {
    let sb = Sandbox::new();
    sb.config(TWO_OUTPUTS);
    // The slow output's directory is a regular file: every open fails, the driver retries.
    // (Tests run as root, where a chmod 000 directory would not stop a write.)
    sb.write("blocked", "not a directory");
    std::fs::create_dir_all(sb.join("logs")).unwrap();
    let log = sb.join("logs/app.log");
    // Ten times what the fast output's memory buffer holds: with a memory buffer in front of
    // the slow output too, the input would stop after ~2000 events and the fast one with it.
    let total = 20_000;
    let want: Vec<String> = (0..total).map(|i| line("fanout", i)).collect();
    append_lines(&log, want.iter().cloned());
    let fast = sb.join("fast.ndjson");
    let slow = sb.join("blocked/slow.ndjson");

    let mut agent = sb.start();
    wait_until(
        Duration::from_secs(60),
        "the fast output to get every line",
        || read_output(&fast).0.len() >= total,
    );
    assert!(
        !slow.exists() && std::fs::metadata(sb.join("blocked")).unwrap().is_file(),
        "the slow output is still failing"
    );
    assert!(
        agent.stderr().contains("cannot create"),
        "the slow output retried"
    );
    let c = counts(&read_output(&fast).0);
    assert!(
        want.iter().all(|m| c.get(m) == Some(&1)),
        "fast: each line exactly once"
    );
    // The backlog is on disk, and the positions passed it (durable in the buffer).
    let end = std::fs::metadata(&log).unwrap().len();
    let positions_passed = || {
        let Ok(text) = std::fs::read_to_string(sb.join("data/positions.json")) else {
            return false;
        };
        let p: Value = serde_json::from_str(&text).unwrap();
        p["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["offset"] == end)
    };
    wait_until(
        Duration::from_secs(10),
        "positions at the end of the file",
        positions_passed,
    );

    // Stop while the slow output still fails: its backlog stays in the disk buffer.
    let started = Instant::now();
    assert!(agent.stop().success(), "{}", agent.stderr());
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!slow.exists());

    // Repair the slow output and restart: it gets everything from the buffer, while the file
    // is not read again (the fast output gets no duplicates).
    std::fs::remove_file(sb.join("blocked")).unwrap();
    std::fs::create_dir_all(sb.join("blocked")).unwrap();
    let mut agent = sb.start();
    wait_until(
        Duration::from_secs(60),
        "the slow output to catch up",
        || read_output(&slow).0.len() >= total,
    );
    let c = counts(&read_output(&slow).0);
    assert!(want.iter().all(|m| c.contains_key(m)), "slow: every line");
    let fast_events = read_output(&fast).0;
    assert_eq!(
        fast_events.len(),
        total,
        "the file was not re-read after restart"
    );
    let buf = sb.join("data/buffers/slow");
    wait_until(
        Duration::from_secs(10),
        "acknowledged segments deleted",
        || {
            std::fs::read_dir(&buf)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                .count()
                == 1
        },
    );
    assert!(agent.stop().success(), "{}", agent.stderr());
    let dups = read_output(&slow).0.len() - total;
    eprintln!("slow output: {total} lines from the disk buffer after restart, {dups} duplicates");
}
