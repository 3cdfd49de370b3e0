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
pub mod multiline;

use schemars::JsonSchema;
use serde::Deserialize;

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
            ProcessorConfig::AddFields(c) => Box::new(fields::AddFields::new(c)),
            ProcessorConfig::DropFields(c) => Box::new(fields::DropFields::new(c)),
            ProcessorConfig::RenameFields(c) => Box::new(fields::RenameFields::new(c)),
            ProcessorConfig::DropEvent(c) => Box::new(drop_event::DropEvent::new(c, input_id)?),
        })
    }
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
