//! The Elasticsearch output end to end: the real binary tails real files and ships to the
//! in-repo fake cluster of `es_server.rs` (no real Elasticsearch can run here; the fake speaks
//! the `_bulk` protocol exactly and injects the failures real clusters produce). Each test
//! compares the multiset of messages in the fake index with what was written: nothing lost,
//! and — where ids are idempotent or no failure can cause a redelivery — nothing twice.

use std::time::Duration;

use crate::es_server::{FakeEs, Faults, Flavor};
use crate::util::{
    Appender, Rng, Sandbox, app_config, append_lines, counts, free_port, line, read_ndjson,
    wait_until, write_lines,
};

const LIMIT: Duration = Duration::from_secs(60);

/// A config: one file input `app` over `{dir}/logs/*.log`, one `es` output with `out`.
fn config(sb: &Sandbox, out: &str) {
    let batch = if out.contains("batch:") {
        ""
    } else {
        "    batch: { max_events: 200, timeout: 50ms }\n"
    };
    sb.config(&app_config(
        "",
        "    fields: { service: api }",
        &format!(
            "  - id: es\n    type: elasticsearch\n    retry: {{ initial: 20ms, max: 300ms }}\n{batch}{out}"
        ),
    ));
}

fn wait_docs(es: &FakeEs, n: usize) {
    wait_until(LIMIT, &format!("{n} documents in the fake index"), || {
        es.doc_count() >= n
    });
}

fn dead_letters(sb: &Sandbox) -> Vec<serde_json::Value> {
    read_ndjson(&sb.join("data/dead_letter/es.ndjson"))
}

#[test]
fn ships_gzip_with_basic_auth_and_an_index_template() {
    let es = FakeEs::start_with(
        Flavor::Es8,
        Some("Basic ZWxhc3RpYzpzM2NyZXQ=".to_owned()),
        None,
    );
    let sb = Sandbox::new();
    config(
        &sb,
        &format!(
            "    hosts: [\"{}\"]\n    index: \"app-{{{{ service }}}}-%Y.%m.%d\"\n    auth: {{ username: elastic, password: \"${{ES_PASSWORD}}\" }}\n    compression: gzip\n",
            es.url()
        ),
    );
    let lines = write_lines(&sb, "a.log", "a", 1000);
    let mut agent = sb.start_with_env(&[("ES_PASSWORD", "s3cret")]);
    wait_docs(&es, 1000);
    assert_eq!(es.message_counts(), counts(&lines));
    let docs = es.docs();
    let today = chrono_like_today();
    assert!(
        docs.iter().all(|d| d.index == format!("app-api-{today}")),
        "index from the template: {}",
        docs[0].index
    );
    assert_eq!(
        docs[0].source["log"]["file"]["path"],
        sb.join("logs/a.log").display().to_string()
    );
    let seen = es.seen();
    assert!(seen.gzip_requests > 0 && seen.gzip_requests == seen.bulk_requests);
    assert_eq!(seen.unauthorized, 0);
    assert!(agent.stop().success());
    let stderr = agent.stderr();
    assert!(
        stderr.contains("Elasticsearch 8.15.0"),
        "version probe logged: {stderr}"
    );
    assert!(!stderr.contains("s3cret"), "the password is never logged");
}

/// `YYYY.MM.DD` of now, UTC (what `%Y.%m.%d` renders for freshly read lines).
fn chrono_like_today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (y, m, d) = logferry::event::civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}.{m:02}.{d:02}")
}

#[test]
fn data_stream_with_api_key_on_opensearch() {
    let es = FakeEs::start_with(
        Flavor::OpenSearch2,
        Some("ApiKey aWQ6a2V5".to_owned()),
        None,
    );
    let sb = Sandbox::new();
    config(
        &sb,
        &format!(
            "    hosts: [\"{}\"]\n    data_stream: {{ type: logs, dataset: app, namespace: default }}\n    auth: {{ api_key: \"id:key\" }}\n    compression: none\n    pipeline: enrich\n",
            es.url()
        ),
    );
    let lines = write_lines(&sb, "a.log", "ds", 300);
    let mut agent = sb.start();
    wait_docs(&es, 300);
    assert_eq!(es.message_counts(), counts(&lines));
    assert!(es.docs().iter().all(|d| d.index == "logs-app-default"));
    let seen = es.seen();
    assert_eq!(seen.gzip_requests, 0);
    assert!(
        seen.bulk_paths
            .iter()
            .all(|p| p.contains("pipeline=enrich"))
    );
    assert_eq!(seen.rejected, 0, "data streams got `create`");
    assert!(agent.stop().success());
    assert!(agent.stderr().contains("OpenSearch 2.11.1"));
}

