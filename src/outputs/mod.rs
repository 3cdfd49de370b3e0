//! Outputs: one folder per backend, one line per backend in [`REGISTRY`], over one shared
//! [`driver`] that owns batching, concurrency, retries with backoff, dead letters and the
//! release of acknowledgements.
//!
//! An output only encodes, sends and classifies: it turns a batch into a request and the
//! response into a [`SendOutcome`] (delivered, retry, rejected per event, or too large). It
//! never sleeps, retries or writes dead letters (ARCHITECTURE.md, 3).

pub mod cloudwatch;
pub mod dead_letter;
pub mod driver;
pub mod elasticsearch;
pub mod file;
pub mod logstash;
pub mod loki;
pub mod stats;
pub mod stdout;
pub mod template;

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::config::{ConfigSource, Diagnostic, from_value};
use crate::event::Event;

/// What became of one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    Delivered,
    /// Retryable for this event alone (e.g. a per-item 429).
    Retry(String),
    /// Permanent: to the dead letters, with the backend's words.
    Rejected(String),
}

/// What became of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Every event is delivered.
    Delivered,
    /// Nothing was (certainly) delivered; send the whole batch again after a backoff
    /// (at least `after` when the backend said so, e.g. `Retry-After`).
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// One outcome per event, in order.
    Partial(Vec<ItemOutcome>),
    /// The request was too large for the backend: the driver splits the batch in halves; a
    /// single event that is still too large goes to the dead letters.
    TooLarge { reason: String },
}

/// A backend.
pub trait Output: Send + Sync + 'static {
    /// Sends one batch and classifies the result.
    fn send<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, SendOutcome>;

    /// Connects and checks what can be checked (version, auth); `Ok` holds a short summary.
    fn probe(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async { Ok("nothing to probe".to_owned()) })
    }
}

/// What an output needs from the agent to build itself.
#[derive(Debug, Clone)]
pub struct OutputContext {
    pub id: String,
    pub data_dir: PathBuf,
    pub host_name: String,
}

/// A parsed, type-specific output configuration.
pub trait OutputSpec: Debug + Send + Sync {
    /// Semantic checks beyond the types (templates, URLs), located under `path`.
    fn validate(&self, _source: &ConfigSource, _path: &str) -> Vec<Diagnostic> {
        Vec::new()
    }
    /// One line for `logferry check`'s topology.
    fn describe(&self) -> String;
    fn build(&self, ctx: &OutputContext) -> anyhow::Result<Arc<dyn Output>>;
}

/// One registered output type.
/// Parses the type-specific keys of one entry (`path` locates errors).
pub type ParseFn = fn(&ConfigSource, &str, Value) -> Result<Arc<dyn OutputSpec>, Diagnostic>;

pub struct Registration {
    pub name: &'static str,
    pub parse: ParseFn,
    pub schema: fn() -> schemars::Schema,
}

fn parse_as<T: DeserializeOwned + OutputSpec + 'static>(
    source: &ConfigSource,
    path: &str,
    v: Value,
) -> Result<Arc<dyn OutputSpec>, Diagnostic> {
    from_value::<T>(source, path, v).map(|t| Arc::new(t) as Arc<dyn OutputSpec>)
}

macro_rules! output {
    ($name:literal, $ty:ty) => {
        Registration {
            name: $name,
            parse: parse_as::<$ty>,
            schema: || schemars::schema_for!($ty),
        }
    };
}

/// Every output type: `type:` → its configuration.
pub const REGISTRY: &[Registration] = &[
    output!("stdout", stdout::StdoutConfig),
    output!("file", file::FileOutputConfig),
    output!("logstash", logstash::LogstashConfig),
    output!("loki", loki::LokiConfig),
    output!("cloudwatch", cloudwatch::CloudWatchConfig),
    output!("elasticsearch", elasticsearch::ElasticsearchConfig),
];

/// A configured output's type-specific part.
#[derive(Debug, Clone)]
pub struct OutputKind {
    pub name: &'static str,
    pub spec: Arc<dyn OutputSpec>,
}

impl OutputKind {
    pub fn parse(
        kind: &str,
        source: &ConfigSource,
        path: &str,
        v: Value,
    ) -> Result<OutputKind, Diagnostic> {
        let Some(reg) = REGISTRY.iter().find(|r| r.name == kind) else {
            let names: Vec<&str> = REGISTRY.iter().map(|r| r.name).collect();
            return Err(source.diag(
                &format!("{path}.type"),
                format!(
                    "unknown output type `{kind}`; expected one of {}",
                    names.join(", ")
                ),
            ));
        };
        Ok(OutputKind {
            name: reg.name,
            spec: (reg.parse)(source, path, v)?,
        })
    }

    pub fn validate(&self, source: &ConfigSource, path: &str) -> Vec<Diagnostic> {
        self.spec.validate(source, path)
    }
}
