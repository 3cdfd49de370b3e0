//! Configuration: `agent.yaml` → typed, validated [`Config`], through one [`load`].
//!
//! Loading goes in three steps, each of which reports errors that name the file, the line and
//! column, the key path (`outputs[1].batch.max_bytes`) and what was expected:
//!
//! 1. `${VAR}` / `${VAR:-default}` expansion on the text (`$${` stays a literal `${`);
//! 2. YAML → typed structs (unknown keys are errors). Inputs and outputs are dispatched on their
//!    `type:` by hand rather than by serde's internally tagged enums, because those buffer the
//!    entry and lose the position and key path of errors inside it;
//! 3. semantic validation (unique ids, regexes that compile, templates, references).
//!
//! Positions come from serde_yaml_ng where it has them; otherwise [`locate`] finds the node
//! at a key path by walking the document once more (a "seeker" deserializer whose error at
//! the target carries serde_yaml_ng's mark for that node).

pub mod types;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_yaml_ng::Value;

pub use types::*;

/// One configuration problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Key path, e.g. `inputs[0].paths`; empty for the document as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The source text of a configuration, kept to locate errors found after parsing.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub name: String,
    pub text: String,
}

impl ConfigSource {
    /// A diagnostic at `path`, located in the text where possible.
    pub fn diag(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        let (line, column) = match locate(&self.text, path) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        Diagnostic {
            file: self.name.clone(),
            line,
            column,
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// Loads, expands, parses and validates the configuration at `path` (`-` reads stdin).
pub fn load(path: &str) -> Result<Config, ConfigError> {
    let (name, text) = if path == "-" {
        let mut s = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
            return Err(single(
                "<stdin>",
                format!("cannot read the config from stdin: {e}"),
            ));
        }
        ("<stdin>".to_owned(), s)
    } else {
        match std::fs::read_to_string(path) {
            Ok(s) => (path.to_owned(), s),
            Err(e) => {
                return Err(single(path, format!("cannot read the config file: {e}")));
            }
        }
    };
    load_str(&name, &text)
}

fn single(file: &str, message: String) -> ConfigError {
    ConfigError {
        diagnostics: vec![Diagnostic {
            file: file.to_owned(),
            line: None,
            column: None,
            path: String::new(),
            message,
        }],
    }
}

/// Parses and validates configuration text; `name` is used in error messages.
pub fn load_str(name: &str, text: &str) -> Result<Config, ConfigError> {
    load_str_with_env(name, text, &|k| std::env::var(k).ok())
}

/// As [`load_str`], with the environment given as a lookup function (tests).
pub fn load_str_with_env(
    name: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let expanded = expand_env(text, env).map_err(|(line, column, message)| ConfigError {
        diagnostics: vec![Diagnostic {
            file: name.to_owned(),
            line: Some(line),
            column: Some(column),
            path: String::new(),
            message,
        }],
    })?;
    let source = ConfigSource {
        name: name.to_owned(),
        text: expanded,
    };
    let raw: RawConfig = parse_typed(&source, "", || {
        serde_yaml_ng::Deserializer::from_str(&source.text)
    })?;
    types::build(raw, source)
}

/// Deserializes `T`, turning a failure into a located diagnostic whose path is prefixed.
pub(crate) fn parse_typed<'de, T, D, F>(
    source: &ConfigSource,
    prefix: &str,
    make: F,
) -> Result<T, ConfigError>
where
    T: Deserialize<'de>,
    D: Deserializer<'de, Error = serde_yaml_ng::Error>,
    F: FnOnce() -> D,
{
    serde_path_to_error::deserialize(make()).map_err(|e| ConfigError {
        diagnostics: vec![yaml_diag(source, prefix, &e)],
    })
}

/// Deserializes `T` from a YAML value found at `prefix` in the document. The value goes
/// through JSON's data model (string keys, single-key maps for enum variants), which is what
/// YAML users write (`- drop_event: {...}`).
pub(crate) fn from_value<T: de::DeserializeOwned>(
    source: &ConfigSource,
    prefix: &str,
    value: Value,
) -> Result<T, Diagnostic> {
    let json = match yaml_to_json(value) {
        Ok(j) => j,
        Err((p, m)) => return Err(source.diag(&join_path(prefix, &p), m)),
    };
    serde_path_to_error::deserialize::<_, T>(json).map_err(|e| {
        let inner = e.path().to_string();
        let mut path = join_path(prefix, &inner);
        let mut message = e.inner().to_string();
        if let Some(rest) = message.strip_prefix("unknown field `")
            && let Some(end) = rest.find('`')
        {
            if !path.ends_with(&rest[..end]) {
                path = join_path(&path, &rest[..end]);
            }
            let exp = rest[end + 1..]
                .trim_start_matches(", expected")
                .trim_start_matches(" one of");
            message = format!("unknown key `{}`; expected one of{exp}", &rest[..end]);
        }
        source.diag(&path, message)
    })
}

fn yaml_to_json(v: Value) -> Result<serde_json::Value, (String, String)> {
    Ok(match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                serde_json::Value::from(i)
            } else if let Some(u) = n.as_u64() {
                serde_json::Value::from(u)
            } else {
                serde_json::Number::from_f64(n.as_f64().unwrap_or(0.0))
                    .map(serde_json::Value::Number)
                    .ok_or_else(|| (String::new(), format!("number `{n}` is not finite")))?
            }
        }
        Value::String(s) => serde_json::Value::String(s),
        Value::Sequence(items) => serde_json::Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    yaml_to_json(v).map_err(|(p, m)| (join_path(&format!("[{i}]"), &p), m))
                })
                .collect::<Result<_, _>>()?,
        ),
        Value::Mapping(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let key = match k {
                    Value::String(s) => s,
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    other => {
                        return Err((
                            String::new(),
                            format!("mapping keys must be text, found {other:?}"),
                        ));
                    }
                };
                let jv = yaml_to_json(v).map_err(|(p, m)| (join_path(&key, &p), m))?;
                out.insert(key, jv);
            }
            serde_json::Value::Object(out)
        }
        Value::Tagged(t) => {
            return Err((
                String::new(),
                format!("YAML tags (`!{}`) are not supported here", t.tag),
            ));
        }
    })
}

