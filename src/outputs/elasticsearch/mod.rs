//! `elasticsearch`: the `_bulk` API of Elasticsearch 7.x/8.x and OpenSearch 2.x.
//!
//! One request per batch: `POST <host>/_bulk` with an `application/x-ndjson` body (gzip when
//! `compression: gzip`), `filter_path` so that the cluster answers only what the
//! classification reads. The response becomes one outcome per event (see `response.rs`);
//! whole-request answers map to the driver's outcomes: 429, 5xx, timeouts and connection
//! errors → retry (honouring `Retry-After`); 413 → too large (the driver halves the batch; a
//! single document over the limit goes to the dead letters); a whole-request 400 is treated
//! like 413, so that bisection isolates the document that makes the body unacceptable;
//! 401/403/404 and other answers → retry, because they are fixed by configuration, not by
//! dropping data.
//!
//! Several hosts: requests go round-robin over the healthy hosts; a host that failed
//! (connection error, timeout, 502/503/504) sits out a backoff period (1 s doubling to 60 s)
//! and is used again after it, or sooner when every host is sitting out. That is a choice of
//! connection, not a retry: the driver still decides when to send again.
//!
//! At start the output probes every host (`GET /`) in the background and logs the version;
//! a failure is logged and does not stop the agent (the first send retries).

mod encode;
pub mod response;
#[cfg(test)]
mod tests;

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use schemars::JsonSchema;
use serde::Deserialize;

pub use encode::{Encoder, Op, idempotent_id};

use crate::config::{ConfigSource, Diagnostic, Dur};
use crate::event::Event;
use crate::outputs::template::Template;
use crate::outputs::{ItemOutcome, Output, OutputContext, OutputSpec, SendOutcome};

/// `type: elasticsearch`
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// Base URLs of the cluster's nodes (`https://es1:9200`; a bare `host:port` means
    /// `http://`). Requests go round-robin over the healthy ones.
    pub hosts: Vec<String>,
    /// Index name template: `{{ field }}` (a missing field may be given a `default:`) and
    /// `%Y %m %d %H` of the event's time, UTC. Default `logferry-%Y.%m.%d`. Not with
    /// `data_stream`.
    pub index: Option<String>,
    /// Write to the data stream `<type>-<dataset>-<namespace>` (with `create`). Not with
    /// `index`.
    pub data_stream: Option<DataStreamConfig>,
    /// `{ username, password }` (basic) or `{ api_key }`.
    pub auth: Option<AuthConfig>,
    /// TLS settings for `https://` hosts.
    #[serde(default)]
    pub tls: TlsConfig,
    /// `gzip` (default) or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// Ingest pipeline to run the documents through.
    pub pipeline: Option<String>,
    /// How long one request may take before it is abandoned and retried.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    /// Give each document a deterministic `_id` from (input, file fingerprint, offset) and
    /// use `create`, so that a redelivery after a crash is a harmless 409: the index holds
    /// every line once.
    #[serde(default)]
    pub idempotent: bool,
}

fn default_request_timeout() -> Dur {
    Dur::secs(60)
}

/// `data_stream: { type: logs, dataset: app, namespace: default }`; each part may be a
/// template.
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataStreamConfig {
    /// The type part: `logs`, `metrics`, ...
    #[serde(rename = "type", default = "default_ds_type")]
    pub kind: String,
    /// The dataset part.
    #[serde(default = "default_ds_dataset")]
    pub dataset: String,
    /// The namespace part.
    #[serde(default = "default_ds_namespace")]
    pub namespace: String,
}

fn default_ds_type() -> String {
    "logs".to_owned()
}
fn default_ds_dataset() -> String {
    "generic".to_owned()
}
fn default_ds_namespace() -> String {
    "default".to_owned()
}

