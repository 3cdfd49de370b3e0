//! `cloudwatch`: CloudWatch Logs through `aws-sdk-cloudwatchlogs` (PutLogEvents).
//!
//! Credentials come from the SDK's default chain (environment, shared profile, web identity
//! for IRSA, ECS, instance metadata); `endpoint` overrides the service URL for tests and
//! compatible services. The SDK's own retries are disabled and every call has a timeout, so
//! the driver alone retries (ARCHITECTURE.md, 3).
//!
//! Invariants: every request keeps the PutLogEvents limits (see [`encode`]); at most one
//! request per `(log_group, log_stream)` is in flight, even when the driver runs several
//! batches at once (a per-stream async lock), and the requests of one stream go out in order
//! and stop at the first failure, so what follows never overtakes what failed. With
//! `create_missing`, a group (with `retention_days`) and a stream are created once and
//! remembered; a group deleted later is found again through `ResourceNotFoundException`.
//! Strict order across batches also needs `max_in_flight: 1` (the driver may otherwise
//! retry one batch while the next one is delivered).

pub mod encode;
pub mod response;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use futures_util::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::{ConfigSource, Diagnostic, Dur};
use crate::event::Event;
use crate::outputs::template::Template;
use crate::outputs::{ItemOutcome, Output, OutputContext, OutputSpec, SendOutcome};

use encode::CwEvent;
use response::Class;

/// What one CloudWatch event holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LineMode {
    /// The message alone (a message over 262,118 bytes is split into several events).
    #[default]
    Message,
    /// The whole event as JSON (a `message` that makes it too large is cut and flagged
    /// `truncated`).
    Json,
}