fn yaml_diag(
    source: &ConfigSource,
    prefix: &str,
    e: &serde_path_to_error::Error<serde_yaml_ng::Error>,
) -> Diagnostic {
    let mut path = join_path(prefix, &e.path().to_string());
    let mut message = e.inner().to_string();
    // serde_yaml_ng appends " at line L column C" and may prefix the path; keep the words.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    let inner_path = e.path().to_string();
    if !inner_path.is_empty() && inner_path != "." {
        let pfx = format!("{inner_path}: ");
        if let Some(rest) = message.strip_prefix(&pfx) {
            message = rest.to_owned();
        }
    }
    // An unknown key: point at the key itself.
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some(end) = rest.find('`')
    {
        path = join_path(&path, &rest[..end]);
        message = format!("unknown key `{}`; expected one of{}", &rest[..end], {
            let exp = rest[end + 1..].trim_start_matches(", expected");
            exp.trim_start_matches(" one of").to_owned()
        });
    }
    let mut d = source.diag(&path, message);
    if d.line.is_none()
        && let Some(loc) = e.inner().location()
    {
        d.line = Some(loc.line());
        d.column = Some(loc.column());
    }
    d
}

pub(crate) fn join_path(prefix: &str, rest: &str) -> String {
    let rest = if rest == "." { "" } else { rest };
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (false, false) => format!("{prefix}.{rest}"),
    }
}

/// Expands `${VAR}` and `${VAR:-default}`; `$${` is a literal `${`. An unset variable without
/// a default is an error (line, column, message), as in Filebeat.
pub fn expand_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, (usize, usize, String)> {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut line = 1;
    let mut line_start = 0;
    let (mut single, mut double) = (false, false);
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' {
            line += 1;
            line_start = i + 1;
            single = false;
            double = false;
        }
        // Comments are copied as they are: `${VAR}` in a comment is documentation.
        if b == b'#' && !single && !double && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            let end = text[i..].find('\n').map_or(text.len(), |n| i + n);
            out.push_str(&text[i..end]);
            i = end;
            continue;
        }
        if b == b'\'' && !double {
            single = !single;
        } else if b == b'"' && !single && (i == 0 || bytes[i - 1] != b'\\') {
            double = !double;
        }
        if b == b'$' && bytes.get(i + 1) == Some(&b'$') && bytes.get(i + 2) == Some(&b'{') {
            out.push_str("${");
            i += 3;
            continue;
        }
        if b == b'$' && bytes.get(i + 1) == Some(&b'{') {
            let col = i - line_start + 1;
            let Some(end) = text[i + 2..].find('}') else {
                return Err((
                    line,
                    col,
                    "unclosed `${` (write `$${` for a literal)".into(),
                ));
            };
            let inner = &text[i + 2..i + 2 + end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
                return Err((
                    line,
                    col,
                    format!("`${{{inner}}}` is not a valid variable reference"),
                ));
            }
            match (env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err((
                        line,
                        col,
                        format!(
                            "environment variable `{name}` is not set (give a default with `${{{name}:-...}}`)"
                        ),
                    ));
                }
            }
            i += 2 + end + 1;
            continue;
        }
        // Copy one UTF-8 character.
        let ch_len = utf8_len(b);
        out.push_str(&text[i..(i + ch_len).min(text.len())]);
        i += ch_len;
    }
    Ok(out)
}

