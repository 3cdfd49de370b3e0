//! `drop_event: { when: ... }` — drops matching events, acknowledges and counts them.

use schemars::JsonSchema;
use serde::Deserialize;

use super::Processor;
use super::condition::Condition;
use crate::config::ConditionConfig;
use crate::event::Event;

#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DropEventConfig {
    /// Events matching this condition are dropped.
    pub when: ConditionConfig,
}

pub struct DropEvent {
    when: Condition,
    dropped: metrics::Counter,
}

impl DropEvent {
    pub fn new(c: &DropEventConfig, input_id: &str) -> Result<DropEvent, (String, String)> {
        let when = Condition::compile(&c.when).map_err(|e| ("when".to_owned(), e))?;
        Ok(DropEvent {
            when,
            dropped: metrics::counter!("logferry_processor_dropped_events_total", "input" => input_id.to_owned()),
        })
    }
}

impl Processor for DropEvent {
    fn process(&mut self, events: &mut Vec<Event>) {
        let before = events.len();
        events.retain_mut(|e| {
            if self.when.eval(e) {
                e.finalizer.resolve();
                false
            } else {
                true
            }
        });
        self.dropped.increment((before - events.len()) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::{Finalizer, OrderedAcker};

    #[test]
    fn dropped_events_are_acknowledged() {
        let acker = OrderedAcker::new(0);
        let tok = acker.issue(10);
        let mut a = Event::synthetic("a", "debug: x");
        a.finalizer = Finalizer::new(tok.clone());
        drop(tok);
        let cfg: DropEventConfig =
            serde_yaml_ng::from_str("when: { field: message, matches: '^debug' }").unwrap();
        let mut p = DropEvent::new(&cfg, "a").unwrap();
        let mut events = vec![a, Event::synthetic("a", "info: y")];
        p.process(&mut events);
        assert_eq!(events.len(), 1);
        assert_eq!(acker.committed(), 10);
    }
}