/// Credentials. Never logged.
#[derive(Clone, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Basic authentication user.
    pub username: Option<String>,
    /// Basic authentication password.
    pub password: Option<String>,
    /// API key: the base64 `encoded` form, or `id:api_key`.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `tls: { ca_file, cert_file, key_file, verify }`
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of CA certificates trusted in addition to the system's.
    pub ca_file: Option<String>,
    /// PEM client certificate (chain), with `key_file`.
    pub cert_file: Option<String>,
    /// PEM private key of the client certificate.
    pub key_file: Option<String>,
    /// Verify the server's certificate and name. On by default; turn off only for tests.
    #[serde(default = "default_true")]
    pub verify: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca_file: None,
            cert_file: None,
            key_file: None,
            verify: true,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Request body compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip at level 1 (fast; log lines compress well even so).
    #[default]
    Gzip,
    /// No compression.
    None,
}

impl ElasticsearchConfig {
    fn template_text(&self) -> String {
        match (&self.index, &self.data_stream) {
            (_, Some(ds)) => format!("{}-{}-{}", ds.kind, ds.dataset, ds.namespace),
            (Some(i), None) => i.clone(),
            (None, None) => "logferry-%Y.%m.%d".to_owned(),
        }
    }

    fn op(&self) -> Op {
        if self.data_stream.is_some() || self.idempotent {
            Op::Create
        } else {
            Op::Index
        }
    }
}

impl OutputSpec for ElasticsearchConfig {
    fn validate(&self, source: &ConfigSource, path: &str) -> Vec<Diagnostic> {
        let mut d = Vec::new();
        if self.hosts.is_empty() {
            d.push(source.diag(&format!("{path}.hosts"), "at least one host is required"));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if let Err(e) = parse_host(h) {
                d.push(source.diag(&format!("{path}.hosts[{i}]"), e));
            }
        }
        if self.index.is_some() && self.data_stream.is_some() {
            d.push(source.diag(
                &format!("{path}.data_stream"),
                "give either `index` or `data_stream`, not both",
            ));
        }
        if let Err(e) = Template::parse(&self.template_text()) {
            let key = if self.data_stream.is_some() {
                "data_stream"
            } else {
                "index"
            };
            d.push(source.diag(&format!("{path}.{key}"), e));
        }
        if let Some(a) = &self.auth {
            match (&a.username, &a.password, &a.api_key) {
                (Some(_), Some(_), None) | (None, None, Some(_)) => {}
                _ => d.push(source.diag(
                    &format!("{path}.auth"),
                    "expected `{ username, password }` or `{ api_key }`",
                )),
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            d.push(source.diag(
                &format!("{path}.tls"),
                "`cert_file` and `key_file` go together",
            ));
        }
        if self.request_timeout.0.is_zero() {
            d.push(source.diag(&format!("{path}.request_timeout"), "must be more than 0"));
        }
        d
    }

    fn describe(&self) -> String {
        format!(
            "elasticsearch {} → {}",
            self.hosts.join(", "),
            self.template_text()
        )
    }

    fn build(&self, ctx: &OutputContext) -> anyhow::Result<Arc<dyn Output>> {
        let out = Arc::new(Elasticsearch::new(self, &ctx.id)?);
        // The version probe at start: in the background, logged, never fatal.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let probe = out.clone();
            rt.spawn(async move {
                for (host, res) in probe.probe_hosts().await {
                    match res {
                        Ok(v) => tracing::info!(output = %probe.id, %host, "connected to {v}"),
                        Err(e) => {
                            tracing::warn!(output = %probe.id, %host, error = %e, "version probe failed; sending will retry")
                        }
                    }
                }
            });
        }
        Ok(out)
    }
}