fn utf8_len(b: u8) -> usize {
    match b {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Line and column (1-based) of the node at `path` (`inputs[0].multiline.pattern`), if the
/// document has one there. The nearest existing ancestor is returned otherwise.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let segments = parse_path(path);
    let mut best = None;
    for n in (0..=segments.len()).rev() {
        let seeker = Seeker {
            path: &segments[..n],
        };
        let de = serde_yaml_ng::Deserializer::from_str(text);
        if let Err(e) = seeker.deserialize(de)
            && e.to_string().contains(FOUND)
            && let Some(loc) = e.location()
        {
            best = Some((loc.line(), loc.column()));
            break;
        }
    }
    best
}

const FOUND: &str = "\u{1}located\u{1}";

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn parse_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.') {
        if part.is_empty() {
            continue;
        }
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key.to_owned()));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { break };
            if let Ok(i) = stripped[..end].parse() {
                out.push(Seg::Index(i));
            }
            rest = &stripped[end + 1..];
        }
    }
    out
}

struct Seeker<'p> {
    path: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Seeker<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seeker<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let Seg::Index(want) = first else {
            return Err(de::Error::custom("not here"));
        };
        let mut i = 0;
        loop {
            if i == *want {
                return match seq.next_element_seed(Seeker { path: rest })? {
                    Some(()) => Err(de::Error::custom("not here")),
                    None => Err(de::Error::custom("not here")),
                };
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom("not here"));
            }
            i += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let Seg::Key(want) = first else {
            return Err(de::Error::custom("not here"));
        };
        while let Some(key) = map.next_key::<KeyStr>()? {
            if key.0 == *want {
                map.next_value_seed(Seeker { path: rest })?;
                return Err(de::Error::custom("not here"));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom("not here"))
    }
}

impl Seeker<'_> {
    fn leaf<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Err(E::custom("not here"))
        }
    }
}

/// A mapping key of any scalar type, as text.
struct KeyStr(String);

impl<'de> Deserialize<'de> for KeyStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(KeyStr(match v {
            Value::String(s) => s,
            other => serde_yaml_ng::to_string(&other)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }))
    }
}

/// Resolves a path relative to the directory of the config file (`-` → current directory).
pub fn relative_to(config_path: &str, p: &Path) -> PathBuf {
    if p.is_absolute() || config_path == "-" {
        return p.to_path_buf();
    }
    Path::new(config_path)
        .parent()
        .map(|d| d.join(p))
        .unwrap_or_else(|| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "HOME_DIR" => Some("/home/x".into()),
            _ => None,
        }
    }

    #[test]
    fn expansion() {
        assert_eq!(
            expand_env("a: ${HOME_DIR}/y", &env).unwrap(),
            "a: /home/x/y"
        );
        assert_eq!(expand_env("a: ${NOPE:-d}", &env).unwrap(), "a: d");
        assert_eq!(expand_env("a: ${NOPE:-}", &env).unwrap(), "a: ");
        assert_eq!(expand_env("a: $${LIT}", &env).unwrap(), "a: ${LIT}");
        assert_eq!(expand_env("é: ${HOME_DIR}", &env).unwrap(), "é: /home/x");
        assert_eq!(
            expand_env("# ${NOPE}\na: 1 # ${NOPE}", &env).unwrap(),
            "# ${NOPE}\na: 1 # ${NOPE}"
        );
        assert_eq!(
            expand_env("a: '#${HOME_DIR}'", &env).unwrap(),
            "a: '#/home/x'"
        );
        let e = expand_env("x: 1\nb: ${NOPE}", &env).unwrap_err();
        assert_eq!((e.0, e.1), (2, 4));
        assert!(e.2.contains("NOPE"));
    }

    #[test]
    fn locates_nested_paths() {
        let text = "a: 1\ninputs:\n  - id: x\n    paths: [p]\n  - id: y\n    multiline:\n      pattern: '['\n";
        assert_eq!(locate(text, "inputs[1].multiline.pattern"), Some((7, 16)));
        assert_eq!(locate(text, "inputs[0].paths"), Some((4, 12)));
        // Missing key: nearest ancestor.
        assert_eq!(locate(text, "inputs[1].nope").map(|l| l.0), Some(5));
    }
}
