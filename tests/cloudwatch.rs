//! CloudWatch Logs against a real AWS API emulator: moto's server (from PyPI), which speaks
//! the AWS JSON 1.1 protocol of the real service. `scripts/setup-moto` (run by
//! `scripts/setup-peers`) starts it; the tests find it at `LOGFERRY_MOTO_URL` (default
//! `http://127.0.0.1:4566`) and fail with a clear message when it is not there.
//!
//! moto does not check the PutLogEvents limits (10,000 events, 1,048,576 bytes counting 26 per
//! event, 24 h span, 262,118 bytes per message), so the agent talks to moto through a small
//! loopback proxy in this file that records every PutLogEvents body and how many requests
//! per stream were in flight at once; the tests assert the limits on every recorded request.
//! moto does check too-old and too-new events (rejectedLogEventsInfo), which the dead-letter
//! test relies on. Each test uses its own log group names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cloudwatchlogs::Client;
use logferry::ack::{Finalizer, OrderedAcker};
use logferry::buffer::{Buffer, MemoryBuffer};
use logferry::config::{BatchConfig, ByteSize, Dur, RetryConfig, WhenFull};
use logferry::event::{Event, now_nanos};
use logferry::outputs::cloudwatch::{CloudWatchConfig, LineMode};
use logferry::outputs::dead_letter::DeadLetters;
use logferry::outputs::driver::Driver;
use logferry::outputs::stats::OutputStats;
use logferry::outputs::{ItemOutcome, Output, OutputContext, OutputSpec, SendOutcome};

use crate::util::{Sandbox, wait_until};

const MAX_EVENTS: usize = 10_000;
const MAX_BYTES: usize = 1_048_576;
const MAX_MESSAGE: usize = 262_118;
const DAY_MS: i64 = 86_400_000;

fn moto_url() -> String {
    std::env::var("LOGFERRY_MOTO_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned())
}

/// Fails (never skips) when moto is not reachable.
fn require_moto() -> String {
    let url = moto_url();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let ok = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        ok,
        "moto (the CloudWatch Logs emulator) is not reachable at {url}: run scripts/setup-moto \
         (or scripts/setup-peers), or set LOGFERRY_MOTO_URL"
    );
    url
}

fn unique(tag: &str) -> String {
    format!(
        "/logferry-test/{tag}-{}-{}",
        std::process::id(),
        now_nanos()
    )
}

fn runtime() -> tokio::runtime::Runtime {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn sdk_client(endpoint: &str) -> Client {
    let conf = aws_sdk_cloudwatchlogs::Config::builder()
        .behavior_version(aws_sdk_cloudwatchlogs::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudwatchlogs::config::Region::new("eu-west-1"))
        .endpoint_url(endpoint)
        .http_client(logferry::outputs::cloudwatch::http_client())
        .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .build();
    Client::from_conf(conf)
}

/// Every message of a stream, from the head, in the order GetLogEvents returns them.
async fn read_stream(client: &Client, group: &str, stream: &str) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..1000 {
        let r = client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        let events = r.events();
        let next = r.next_forward_token().map(str::to_owned);
        if events.is_empty() {
            break;
        }
        out.extend(events.iter().map(|e| {
            (
                e.timestamp().unwrap_or_default(),
                e.message().unwrap_or_default().to_owned(),
            )
        }));
        if next.is_none() || next == token {
            break;
        }
        token = next;
    }
    out
}

/// One recorded PutLogEvents request.
#[derive(Debug, Clone)]
struct Put {
    stream: String,
    count: usize,
    bytes: usize,
    span_ms: i64,
    sorted: bool,
    max_message: usize,
    status: u16,
}

