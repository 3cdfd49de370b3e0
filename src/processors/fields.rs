//! `add_fields`, `drop_fields`, `rename_fields`.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Processor;
use crate::event::Event;

/// `add_fields: { fields: { env: prod } }`
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddFieldsConfig {
    /// Field paths and values to set.
    pub fields: Map<String, Value>,
}

/// `drop_fields: { fields: [password] }`
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DropFieldsConfig {
    /// Field paths to remove.
    pub fields: Vec<String>,
}

/// `rename_fields: { fields: { msg: message } }`
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameFieldsConfig {
    /// `from: to` pairs; a missing `from` is left alone; an existing `to` is overwritten.
    pub fields: Map<String, Value>,
}

pub struct AddFields(Vec<(String, Value)>);

impl AddFields {
    pub fn new(c: &AddFieldsConfig) -> AddFields {
        AddFields(
            c.fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }
}

impl Processor for AddFields {
    fn process(&mut self, events: &mut Vec<Event>) {
        for e in events {
            for (k, v) in &self.0 {
                e.insert(k, v.clone());
            }
        }
    }
}

pub struct DropFields(Vec<String>);

impl DropFields {
    pub fn new(c: &DropFieldsConfig) -> DropFields {
        DropFields(c.fields.clone())
    }
}

impl Processor for DropFields {
    fn process(&mut self, events: &mut Vec<Event>) {
        for e in events {
            for k in &self.0 {
                e.remove(k);
            }
        }
    }
}

pub struct RenameFields(Vec<(String, String)>);

impl RenameFields {
    pub fn new(c: &RenameFieldsConfig) -> RenameFields {
        RenameFields(
            c.fields
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect(),
        )
    }
}

impl Processor for RenameFields {
    fn process(&mut self, events: &mut Vec<Event>) {
        for e in events {
            for (from, to) in &self.0 {
                if let Some(v) = e.remove(from) {
                    e.insert(to, v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_drop_rename() {
        let mut events = vec![Event::synthetic("a", "hello")];
        let mut add =
            AddFields::new(&serde_yaml_ng::from_str("fields: { env: prod, user.id: 7 }").unwrap());
        add.process(&mut events);
        assert_eq!(events[0].get("user.id").unwrap().to_text(), "7");
        let mut ren = RenameFields::new(
            &serde_yaml_ng::from_str("fields: { message: msg, nope: x }").unwrap(),
        );
        ren.process(&mut events);
        assert_eq!(events[0].get("msg").unwrap().to_text(), "hello");
        assert!(events[0].get("message").is_none());
        assert!(events[0].get("x").is_none());
        let mut drop = DropFields::new(&serde_yaml_ng::from_str("fields: [env, user.id]").unwrap());
        drop.process(&mut events);
        assert!(events[0].get("env").is_none());
        assert!(events[0].get("user.id").is_none());
    }
}