#[test]
fn per_item_429_is_retried_and_mapping_errors_go_to_dead_letters() {
    let es = FakeEs::start(Flavor::Es8);
    es.set_faults(Faults {
        item_429: 150,
        reject_containing: Some("BADDOC".to_owned()),
        ..Faults::default()
    });
    let sb = Sandbox::new();
    config(
        &sb,
        &format!("    hosts: [\"{}\"]\n    index: logs\n", es.url()),
    );
    let good = write_lines(&sb, "a.log", "good", 600);
    let bad = write_lines(&sb, "b.log", "BADDOC", 20);
    let mut agent = sb.start();
    wait_docs(&es, 600);
    wait_until(LIMIT, "20 dead letters", || dead_letters(&sb).len() >= 20);
    assert_eq!(es.message_counts(), counts(&good), "each good line once");
    assert_eq!(es.seen().items_429, 150);
    let dead = dead_letters(&sb);
    assert_eq!(dead.len(), 20);
    let mut dead_msgs: Vec<String> = dead
        .iter()
        .map(|d| d["event"]["message"].as_str().unwrap().to_owned())
        .collect();
    dead_msgs.sort();
    assert_eq!(dead_msgs, bad);
    for d in &dead {
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.contains("400 mapper_parsing_exception: failed to parse field [message]")
                && reason.contains("caused by illegal_argument_exception"),
            "Elasticsearch's words: {reason}"
        );
        assert_eq!(d["output"], "es");
    }
    assert!(agent.stop().success());
}

#[test]
fn whole_request_503_is_retried() {
    let es = FakeEs::start(Flavor::Es8);
    es.set_faults(Faults {
        fail_503: 6,
        ..Faults::default()
    });
    let sb = Sandbox::new();
    config(
        &sb,
        &format!("    hosts: [\"{}\"]\n    index: logs\n", es.url()),
    );
    let lines = write_lines(&sb, "a.log", "x", 800);
    let mut agent = sb.start();
    wait_docs(&es, 800);
    assert_eq!(es.message_counts(), counts(&lines));
    assert_eq!(es.seen().whole_503, 6);
    assert!(dead_letters(&sb).is_empty());
    assert!(agent.stop().success());
}

#[test]
fn request_413_halves_the_batch_and_an_oversized_document_is_dead_lettered() {
    let es = FakeEs::start(Flavor::Es8);
    es.set_faults(Faults {
        body_limit: Some(16 * 1024),
        ..Faults::default()
    });
    let sb = Sandbox::new();
    config(
        &sb,
        &format!(
            "    hosts: [\"{}\"]\n    index: logs\n    compression: gzip\n",
            es.url()
        ),
    );
    let mut lines = write_lines(&sb, "a.log", "x", 400);
    let huge = format!("HUGE {}", "y".repeat(40 * 1024));
    append_lines(&sb.join("logs/a.log"), [huge.clone()]);
    let tail = (0..100).map(|i| line("tail", i)).collect::<Vec<_>>();
    append_lines(&sb.join("logs/a.log"), tail.clone());
    lines.extend(tail);
    let mut agent = sb.start();
    wait_docs(&es, lines.len());
    wait_until(LIMIT, "the oversized document in the dead letters", || {
        !dead_letters(&sb).is_empty()
    });
    assert_eq!(es.message_counts(), counts(&lines));
    assert!(es.seen().too_large > 1, "batches were split");
    let dead = dead_letters(&sb);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["event"]["message"], huge);
    assert!(dead[0]["reason"].as_str().unwrap().contains("413"));
    assert!(agent.stop().success());
}

#[test]
fn dropped_connections_and_slow_answers_lose_nothing_and_duplicate_nothing() {
    let es = FakeEs::start(Flavor::Es7);
    es.set_faults(Faults {
        drop_mid_request: 3,
        drop_after_index: 3,
        slow: 2,
        slow_for: Duration::from_secs(3),
        ..Faults::default()
    });
    let sb = Sandbox::new();
    config(
        &sb,
        &format!(
            "    hosts: [\"{}\"]\n    index: logs\n    idempotent: true\n    request_timeout: 700ms\n",
            es.url()
        ),
    );
    let lines = write_lines(&sb, "a.log", "x", 1500);
    let mut agent = sb.start();
    wait_docs(&es, 1500);
    wait_until(LIMIT, "every fault fired", || {
        let f = es.faults();
        f.drop_mid_request + f.drop_after_index + f.slow == 0
    });
    wait_until(LIMIT, "the agent to settle", || {
        // Redeliveries of what was indexed before a drop or a timeout come back as 409s.
        es.seen().conflicts >= 1
    });
    assert_eq!(es.message_counts(), counts(&lines), "exactly once");
    let seen = es.seen();
    assert_eq!(seen.dropped, 6);
    assert_eq!(seen.slow, 2);
    assert!(dead_letters(&sb).is_empty());
    assert!(agent.stop().success());
    assert!(agent.stderr().contains("Elasticsearch 7.17.22"));
}

