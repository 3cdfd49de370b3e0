//! The `loki` output end to end: the real binary tails files and pushes them to the in-repo
//! Loki endpoint of `loki_server.rs` (no Loki runs here; that server decodes the real
//! protobuf+snappy body with its own copy of push.proto and answers like Loki 3: 204, 429,
//! 500, and 400 with Loki's words for entries too old, too long or too far behind).
//!
//! What must hold: every line is either stored once or in the dead letters with Loki's words;
//! no line Loki stored is ever sent again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::loki_server::{Behaviour, Server};
use crate::util::{Sandbox, append_lines, line, read_ndjson, wait_until};

fn dead_letters(sb: &Sandbox, id: &str) -> Vec<serde_json::Value> {
    read_ndjson(&sb.join(&format!("data/dead_letter/{id}.ndjson")))
}

fn settled(server: &Server, sb: &Sandbox, n: usize) -> bool {
    server.state().stored.len() + dead_letters(sb, "loki").len() >= n
}

#[test]
fn pushes_protobuf_retries_and_dead_letters_what_loki_rejects() {
    let server = Server::start(Behaviour {
        rate_limit_first: 2,
        fail_requests: vec![4],
        max_line: 300,
        ..Behaviour::default()
    });
    let sb = Sandbox::new();
    sb.config(&format!(
        r#"
data_dir: {{dir}}/data
host_name: h1
api: {{ enabled: false }}
inputs:
  - id: app
    type: file
    paths: ["{{dir}}/logs/app-*.log"]
    start_at: beginning
    scan_interval: 100ms
    fields: {{ level: info, trace: {{ id: abc123 }} }}
  - id: web
    type: file
    paths: ["{{dir}}/logs/web-*.log"]
    start_at: beginning
    scan_interval: 100ms
outputs:
  - id: loki
    type: loki
    url: {}
    tenant_id: team-a
    labels: {{ job: "{{{{ input.id }}}}", host: "{{{{ host.name }}}}", level: "{{{{ level | default: \"unknown\" }}}}" }}
    structured_metadata: {{ trace_id: "{{{{ trace.id }}}}" }}
    batch: {{ max_events: 200, timeout: 50ms }}
    retry: {{ initial: 10ms, max: 100ms }}
"#,
        server.url
    ));
    let logs = sb.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut all: Vec<String> = Vec::new();
    let mut add = |file: &str, lines: Vec<String>| {
        append_lines(&logs.join(file), lines.clone());
        all.extend(lines);
    };
    // Phase 1: plain lines through 429s and a 500.
    add("app-1.log", (0..300).map(|i| line("app", i)).collect());
    add("web-1.log", (0..200).map(|i| line("web", i)).collect());
    let mut agent = sb.start();
    wait_until(Duration::from_secs(30), "phase 1 stored", || {
        settled(&server, &sb, 500)
    });
    // Phase 2: the distributor drops entries too old and too long.
    let mut p2: Vec<String> = (0..60).map(|i| line("app2", i)).collect();
    p2[10] = format!("{} OLD", p2[10]);
    p2[40] = format!("{} {}", p2[40], "L".repeat(400));
    add("app-1.log", p2);
    wait_until(Duration::from_secs(30), "phase 2 settled", || {
        settled(&server, &sb, 560)
    });
    // Phase 3: the ingester drops entries too far behind.
    let mut p3: Vec<String> = (0..60).map(|i| line("web3", i)).collect();
    p3[25] = format!("{} BEHIND", p3[25]);
    add("web-1.log", p3);
    wait_until(Duration::from_secs(30), "phase 3 settled", || {
        settled(&server, &sb, 620)
    });
    assert!(agent.stop().success(), "{}", agent.stderr());

    let s = server.state();
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert!(
        s.statuses.contains(&429) && s.statuses.contains(&500),
        "{:?}",
        s.statuses
    );
    assert!(s.tenants.iter().all(|t| t.as_deref() == Some("team-a")));
    assert!(
        s.content_types
            .iter()
            .all(|c| c == "application/x-protobuf")
    );
    // Nothing Loki stored was sent again.
    let mut stored: HashMap<&str, usize> = HashMap::new();
    for e in &s.stored {
        *stored.entry(e.line.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = stored.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    // Everything Loki rejected is in the dead letters with Loki's words, and nothing else.
    let dead = dead_letters(&sb, "loki");
    let dead_lines: HashSet<String> = dead
        .iter()
        .map(|d| d["event"]["message"].as_str().unwrap().to_owned())
        .collect();
    let rejected: HashSet<String> = s.rejected.iter().cloned().collect();
    assert_eq!(dead_lines, rejected);
    assert!(rejected.iter().any(|l| l.ends_with("OLD")));
    assert!(rejected.iter().any(|l| l.contains("LLLL")));
    assert!(rejected.iter().any(|l| l.ends_with("BEHIND")));
    for d in &dead {
        let reason = d["reason"].as_str().unwrap();
        let msg = d["event"]["message"].as_str().unwrap();
        // A line may be both too long and too old; Loki names the first check it fails.
        let words: &[&str] = if msg.starts_with("web3") {
            &["entry too far behind"]
        } else if msg.contains("LLLL") {
            &[
                "Max entry size '300' bytes exceeded for stream",
                "has timestamp too old",
            ]
        } else {
            &["has timestamp too old"]
        };
        assert!(words.iter().any(|w| reason.contains(w)), "{msg}: {reason}");
        assert_eq!(d["output"], "loki");
    }
    // Nothing lost: stored ∪ dead = all, disjoint.
    for l in &all {
        let st = stored.contains_key(l.as_str());
        assert!(st != dead_lines.contains(l), "{l}: stored={st}");
    }
    // Labels and metadata as configured; Loki's service_name added on its side.
    let app = s.stored.iter().find(|e| e.line == line("app", 0)).unwrap();
    assert_eq!(app.labels["job"], "app");
    assert_eq!(app.labels["host"], "h1");
    assert_eq!(app.labels["level"], "info");
    assert_eq!(app.metadata["trace_id"], "abc123");
    let web = s.stored.iter().find(|e| e.line == line("web", 0)).unwrap();
    assert_eq!(web.labels["level"], "unknown");
    assert!(web.metadata.is_empty());
}

#[test]
fn json_encoding_basic_auth_and_max_streams() {
    let server = Server::start(Behaviour {
        authorization: Some("Basic dTpw".into()), // u:p
        ..Behaviour::default()
    });
    let sb = Sandbox::new();
    sb.config(&format!(
        r#"
data_dir: {{dir}}/data
api: {{ enabled: false }}
inputs:
  - id: a
    type: file
    paths: ["{{dir}}/logs/a.log"]
    start_at: beginning
    scan_interval: 100ms
  - id: b
    type: file
    paths: ["{{dir}}/logs/b.log"]
    start_at: beginning
    scan_interval: 100ms
outputs:
  - id: loki
    type: loki
    url: {}/
    encoding: json
    line: json
    labels: {{ job: "{{{{ input.id }}}}" }}
    max_streams: 1
    auth: {{ username: u, password: p }}
    batch: {{ timeout: 50ms }}
    retry: {{ initial: 10ms, max: 100ms }}
"#,
        server.url
    ));
    let logs = sb.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    append_lines(&logs.join("a.log"), (0..50).map(|i| line("a", i)));
    append_lines(&logs.join("b.log"), (0..50).map(|i| line("b", i)));
    let mut agent = sb.start();
    wait_until(Duration::from_secs(30), "100 lines settled", || {
        settled(&server, &sb, 100)
    });
    assert!(agent.stop().success());
    let s = server.state();
    assert!(s.content_types.iter().all(|c| c == "application/json"));
    assert!(s.statuses.iter().all(|&c| c == 204), "{:?}", s.statuses);
    // One stream admitted, the other input's events dead-lettered by the guard.
    let jobs: HashSet<&str> = s.stored.iter().map(|e| e.labels["job"].as_str()).collect();
    assert_eq!(jobs.len(), 1);
    assert_eq!(s.stored.len(), 50);
    let dead = dead_letters(&sb, "loki");
    assert_eq!(dead.len(), 50);
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("max_streams (1) reached")
    );
    // `line: json`: the whole event is the line.
    let ev: serde_json::Value = serde_json::from_str(&s.stored[0].line).unwrap();
    assert_eq!(ev["input"]["id"], s.stored[0].labels["job"].as_str());
}

#[test]
fn bad_label_names_fail_the_config() {
    let sb = Sandbox::new();
    sb.config(
        r#"
data_dir: {dir}/data
inputs:
  - { id: app, type: file, paths: ["{dir}/*.log"] }
outputs:
  - id: loki
    type: loki
    url: http://127.0.0.1:3100
    labels: { "__job": "{{ input.id }}", "host-name": "{{ host.name }}" }
"#,
    );
    let (status, _out, err) = sb.run_cmd(&["check", "-c", "agent.yaml"]);
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(err.contains("outputs[0].labels"), "{err}");
}
