//! An in-repo Loki push endpoint, for tests: no Loki runs here, so this server decodes the
//! real request — `application/x-protobuf` bodies in snappy block format, decoded with its own
//! copy of the messages of Loki's `push.proto` (not the agent's), or Loki's JSON — and answers
//! the way Loki 3 does:
//!
//! - 204 on success; 429 with Loki's ingestion-rate message for the first `rate_limit_first`
//!   requests; 500 for the requests listed in `fail_requests` (nothing stored);
//! - the distributor's validation: entries whose line contains `OLD` make their stream's
//!   cutoff the next whole second, and every entry of that stream older than it is dropped
//!   with `entry for stream '..' has timestamp too old: .., oldest acceptable timestamp is: ..`;
//!   lines over `max_line` bytes are dropped with `Max entry size ..`; the rest is stored and
//!   the answer is 400 with those messages (Loki stores what is valid, then says 400);
//! - the ingester's out-of-order rule: an entry whose line contains `BEHIND` moves its
//!   stream's cutoff to just after it, so it and every older entry of that stream in the push
//!   are dropped as `entry too far behind`; the answer is the ingester's block (at most ten
//!   entries listed, then `user '..', total ignored: N out of M for stream: {..}`), and, as in
//!   Loki, the distributor's own messages are then not repeated.
//!
//! Like Loki 3 it adds `service_name` to streams that lack it, so the stream the answers name
//! is not exactly the one sent.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};

/// push.proto, written again here so that the test does not trust the agent's copy.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<Stream>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Stream {
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<Entry>,
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Ts>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<Pair>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Pair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Ts {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    pub rate_limit_first: usize,
    /// 1-based request numbers answered 500.
    pub fail_requests: Vec<usize>,
    /// Longest line accepted (0: no limit).
    pub max_line: usize,
    /// Expected `Authorization` header, if any.
    pub authorization: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The stream as Loki keeps it (with `service_name`).
    pub labels: BTreeMap<String, String>,
    pub ts: i64,
    pub line: String,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
pub struct State {
    pub requests: usize,
    pub stored: Vec<Stored>,
    /// Lines Loki dropped (distributor or ingester), with the status of their answer.
    pub rejected: Vec<String>,
    pub tenants: Vec<Option<String>>,
    pub content_types: Vec<String>,
    pub statuses: Vec<u16>,
    pub violations: Vec<String>,
}

pub struct Server {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

type Shared = Arc<Behaviour>;

impl Server {
    pub fn start(behaviour: Behaviour) -> Server {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", std_listener.local_addr().expect("addr"));
        let shared: Shared = Arc::new(behaviour);
        let state = Arc::new(Mutex::new(State::default()));
        let server = Server { url, state };
        let mirror = server.state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let app = axum::Router::new()
                    .route("/loki/api/v1/push", post(push))
                    .route("/ready", get(|| async { "ready" }))
                    .with_state((shared, mirror));
                let _ = axum::serve(listener, app).await;
            });
        });
        server
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

fn go_quote(v: &str) -> String {
    let mut s = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

fn labels_string(l: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Parses `{a="b", c="d"}` (simple escapes only: what the agent's labels need here).
fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let inner = s.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut m = BTreeMap::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let (name, r) = rest.split_once('=')?;
        let r = r.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => {
                    let (_, e) = chars.next()?;
                    value.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        other => other,
                    });
                }
                '"' => break i,
                c => value.push(c),
            }
        };
        m.insert(name.trim().to_owned(), value);
        rest = r[end + 1..].trim_start_matches([',', ' ']);
    }
    Some(m)
}

/// RFC 3339 in seconds, UTC, as Go's `time.RFC3339` prints it.
fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let full = logferry::event::format_rfc3339_nanos(secs * 1_000_000_000);
    format!("{}Z", &full[..19])
}

/// Go's `time.Time.String()` for a UTC time: fractions without trailing zeros.
fn go_time_string(ns: i64) -> String {
    let full = logferry::event::format_rfc3339_nanos(ns);
    let frac = full[20..29].trim_end_matches('0');
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    format!("{} {}{frac} +0000 UTC", &full[..10], &full[11..19])
}