#[test]
fn fails_over_to_a_healthy_host() {
    let es = FakeEs::start(Flavor::Es8);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let sb = Sandbox::new();
    config(
        &sb,
        &format!(
            "    hosts: [\"{dead}\", \"{}\"]\n    index: logs\n",
            es.url()
        ),
    );
    let lines = write_lines(&sb, "a.log", "x", 2000);
    let mut agent = sb.start();
    wait_docs(&es, 2000);
    assert_eq!(es.message_counts(), counts(&lines));
    assert!(agent.stop().success());
    assert!(agent.stderr().contains("version probe failed"));
}

#[test]
fn check_probe_reports_version_and_auth() {
    let es = FakeEs::start_with(Flavor::Es8, Some("Basic ZTpw".to_owned()), None);
    let sb = Sandbox::new();
    config(
        &sb,
        &format!(
            "    hosts: [\"{}\"]\n    auth: {{ username: e, password: p }}\n",
            es.url()
        ),
    );
    let cfg = sb.join("agent.yaml").display().to_string();
    let (st, out, _) = sb.run_cmd(&["check", "--probe", "-c", &cfg]);
    assert!(st.success(), "{out}");
    assert!(out.contains("Elasticsearch 8.15.0"), "{out}");
    config(
        &sb,
        &format!(
            "    hosts: [\"{}\"]\n    auth: {{ username: e, password: wrong }}\n",
            es.url()
        ),
    );
    let (st, out, _) = sb.run_cmd(&["check", "--probe", "-c", &cfg]);
    assert_eq!(st.code(), Some(1), "{out}");
    assert!(out.contains("authentication failed (401)"), "{out}");
    assert!(!out.contains("wrong"));
}