#[derive(Default)]
struct Recorded {
    puts: Vec<Put>,
    in_flight: HashMap<String, usize>,
    max_in_flight: usize,
    /// Failures to answer the next PutLogEvents calls with, instead of forwarding them:
    /// (HTTP status, AWS error code), as the real service sends them.
    fail_next: std::collections::VecDeque<(u16, &'static str)>,
}

/// A loopback HTTP proxy to moto that records every PutLogEvents body.
struct Recorder {
    url: String,
    state: Arc<Mutex<Recorded>>,
}

impl Recorder {
    fn puts(&self) -> Vec<Put> {
        self.state.lock().unwrap().puts.clone()
    }
    fn max_in_flight_per_stream(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }
    fn delivered(&self) -> usize {
        self.puts()
            .iter()
            .filter(|p| p.status == 200)
            .map(|p| p.count)
            .sum()
    }
    fn assert_limits(&self) {
        let puts = self.puts();
        assert!(!puts.is_empty(), "no PutLogEvents recorded");
        for p in &puts {
            assert!(p.count >= 1 && p.count <= MAX_EVENTS, "{p:?}");
            assert!(p.bytes <= MAX_BYTES, "over 1,048,576 bytes: {p:?}");
            assert!(p.span_ms < DAY_MS, "spans 24 h or more: {p:?}");
            assert!(p.sorted, "not sorted by time: {p:?}");
            assert!(
                p.max_message <= MAX_MESSAGE,
                "event over 262,118 bytes: {p:?}"
            );
        }
        assert_eq!(
            self.max_in_flight_per_stream(),
            1,
            "more than one request in flight for one stream"
        );
    }
}

async fn start_recorder(upstream: String) -> Recorder {
    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::response::Response;

    #[derive(Clone)]
    struct Ctx {
        upstream: String,
        http: reqwest::Client,
        state: Arc<Mutex<Recorded>>,
    }

    async fn forward(State(ctx): State<Ctx>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let is_put = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.ends_with(".PutLogEvents"));
        let mut put = None;
        let injected = if is_put {
            ctx.state.lock().unwrap().fail_next.pop_front()
        } else {
            None
        };
        if let Some((status, code)) = injected {
            return Response::builder()
                .status(status)
                .header("content-type", "application/x-amz-json-1.1")
                .header("x-amzn-errortype", code)
                .body(Body::from(format!(
                    r#"{{"__type":"{code}","message":"injected by the test proxy"}}"#
                )))
                .unwrap();
        }
        if is_put {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let events = v["logEvents"].as_array().cloned().unwrap_or_default();
            let ts: Vec<i64> = events
                .iter()
                .map(|e| e["timestamp"].as_i64().unwrap())
                .collect();
            let sizes: Vec<usize> = events
                .iter()
                .map(|e| e["message"].as_str().unwrap().len())
                .collect();
            let stream = format!(
                "{}|{}",
                v["logGroupName"].as_str().unwrap_or_default(),
                v["logStreamName"].as_str().unwrap_or_default()
            );
            let mut st = ctx.state.lock().unwrap();
            let n = st.in_flight.entry(stream.clone()).or_default();
            *n += 1;
            let n = *n;
            st.max_in_flight = st.max_in_flight.max(n);
            put = Some(Put {
                stream,
                count: events.len(),
                bytes: sizes.iter().map(|s| s + 26).sum(),
                span_ms: ts.last().unwrap_or(&0) - ts.first().unwrap_or(&0),
                sorted: ts.windows(2).all(|w| w[0] <= w[1]),
                max_message: sizes.iter().copied().max().unwrap_or(0),
                status: 0,
            });
        }
        let uri = parts
            .uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.to_string());
        let mut rb = ctx
            .http
            .request(parts.method.clone(), format!("{}{uri}", ctx.upstream));
        for (k, v) in &parts.headers {
            if k != "host" && k != "content-length" {
                rb = rb.header(k, v);
            }
        }
        let resp = rb.body(body).send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        if let Some(mut p) = put {
            let mut st = ctx.state.lock().unwrap();
            if let Some(n) = st.in_flight.get_mut(&p.stream) {
                *n -= 1;
            }
            p.status = status.as_u16();
            st.puts.push(p);
        }
        let mut out = Response::builder().status(status);
        for (k, v) in &headers {
            if k != "content-length" && k != "transfer-encoding" && k != "connection" {
                out = out.header(k, v);
            }
        }
        out.body(Body::from(bytes)).unwrap()
    }

    let state = Arc::new(Mutex::new(Recorded::default()));
    let ctx = Ctx {
        upstream: upstream.trim_end_matches('/').to_owned(),
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        state: state.clone(),
    };
    let app = axum::Router::new().fallback(forward).with_state(ctx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Recorder { url, state }
}

const CFG: &str = r#"
data_dir: {dir}/data
host_name: testhost
api: { enabled: false }
inputs:
  - id: app
    type: file
    paths: ["{dir}/logs/*.log"]
    start_at: beginning
    fields: { service: svc }
outputs:
  - id: cw
    type: cloudwatch
    region: eu-west-1
    endpoint: ${LF_CW_ENDPOINT}
    log_group: "{group}/{{ service }}"
    log_stream: "{{ host.name }}/{{ input.id }}"
    create_missing: true
    retention_days: 30
    batch: { max_events: 20000, max_bytes: 8MiB, timeout: 200ms }
    max_in_flight: 1
"#;

fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("LF_CW_ENDPOINT", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("AWS_PROFILE", "logferry-test-none".to_owned()),
        ("AWS_CONFIG_FILE", "/nonexistent".to_owned()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".to_owned()),
    ]
}

fn expected_line(i: usize) -> String {
    // Every 1000th line is 200 KiB: 25 of them, five per 1 MiB request at most.
    if i % 1000 == 999 {
        format!("big {i:06} {}", "b".repeat(200 * 1024))
    } else {
        format!("cw line {i:06} {}", "x".repeat(60))
    }
}