/// The retention periods CloudWatch Logs accepts, in days.
const RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// `type: cloudwatch`
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchConfig {
    /// AWS region, e.g. `eu-west-1`; empty: the SDK's chain (`AWS_REGION`, profile, instance
    /// metadata).
    #[serde(default)]
    pub region: Option<String>,
    /// Service URL override for tests and compatible services; empty: the AWS default (the
    /// SDK also honours `AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Log group template, e.g. `/app/{{ service }}`. An event whose field is missing (and
    /// has no default) goes to the dead letters.
    pub log_group: String,
    /// Log stream template, e.g. `{{ host.name }}/{{ input.id }}`.
    pub log_stream: String,
    /// Create a missing log group and stream (once; remembered).
    #[serde(default)]
    pub create_missing: bool,
    /// Retention set on a log group this output creates (one of 1, 3, 5, 7, 14, 30, 60, 90,
    /// 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653); an existing
    /// group's retention is left alone. Empty: never expire.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// `message` (the line; one over 262,118 bytes is split into consecutive events with the
    /// same timestamp) or `json` (the whole event; a `message` that makes it too large is cut
    /// and flagged `truncated`). Empty messages go to the dead letters (the service refuses them).
    #[serde(default)]
    pub line: LineMode,
    /// Timeout of one call to the service (connecting included).
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

fn default_timeout() -> Dur {
    Dur::secs(30)
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl OutputSpec for CloudWatchConfig {
    fn validate(&self, source: &ConfigSource, path: &str) -> Vec<Diagnostic> {
        let mut d = Vec::new();
        for (key, t) in [
            ("log_group", &self.log_group),
            ("log_stream", &self.log_stream),
        ] {
            match Template::parse(t) {
                Ok(_) if t.trim().is_empty() => {
                    d.push(source.diag(&format!("{path}.{key}"), "must not be empty"))
                }
                Ok(_) => {}
                Err(e) => d.push(source.diag(&format!("{path}.{key}"), e)),
            }
        }
        if let Some(r) = self.retention_days
            && !RETENTION_DAYS.contains(&r)
        {
            d.push(source.diag(
                &format!("{path}.retention_days"),
                format!("{r} is not a retention CloudWatch Logs accepts; expected one of {RETENTION_DAYS:?}"),
            ));
        }
        if let Some(e) = non_empty(&self.endpoint)
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            d.push(source.diag(
                &format!("{path}.endpoint"),
                format!("`{e}` is not a URL; expected http(s)://host[:port]"),
            ));
        }
        d
    }

    fn describe(&self) -> String {
        format!(
            "cloudwatch {} / {} ({}{})",
            self.log_group,
            self.log_stream,
            non_empty(&self.region).unwrap_or("region from the environment"),
            non_empty(&self.endpoint)
                .map(|e| format!(", endpoint {e}"))
                .unwrap_or_default()
        )
    }

    fn build(&self, _ctx: &OutputContext) -> anyhow::Result<Arc<dyn Output>> {
        let parse = |t: &str| Template::parse(t).map_err(anyhow::Error::msg);
        Ok(Arc::new(CloudWatch {
            group: parse(&self.log_group)?,
            stream: parse(&self.log_stream)?,
            region: non_empty(&self.region).map(str::to_owned),
            endpoint: non_empty(&self.endpoint).map(str::to_owned),
            line: self.line,
            create_missing: self.create_missing,
            retention_days: self.retention_days,
            timeout: self.timeout.0,
            client: tokio::sync::OnceCell::new(),
            groups: Mutex::new(HashSet::new()),
            streams: Mutex::new(HashSet::new()),
            locks: Mutex::new(HashMap::new()),
        }))
    }
}

type StreamKey = (String, String);

/// Caches above this many entries are pruned (streams that are idle) or forgotten (created
/// groups and streams: creating again is harmless), so memory stays bounded.
const CACHE_LIMIT: usize = 10_000;

pub struct CloudWatch {
    group: Template,
    stream: Template,
    region: Option<String>,
    endpoint: Option<String>,
    line: LineMode,
    create_missing: bool,
    retention_days: Option<u32>,
    timeout: Duration,
    /// Built on first use: loading the SDK's configuration is async.
    client: tokio::sync::OnceCell<Client>,
    /// Groups known to exist (created or found by this output).
    groups: Mutex<HashSet<String>>,
    /// Streams known to exist.
    streams: Mutex<HashSet<StreamKey>>,
    /// One lock per stream: one request in flight per stream.
    locks: Mutex<HashMap<StreamKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// How bad an outcome is, to merge the outcomes of an event split into several parts.
fn severity(o: &ItemOutcome) -> u8 {
    match o {
        ItemOutcome::Delivered => 0,
        ItemOutcome::Rejected(_) => 1,
        ItemOutcome::Retry(_) => 2,
    }
}

impl CloudWatch {
    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                use aws_config::retry::RetryConfig;
                use aws_config::timeout::TimeoutConfig;
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .http_client(http_client())
                    .retry_config(RetryConfig::disabled())
                    .timeout_config(
                        TimeoutConfig::builder()
                            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
                            .operation_attempt_timeout(self.timeout)
                            .operation_timeout(self.timeout)
                            .build(),
                    );
                if let Some(r) = &self.region {
                    loader = loader.region(aws_config::Region::new(r.clone()));
                }
                if let Some(e) = &self.endpoint {
                    loader = loader.endpoint_url(e.clone());
                }
                Client::new(&loader.load().await)
            })
            .await
    }

    fn stream_lock(&self, key: &StreamKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.len() >= CACHE_LIMIT && !locks.contains_key(key) {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(key.clone()).or_default().clone()
    }

    fn known(&self, key: &StreamKey) -> bool {
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    fn forget(&self, key: &StreamKey) {
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key.0);
    }

    /// Creates the group (with its retention) and the stream unless known to exist.
    async fn ensure(&self, client: &Client, key: &StreamKey) -> Result<(), Class> {
        let (group, stream) = key;
        let group_known = self
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(group);
        if !group_known {
            match client.create_log_group().log_group_name(group).send().await {
                Ok(_) => {
                    tracing::info!(log_group = %group, "created CloudWatch log group");
                    if let Some(days) = self.retention_days {
                        let r = client
                            .put_retention_policy()
                            .log_group_name(group)
                            .retention_in_days(days as i32)
                            .send()
                            .await;
                        if let Err(e) = r {
                            // The events can still be sent; the group keeps no expiry.
                            tracing::warn!(log_group = %group, error = %aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e), "cannot set the retention of the new log group");
                        }
                    }
                }
                Err(e) if e.code() == Some("ResourceAlreadyExistsException") => {}
                Err(e) => return Err(missing_is_retry(response::classify(&e))),
            }
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            if groups.len() >= CACHE_LIMIT {
                groups.clear();
            }
            groups.insert(group.clone());
        }
        match client
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some("ResourceAlreadyExistsException") => {}
            Err(e) => {
                let class = response::classify(&e);
                if matches!(class, Class::Missing(_)) {
                    // The group went away after we cached it.
                    self.forget(key);
                }
                return Err(missing_is_retry(class));
            }
        }
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if streams.len() >= CACHE_LIMIT {
            streams.clear();
        }
        streams.insert(key.clone());
        Ok(())
    }

    /// One PutLogEvents call; on success, which events the service rejected.
    async fn put(
        &self,
        client: &Client,
        key: &StreamKey,
        events: &[CwEvent],
    ) -> Result<Vec<Option<&'static str>>, Class> {
        let mut list = Vec::with_capacity(events.len());
        for e in events {
            let ev = InputLogEvent::builder()
                .timestamp(e.timestamp)
                .message(e.message.clone())
                .build()
                .map_err(|err| Class::Reject(format!("cannot build the event: {err}")))?;
            list.push(ev);
        }
        match client
            .put_log_events()
            .log_group_name(&key.0)
            .log_stream_name(&key.1)
            .set_log_events(Some(list))
            .send()
            .await
        {
            Ok(out) => {
                let ts: Vec<i64> = events.iter().map(|e| e.timestamp).collect();
                let now_ms = crate::event::now_nanos().div_euclid(1_000_000);
                Ok(response::rejected(
                    out.rejected_log_events_info(),
                    &ts,
                    now_ms,
                ))
            }
            Err(e) => Err(response::classify(&e)),
        }
    }

    /// Sends one stream's requests in order, under the stream's lock; returns an outcome per
    /// CloudWatch event (by batch index).
    async fn send_stream(
        &self,
        client: &Client,
        plan: encode::StreamPlan,
    ) -> Vec<(usize, ItemOutcome)> {
        let key = (plan.group, plan.stream);
        let lock = self.stream_lock(&key);
        let _one_in_flight = lock.lock().await;
        let mut out = Vec::new();
        let mut failed: Option<String> = None;
        for req in plan.requests {
            if let Some(reason) = &failed {
                out.extend(
                    req.iter()
                        .map(|e| (e.source, ItemOutcome::Retry(reason.clone()))),
                );
                continue;
            }
            let mut result = if self.create_missing && !self.known(&key) {
                match self.ensure(client, &key).await {
                    Ok(()) => self.put(client, &key, &req).await,
                    Err(c) => Err(c),
                }
            } else {
                self.put(client, &key, &req).await
            };
            if let Err(Class::Missing(_)) = &result {
                self.forget(&key);
                if self.create_missing {
                    // Deleted since we cached it: create once more, then send once more.
                    result = match self.ensure(client, &key).await {
                        Ok(()) => self.put(client, &key, &req).await.map_err(missing_is_retry),
                        Err(c) => Err(c),
                    };
                }
            }
            match result {
                Ok(rejected) => {
                    out.extend(req.iter().zip(rejected).map(|(e, r)| {
                        (
                            e.source,
                            r.map_or(ItemOutcome::Delivered, |r| ItemOutcome::Rejected(r.into())),
                        )
                    }));
                }
                Err(Class::Delivered) => {
                    out.extend(req.iter().map(|e| (e.source, ItemOutcome::Delivered)));
                }
                Err(Class::Reject(r)) => {
                    out.extend(
                        req.iter()
                            .map(|e| (e.source, ItemOutcome::Rejected(r.clone()))),
                    );
                }
                Err(Class::Retry(r)) => {
                    out.extend(
                        req.iter()
                            .map(|e| (e.source, ItemOutcome::Retry(r.clone()))),
                    );
                    failed = Some(r);
                }
                Err(Class::Missing(r)) => {
                    let r = if self.create_missing {
                        r
                    } else {
                        format!(
                            "{r} (log group {} / stream {}: create them, or set create_missing: true)",
                            key.0, key.1
                        )
                    };
                    out.extend(
                        req.iter()
                            .map(|e| (e.source, ItemOutcome::Retry(r.clone()))),
                    );
                    failed = Some(r);
                }
            }
        }
        out
    }
}