/// Peak resident memory (VmHWM) of a process, in KiB.
fn vm_hwm_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn backlog_while_the_output_is_down_keeps_memory_bounded() {
    let es = FakeEs::start(Flavor::Es8);
    es.set_down(true);
    let sb = Sandbox::new();
    config(
        &sb,
        &format!(
            "    hosts: [\"{}\"]\n    index: logs\n    compression: gzip\n    batch: {{ max_events: 2000 }}\n",
            es.url()
        ),
    );
    // 200,000 lines of ~250 bytes (50 MB) written while the cluster is down.
    let path = sb.join("logs/big.log");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let pad = "p".repeat(220);
    let n = 200_000;
    for chunk in 0..20 {
        append_lines(
            &path,
            (chunk * 10_000..(chunk + 1) * 10_000).map(|i| format!("backlog {i:07} {pad}")),
        );
    }
    let mut agent = sb.start();
    // Let it fill its buffer and retry against the down cluster for a while.
    let started = std::time::Instant::now();
    while es.seen().refused < 15 {
        if started.elapsed() > LIMIT || !agent.is_running() {
            panic!(
                "no retries against the down cluster: {:?}\n{}",
                es.seen(),
                agent.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let down_hwm = vm_hwm_kib(agent.pid());
    es.set_down(false);
    wait_until(Duration::from_secs(180), "the backlog delivered", || {
        es.doc_count() >= n
    });
    let hwm = vm_hwm_kib(agent.pid());
    eprintln!(
        "backlog of {n} lines: VmHWM {} KiB while down, {} KiB after delivery",
        down_hwm, hwm
    );
    let msgs = es.message_counts();
    assert_eq!(msgs.len(), n, "every line arrived");
    assert!(msgs.values().all(|&c| c == 1), "each once");
    // A generous bound, not a performance assertion: the figure is in docs/benchmarks.md.
    assert!(hwm < 200 * 1024, "peak RSS {hwm} KiB");
    assert!(agent.stop().success());
}

/// Twelve `kill -9`s at random moments (replay with `ES_KILL_SEED`) while a writer keeps
/// appending, with a disk buffer in front of the output: every line reaches the index, and
/// with `idempotent: true` each exactly once — a redelivery after a kill (a line shipped but
/// not yet acknowledged in the buffer or the positions) is a harmless 409 on `create`.
#[test]
fn kill9_loops_with_idempotent_ids_leave_zero_duplicates() {
    let es = FakeEs::start(Flavor::Es8);
    let sb = Sandbox::new();
    // Positions are flushed every 5 s, so most kills leave delivered lines behind the saved
    // position: they are read, buffered and sent again.
    sb.config(&app_config(
        "positions: { flush_interval: 5s }",
        "",
        &format!(
            r#"  - id: es
    type: elasticsearch
    hosts: ["{}"]
    index: logs
    idempotent: true
    batch: {{ max_events: 100, timeout: 20ms }}
    retry: {{ initial: 20ms, max: 300ms }}
    buffer: {{ type: disk, max_bytes: 16MiB, segment_bytes: 256KiB, fsync: interval }}"#,
            es.url()
        ),
    ));
    let log = sb.join("logs/a.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let writer = Appender::start(&log, "k9", 50, Duration::from_millis(10), 100_000);
    let mut rng = Rng::from_env("ES_KILL_SEED");
    for _ in 0..12 {
        let mut agent = sb.start();
        // During start-up and recovery, or well into shipping.
        std::thread::sleep(Duration::from_millis(20 + rng.below(1200)));
        assert!(
            agent.is_running(),
            "agent exited early:\n{}",
            agent.stderr()
        );
        agent.kill9();
    }
    let written: Vec<String> = (0..writer.stop()).map(|n| line("k9", n)).collect();
    let mut agent = sb.start();
    wait_docs(&es, written.len());
    assert!(agent.stop().success(), "{}", agent.stderr());
    assert!(
        es.seen().conflicts > 0,
        "the kills caused redeliveries, answered with 409"
    );
    assert_eq!(es.doc_count(), written.len());
    assert_eq!(
        es.message_counts(),
        counts(&written),
        "zero duplicates, nothing lost"
    );
}

#[test]
fn tls_with_a_ca_file_and_a_client_certificate() {
    use crate::es_server::{TlsFront, tls_dir};
    let es = FakeEs::start(Flavor::Es8);
    let front = TlsFront::start(es.addr, true);
    let dir = tls_dir();
    let sb = Sandbox::new();
    let host = format!("https://localhost:{}", front.port);
    config(
        &sb,
        &format!(
            "    hosts: [\"{host}\"]\n    index: logs\n    tls: {{ ca_file: \"{dir}/ca.pem\", cert_file: \"{dir}/client.pem\", key_file: \"{dir}/client.key\" }}\n"
        ),
    );
    let cfg = sb.join("agent.yaml").display().to_string();
    let (st, out, _) = sb.run_cmd(&["check", "--probe", "-c", &cfg]);
    assert!(st.success(), "{out}");
    let lines = write_lines(&sb, "a.log", "tls", 300);
    let mut agent = sb.start();
    wait_docs(&es, 300);
    assert_eq!(es.message_counts(), counts(&lines));
    assert!(agent.stop().success());

    // Verification is on by default: without the CA the server is not trusted.
    config(
        &sb,
        &format!(
            "    hosts: [\"{host}\"]\n    tls: {{ cert_file: \"{dir}/client.pem\", key_file: \"{dir}/client.key\" }}\n"
        ),
    );
    let (st, out, _) = sb.run_cmd(&["check", "--probe", "-c", &cfg]);
    assert_eq!(st.code(), Some(1), "{out}");
    assert!(out.contains("UnknownIssuer"), "{out}");
    // Without the client certificate the server refuses the handshake.
    config(
        &sb,
        &format!("    hosts: [\"{host}\"]\n    tls: {{ ca_file: \"{dir}/ca.pem\" }}\n"),
    );
    let (st, out, _) = sb.run_cmd(&["check", "--probe", "-c", &cfg]);
    assert_eq!(st.code(), Some(1), "{out}");
    assert!(out.contains("CertificateRequired"), "{out}");
    // `verify: false` accepts the unknown issuer.
    config(
        &sb,
        &format!(
            "    hosts: [\"{host}\"]\n    tls: {{ verify: false, cert_file: \"{dir}/client.pem\", key_file: \"{dir}/client.key\" }}\n"
        ),
    );
    let (st, out, _) = sb.run_cmd(&["check", "--probe", "-c", &cfg]);
    assert!(st.success(), "{out}");
}