/// Parses a host into a base URL ending in `/`.
fn parse_host(h: &str) -> Result<reqwest::Url, String> {
    let text = if h.contains("://") {
        h.to_owned()
    } else {
        format!("http://{h}")
    };
    let mut url = reqwest::Url::parse(&text).map_err(|e| format!("invalid host `{h}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("invalid host `{h}`: expected http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("invalid host `{h}`: no host name"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "host `{}` carries credentials: put them under `auth`",
            url.host_str().unwrap_or_default()
        ));
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    url.set_query(None);
    Ok(url)
}

/// First backoff of a failing host; doubles up to [`HOST_BACKOFF_MAX`].
const HOST_BACKOFF: Duration = Duration::from_secs(1);
const HOST_BACKOFF_MAX: Duration = Duration::from_secs(60);

struct Host {
    /// For messages (no credentials ever sit in a host URL).
    name: String,
    root: reqwest::Url,
    bulk: reqwest::Url,
    failures: AtomicU32,
    /// Milliseconds since `Elasticsearch::epoch` before which the host sits out.
    down_until: AtomicU64,
}

/// A built Elasticsearch output.
pub struct Elasticsearch {
    id: String,
    client: reqwest::Client,
    hosts: Vec<Host>,
    next: AtomicUsize,
    epoch: Instant,
    encoder: Encoder,
    gzip: bool,
    auth: Option<HeaderValue>,
    timeout: Duration,
}

impl Elasticsearch {
    pub fn new(cfg: &ElasticsearchConfig, id: &str) -> anyhow::Result<Elasticsearch> {
        let template = Template::parse(&cfg.template_text()).map_err(anyhow::Error::msg)?;
        let mut hosts = Vec::new();
        for h in &cfg.hosts {
            let root = parse_host(h).map_err(anyhow::Error::msg)?;
            let mut bulk = root.join("_bulk").with_context(|| format!("host `{h}`"))?;
            {
                let mut q = bulk.query_pairs_mut();
                q.append_pair(
                    "filter_path",
                    "errors,items.*.status,items.*.error.type,items.*.error.reason,items.*.error.caused_by.type,items.*.error.caused_by.reason",
                );
                if let Some(p) = &cfg.pipeline {
                    q.append_pair("pipeline", p);
                }
            }
            let name = root.as_str().trim_end_matches('/').to_owned();
            hosts.push(Host {
                name,
                root,
                bulk,
                failures: AtomicU32::new(0),
                down_until: AtomicU64::new(0),
            });
        }
        anyhow::ensure!(!hosts.is_empty(), "no hosts");
        Ok(Elasticsearch {
            id: id.to_owned(),
            client: build_client(&cfg.tls, cfg.request_timeout.0)?,
            hosts,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            encoder: Encoder::new(template, cfg.op(), cfg.idempotent),
            gzip: cfg.compression == Compression::Gzip,
            auth: auth_header(cfg.auth.as_ref())?,
            timeout: cfg.request_timeout.0,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The next healthy host in round-robin order; when all sit out, the one back soonest.
    fn pick(&self) -> usize {
        let n = self.hosts.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = self.now_ms();
        let mut soonest = start;
        let mut soonest_at = u64::MAX;
        for k in 0..n {
            let i = (start + k) % n;
            let until = self.hosts[i].down_until.load(Ordering::Relaxed);
            if until <= now {
                return i;
            }
            if until < soonest_at {
                soonest_at = until;
                soonest = i;
            }
        }
        soonest
    }

    fn host_failed(&self, i: usize) {
        let h = &self.hosts[i];
        let n = h.failures.fetch_add(1, Ordering::Relaxed).min(16);
        let pause = HOST_BACKOFF
            .saturating_mul(1u32 << n.min(16))
            .min(HOST_BACKOFF_MAX);
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX));
        h.down_until.store(until, Ordering::Relaxed);
    }

    fn host_ok(&self, i: usize) {
        let h = &self.hosts[i];
        if h.failures.load(Ordering::Relaxed) != 0 {
            h.failures.store(0, Ordering::Relaxed);
            h.down_until.store(0, Ordering::Relaxed);
        }
    }

    /// Probes every host: `(host, Ok(version summary) | Err(why))`.
    pub async fn probe_hosts(&self) -> Vec<(String, Result<String, String>)> {
        let mut out = Vec::new();
        for h in &self.hosts {
            out.push((h.name.clone(), self.probe_one(h).await));
        }
        out
    }

    async fn probe_one(&self, h: &Host) -> Result<String, String> {
        let mut req = self.client.get(h.root.clone()).timeout(self.timeout);
        if let Some(a) = &self.auth {
            req = req.header(reqwest::header::AUTHORIZATION, a.clone());
        }
        let resp = req.send().await.map_err(|e| describe_error(&e))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("reading the answer: {}", describe_error(&e)))?;
        match status.as_u16() {
            200 => version_summary(&body),
            401 => Err("authentication failed (401): check `auth`".to_owned()),
            403 => {
                Err("not authorized (403): the user lacks cluster monitor privileges".to_owned())
            }
            s => Err(format!("GET / answered {s}: {}", snippet(&body))),
        }
    }

    /// Builds the outcomes from the per-item results, re-inserting skipped events.
    fn outcomes(
        &self,
        n: usize,
        skipped: Vec<(usize, String)>,
        items: Vec<response::Item>,
    ) -> SendOutcome {
        let mut out = Vec::with_capacity(n);
        let mut items = items.into_iter();
        let mut skipped = skipped.into_iter().peekable();
        for i in 0..n {
            if skipped.peek().is_some_and(|(k, _)| *k == i) {
                if let Some((_, why)) = skipped.next() {
                    out.push(ItemOutcome::Rejected(why));
                }
                continue;
            }
            match items.next() {
                Some(item) => out.push(response::classify(&item)),
                None => out.push(ItemOutcome::Retry("missing bulk item".to_owned())),
            }
        }
        if out.iter().all(|o| *o == ItemOutcome::Delivered) {
            SendOutcome::Delivered
        } else {
            SendOutcome::Partial(out)
        }
    }

    async fn send_body(&self, events: &[Event]) -> SendOutcome {
        let body = self.encoder.encode(events);
        let n = events.len();
        if body.docs == 0 {
            return self.outcomes(n, body.skipped, Vec::new());
        }
        let docs = body.docs;
        let payload = if self.gzip {
            match gzip(&body.bytes) {
                Ok(b) => b,
                Err(e) => {
                    return SendOutcome::Retry {
                        reason: format!("cannot compress the bulk body: {e}"),
                        after: None,
                    };
                }
            }
        } else {
            body.bytes
        };
        let hi = self.pick();
        let host = &self.hosts[hi];
        let mut req = self
            .client
            .post(host.bulk.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/x-ndjson");
        if self.gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        if let Some(a) = &self.auth {
            req = req.header(reqwest::header::AUTHORIZATION, a.clone());
        }
        let resp = match req.body(payload).send().await {
            Ok(r) => r,
            Err(e) => {
                self.host_failed(hi);
                return SendOutcome::Retry {
                    reason: format!("{}: {}", host.name, describe_error(&e)),
                    after: None,
                };
            }
        };
        let status = resp.status().as_u16();
        let after = retry_after(resp.headers().get(RETRY_AFTER));
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                self.host_failed(hi);
                return SendOutcome::Retry {
                    reason: format!("{}: reading the answer: {}", host.name, describe_error(&e)),
                    after: None,
                };
            }
        };
        match status {
            200..=299 => {
                self.host_ok(hi);
                let parsed = match response::parse(&bytes, true) {
                    Ok(p) => p,
                    Err(e) => {
                        return SendOutcome::Retry {
                            reason: format!("{}: {e}", host.name),
                            after: None,
                        };
                    }
                };
                if parsed.errors == Some(false) {
                    if body.skipped.is_empty() {
                        return SendOutcome::Delivered;
                    }
                    return self.outcomes(n, body.skipped, all_created(docs));
                }
                if !parsed.items_read || parsed.items.len() != docs {
                    return SendOutcome::Retry {
                        reason: format!(
                            "{}: the bulk response has {} items for {docs} documents",
                            host.name,
                            parsed.items.len()
                        ),
                        after: None,
                    };
                }
                self.outcomes(n, body.skipped, parsed.items)
            }
            413 => SendOutcome::TooLarge {
                reason: format!(
                    "413 request entity too large at {}: {}",
                    host.name,
                    snippet(&bytes)
                ),
            },
            400 => SendOutcome::TooLarge {
                reason: format!(
                    "400 bulk request refused by {}: {}",
                    host.name,
                    snippet(&bytes)
                ),
            },
            _ => {
                if matches!(status, 502..=504) {
                    self.host_failed(hi);
                }
                SendOutcome::Retry {
                    reason: format!("{} answered {status}: {}", host.name, snippet(&bytes)),
                    after,
                }
            }
        }
    }
}

