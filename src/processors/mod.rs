//! Processors: per-input transformations of batches of events, run in the order configured.
//!
//! The seam is one small trait: a processor transforms a `Vec<Event>` in place. A processor
//! that removes an event resolves its finalizer (the event is deliberately not shipped, so its
//! position may advance) and counts it; a processor that fails on an event keeps the event and
//! records why in `error.message` (invariant: nothing is dropped silently).
//!
//! Multiline joining is not a `Processor`: it works on lines, per file, before events exist
//! (see [`multiline`]), so that a joined event's acknowledgement covers all of its lines.

pub mod condition;
pub mod drop_event;
pub mod fields;
pub mod json;
pub mod multiline;
pub mod redact;
pub mod timestamp;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::config::{ConfigSource, Diagnostic};
use crate::event::Event;

/// A transformation of a batch of events.
pub trait Processor: Send {
    fn process(&mut self, events: &mut Vec<Event>);
}

/// One entry of an input's `processors:` list.
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ProcessorConfig {
    /// Decode a JSON text field into the event.
    Json(json::JsonConfig),
    /// Set `@timestamp` from a field.
    Timestamp(timestamp::TimestampConfig),
    /// Mask secrets and personal data; pseudonymize fields with a keyed hash.
    Redact(redact::RedactConfig),
    /// Set fields (overwriting).
    AddFields(fields::AddFieldsConfig),
    /// Remove fields.
    DropFields(fields::DropFieldsConfig),
    /// Rename fields (`from: to`).
    RenameFields(fields::RenameFieldsConfig),
    /// Drop events that match a condition (counted, acknowledged).
    DropEvent(drop_event::DropEventConfig),
}

impl ProcessorConfig {
    pub fn name(&self) -> &'static str {
        match self {
            ProcessorConfig::Json(_) => "json",
            ProcessorConfig::Timestamp(_) => "timestamp",
            ProcessorConfig::Redact(_) => "redact",
            ProcessorConfig::AddFields(_) => "add_fields",
            ProcessorConfig::DropFields(_) => "drop_fields",
            ProcessorConfig::RenameFields(_) => "rename_fields",
            ProcessorConfig::DropEvent(_) => "drop_event",
        }
    }

    /// Problems a build would run into, located at `path`.
    pub fn validate(&self, source: &ConfigSource, path: &str) -> Vec<Diagnostic> {
        match self.build("check") {
            Ok(_) => Vec::new(),
            Err((sub, msg)) => vec![source.diag(
                &crate::config::join_path(&format!("{path}.{}", self.name()), &sub),
                msg,
            )],
        }
    }

    /// Builds the processor for input `input_id`; errors are (key path under the processor, message).
    pub fn build(&self, input_id: &str) -> Result<Box<dyn Processor>, (String, String)> {
        Ok(match self {
            ProcessorConfig::Json(c) => Box::new(json::Json::new(c, input_id)?),
            ProcessorConfig::Timestamp(c) => Box::new(timestamp::Timestamp::new(c, input_id)?),
            ProcessorConfig::Redact(c) => Box::new(redact::Redact::new(c, input_id)?),
            ProcessorConfig::AddFields(c) => Box::new(fields::AddFields::new(c)),
            ProcessorConfig::DropFields(c) => Box::new(fields::DropFields::new(c)),
            ProcessorConfig::RenameFields(c) => Box::new(fields::RenameFields::new(c)),
            ProcessorConfig::DropEvent(c) => Box::new(drop_event::DropEvent::new(c, input_id)?),
        })
    }
}

/// Records on the event why a processor could not do its work: `error.message` (appended to
/// with `; ` when an earlier processor already set one) and `error.type` (the processor).
pub fn record_error(e: &mut Event, processor: &str, message: String) {
    let message = match e.get("error.message") {
        Some(prev) => format!("{}; {message}", prev.to_text()),
        None => message,
    };
    e.insert("error.message", Value::String(message));
    e.insert("error.type", Value::String(processor.to_owned()));
}

/// `logferry_processor_errors_total{input, processor}`: events a processor kept but could not
/// process.
pub fn error_counter(input_id: &str, processor: &'static str) -> metrics::Counter {
    metrics::counter!(
        "logferry_processor_errors_total",
        "input" => input_id.to_owned(),
        "processor" => processor
    )
}

/// The processors of one input, in order.
#[derive(Default)]
pub struct Chain(Vec<Box<dyn Processor>>);

impl Chain {
    pub fn build(configs: &[ProcessorConfig], input_id: &str) -> Result<Chain, String> {
        configs
            .iter()
            .map(|c| {
                c.build(input_id)
                    .map_err(|(p, m)| format!("{}: {p}: {m}", c.name()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Chain)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn run(&mut self, events: &mut Vec<Event>) {
        for p in &mut self.0 {
            if events.is_empty() {
                return;
            }
            p.process(events);
        }
    }
}