#[test]
fn ships_25000_lines_with_200kib_ones_in_order_once_within_the_limits() {
    let moto = require_moto();
    let rt = runtime();
    let rec = rt.block_on(start_recorder(moto.clone()));
    let group = unique("bulk");
    let sb = Sandbox::new();
    sb.config(&CFG.replace("{group}", &group));
    let n = 25_000;
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&expected_line(i));
        text.push('\n');
    }
    sb.write("logs/app.log", text);
    let env = aws_env(&rec.url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut agent = sb.start_with_env(&env);
    wait_until(Duration::from_secs(180), "25,000 events delivered", || {
        assert!(agent.is_running(), "agent exited: {}", agent.stderr());
        rec.delivered() >= n
    });
    let client = rt.block_on(sdk_client(&moto));
    let got = rt.block_on(read_stream(
        &client,
        &format!("{group}/svc"),
        "testhost/app",
    ));
    assert_eq!(got.len(), n, "every line once");
    for (i, (_, m)) in got.iter().enumerate() {
        assert!(*m == expected_line(i), "line {i} out of order or altered");
    }
    rec.assert_limits();
    assert_eq!(rec.delivered(), n, "no event sent twice");
    let puts = rec.puts();
    assert!(puts.iter().all(|p| p.status == 200), "{puts:?}");
    assert!(
        puts.iter()
            .any(|p| p.bytes > MAX_BYTES / 2 && p.count < MAX_EVENTS),
        "some requests were cut by bytes"
    );
    assert!(
        !sb.join("data/dead_letter/cw.ndjson").exists(),
        "nothing dead-lettered"
    );
    // The group was created once with its retention.
    let groups = rt
        .block_on(
            client
                .describe_log_groups()
                .log_group_name_prefix(&group)
                .send(),
        )
        .unwrap();
    let g = &groups.log_groups()[0];
    assert_eq!(g.retention_in_days(), Some(30));
    agent.stop();
}

fn output_config(endpoint: &str, group: &str) -> CloudWatchConfig {
    CloudWatchConfig {
        region: Some("eu-west-1".into()),
        endpoint: Some(endpoint.into()),
        log_group: group.into(),
        log_stream: "{{ input.id }}".into(),
        create_missing: true,
        retention_days: None,
        line: LineMode::Message,
        timeout: Dur::secs(30),
    }
}

fn build_output(endpoint: &str, group: &str, dir: &std::path::Path) -> Arc<dyn Output> {
    // The output takes credentials from the SDK's default chain, like the agent: give it the
    // environment's dummies. SAFETY: every test sets the same values, and all reads of the
    // environment in this process go through std (its environment lock), not libc directly.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    output_config(endpoint, group)
        .build(&OutputContext {
            id: "cw".into(),
            data_dir: dir.to_path_buf(),
            host_name: "testhost".into(),
        })
        .unwrap()
}

#[test]
fn a_15_day_old_event_goes_to_dead_letters_without_blocking_the_rest() {
    let moto = require_moto();
    let rt = runtime();
    let group = unique("old");
    let dir = tempfile::tempdir().unwrap();
    let out = build_output(&moto, &group, dir.path());
    let acker = OrderedAcker::new(0);
    let now = now_nanos();
    let mut events = Vec::new();
    for (i, (msg, ts)) in [
        ("before", now - 2_000_000),
        ("ancient", now - 15 * DAY_MS * 1_000_000),
        ("after", now - 1_000_000),
        ("last", now),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = Event::synthetic("app", msg);
        e.timestamp = ts;
        e.finalizer = Finalizer::new(acker.issue((i as u64 + 1) * 10));
        events.push(e);
    }
    let buffer = Buffer::Memory(Arc::new(MemoryBuffer::new(
        "cw",
        100,
        1 << 20,
        WhenFull::Block,
    )));
    buffer.push(events).unwrap();
    buffer.close();
    let dl = Arc::new(DeadLetters::new(dir.path(), "cw", 1 << 20));
    rt.block_on(
        Driver {
            id: "cw".into(),
            output: out,
            buffer,
            batch: BatchConfig {
                max_events: 100,
                max_bytes: ByteSize::mib(1),
                timeout: Dur::millis(10),
            },
            max_in_flight: 1,
            retry: RetryConfig {
                initial: Dur::millis(10),
                max: Dur::millis(100),
            },
            dead_letters: dl.clone(),
            stats: Arc::new(OutputStats::default()),
        }
        .run(),
    );
    assert_eq!(
        acker.committed(),
        40,
        "every event resolved: nothing blocked"
    );
    let dead = std::fs::read_to_string(dl.path()).unwrap();
    let lines: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{dead}");
    assert_eq!(lines[0]["event"]["message"], "ancient");
    assert!(
        lines[0]["reason"].as_str().unwrap().contains("too old"),
        "{dead}"
    );
    let client = rt.block_on(sdk_client(&moto));
    let got: Vec<String> = rt
        .block_on(read_stream(&client, &group, "app"))
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert_eq!(got, vec!["before", "after", "last"]);
}