fn all_created(docs: usize) -> Vec<response::Item> {
    vec![
        response::Item {
            op: response::Op::Index,
            status: 201,
            error: None,
        };
        docs
    ]
}

impl Output for Elasticsearch {
    fn send<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.send_body(events))
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let results = self.probe_hosts().await;
            let failed = results.iter().any(|(_, r)| r.is_err());
            let text: Vec<String> = results
                .into_iter()
                .map(|(h, r)| match r {
                    Ok(v) => format!("{h}: {v}"),
                    Err(e) => format!("{h}: {e}"),
                })
                .collect();
            if failed {
                Err(text.join("; "))
            } else {
                Ok(text.join("; "))
            }
        })
    }
}

fn build_client(tls: &TlsConfig, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .tls_backend_rustls()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .user_agent(concat!("logferry/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &tls.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read tls.ca_file {ca}"))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("tls.ca_file {ca} holds no valid PEM certificate"))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "tls.ca_file {ca} holds no PEM certificate"
        );
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let mut pem =
            std::fs::read(cert).with_context(|| format!("cannot read tls.cert_file {cert}"))?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key).with_context(|| format!("cannot read tls.key_file {key}"))?);
        let id = reqwest::Identity::from_pem(&pem)
            .with_context(|| format!("tls.cert_file {cert} / tls.key_file {key}"))?;
        b = b.identity(id);
    }
    if !tls.verify {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().context("cannot build the HTTP client")
}

