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
    wait_until(
        Duration::from_secs(30),
        &format!("{n} events in out.ndjson"),
        || read_ndjson(&out).len() >= n,
    );
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

fn expect_exactly(events: &[serde_json::Value], expected: &[String]) {
    let got = message_counts(events);
    for m in expected {
        assert_eq!(
            got.get(m).copied().unwrap_or(0),
            1,
            "line {m:?} must arrive exactly once"
        );
    }
    assert_eq!(events.len(), expected.len(), "no extra events");
}

#[test]
fn rename_create_rotation_with_writer_on_old_handle() {
    let sb = Sandbox::new();
    sb.config(BASIC);
    std::fs::create_dir_all(sb.join("logs")).unwrap();
    let log = sb.join("logs/app.log");
    let mut expected = Vec::new();
    let first: Vec<String> = (0..100).map(|i| line("gen1", i)).collect();
    append_lines(&log, first.clone());
    expected.extend(first);
    let mut agent = sb.start();
    wait_for_messages(&sb, 100);
    // The writer keeps its handle; logrotate renames the file away (no longer matching *.log).
    let mut old = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::fs::rename(&log, sb.join("logs/app.log.1")).unwrap();
    use std::io::Write;
    let late: Vec<String> = (0..50).map(|i| line("late-on-old-handle", i)).collect();
    for l in &late {
        writeln!(old, "{l}").unwrap();
    }
    expected.extend(late);
    let second: Vec<String> = (0..80).map(|i| line("gen2", i)).collect();
    append_lines(&log, second.clone());
    expected.extend(second);
    wait_for_messages(&sb, expected.len());
    // More lines through the old handle after a while are still picked up.
    let later: Vec<String> = (0..20).map(|i| line("later-on-old-handle", i)).collect();
    for l in &later {
        writeln!(old, "{l}").unwrap();
    }
    expected.extend(later);
    let events = wait_for_messages(&sb, expected.len());
    assert!(agent.stop().success());
    expect_exactly(&read_ndjson(&sb.join("out.ndjson")), &expected);
    drop(events);
}

#[test]
fn copytruncate_reads_from_the_start_again() {
    let sb = Sandbox::new();
    sb.config(BASIC);
    std::fs::create_dir_all(sb.join("logs")).unwrap();
    let log = sb.join("logs/app.log");
    let first: Vec<String> = (0..100).map(|i| line("before", i)).collect();
    append_lines(&log, first.clone());
    let mut agent = sb.start();
    wait_for_messages(&sb, 100);
    // copytruncate: copy elsewhere (not matched), truncate in place, writer goes on.
    std::fs::copy(&log, sb.join("app.log.copy")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    let after: Vec<String> = (0..30).map(|i| line("after-truncate", i)).collect();
    append_lines(&log, after.clone());
    wait_for_messages(&sb, 130);
    assert!(agent.stop().success());
    let mut expected = first;
    expected.extend(after);
    expect_exactly(&read_ndjson(&sb.join("out.ndjson")), &expected);
}

/// Open descriptors of a process pointing at `path` (deleted files show " (deleted)").
fn fds_on(pid: i32, needle: &str) -> usize {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    rd.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains(needle))
        })
        .count()
}

#[test]
fn deleted_file_is_drained_and_its_handle_released() {
    let sb = Sandbox::new();
    sb.config(&BASIC.replace("close_inactive: 1s", "close_inactive: 1h"));
    std::fs::create_dir_all(sb.join("logs")).unwrap();
    let log = sb.join("logs/doomed.log");
    let lines: Vec<String> = (0..200).map(|i| line("doomed", i)).collect();
    append_lines(&log, lines.clone());
    let mut agent = sb.start();
    wait_for_messages(&sb, 200);
    let pid = agent.pid();
    wait_until(
        Duration::from_secs(10),
        "the agent holds the file open",
        || fds_on(pid, "doomed.log") == 1,
    );
    std::fs::remove_file(&log).unwrap();
    // Released although close_inactive is an hour: the disk space comes back.
    wait_until(
        Duration::from_secs(20),
        "the deleted file's handle is released",
        || fds_on(pid, "doomed.log") == 0,
    );
    assert!(agent.stop().success());
    expect_exactly(&read_ndjson(&sb.join("out.ndjson")), &lines);
}

#[test]
fn restart_after_sigterm_has_no_duplicates_and_no_loss() {
    let sb = Sandbox::new();
    sb.config(BASIC);
    std::fs::create_dir_all(sb.join("logs")).unwrap();
    let log = sb.join("logs/app.log");
    let mut expected = Vec::new();
    for round in 0..3 {
        let batch: Vec<String> = (0..500)
            .map(|i| line(&format!("round{round}"), i))
            .collect();
        append_lines(&log, batch.clone());
        expected.extend(batch);
        let mut agent = sb.start();
        wait_for_messages(&sb, expected.len());
        assert!(agent.stop().success(), "clean exit: {}", agent.stderr());
        // Lines written while the agent is down are shipped by the next run.
        let down: Vec<String> = (0..100).map(|i| line(&format!("down{round}"), i)).collect();
        append_lines(&log, down.clone());
        expected.extend(down);
    }
    let mut agent = sb.start();
    wait_for_messages(&sb, expected.len());
    assert!(agent.stop().success());
    expect_exactly(&read_ndjson(&sb.join("out.ndjson")), &expected);
}