#[test]
fn concurrent_sends_keep_one_request_in_flight_per_stream() {
    let moto = require_moto();
    let rt = runtime();
    let rec = rt.block_on(start_recorder(moto.clone()));
    let group = unique("lock");
    let dir = tempfile::tempdir().unwrap();
    let out = build_output(&rec.url, &format!("{group}/{{{{ input.id }}}}"), dir.path());
    let batches: Vec<Vec<Event>> = (0..6)
        .map(|b| {
            // Two streams per batch (input ids a and b), 1,500 events each.
            (0..3000)
                .map(|i| {
                    let id = if i % 2 == 0 { "a" } else { "b" };
                    Event::synthetic(id, &format!("batch {b} event {i:05} {}", "y".repeat(200)))
                })
                .collect()
        })
        .collect();
    let outcomes = rt.block_on(async {
        let sends = batches.iter().map(|b| out.send(b));
        futures_util::future::join_all(sends).await
    });
    assert!(
        outcomes.iter().all(|o| *o == SendOutcome::Delivered),
        "{:?}",
        outcomes.iter().find(|o| **o != SendOutcome::Delivered)
    );
    rec.assert_limits();
    assert_eq!(rec.delivered(), 6 * 3000);
    let client = rt.block_on(sdk_client(&moto));
    let a = rt.block_on(read_stream(&client, &format!("{group}/a"), "a"));
    assert_eq!(a.len(), 3 * 3000);
}

#[test]
fn throttling_and_unavailable_are_retried_missing_fields_and_groups_reported() {
    let moto = require_moto();
    let rt = runtime();
    let rec = rt.block_on(start_recorder(moto.clone()));
    let group = unique("retry");
    let dir = tempfile::tempdir().unwrap();
    let out = build_output(&rec.url, &format!("{group}/{{{{ service }}}}"), dir.path());
    let batch: Vec<Event> = (0..5)
        .map(|i| {
            let mut e = Event::synthetic("app", &format!("event {i}"));
            if i != 2 {
                e.insert("service", serde_json::json!("svc"));
            }
            e
        })
        .collect();
    rec.state.lock().unwrap().fail_next.extend([
        (400, "ThrottlingException"),
        (503, "ServiceUnavailableException"),
    ]);
    // The output never retries by itself: each failure comes back to the driver as Retry
    // for the events that were sent, the event missing `service` is rejected at once.
    for want in ["ThrottlingException", "ServiceUnavailableException"] {
        match rt.block_on(out.send(&batch)) {
            SendOutcome::Partial(items) => {
                assert!(
                    matches!(&items[2], ItemOutcome::Rejected(r) if r.contains("service")),
                    "{items:?}"
                );
                for (i, it) in items.iter().enumerate() {
                    if i != 2 {
                        assert!(
                            matches!(it, ItemOutcome::Retry(r) if r.contains(want)),
                            "{items:?}"
                        );
                    }
                }
            }
            other => panic!("expected a partial outcome, got {other:?}"),
        }
    }
    match rt.block_on(out.send(&batch)) {
        SendOutcome::Partial(items) => {
            let delivered = items
                .iter()
                .filter(|i| **i == ItemOutcome::Delivered)
                .count();
            assert_eq!(delivered, 4, "{items:?}");
        }
        other => panic!("expected a partial outcome, got {other:?}"),
    }
    let client = rt.block_on(sdk_client(&moto));
    let got: Vec<String> = rt
        .block_on(read_stream(&client, &format!("{group}/svc"), "app"))
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert_eq!(got, vec!["event 0", "event 1", "event 3", "event 4"]);
    rec.assert_limits();

    // Without create_missing, a missing group is retried with a reason that says what to do.
    let mut cfg = output_config(&moto, &unique("absent"));
    cfg.create_missing = false;
    let out = cfg
        .build(&OutputContext {
            id: "cw".into(),
            data_dir: dir.path().to_path_buf(),
            host_name: "testhost".into(),
        })
        .unwrap();
    match rt.block_on(out.send(&batch[..1])) {
        SendOutcome::Retry { reason, .. } => {
            assert!(
                reason.contains("ResourceNotFound") && reason.contains("create_missing"),
                "{reason}"
            );
        }
        other => panic!("expected a retry, got {other:?}"),
    }
}
