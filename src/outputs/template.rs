//! Templates for index names, paths, labels and log groups: `{{ field.path }}` takes a field
//! of the event, `{{ field | default: "x" }}` gives a default, and `%Y %m %d %H` take the
//! event's timestamp in UTC (`%%` is a literal `%`). An event whose field is missing and has
//! no default cannot be rendered: the caller dead-letters it with the reason.

use crate::event::{Event, civil_from_days};

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Field {
        path: String,
        default: Option<String>,
    },
    Year,
    Month,
    Day,
    Hour,
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("{{") {
                let Some(end) = r.find("}}") else {
                    return Err(format!("unclosed `{{{{` in template `{s}`"));
                };
                let inner = r[..end].trim();
                let (path, default) = match inner.split_once('|') {
                    Some((p, d)) => {
                        let d = d.trim();
                        let Some(v) = d.strip_prefix("default:") else {
                            return Err(format!(
                                "unknown filter `{d}` in template `{s}`: expected `default: \"...\"`"
                            ));
                        };
                        let v = v.trim().trim_matches('"').trim_matches('\'');
                        (p.trim(), Some(v.to_owned()))
                    }
                    None => (inner, None),
                };
                if path.is_empty() || path.contains(char::is_whitespace) {
                    return Err(format!("invalid field `{path}` in template `{s}`"));
                }
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(Part::Field {
                    path: path.to_owned(),
                    default,
                });
                rest = &r[end + 2..];
                continue;
            }
            if let Some(r) = rest.strip_prefix('%') {
                let Some(c) = r.chars().next() else {
                    return Err(format!("dangling `%` in template `{s}`"));
                };
                let part = match c {
                    'Y' => Part::Year,
                    'm' => Part::Month,
                    'd' => Part::Day,
                    'H' => Part::Hour,
                    '%' => {
                        lit.push('%');
                        rest = &r[1..];
                        continue;
                    }
                    other => {
                        return Err(format!(
                            "unsupported `%{other}` in template `{s}`: expected %Y, %m, %d, %H or %%"
                        ));
                    }
                };
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(part);
                rest = &r[1..];
                continue;
            }
            let c = rest.chars().next().unwrap_or_default();
            lit.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template { parts })
    }

    /// Whether the template takes any event field (not only the time).
    pub fn parts_use_fields(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Field { .. }))
    }

    /// Whether the template renders the same for every event of one source: its fields are
    /// only ones the source fixes (`Event::get` answers them from the source, whatever the
    /// event's own fields), and it takes no time.
    pub fn is_per_source(&self) -> bool {
        self.parts.iter().all(|p| match p {
            Part::Lit(_) => true,
            Part::Field { path, .. } => matches!(
                path.as_str(),
                "host.name" | "input.id" | "input.type" | "log.file.path"
            ),
            _ => false,
        })
    }

    /// Whether the template is the same for every event.
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// Renders for `e` into `out` (cleared first); `Err` names the missing field.
    pub fn render_into(&self, e: &Event, out: &mut String) -> Result<(), String> {
        self.render_with(
            e.timestamp,
            |p, out| match e.get(p) {
                Some(v) => {
                    out.push_str(&v.to_text());
                    true
                }
                None => false,
            },
            out,
        )
    }

    /// Renders with the time alone (fields missing), e.g. a file path with `%Y-%m-%d`.
    pub fn render_time(&self, nanos: i64, out: &mut String) -> Result<(), String> {
        self.render_with(nanos, |_, _| false, out)
    }

    fn render_with(
        &self,
        nanos: i64,
        // Appends the field's text to the string; false when the event has no such field.
        field: impl Fn(&str, &mut String) -> bool,
        out: &mut String,
    ) -> Result<(), String> {
        out.clear();
        let secs = nanos.div_euclid(1_000_000_000);
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let h = secs.rem_euclid(86_400) / 3600;
        use std::fmt::Write;
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Field { path, default } => match (field(path, out), default) {
                    (true, _) => {}
                    (false, Some(d)) => out.push_str(d),
                    (false, None) => {
                        return Err(format!("template field `{path}` is missing from the event"));
                    }
                },
                Part::Year => {
                    let _ = write!(out, "{y:04}");
                }
                Part::Month => {
                    let _ = write!(out, "{m:02}");
                }
                Part::Day => {
                    let _ = write!(out, "{d:02}");
                }
                Part::Hour => {
                    let _ = write!(out, "{h:02}");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn renders() {
        let mut e = Event::synthetic("app", "m");
        e.timestamp = 1_700_000_000_000_000_000; // 2023-11-14T22:13:20Z
        e.insert("service", Value::String("api".into()));
        let mut out = String::new();
        Template::parse("logs-{{ service }}-%Y.%m.%d")
            .unwrap()
            .render_into(&e, &mut out)
            .unwrap();
        assert_eq!(out, "logs-api-2023.11.14");
        Template::parse("{{ team | default: \"none\" }}/{{input.id}}/%H%%")
            .unwrap()
            .render_into(&e, &mut out)
            .unwrap();
        assert_eq!(out, "none/app/22%");
        assert!(
            Template::parse("{{ team }}")
                .unwrap()
                .render_into(&e, &mut out)
                .unwrap_err()
                .contains("team")
        );
        assert!(Template::parse("%Q").is_err());
        assert!(Template::parse("{{ x").is_err());
    }
}