#[test]
fn kill_9_mid_stream_loses_nothing() {
    let sb = Sandbox::new();
    sb.config(BASIC);
    std::fs::create_dir_all(sb.join("logs")).unwrap();
    let log = sb.join("logs/app.log");
    let total = 20_000;
    let all: Vec<String> = (0..total).map(|i| line("k9", i)).collect();
    let out = sb.join("out.ndjson");
    let mut written = 0;
    for round in 0..4 {
        let chunk = &all[written..written + total / 4];
        append_lines(&log, chunk.iter().cloned());
        written += chunk.len();
        let mut agent = sb.start();
        // Kill at a moment when part of the new chunk has arrived.
        let before = read_ndjson(&out).len();
        wait_until(
            Duration::from_secs(30),
            "some progress before the kill",
            || read_ndjson(&out).len() > before + round * 10,
        );
        agent.kill9();
    }
    let mut agent = sb.start();
    let counts_ok = || {
        let c = message_counts(&read_ndjson(&out));
        all.iter().all(|m| c.contains_key(m))
    };
    wait_until(
        Duration::from_secs(60),
        "every line after the kills",
        counts_ok,
    );
    assert!(agent.stop().success());
    let events = read_ndjson(&out);
    let dups = events.len() - total;
    eprintln!("kill -9 x4: {total} lines, {dups} duplicates (bounded by what was in flight)");
}

#[test]
fn a_3mib_line_is_cut_at_max_line_bytes_and_flagged() {
    let sb = Sandbox::new();
    sb.config(&BASIC.replace(
        "    start_at: beginning\n",
        "    start_at: beginning\n    max_line_bytes: 1MiB\n",
    ));
    std::fs::create_dir_all(sb.join("logs")).unwrap();
    let log = sb.join("logs/big.log");
    let huge = "y".repeat(3 * 1024 * 1024);
    append_lines(
        &log,
        vec![line("before-big", 0), huge, line("after-big", 0)],
    );
    let mut agent = sb.start();
    let events = wait_for_messages(&sb, 3);
    assert!(agent.stop().success());
    assert_eq!(events[0]["message"], line("before-big", 0));
    let big = events[1]["message"].as_str().unwrap();
    assert_eq!(big.len(), 1024 * 1024);
    assert_eq!(events[1]["log"]["flags"], serde_json::json!(["truncated"]));
    assert_eq!(events[2]["message"], line("after-big", 0));
    assert_eq!(
        events[2]["log"]["offset"],
        (line("before-big", 0).len() + 1 + 3 * 1024 * 1024 + 1) as u64
    );
}

#[test]
fn invalid_utf8_is_replaced_not_fatal() {
    let sb = Sandbox::new();
    sb.config(BASIC);
    let mut data = Vec::new();
    for i in 0..20 {
        data.extend_from_slice(line("pre", i).as_bytes());
        data.push(b'\n');
    }
    data.extend_from_slice(b"bad \xff\xfe bytes \xc3\n");
    data.extend_from_slice(b"good after\n");
    sb.write("logs/bin.log", &data);
    let mut agent = sb.start();
    let events = wait_for_messages(&sb, 22);
    assert!(agent.stop().success());
    assert_eq!(events[20]["message"], "bad \u{fffd}\u{fffd} bytes \u{fffd}");
    assert_eq!(events[21]["message"], "good after");
}

#[test]
fn last_line_without_newline_waits_for_it() {
    let sb = Sandbox::new();
    sb.config(BASIC);
    let log = sb.write(
        "logs/p.log",
        (0..20).map(|i| line("p", i) + "\n").collect::<String>() + "partial",
    );
    let mut agent = sb.start();
    wait_for_messages(&sb, 20);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        read_ndjson(&sb.join("out.ndjson")).len(),
        20,
        "the partial line is held"
    );
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    use std::io::Write;
    f.write_all(b" and done\n").unwrap();
    let events = wait_for_messages(&sb, 21);
    assert_eq!(events[20]["message"], "partial and done");
    assert!(agent.stop().success());
}

#[test]
fn a_thousand_files_at_once_are_all_shipped() {
    let sb = Sandbox::new();
    sb.config(
        &BASIC
            .replace("{dir}/logs/*.log", "{dir}/logs/**/*.log")
            .replace("max_events: 500", "max_events: 2000"),
    );
    let mut expected = Vec::new();
    for f in 0..1000 {
        let lines: Vec<String> = (0..20).map(|i| line(&format!("f{f:04}"), i)).collect();
        sb.write(
            &format!("logs/d{}/f{f:04}.log", f % 10),
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        );
        expected.extend(lines);
    }
    let mut agent = sb.start();
    wait_for_messages(&sb, expected.len());
    assert!(agent.stop().success());
    expect_exactly(&read_ndjson(&sb.join("out.ndjson")), &expected);
}

#[test]
fn start_at_end_skips_existing_content_but_reads_new_files_whole() {
    let sb = Sandbox::new();
    sb.config(&BASIC.replace("start_at: beginning", "start_at: end"));
    std::fs::create_dir_all(sb.join("logs")).unwrap();
    append_lines(&sb.join("logs/old.log"), (0..50).map(|i| line("old", i)));
    let mut agent = sb.start();
    // Wait until the agent follows old.log (its position is recorded).
    wait_until(Duration::from_secs(10), "old.log followed", || {
        std::fs::read_to_string(sb.join("data/positions.json")).is_ok_and(|s| s.contains("old.log"))
    });
    append_lines(&sb.join("logs/old.log"), (0..5).map(|i| line("old-new", i)));
    append_lines(&sb.join("logs/new.log"), (0..30).map(|i| line("new", i)));
    let events = wait_for_messages(&sb, 35);
    assert!(agent.stop().success());
    let c = message_counts(&events);
    assert!(!c.contains_key(&line("old", 0)));
    assert!(c.contains_key(&line("old-new", 4)) && c.contains_key(&line("new", 0)));
    assert_eq!(events.len(), 35);
}