fn auth_header(auth: Option<&AuthConfig>) -> anyhow::Result<Option<HeaderValue>> {
    use base64::Engine as _;
    let Some(a) = auth else { return Ok(None) };
    let text = match (&a.username, &a.password, &a.api_key) {
        (Some(u), Some(p), None) => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        ),
        (None, None, Some(k)) if k.contains(':') => format!(
            "ApiKey {}",
            base64::engine::general_purpose::STANDARD.encode(k)
        ),
        (None, None, Some(k)) => format!("ApiKey {k}"),
        _ => anyhow::bail!("auth: expected `{{ username, password }}` or `{{ api_key }}`"),
    };
    let mut v = HeaderValue::from_str(&text).map_err(|_| {
        anyhow::anyhow!("auth: the credentials hold characters not allowed in an HTTP header")
    })?;
    v.set_sensitive(true);
    Ok(Some(v))
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(data)?;
    enc.finish()
}

fn retry_after(v: Option<&HeaderValue>) -> Option<Duration> {
    let s = v?.to_str().ok()?.trim();
    s.parse::<u64>().ok().map(Duration::from_secs)
}

/// The error and its causes on one line (reqwest's Display alone hides the cause).
fn describe_error(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "request timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut src: Option<&dyn std::error::Error> = Some(e);
    let mut last = String::new();
    while let Some(err) = src {
        let t = err.to_string();
        if t != last && !t.is_empty() {
            s.push_str(": ");
            s.push_str(&t);
            last = t;
        }
        src = err.source();
    }
    s
}

/// The start of a body, for messages.
fn snippet(body: &[u8]) -> String {
    let end = body.len().min(512);
    let mut s = String::from_utf8_lossy(&body[..end]).into_owned();
    if body.len() > end {
        s.push('…');
    }
    s.replace('\n', " ")
}

/// `Elasticsearch 8.15.0` / `OpenSearch 2.11.0` from `GET /`, or why it is not supported.
pub fn version_summary(body: &[u8]) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("GET / did not answer JSON ({e}): {}", snippet(body)))?;
    let number = v
        .pointer("/version/number")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| format!("GET / has no version.number: {}", snippet(body)))?;
    let opensearch = v
        .pointer("/version/distribution")
        .and_then(serde_json::Value::as_str)
        == Some("opensearch");
    let major: u32 = number
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("unreadable version `{number}`"))?;
    if opensearch {
        if (1..=3).contains(&major) {
            Ok(format!("OpenSearch {number}"))
        } else {
            Err(format!(
                "OpenSearch {number} is not supported (1.x to 3.x are)"
            ))
        }
    } else if (7..=9).contains(&major) {
        Ok(format!("Elasticsearch {number}"))
    } else {
        Err(format!(
            "Elasticsearch {number} is not supported (7.x to 9.x are)"
        ))
    }
}
