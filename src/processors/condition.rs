//! Conditions on events, shared by the `drop_event` processor and an output's `when`.

use regex::Regex;
use serde_json::Value;

use crate::config::ConditionConfig;
use crate::event::Event;

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Condition {
    Equals { field: String, value: String },
    Matches { field: String, regex: Regex },
    Exists { field: String, present: bool },
    Not(Box<Condition>),
    All(Vec<Condition>),
    Any(Vec<Condition>),
}

impl Condition {
    /// Compiles a condition; the error says what is wrong in the user's words.
    pub fn compile(c: &ConditionConfig) -> Result<Condition, String> {
        let tests = [c.equals.is_some(), c.matches.is_some(), c.exists.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        let combinators = [c.not.is_some(), c.all.is_some(), c.any.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if tests + combinators != 1 {
            return Err(
                "expected exactly one of `equals`, `matches`, `exists` (with `field`), or `not`, `all`, `any`"
                    .into(),
            );
        }
        if combinators == 1 && c.field.is_some() {
            return Err("`field` goes inside `not`/`all`/`any`, not beside it".into());
        }
        if let Some(inner) = &c.not {
            return Ok(Condition::Not(Box::new(Condition::compile(inner)?)));
        }
        if let Some(all) = &c.all {
            return all
                .iter()
                .map(Condition::compile)
                .collect::<Result<_, _>>()
                .map(Condition::All);
        }
        if let Some(any) = &c.any {
            return any
                .iter()
                .map(Condition::compile)
                .collect::<Result<_, _>>()
                .map(Condition::Any);
        }
        let Some(field) = c.field.clone() else {
            return Err("`field` is required with `equals`, `matches` and `exists`".into());
        };
        if let Some(v) = &c.equals {
            let value = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            return Ok(Condition::Equals { field, value });
        }
        if let Some(re) = &c.matches {
            let regex = Regex::new(re)
                .map_err(|e| format!("invalid regular expression in `matches`: {e}"))?;
            return Ok(Condition::Matches { field, regex });
        }
        Ok(Condition::Exists {
            field,
            present: c.exists.unwrap_or(true),
        })
    }

    pub fn eval(&self, e: &Event) -> bool {
        match self {
            Condition::Equals { field, value } => {
                e.get(field).is_some_and(|v| v.to_text() == value.as_str())
            }
            Condition::Matches { field, regex } => {
                e.get(field).is_some_and(|v| regex.is_match(&v.to_text()))
            }
            Condition::Exists { field, present } => e.get(field).is_some() == *present,
            Condition::Not(c) => !c.eval(e),
            Condition::All(cs) => cs.iter().all(|c| c.eval(e)),
            Condition::Any(cs) => cs.iter().any(|c| c.eval(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(yaml: &str) -> Result<Condition, String> {
        let c: ConditionConfig = serde_yaml_ng::from_str(yaml).unwrap();
        Condition::compile(&c)
    }

    #[test]
    fn evaluates() {
        let mut e = Event::synthetic("app", "GET /health 200");
        e.insert("level", Value::String("debug".into()));
        e.insert("http.status", Value::from(500));
        assert!(cond("{ field: level, equals: debug }").unwrap().eval(&e));
        assert!(
            cond("{ field: http.status, equals: 500 }")
                .unwrap()
                .eval(&e)
        );
        assert!(
            cond("{ field: message, matches: '^GET /health' }")
                .unwrap()
                .eval(&e)
        );
        assert!(cond("{ field: nope, exists: false }").unwrap().eval(&e));
        assert!(
            !cond("{ not: { field: level, equals: debug } }")
                .unwrap()
                .eval(&e)
        );
        assert!(
            cond("{ any: [{ field: a, exists: true }, { field: level, exists: true }] }")
                .unwrap()
                .eval(&e)
        );
        assert!(
            !cond("{ all: [{ field: a, exists: true }, { field: level, exists: true }] }")
                .unwrap()
                .eval(&e)
        );
    }

    #[test]
    fn rejects_ambiguous() {
        assert!(cond("{ field: a, equals: 1, exists: true }").is_err());
        assert!(cond("{ equals: 1 }").is_err());
        assert!(cond("{ field: a, matches: '(' }").is_err());
    }
}
