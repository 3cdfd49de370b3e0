//! `stdout`: one event a line on standard output (NDJSON, or the bare message with
//! `format: text`). The agent's own logs go to stderr, so stdout carries only events.

use std::io::Write;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::event::{Event, MetaCache};
use crate::outputs::{Output, OutputContext, OutputSpec, SendOutcome};

/// How an event is written on one line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    /// The whole event as JSON.
    #[default]
    Json,
    /// The message alone.
    Text,
}

/// `type: stdout`
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// `json` (the event) or `text` (the message).
    #[serde(default)]
    pub format: LineFormat,
}

impl OutputSpec for StdoutConfig {
    fn describe(&self) -> String {
        format!(
            "stdout ({})",
            if self.format == LineFormat::Json {
                "json"
            } else {
                "text"
            }
        )
    }
    fn build(&self, _ctx: &OutputContext) -> anyhow::Result<Arc<dyn Output>> {
        Ok(Arc::new(Stdout {
            format: self.format,
        }))
    }
}

pub struct Stdout {
    format: LineFormat,
}

/// Encodes events one per line; `cache` holds the last source's shared metadata as JSON
/// (keep one per batch).
pub fn encode_lines(
    events: &[Event],
    format: LineFormat,
    out: &mut Vec<u8>,
    cache: &mut MetaCache,
) {
    for e in events {
        match format {
            LineFormat::Json => e.write_json_cached(out, cache),
            LineFormat::Text => out.extend_from_slice(e.message_str().as_bytes()),
        }
        out.push(b'\n');
    }
}

impl Output for Stdout {
    fn send<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, SendOutcome> {
        let mut buf = Vec::with_capacity(events.len() * 300);
        encode_lines(events, self.format, &mut buf, &mut MetaCache::default());
        Box::pin(async move {
            let res = tokio::task::spawn_blocking(move || {
                let mut out = std::io::stdout().lock();
                out.write_all(&buf).and_then(|_| out.flush())
            })
            .await;
            match res {
                Ok(Ok(())) => SendOutcome::Delivered,
                Ok(Err(e)) => SendOutcome::Retry {
                    reason: format!("cannot write to stdout: {e}"),
                    after: None,
                },
                Err(e) => SendOutcome::Retry {
                    reason: format!("stdout writer failed: {e}"),
                    after: None,
                },
            }
        })
    }
}
