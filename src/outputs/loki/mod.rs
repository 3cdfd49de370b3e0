//! `loki`: `POST /loki/api/v1/push`, snappy-compressed protobuf (or JSON with
//! `encoding: json`), one request per batch.
//!
//! Streams come from `labels` templates (names checked against Loki's rules when the config
//! loads); an empty value leaves the label out, a missing field without a default rejects the
//! event to the dead letters. `max_streams` guards cardinality: a batch that would make the
//! output write to more distinct streams than that (streams unseen for an hour are forgotten)
//! has the new streams' events dead-lettered instead of creating them. Fields that vary per
//! line (trace ids) belong in `structured_metadata`, which is not part of the stream.
//!
//! Responses are classified in [`response`]; the rule that matters most is that after a 400
//! nothing of the request is sent again, because Loki stored every entry it did not name.

pub mod encode;
pub mod response;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;

use self::encode::{Encoding, LineMode, Placement, Prepared, Shape};
use self::response::Verdict;
use crate::config::{ConfigSource, Diagnostic, Dur};
use crate::event::Event;
use crate::outputs::logstash::tls::TlsConfig;
use crate::outputs::template::Template;
use crate::outputs::{ItemOutcome, Output, OutputContext, OutputSpec, SendOutcome};

/// A stream not written to for this long no longer counts against `max_streams`.
const STREAM_IDLE: Duration = Duration::from_secs(3600);

/// Credentials: `{ username, password }` (basic) or `{ bearer_token }`.
#[derive(Clone, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LokiAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    pub bearer_token: Option<String>,
}

impl fmt::Debug for LokiAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LokiAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `type: loki`
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LokiConfig {
    /// Loki's base URL (`http://loki:3100`); `/loki/api/v1/push` is appended unless the URL
    /// already ends with it.
    pub url: String,
    /// Tenant, sent as `X-Scope-OrgID` (multi-tenant Loki).
    pub tenant_id: Option<String>,
    /// Stream labels: name → template (`{{ field }}`, `{{ field | default: "x" }}`). Names
    /// follow Loki's rules (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`). An empty value
    /// leaves the label out. Keep values low-cardinality.
    #[serde(default = "default_labels")]
    pub labels: BTreeMap<String, String>,
    /// Per-line metadata that is not a label (trace ids, user ids): name → template. A missing
    /// field leaves the pair out of that line. Needs Loki 3 with structured metadata allowed.
    #[serde(default)]
    pub structured_metadata: BTreeMap<String, String>,
    /// The line: `message` (default) or `json` (the whole event).
    #[serde(default)]
    pub line: LineMode,
    /// Request body: `protobuf` (default, snappy) or `json`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Most distinct streams this output writes to (streams idle for an hour are forgotten);
    /// events that would open more are dead-lettered. Default 5000 (Loki's default per-tenant
    /// stream limit).
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
    /// Basic or bearer authentication.
    pub auth: Option<LokiAuth>,
    /// TLS for `https://` URLs.
    pub tls: Option<TlsConfig>,
    /// Request timeout (default 30s).
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

fn default_labels() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("job".to_owned(), "{{ input.id }}".to_owned());
    m.insert("host".to_owned(), "{{ host.name }}".to_owned());
    m
}
fn default_max_streams() -> usize {
    5000
}
fn default_timeout() -> Dur {
    Dur::secs(30)
}

/// Loki's rule for label names (Prometheus' without the reserved `__` prefix).
pub fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !ok_first || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "invalid label name `{name}`: Loki accepts [a-zA-Z_][a-zA-Z0-9_]*"
        ));
    }
    if name.starts_with("__") {
        return Err(format!(
            "invalid label name `{name}`: names starting with `__` are reserved by Loki"
        ));
    }
    Ok(())
}

fn push_url(url: &str) -> String {
    let base = url.trim_end_matches('/');
    if base.ends_with("/loki/api/v1/push") {
        base.to_owned()
    } else {
        format!("{base}/loki/api/v1/push")
    }
}

impl LokiConfig {
    fn templates(
        map: &BTreeMap<String, String>,
    ) -> Result<Vec<(String, Template)>, (String, String)> {
        map.iter()
            .map(|(k, v)| {
                check_label_name(k).map_err(|e| (k.clone(), e))?;
                Template::parse(v)
                    .map(|t| (k.clone(), t))
                    .map_err(|e| (k.clone(), e))
            })
            .collect()
    }
}

