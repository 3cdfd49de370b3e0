//! The file input end to end: the real binary, real files, a `file` output.

use std::time::Duration;

use crate::util::{Sandbox, append_lines, line, message_counts, read_ndjson, wait_until};

const BASIC: &str = r#"
data_dir: {dir}/data
api: { enabled: false }
inputs:
  - id: app
    type: file
    paths: ["{dir}/logs/*.log"]
    start_at: beginning
    scan_interval: 100ms
    close_inactive: 1s
outputs:
  - id: out
    type: file
    path: "{dir}/out.ndjson"
    batch: { max_events: 500, timeout: 50ms }
"#;

fn wait_for_messages(sb: &Sandbox, n: usize) -> Vec<serde_json::Value> {
    let out = sb.join("out.ndjson");
    wait_until(Duration::from_secs(30), &format!("{n} events in out.ndjson"), || read_ndjson(&out).len() >= n);
    read_ndjson(&out)
}

#[test]
fn tails_files_to_file_output_with_ecs_fields() {
    let sb = Sandbox::new();
    sb.config(BASIC);
    let log = sb.join("logs/a.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    append_lines(&log, (0..50).map(|i| line("a", i)));
    let mut agent = sb.start();
    let events = wait_for_messages(&sb, 50);
    let e = &events[0];
    assert_eq!(e["message"], line("a", 0));
    assert_eq!(e["log"]["file"]["path"], log.display().to_string());
    assert_eq!(e["log"]["offset"], 0);
    assert_eq!(e["input"]["id"], "app");
    assert!(e["@timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(agent.stop().success());
}