/// The SDK's HTTPS client on rustls with the *ring* provider (the one the binary installs), so
/// that the SDK does not pull in aws-lc.
pub fn http_client() -> aws_sdk_cloudwatchlogs::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// After a create attempt, a missing resource is a reason to come back later.
fn missing_is_retry(c: Class) -> Class {
    match c {
        Class::Missing(r) => Class::Retry(r),
        other => other,
    }
}

impl Output for CloudWatch {
    fn send<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let plan = encode::plan(events, &self.group, &self.stream, self.line);
            let mut outcomes = vec![ItemOutcome::Delivered; events.len()];
            for (i, reason) in plan.rejected {
                outcomes[i] = ItemOutcome::Rejected(reason);
            }
            if !plan.streams.is_empty() {
                let client = self.client().await;
                let per_stream = futures_util::future::join_all(
                    plan.streams
                        .into_iter()
                        .map(|sp| self.send_stream(client, sp)),
                )
                .await;
                for (i, o) in per_stream.into_iter().flatten() {
                    if let Some(slot) = outcomes.get_mut(i)
                        && severity(&o) > severity(slot)
                    {
                        *slot = o;
                    }
                }
            }
            if outcomes.iter().all(|o| *o == ItemOutcome::Delivered) {
                return SendOutcome::Delivered;
            }
            if let Some(ItemOutcome::Retry(reason)) = outcomes.first()
                && outcomes.iter().all(|o| matches!(o, ItemOutcome::Retry(_)))
            {
                return SendOutcome::Retry {
                    reason: reason.clone(),
                    after: None,
                };
            }
            SendOutcome::Partial(outcomes)
        })
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let client = self.client().await;
            match client.describe_log_groups().limit(1).send().await {
                Ok(_) => Ok(format!(
                    "DescribeLogGroups allowed ({})",
                    client
                        .config()
                        .region()
                        .map_or("no region".to_owned(), |r| r.to_string())
                )),
                Err(e) => Err(format!(
                    "DescribeLogGroups failed: {}",
                    aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e)
                )),
            }
        })
    }
}