impl OutputSpec for LokiConfig {
    fn validate(&self, source: &ConfigSource, path: &str) -> Vec<Diagnostic> {
        let mut v = Vec::new();
        match reqwest::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => v.push(source.diag(
                &format!("{path}.url"),
                format!(
                    "unsupported scheme `{}`: expected http or https",
                    u.scheme()
                ),
            )),
            Err(e) => v.push(source.diag(
                &format!("{path}.url"),
                format!("invalid URL `{}`: {e}", self.url),
            )),
        }
        if self.labels.is_empty() {
            v.push(source.diag(
                &format!("{path}.labels"),
                "Loki needs at least one label per stream",
            ));
        }
        for (key, map) in [
            ("labels", &self.labels),
            ("structured_metadata", &self.structured_metadata),
        ] {
            if let Err((name, e)) = Self::templates(map) {
                v.push(source.diag(&format!("{path}.{key}.{name}"), e));
            }
        }
        if self.max_streams == 0 {
            v.push(source.diag(&format!("{path}.max_streams"), "must be at least 1"));
        }
        if let Some(a) = &self.auth {
            let basic = a.username.is_some() || a.password.is_some();
            if basic && a.bearer_token.is_some() {
                v.push(source.diag(
                    &format!("{path}.auth"),
                    "give either `username`/`password` or `bearer_token`, not both",
                ));
            }
            if a.password.is_some() && a.username.is_none() {
                v.push(source.diag(
                    &format!("{path}.auth.username"),
                    "`password` needs `username`",
                ));
            }
        }
        if let Some(tls) = &self.tls {
            for (k, m) in tls.problems() {
                v.push(source.diag(&format!("{path}.tls.{k}"), m));
            }
        }
        v
    }

    fn describe(&self) -> String {
        let mut s = format!("loki {}", push_url(&self.url));
        if let Some(t) = &self.tenant_id {
            s.push_str(&format!(" (tenant {t})"));
        }
        s
    }

    fn build(&self, _ctx: &OutputContext) -> anyhow::Result<Arc<dyn Output>> {
        let labels =
            Self::templates(&self.labels).map_err(|(k, e)| anyhow::anyhow!("labels.{k}: {e}"))?;
        let metadata = Self::templates(&self.structured_metadata)
            .map_err(|(k, e)| anyhow::anyhow!("structured_metadata.{k}: {e}"))?;
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout.0)
            .user_agent(concat!("logferry/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = self.tls.as_ref().filter(|t| t.enabled) {
            let mut cfg = (*tls.client_config()?).clone();
            cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            builder = builder.tls_backend_preconfigured(cfg);
        }
        let client = builder
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the HTTP client for loki: {e}"))?;
        let auth = match &self.auth {
            Some(LokiAuth {
                bearer_token: Some(t),
                ..
            }) => Some(format!("Bearer {t}")),
            Some(LokiAuth {
                username: Some(u),
                password,
                ..
            }) => {
                use base64::Engine;
                let raw = format!("{u}:{}", password.as_deref().unwrap_or(""));
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ))
            }
            _ => None,
        };
        Ok(Arc::new(Loki {
            url: push_url(&self.url),
            base: self
                .url
                .trim_end_matches('/')
                .trim_end_matches("/loki/api/v1/push")
                .to_owned(),
            tenant: self.tenant_id.clone(),
            auth,
            encoding: self.encoding,
            shape: Shape {
                labels,
                metadata,
                line: self.line,
            },
            max_streams: self.max_streams,
            streams: Mutex::new(HashMap::new()),
            scratch: Mutex::new(Vec::new()),
            client,
        }))
    }
}

pub struct Loki {
    url: String,
    base: String,
    tenant: Option<String>,
    auth: Option<String>,
    encoding: Encoding,
    shape: Shape,
    max_streams: usize,
    /// Streams written to, and when last.
    streams: Mutex<HashMap<String, Instant>>,
    /// Encoding scratch, one per request in flight, reused.
    scratch: Mutex<Vec<encode::Scratch>>,
    client: reqwest::Client,
}

/// A scratch that grew past this (a few huge batches) is dropped rather than kept.
const SCRATCH_KEEP_BYTES: usize = 16 << 20;

impl Loki {
    /// Applies `max_streams` to the batch's streams: known ones are refreshed, new ones are
    /// admitted while there is room, the rest have their events rejected.
    fn guard_streams(&self, p: &mut Prepared) {
        let Ok(mut seen) = self.streams.lock() else {
            return;
        };
        let now = Instant::now();
        let mut refused = Vec::new();
        for (i, s) in p.streams.iter().enumerate() {
            if let Some(t) = seen.get_mut(&s.labels) {
                *t = now;
                continue;
            }
            if seen.len() >= self.max_streams {
                seen.retain(|_, t| now.duration_since(*t) < STREAM_IDLE);
            }
            if seen.len() < self.max_streams {
                seen.insert(s.labels.clone(), now);
            } else {
                refused.push(i);
            }
        }
        drop(seen);
        for i in refused {
            let reason = format!(
                "max_streams ({}) reached: stream {} was not created; move high-cardinality labels to structured_metadata or raise max_streams",
                self.max_streams, p.streams[i].labels
            );
            p.reject_stream(i, &reason);
        }
    }

