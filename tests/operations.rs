//! Operating the agent: SIGHUP reload, the HTTP API (/health, /status, /metrics), `status`.

use std::time::Duration;

use crate::util::{
    Sandbox, app_config_with_api, append_lines, free_port, line, message_counts, read_ndjson,
    wait_until,
};

fn config(port: u16, with_second_input: bool, out_name: &str) -> String {
    let more = if with_second_input {
        r#"  - id: more
    type: file
    paths: ["{dir}/more/*.log"]
    start_at: beginning
    scan_interval: 100ms"#
    } else {
        ""
    };
    app_config_with_api(
        &format!(r#"{{ listen: "127.0.0.1:{port}" }}"#),
        "",
        more,
        &format!(
            r#"  - id: out
    type: file
    path: "{{dir}}/{out_name}"
    batch: {{ max_events: 200, timeout: 50ms }}"#
        ),
    )
}

fn all_events(sb: &Sandbox) -> Vec<serde_json::Value> {
    let mut v = read_ndjson(&sb.join("out-a.ndjson"));
    v.extend(read_ndjson(&sb.join("out-b.ndjson")));
    v
}

#[test]
fn sighup_adds_an_input_and_changes_an_output_without_loss_or_reshipping() {
    let sb = Sandbox::new();
    let port = free_port();
    sb.config(&config(port, false, "out-a.ndjson"));
    std::fs::create_dir_all(sb.join("logs")).unwrap();
    std::fs::create_dir_all(sb.join("more")).unwrap();
    let log = sb.join("logs/app.log");
    let mut expected: Vec<String> = (0..300).map(|i| line("before", i)).collect();
    append_lines(&log, expected.clone());
    let mut agent = sb.start();
    wait_until(Duration::from_secs(30), "lines before the reload", || {
        all_events(&sb).len() >= 300
    });
    // New config: a second input, and the output writes elsewhere.
    sb.config(&config(port, true, "out-b.ndjson"));
    agent.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(30), "the reload is applied", || {
        agent.stderr().contains("configuration reloaded")
    });
    let after: Vec<String> = (0..200).map(|i| line("after", i)).collect();
    append_lines(&log, after.clone());
    let more: Vec<String> = (0..100).map(|i| line("more", i)).collect();
    append_lines(&sb.join("more/m.log"), more.clone());
    expected.extend(after);
    expected.extend(more);
    wait_until(
        Duration::from_secs(30),
        "every line after the reload",
        || all_events(&sb).len() >= expected.len(),
    );
    assert!(agent.stop().success());
    let events = all_events(&sb);
    let counts = message_counts(&events);
    for m in &expected {
        assert_eq!(counts.get(m).copied().unwrap_or(0), 1, "{m} exactly once");
    }
    assert_eq!(events.len(), expected.len());
    // The changed output got what came after the reload.
    let b = message_counts(&read_ndjson(&sb.join("out-b.ndjson")));
    assert!(b.contains_key(&line("after", 0)) && b.contains_key(&line("more", 99)));
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one_running() {
    let sb = Sandbox::new();
    let port = free_port();
    sb.config(&config(port, false, "out-a.ndjson"));
    std::fs::create_dir_all(sb.join("logs")).unwrap();
    let log = sb.join("logs/app.log");
    append_lines(&log, (0..50).map(|i| line("one", i)));
    let mut agent = sb.start();
    wait_until(Duration::from_secs(30), "first lines", || {
        all_events(&sb).len() >= 50
    });
    sb.config("inputs:\n  - id: app\n    type: file\n    pathz: nope\n");
    agent.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(30), "the reload is rejected", || {
        agent.stderr().contains("reload rejected")
    });
    assert!(agent.stderr().contains("pathz"), "the errors are logged");
    append_lines(&log, (0..50).map(|i| line("two", i)));
    wait_until(
        Duration::from_secs(30),
        "lines after the rejected reload",
        || all_events(&sb).len() >= 100,
    );
    assert!(agent.is_running());
    assert!(agent.stop().success());
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status: u16 = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of a Prometheus sample with exactly these labels (order-insensitive).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (lhs, value) = l.rsplit_once(' ')?;
        let (n, rest) = match lhs.split_once('{') {
            Some((n, r)) => (n, r.trim_end_matches('}')),
            None => (lhs, ""),
        };
        if n != name {
            return None;
        }
        let mut have: Vec<(String, String)> = rest
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            })
            .collect();
        have.sort();
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        want.sort();
        (have == want).then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn health_status_and_metrics_match_what_was_shipped() {
    let sb = Sandbox::new();
    let port = free_port();
    sb.config(&config(port, false, "out-a.ndjson"));
    std::fs::create_dir_all(sb.join("logs")).unwrap();
    let lines: Vec<String> = (0..400).map(|i| line("m", i)).collect();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    append_lines(&sb.join("logs/app.log"), lines);
    let mut agent = sb.start();
    wait_until(Duration::from_secs(30), "the API answers", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    wait_until(Duration::from_secs(30), "every line shipped", || {
        all_events(&sb).len() >= 400
    });
    let (code, body) = http_get(port, "/health");
    assert_eq!(code, 200, "{body}");
    wait_until(Duration::from_secs(10), "metrics settle", || {
        let (_, m) = http_get(port, "/metrics");
        metric(
            &m,
            "logferry_output_events_total",
            &[("output", "out"), ("result", "sent")],
        ) == Some(400.0)
    });
    let (_, m) = http_get(port, "/metrics");
    assert_eq!(
        metric(&m, "logferry_input_events_total", &[("input", "app")]),
        Some(400.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "logferry_input_bytes_total", &[("input", "app")]),
        Some(bytes as f64)
    );
    assert_eq!(
        metric(
            &m,
            "logferry_output_events_total",
            &[("output", "out"), ("result", "dead_letter")]
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &m,
            "logferry_output_events_total",
            &[("output", "out"), ("result", "dropped")]
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "logferry_output_retries_total", &[("output", "out")]),
        Some(0.0)
    );
    assert!(metric(&m, "logferry_buffer_events", &[("output", "out")]).is_some());
    assert!(metric(&m, "logferry_files_open", &[("input", "app")]).is_some());
    assert!(metric(&m, "logferry_input_lag_bytes", &[("input", "app")]).is_some());
    assert!(
        m.contains("logferry_output_request_seconds_bucket"),
        "histogram exported: {m}"
    );
    // /status: the file, acknowledged to its end.
    wait_until(
        Duration::from_secs(10),
        "status shows the file caught up",
        || {
            let (_, s) = http_get(port, "/status");
            let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
            v["inputs"][0]["files"][0]["offset"] == serde_json::json!(bytes)
                && v["inputs"][0]["files"][0]["bytes_behind"] == 0
        },
    );
    let (_, s) = http_get(port, "/status");
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(v["outputs"][0]["id"], "out");
    assert_eq!(v["outputs"][0]["failing"], false);
    assert!(v["outputs"][0]["last_success_at"].is_string());
    // `logferry status` prints the tables and exits 0 (healthy).
    let (st, out, err) = sb.run_cmd(&["status", "--api", &format!("127.0.0.1:{port}")]);
    assert!(st.success(), "{out}{err}");
    assert!(
        out.contains("app.log") && out.contains("out") && out.contains("healthy"),
        "{out}"
    );
    assert!(agent.stop().success());
    // Unreachable agent: exit 1.
    let (st, _o, err) = sb.run_cmd(&["status", "--api", &format!("127.0.0.1:{port}")]);
    assert_eq!(st.code(), Some(1), "{err}");
}