async fn push(
    AxState((shared, mirror)): AxState<(Shared, Arc<Mutex<State>>)>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let b = &*shared;
    let mut s = mirror.lock().unwrap();
    s.requests += 1;
    let n = s.requests;
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    s.tenants.push(header("x-scope-orgid"));
    let ct = header("content-type").unwrap_or_default();
    s.content_types.push(ct.clone());
    if let Some(want) = &b.authorization
        && header("authorization").as_deref() != Some(want.as_str())
    {
        s.statuses.push(401);
        return (StatusCode::UNAUTHORIZED, "no org id\n".into());
    }
    if n <= b.rate_limit_first {
        s.statuses.push(429);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Ingestion rate limit exceeded for user team-a (limit: 4194304 bytes/sec) while attempting to ingest '{}' lines totaling '{}' bytes, reduce log volume or contact your Loki administrator to see if the limit can be increased\n",
                1,
                body.len()
            ),
        );
    }
    if b.fail_requests.contains(&n) {
        s.statuses.push(500);
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "rpc error: code = Unavailable desc = empty ring\n".into(),
        );
    }
    // Decode: (labels, entries (ts, line, metadata)).
    let mut streams: Vec<DecodedStream> = Vec::new();
    if ct == "application/x-protobuf" {
        use prost::Message;
        let raw = match snap::raw::Decoder::new().decompress_vec(&body) {
            Ok(r) => r,
            Err(e) => {
                s.violations.push(format!("snappy: {e}"));
                return (StatusCode::BAD_REQUEST, format!("snappy: {e}"));
            }
        };
        let req = match proto::PushRequest::decode(raw.as_slice()) {
            Ok(r) => r,
            Err(e) => {
                s.violations.push(format!("protobuf: {e}"));
                return (StatusCode::BAD_REQUEST, format!("protobuf: {e}"));
            }
        };
        for st in req.streams {
            let Some(labels) = parse_labels(&st.labels) else {
                s.violations.push(format!("bad labels {}", st.labels));
                return (
                    StatusCode::BAD_REQUEST,
                    format!(
                        "Error parsing labels '{}' with error: parse error",
                        st.labels
                    ),
                );
            };
            let entries = st
                .entries
                .into_iter()
                .map(|e| {
                    let ts = e
                        .timestamp
                        .map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos));
                    let md = e
                        .structured_metadata
                        .into_iter()
                        .map(|p| (p.name, p.value))
                        .collect();
                    (ts, e.line, md)
                })
                .collect();
            streams.push((labels, entries));
        }
    } else if ct == "application/json" {
        let v: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("json: {e}")),
        };
        for st in v["streams"].as_array().cloned().unwrap_or_default() {
            let labels: BTreeMap<String, String> = st["stream"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let entries = st["values"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    let ts: i64 = e[0].as_str().and_then(|t| t.parse().ok()).unwrap_or(0);
                    let md = e[2]
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(k, v)| {
                                    (k.clone(), v.as_str().unwrap_or_default().to_owned())
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    (ts, e[1].as_str().unwrap_or_default().to_owned(), md)
                })
                .collect();
            streams.push((labels, entries));
        }
    } else {
        s.violations.push(format!("content type {ct}"));
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported content type".into(),
        );
    }

    let mut distributor_errors = Vec::new();
    let mut ingester_error: Option<String> = None;
    for (mut labels, entries) in streams {
        if labels.is_empty() {
            return (
                StatusCode::BAD_REQUEST,
                "error at least one label pair is required per stream".into(),
            );
        }
        if !labels.contains_key("service_name") {
            let svc = labels
                .get("job")
                .cloned()
                .unwrap_or_else(|| "unknown_service".into());
            labels.insert("service_name".into(), svc);
        }
        let name = labels_string(&labels);
        for w in entries.windows(2) {
            if w[1].0 < w[0].0 {
                s.violations
                    .push(format!("stream {name}: entries not sorted by time"));
            }
        }
        // Distributor.
        let old_cutoff = entries
            .iter()
            .filter(|e| e.1.contains("OLD"))
            .map(|e| (e.0.div_euclid(1_000_000_000) + 1) * 1_000_000_000)
            .max();
        let mut valid = Vec::new();
        for e in entries {
            if let Some(c) = old_cutoff
                && e.0 < c
            {
                distributor_errors.push(format!(
                    "entry for stream '{name}' has timestamp too old: {}, oldest acceptable timestamp is: {}",
                    rfc3339(e.0),
                    rfc3339(c)
                ));
                s.rejected.push(e.1);
                continue;
            }
            if b.max_line > 0 && e.1.len() > b.max_line {
                distributor_errors.push(format!(
                    "Max entry size '{}' bytes exceeded for stream '{name}' while adding an entry with length '{}' bytes",
                    b.max_line,
                    e.1.len()
                ));
                s.rejected.push(e.1);
                continue;
            }
            valid.push(e);
        }
        // Ingester.
        let behind_cutoff = valid
            .iter()
            .filter(|e| e.1.contains("BEHIND"))
            .map(|e| e.0 + 1)
            .max();
        let total = valid.len();
        let mut failed = Vec::new();
        for e in valid {
            if let Some(c) = behind_cutoff
                && e.0 < c
            {
                failed.push(e);
                continue;
            }
            s.stored.push(Stored {
                labels: labels.clone(),
                ts: e.0,
                line: e.1,
                metadata: e.2,
            });
        }
        if !failed.is_empty() {
            let mut msg = String::new();
            for e in failed.iter().take(10) {
                msg.push_str(&format!(
                    "entry with timestamp {} ignored, reason: 'entry too far behind, entry timestamp is: {}, oldest acceptable timestamp is: {}',\n",
                    go_time_string(e.0),
                    rfc3339(e.0),
                    rfc3339(behind_cutoff.unwrap_or(0)),
                ));
            }
            msg.push_str(&format!(
                "user 'team-a', total ignored: {} out of {total} for stream: {name}",
                failed.len()
            ));
            for e in failed {
                s.rejected.push(e.1);
            }
            ingester_error = Some(msg);
        }
    }
    if let Some(e) = ingester_error {
        s.statuses.push(400);
        return (StatusCode::BAD_REQUEST, e);
    }
    if !distributor_errors.is_empty() {
        s.statuses.push(400);
        return (StatusCode::BAD_REQUEST, distributor_errors.join("\n"));
    }
    s.statuses.push(204);
    (StatusCode::NO_CONTENT, String::new())
}

/// A decoded push stream: its labels and its entries (timestamp, line, structured metadata).
type DecodedStream = (
    BTreeMap<String, String>,
    Vec<(i64, String, BTreeMap<String, String>)>,
);