    fn request(&self, url: &str) -> reqwest::RequestBuilder {
        let mut r = self.client.post(url);
        if let Some(t) = &self.tenant {
            r = r.header("X-Scope-OrgID", t);
        }
        if let Some(a) = &self.auth {
            r = r.header(reqwest::header::AUTHORIZATION, a);
        }
        r
    }

    async fn send_batch(&self, events: &[Event]) -> SendOutcome {
        let mut p = self.shape.prepare(events);
        self.guard_streams(&mut p);
        let local: Vec<Option<String>> = p
            .placement
            .iter()
            .map(|pl| match pl {
                Placement::Rejected(r) => Some(r.clone()),
                Placement::Stream(_) => None,
            })
            .collect();
        let any_local = local.iter().any(Option::is_some);
        let verdict = if p.entry_count() == 0 {
            Verdict::Stored
        } else {
            let (body, content_type) = match self.encoding {
                Encoding::Protobuf => {
                    let mut s = self
                        .scratch
                        .lock()
                        .ok()
                        .and_then(|mut pool| pool.pop())
                        .unwrap_or_default();
                    // The body is copied out: the request owns it, the scratch stays warm.
                    let body = encode::encode_snappy(events, &p, &mut s).to_vec();
                    if s.capacity() <= SCRATCH_KEEP_BYTES
                        && let Ok(mut pool) = self.scratch.lock()
                    {
                        pool.push(s);
                    }
                    (body, "application/x-protobuf")
                }
                Encoding::Json => {
                    let mut b = Vec::with_capacity(events.len() * 300);
                    encode::encode_json(events, &p, &mut b);
                    (b, "application/json")
                }
            };
            // No Content-Encoding: Loki always reads an `application/x-protobuf` body as
            // snappy block data (as Promtail sends it).
            let req = self
                .request(&self.url)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body);
            match req.send().await {
                Err(e) => Verdict::Retry {
                    reason: format!("loki push to {}: {}", self.url, error_chain(&e)),
                    after: None,
                },
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let body = if (200..300).contains(&status) {
                        String::new()
                    } else {
                        resp.text().await.unwrap_or_default()
                    };
                    response::classify(status, after, &body, events, &p)
                }
            }
        };
        merge(local, any_local, verdict)
    }
}

/// Combines local rejections with the server's verdict into the driver's outcome.
fn merge(local: Vec<Option<String>>, any_local: bool, verdict: Verdict) -> SendOutcome {
    match verdict {
        Verdict::Stored if !any_local => SendOutcome::Delivered,
        Verdict::Retry { reason, after } if !any_local => SendOutcome::Retry { reason, after },
        Verdict::TooLarge(reason) if !any_local => SendOutcome::TooLarge { reason },
        Verdict::Stored => SendOutcome::Partial(
            local
                .into_iter()
                .map(|l| l.map_or(ItemOutcome::Delivered, ItemOutcome::Rejected))
                .collect(),
        ),
        Verdict::Retry { reason, .. } | Verdict::TooLarge(reason) => SendOutcome::Partial(
            local
                .into_iter()
                .map(|l| {
                    l.map_or_else(|| ItemOutcome::Retry(reason.clone()), ItemOutcome::Rejected)
                })
                .collect(),
        ),
        Verdict::Partial(remote) => SendOutcome::Partial(
            local
                .into_iter()
                .zip(remote)
                .map(|(l, r)| match l.or(r) {
                    Some(reason) => ItemOutcome::Rejected(reason),
                    None => ItemOutcome::Delivered,
                })
                .collect(),
        ),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Output for Loki {
    fn send<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.send_batch(events))
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let url = format!("{}/ready", self.base);
            let mut r = self.client.get(&url);
            if let Some(t) = &self.tenant {
                r = r.header("X-Scope-OrgID", t);
            }
            if let Some(a) = &self.auth {
                r = r.header(reqwest::header::AUTHORIZATION, a);
            }
            match r.send().await {
                Ok(resp) if resp.status().is_success() => Ok(format!("{url}: ready")),
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    Err(format!("{url}: {status} {}", body.trim()))
                }
                Err(e) => Err(format!("{url}: {}", error_chain(&e))),
            }
        })
    }
}
