//! `redact`: masks secrets and personal data before any output or dead-letter file sees them.
//!
//! Processors run per input, before routing, so a redacted value never reaches a buffer, an
//! output, a dead-letter file or the agent's own logs (this module never logs a value).
//!
//! One pass per value: every detector — built-in and custom — is one pattern of a single
//! multi-pattern automaton (`regex_automata::meta::Regex::new_many`), which reports the
//! leftmost match and *which* pattern matched in the same scan; nothing runs one regex after
//! another. Most values hold no secret, so the common cost is one scan and no allocation: the
//! output string is built only once a first match is confirmed. Built-in patterns use ASCII
//! classes and ASCII word boundaries so the lazy DFA handles any text, Unicode included.
//!
//! A match is then confirmed by a cheap check where a pattern alone would misfire: credit card
//! numbers must pass Luhn and start like a card network's (so a random 16-digit id is left
//! alone); IBANs must pass mod-97; e-mail addresses need a well-formed local part and domain;
//! IPv6 candidates must parse. A rejected match is left as it is and the scan goes on after it.
//! Keyed detectors (`password_kv`, `bearer_token`) replace the value and keep the key, so
//! `password=hunter2` becomes `password=[REDACTED:password_kv]`; with `password_kv`, a field
//! whose own name is password-like (`"secret": ...` decoded by `json`) is replaced whole.
//!
//! `hash_fields` are replaced by a keyed pseudonym, HMAC-SHA256(hash_key, value) truncated to
//! 128 bits in hex: the same user correlates across events and hosts sharing the key, and the
//! value cannot be read back or guessed without the key.

use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use regex_automata::Input;
use regex_automata::meta::{Cache, Regex as MultiRegex};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::Sha256;

use super::Processor;
use crate::event::{Event, Text};

/// `redact: { builtins: [...], patterns: [{ name, regex }], fields: [...], hash_fields: [...], hash_key: ... }`
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// Built-in detectors. Default: every one except the opt-in `ipv4` and `ipv6`.
    #[serde(default = "default_builtins")]
    pub builtins: Vec<Builtin>,
    /// Custom detectors: `{ name: ssn, regex: '\b\d{3}-\d{2}-\d{4}\b' }`; a match is replaced
    /// by `[REDACTED:<name>]`.
    #[serde(default)]
    pub patterns: Vec<PatternConfig>,
    /// Field paths to scan (an object is scanned through). Default: `message` and every string
    /// field of the event, nested ones and the input's `fields` included.
    pub fields: Option<Vec<String>>,
    /// Field paths replaced by a keyed pseudonym (HMAC-SHA256 with `hash_key`, 32 hex digits).
    #[serde(default)]
    pub hash_fields: Vec<String>,
    /// The HMAC key for `hash_fields`, at least 16 bytes; take it from the environment
    /// (`hash_key: ${REDACT_KEY}`). Required with `hash_fields`.
    pub hash_key: Option<SecretString>,
}

/// A string that never shows in `Debug` or serialized config (error messages, `check`).
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl serde::Serialize for SecretString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// A custom detector.
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    /// Shown in the replacement, `[REDACTED:<name>]`; `[a-z0-9_]+`.
    pub name: String,
    /// Regular expression (Rust `regex` syntax); the whole match is replaced.
    pub regex: String,
}

/// Built-in detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    /// E-mail addresses (`local@domain.tld`).
    Email,
    /// Payment card numbers, 13–19 digits with optional space/dash groups, Luhn-valid and
    /// starting like a card network's number.
    CreditCard,
    /// IBANs (checked with mod-97).
    Iban,
    /// JSON Web Tokens (`eyJ...` header and payload).
    Jwt,
    /// `Bearer <token>` (the token is replaced, the word kept).
    BearerToken,
    /// AWS access key ids (`AKIA...`, `ASIA...`).
    AwsAccessKey,
    /// Values after password-like keys: `password=...`, `"secret": "..."`, `api_key: ...`,
    /// and whole fields whose name is password-like.
    PasswordKv,
    /// IPv4 addresses (opt-in).
    Ipv4,
    /// IPv6 addresses (opt-in).
    Ipv6,
}

fn default_builtins() -> Vec<Builtin> {
    use Builtin::*;
    vec![
        Email,
        CreditCard,
        Iban,
        Jwt,
        BearerToken,
        AwsAccessKey,
        PasswordKv,
    ]
}

/// Password-like key names (shared by the `password_kv` pattern and the field-name check).
const SECRET_KEY: &str = r"(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?key|access[_-]?token|auth[_-]?token|refresh[_-]?token|private[_-]?key|client[_-]?secret|token)";

impl Builtin {
    fn name(self) -> &'static str {
        match self {
            Builtin::Email => "email",
            Builtin::CreditCard => "credit_card",
            Builtin::Iban => "iban",
            Builtin::Jwt => "jwt",
            Builtin::BearerToken => "bearer_token",
            Builtin::AwsAccessKey => "aws_access_key",
            Builtin::PasswordKv => "password_kv",
            Builtin::Ipv4 => "ipv4",
            Builtin::Ipv6 => "ipv6",
        }
    }

    fn pattern(self) -> String {
        const B: &str = r"(?-u:\b)";
        match self {
            Builtin::Email => {
                format!(r"{B}[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{{2,24}}{B}")
            }
            Builtin::CreditCard => format!(r"{B}(?:[0-9][ -]?){{12,18}}[0-9]{B}"),
            Builtin::Iban => format!(r"{B}[A-Z]{{2}}[0-9]{{2}}(?: ?[A-Z0-9]){{11,30}}{B}"),
            Builtin::Jwt => {
                format!(r"{B}eyJ[A-Za-z0-9_-]{{5,}}\.eyJ[A-Za-z0-9_-]{{5,}}\.[A-Za-z0-9_-]*")
            }
            Builtin::BearerToken => format!(r"(?i:{B}bearer)[ \t]+[A-Za-z0-9._~+/-]+=*"),
            Builtin::AwsAccessKey => {
                format!(r"{B}(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{{16}}{B}")
            }
            Builtin::PasswordKv => format!(
                r#"(?i:[a-z0-9_.-]*{SECRET_KEY})"?[ \t]*[:=][ \t]*(?:"(?:[^"\\]|\\.)*"|'[^']*'|[^\s,;&"'}}\])]+)"#
            ),
            Builtin::Ipv4 => {
                let octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
                format!(r"{B}(?:{octet}\.){{3}}{octet}{B}")
            }
            Builtin::Ipv6 => r"(?i:[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7})".to_owned(),
        }
    }
}

/// How a candidate match is confirmed, and which part of it is the secret.
#[derive(Debug, Clone, Copy)]
enum Check {
    None,
    Builtin(Builtin),
}

struct Detector {
    replacement: String,
    check: Check,
}

/// The combined automaton and what each of its patterns means.
struct Scanner {
    re: MultiRegex,
    /// The automaton's scratch space, owned here rather than taken from regex's shared pool
    /// on every value (a processor runs on one thread at a time).
    cache: Cache,
    detectors: Vec<Detector>,
    /// Field names whose whole value is a secret (`password_kv` on).
    secret_key: Option<regex::Regex>,
    /// Whether [`Scanner::may_match_raw`] may rule a whole JSON text out in one scan: no
    /// pattern is anchored (`^`, `$`, `\A`, `\z`), so whatever matches inside one of its
    /// strings also matches somewhere in the text.
    raw_prefilter: bool,
}

impl Scanner {
    /// Whether some value of the undecoded JSON object `raw` may need redacting; `false` is
    /// a proof that none does, so the object need not be decoded.
    ///
    /// Why one scan of the whole text suffices: without a backslash, every string in `raw`
    /// is its own value byte for byte, and it sits between two `"` (not word characters, just
    /// like the start and end of a value), so a pattern that matches in a value matches in
    /// `raw`. The text never holds a line break (see `Event::set_raw_fields`), so a field
    /// whose name is password-like is matched by `password_kv` itself (`"token":"x"`,
    /// `"pwd": 7`, `"secret":[`). The text's keys and numbers only add candidates: a false
    /// alarm costs the ordinary per-value pass, never a miss.
    fn may_match_raw(&mut self, raw: &[u8]) -> bool {
        if !self.raw_prefilter || memchr::memchr(b'\\', raw).is_some() {
            return true;
        }
        let input = Input::new(raw).earliest(true);
        self.re.search_half_with(&mut self.cache, &input).is_some()
    }

    /// `s` with every confirmed match replaced, or `None` when nothing matched (no copy).
    fn redact_str(&mut self, s: &str) -> Option<String> {
        let mut out: Option<String> = None;
        let mut copied = 0;
        let mut at = 0;
        while at <= s.len() {
            let input = Input::new(s).span(at..s.len());
            let Some(m) = self.re.search_with(&mut self.cache, &input) else {
                break;
            };
            let (start, end) = (m.start(), m.end());
            if start == end {
                // An empty match (a custom pattern such as `x*`) redacts nothing.
                at = next_char(s, end);
                continue;
            }
            let d = &self.detectors[m.pattern().as_usize()];
            if let Some((a, b)) = secret_span(d.check, s, start, end) {
                let o = out.get_or_insert_with(|| String::with_capacity(s.len() + 16));
                o.push_str(&s[copied..a]);
                o.push_str(&d.replacement);
                copied = b;
            }
            at = end;
        }
        let mut o = out?;
        o.push_str(&s[copied..]);
        Some(o)
    }

    /// Whether a field named `key` holds a secret as a whole (`"password": ...`).
    fn is_secret_key(&self, key: &str) -> bool {
        // Every password-like name ends in one of these: skip the regex for all other keys.
        const ENDINGS: [&str; 6] = ["password", "passwd", "pwd", "secret", "key", "token"];
        let Some(re) = &self.secret_key else {
            return false;
        };
        let k = key.as_bytes();
        ENDINGS.iter().any(|end| {
            k.len() >= end.len() && k[k.len() - end.len()..].eq_ignore_ascii_case(end.as_bytes())
        }) && re.is_match(key)
    }

    /// Redacts every string in `v` (recursively); returns whether anything changed.
    fn redact_value(&mut self, key: Option<&str>, v: &mut Value) -> bool {
        if matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
            && key.is_some_and(|k| self.is_secret_key(k))
        {
            *v = Value::String(format!("[REDACTED:{}]", Builtin::PasswordKv.name()));
            return true;
        }
        match v {
            Value::String(s) => match self.redact_str(s) {
                Some(n) => {
                    *s = n;
                    true
                }
                None => false,
            },
            Value::Object(m) => self.redact_map(m),
            Value::Array(items) => {
                let mut any = false;
                for item in items {
                    any |= self.redact_value(key, item);
                }
                any
            }
            _ => false,
        }
    }

    fn redact_map(&mut self, m: &mut Map<String, Value>) -> bool {
        let mut any = false;
        for (k, v) in m.iter_mut() {
            any |= self.redact_value(Some(k), v);
        }
        any
    }

    fn redact_message(&mut self, e: &mut Event) -> bool {
        if let Some(m) = &e.message
            && let Some(new) = self.redact_str(m.as_str())
        {
            e.message = Some(Text::from(new));
            return true;
        }
        false
    }
}

pub struct Redact {
    scanner: Scanner,
    fields: Option<Vec<String>>,
    hash_fields: Vec<String>,
    hasher: Option<Hmac<Sha256>>,
    /// The last source metadata scanned, and whether it needs redacting (it is shared by
    /// every event of a file, so it is scanned once, not per event).
    meta_seen: Option<(Arc<Map<String, Value>>, bool)>,
    redacted: metrics::Counter,
}

impl Redact {
    pub fn new(c: &RedactConfig, input_id: &str) -> Result<Redact, (String, String)> {
        let mut patterns = Vec::new();
        let mut detectors = Vec::new();
        // Built-in patterns are unanchored; an anchored custom one turns the prefilter off.
        let mut raw_prefilter = true;
        for b in &c.builtins {
            patterns.push(b.pattern());
            detectors.push(Detector {
                replacement: format!("[REDACTED:{}]", b.name()),
                check: Check::Builtin(*b),
            });
        }
        for (i, p) in c.patterns.iter().enumerate() {
            if p.name.is_empty()
                || !p
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err((
                    format!("patterns[{i}].name"),
                    "must match [a-z0-9_]+".into(),
                ));
            }
            regex::Regex::new(&p.regex).map_err(|e| {
                (
                    format!("patterns[{i}].regex"),
                    format!("invalid regular expression: {e}"),
                )
            })?;
            if ["^", "$", "\\A", "\\z"].iter().any(|a| p.regex.contains(a)) {
                raw_prefilter = false;
            }
            patterns.push(p.regex.clone());
            detectors.push(Detector {
                replacement: format!("[REDACTED:{}]", p.name),
                check: Check::None,
            });
        }
        if patterns.is_empty() && c.hash_fields.is_empty() {
            return Err((
                "builtins".into(),
                "nothing to do: list builtins, patterns or hash_fields".into(),
            ));
        }
        let re = MultiRegex::new_many(&patterns).map_err(|e| {
            (
                "patterns".to_owned(),
                format!("cannot combine the patterns: {e}"),
            )
        })?;
        let secret_key = if c.builtins.contains(&Builtin::PasswordKv) {
            Some(
                regex::Regex::new(&format!("(?i)^[a-z0-9_.-]*{SECRET_KEY}$"))
                    .map_err(|e| ("builtins".to_owned(), e.to_string()))?,
            )
        } else {
            None
        };
        let hasher = match (&c.hash_key, c.hash_fields.is_empty()) {
            (_, true) => None,
            (None, false) => {
                return Err((
                    "hash_key".into(),
                    "required with hash_fields (e.g. hash_key: ${REDACT_KEY})".into(),
                ));
            }
            (Some(k), false) => {
                if k.0.len() < 16 {
                    return Err((
                        "hash_key".into(),
                        "must be at least 16 bytes (is the environment variable set?)".into(),
                    ));
                }
                Some(
                    <Hmac<Sha256> as KeyInit>::new_from_slice(k.0.as_bytes())
                        .map_err(|e| ("hash_key".to_owned(), e.to_string()))?,
                )
            }
        };
        if let Some(fields) = &c.fields
            && let Some(i) = fields.iter().position(String::is_empty)
        {
            return Err((format!("fields[{i}]"), "must name a field".into()));
        }
        Ok(Redact {
            scanner: Scanner {
                cache: re.create_cache(),
                re,
                detectors,
                secret_key,
                raw_prefilter,
            },
            fields: c.fields.clone(),
            hash_fields: c.hash_fields.clone(),
            hasher,
            meta_seen: None,
            redacted: metrics::counter!("logferry_processor_redacted_total", "input" => input_id.to_owned()),
        })
    }

    /// `s` with every confirmed match replaced, or `None` when nothing matched (no copy).
    pub fn redact_str(&mut self, s: &str) -> Option<String> {
        self.scanner.redact_str(s)
    }

    fn pseudonym(&self, v: &Value) -> Option<String> {
        let mut mac = self.hasher.as_ref()?.clone();
        match v {
            Value::String(s) => mac.update(s.as_bytes()),
            other => mac.update(other.to_string().as_bytes()),
        }
        let tag = mac.finalize().into_bytes();
        Some(hex::encode(&tag[..16]))
    }

    fn process_one(&mut self, e: &mut Event) {
        let mut changed = 0u64;
        for path in &self.hash_fields {
            if let Some(v) = e.get_value(path)
                && !v.is_null()
                && let Some(p) = self.pseudonym(&v)
            {
                e.insert(path, Value::String(p));
                changed += 1;
            }
        }
        let sc = &mut self.scanner;
        match &self.fields {
            None => {
                changed += u64::from(sc.redact_message(e));
                if let Some(meta) = e.shared_meta() {
                    let dirty = match &self.meta_seen {
                        Some((seen, dirty)) if Arc::ptr_eq(seen, meta) => *dirty,
                        _ => {
                            let meta = meta.clone();
                            let dirty = sc.redact_map(&mut (*meta).clone());
                            self.meta_seen = Some((meta, dirty));
                            dirty
                        }
                    };
                    if dirty {
                        e.materialize();
                    }
                }
                // JSON fields still undecoded are decoded only when a scan of their text finds
                // a candidate (most events hold no secret).
                let clean = e.raw_fields().is_some_and(|raw| !sc.may_match_raw(raw));
                if !clean {
                    changed += u64::from(sc.redact_map(e.fields_mut()));
                }
            }
            Some(paths) => {
                // As above: undecoded fields whose text holds no candidate are left alone
                // (shared metadata aside, which the paths may also name).
                let clean = e.shared_meta().is_none()
                    && e.raw_fields().is_some_and(|raw| !sc.may_match_raw(raw));
                for path in paths {
                    if path == "message" {
                        changed += u64::from(sc.redact_message(e));
                        continue;
                    }
                    if clean || e.get(path).is_none() {
                        continue;
                    }
                    e.materialize();
                    let key = path.rsplit('.').next();
                    if let Some(v) = lookup_mut(e.fields_mut(), path) {
                        changed += u64::from(sc.redact_value(key, v));
                    }
                }
            }
        }
        if changed > 0 {
            self.redacted.increment(1);
        }
    }
}

impl Processor for Redact {
    fn process(&mut self, events: &mut Vec<Event>) {
        for e in events.iter_mut() {
            self.process_one(e);
        }
    }
}

fn next_char(s: &str, i: usize) -> usize {
    s[i..].chars().next().map_or(i + 1, |c| i + c.len_utf8())
}

/// Looks a path up mutably: the literal key first, then nested objects.
fn lookup_mut<'a>(map: &'a mut Map<String, Value>, path: &str) -> Option<&'a mut Value> {
    if map.contains_key(path) {
        return map.get_mut(path);
    }
    let (head, rest) = path.split_once('.')?;
    match map.get_mut(head)? {
        Value::Object(inner) => lookup_mut(inner, rest),
        _ => None,
    }
}

/// Confirms a candidate `s[start..end]` and returns the span to replace, or `None`.
fn secret_span(check: Check, s: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let m = &s[start..end];
    let whole = Some((start, end));
    let Check::Builtin(b) = check else {
        return whole;
    };
    match b {
        Builtin::CreditCard => card_ok(m).then_some((start, end)),
        Builtin::Iban => iban_ok(m).then_some((start, end)),
        Builtin::Email => email_ok(m).then_some((start, end)),
        Builtin::Ipv4 => {
            // A version number (`1.2.3.4.5`) is not an address.
            let before = s[..start].bytes().next_back();
            let after = s.as_bytes().get(end..end + 2);
            let dotted_digit = |w: &[u8]| w[0] == b'.' && w[1].is_ascii_digit();
            (before != Some(b'.') && !after.is_some_and(dotted_digit)).then_some((start, end))
        }
        Builtin::Ipv6 => {
            let before = s[..start].chars().next_back();
            let after = s[end..].chars().next();
            let isolated = !before.is_some_and(|c| c.is_alphanumeric() || c == ':' || c == '.')
                && !after.is_some_and(|c| c.is_alphanumeric() || c == '.');
            (isolated && m.parse::<std::net::Ipv6Addr>().is_ok()).then_some((start, end))
        }
        Builtin::BearerToken => {
            // Keep the word `Bearer`; the token must look like one (`Bearer realm=` does not).
            let tok = m[6..].trim_start_matches([' ', '\t']);
            let a = end - tok.len();
            (tok.trim_end_matches('=').len() >= 8).then_some((a, end))
        }
        Builtin::PasswordKv => {
            let sep = m.find([':', '='])?;
            let value = m[sep + 1..].trim_start_matches([' ', '\t']);
            let mut a = end - value.len();
            let mut b = end;
            if let Some(q) = value.chars().next()
                && (q == '"' || q == '\'')
                && value.len() >= 2
            {
                a += 1;
                b -= 1;
            }
            (b > a).then_some((a, b))
        }
        Builtin::Jwt | Builtin::AwsAccessKey => whole,
    }
}

/// Luhn-valid, 13–19 digits, and the leading digits of a card network (Visa 4, Mastercard
/// 51–55 and 2221–2720, Amex 34/37, Discover/UnionPay/Maestro 6, JCB/Diners 3, Maestro 50/56–58).
fn card_ok(m: &str) -> bool {
    let digits: Vec<u8> = m
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let prefix4 = digits[..4]
        .iter()
        .fold(0u32, |acc, d| acc * 10 + u32::from(*d));
    let network = match digits[0] {
        3..=6 => true,
        2 => (2221..=2720).contains(&prefix4),
        _ => false,
    };
    network && luhn(&digits)
}

pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn iban_ok(m: &str) -> bool {
    let compact: Vec<u8> = m.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    // Move the country code and check digits to the end; letters count as 10..35.
    let mut rem: u32 = 0;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn email_ok(m: &str) -> bool {
    let Some((local, domain)) = m.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.starts_with('.') && !local.ends_with('.') && !local.contains("..");
    let domain_ok = domain.split('.').all(|label| {
        !label.is_empty() && label.len() <= 63 && !label.starts_with('-') && !label.ends_with('-')
    });
    local_ok && domain_ok && local.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(yaml: &str) -> Redact {
        Redact::new(&serde_yaml_ng::from_str(yaml).unwrap(), "t").unwrap()
    }

    fn r(p: &mut Redact, s: &str) -> String {
        p.redact_str(s).unwrap_or_else(|| s.to_owned())
    }

    #[test]
    fn builtins_positive() {
        let mut p = redact(
            "{ builtins: [email, credit_card, iban, jwt, bearer_token, aws_access_key, password_kv, ipv4, ipv6] }",
        );
        for (input, want) in [
            (
                "mail alice.smith+x@mail.example.co.uk now",
                "mail [REDACTED:email] now",
            ),
            (
                "card 4111 1111 1111 1111 ok",
                "card [REDACTED:credit_card] ok",
            ),
            ("card 5500-0000-0000-0004.", "card [REDACTED:credit_card]."),
            ("amex=378282246310005", "amex=[REDACTED:credit_card]"),
            (
                "iban DE89 3704 0044 0532 0130 00 x",
                "iban [REDACTED:iban] x",
            ),
            ("iban GB82WEST12345698765432", "iban [REDACTED:iban]"),
            (
                "tok eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abc_DEF-123 end",
                "tok [REDACTED:jwt] end",
            ),
            (
                "Authorization: Bearer abcdef0123456789.xyz==",
                "Authorization: Bearer [REDACTED:bearer_token]",
            ),
            (
                "key AKIAIOSFODNN7EXAMPLE used",
                "key [REDACTED:aws_access_key] used",
            ),
            (
                "login password=hunter2 ok",
                "login password=[REDACTED:password_kv] ok",
            ),
            (
                r#"{"secret": "s3cr\"et", "a": 1}"#,
                r#"{"secret": "[REDACTED:password_kv]", "a": 1}"#,
            ),
            (
                "DB_PASSWORD: 'pa ss'",
                "DB_PASSWORD: '[REDACTED:password_kv]'",
            ),
            ("api_key=abc&x=1", "api_key=[REDACTED:password_kv]&x=1"),
            ("from 192.168.1.20:80", "from [REDACTED:ipv4]:80"),
            (
                "from fe80::1ff:fe23:4567:890a now",
                "from [REDACTED:ipv6] now",
            ),
            ("peer [2001:db8::1]:443", "peer [[REDACTED:ipv6]]:443"),
        ] {
            assert_eq!(r(&mut p, input), want, "{input}");
        }
    }

    #[test]
    fn near_misses_are_left_alone() {
        let mut p = redact(
            "{ builtins: [email, credit_card, iban, jwt, bearer_token, aws_access_key, password_kv, ipv4, ipv6] }",
        );
        for input in [
            "order id 4111111111111112",        // Luhn-invalid
            "trace 1234567812345678",           // Luhn-invalid, no network
            "id 7992739871300000",              // Luhn-valid but no card network prefix
            "user@localhost",                   // no domain dot
            "@handle and foo@bar",              // not addresses
            "a..b@example.com",                 // bad local part
            "see x@-bad-.com",                  // bad domain label
            "DE89 3704 0044 0532 0130 01",      // IBAN checksum wrong
            "Bearer realm=x",                   // not a token
            "version 1.2.3.4.5",                // not an IP
            "at 10:00:00 std::io::Error",       // not IPv6
            "mac 00:1a:2b:3c:4d:5e",            // not IPv6
            "tokens: 5 and passwords are fine", // no key/value
            "password=",                        // no value
            "AKIAIOSFODNN7EXAMPL",              // too short
            "caf\u{e9} \u{2713} plain unicode text 12345",
        ] {
            assert_eq!(r(&mut p, input), input, "{input}");
            assert!(
                p.redact_str(input).is_none(),
                "{input}: no copy when nothing matches"
            );
        }
    }

    #[test]
    fn custom_patterns_and_default_builtins() {
        let mut p = redact(
            r"{ patterns: [{ name: ssn, regex: '\b\d{3}-\d{2}-\d{4}\b' }, { name: empty, regex: 'x*' }] }",
        );
        assert_eq!(
            r(&mut p, "ssn 123-45-6789 ip 10.0.0.1"),
            "ssn [REDACTED:ssn] ip 10.0.0.1"
        );
        assert!(
            Redact::new(
                &serde_yaml_ng::from_str("{ patterns: [{ name: Bad, regex: x }] }").unwrap(),
                "t"
            )
            .is_err()
        );
        assert!(
            Redact::new(
                &serde_yaml_ng::from_str("{ patterns: [{ name: b, regex: '(' }] }").unwrap(),
                "t"
            )
            .is_err()
        );
    }

    #[test]
    fn every_string_field_and_secret_keys() {
        let mut p = redact("{}");
        let mut e = Event::synthetic("t", "user bob@example.com logged in");
        e.insert("user.email", Value::String("bob@example.com".into()));
        e.insert("password", Value::String("hunter2".into()));
        e.insert("client_secret", Value::from(1234));
        e.insert("tags", serde_json::json!(["ok", "card 4111111111111111"]));
        e.insert("count", Value::from(3));
        let mut v = vec![e];
        p.process(&mut v);
        let out = v[0].to_value().to_string();
        for secret in ["bob@example.com", "hunter2", "1234", "4111111111111111"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert_eq!(v[0].get("count").unwrap().to_text(), "3");
        assert_eq!(v[0].message_str(), "user [REDACTED:email] logged in");
    }

    /// Fields the json processor left undecoded: a clean object stays undecoded, and a
    /// secret anywhere in it (value, password-like key, array, escaped text) is redacted as
    /// in decoded fields.
    #[test]
    fn undecoded_json_fields() {
        let mut chain = crate::processors::Chain::build(
            &serde_json::from_value::<Vec<crate::processors::ProcessorConfig>>(
                serde_json::json!([{ "json": {} }, { "redact": {} }]),
            )
            .unwrap(),
            "t",
        )
        .unwrap();
        let lines = [
            r#"{"msg":"all fine","seq":1,"id":"9f2c4e1a7b3d4c5e8f901a2b3c4d5e6f"}"#,
            r#"{"msg":"mail bob@example.com","seq":2}"#,
            r#"{"pwd":12345,"seq":3}"#,
            r#"{"Client_Secret" :  "abc","seq":4}"#,
            r#"{"t":["ok",{"token":true}],"seq":5}"#,
            r#"{"card":"4111 1111 1111 1111","seq":6}"#,
            r#"{"msg":"q\"bob@example.com\"","seq":7}"#,
        ];
        let mut v: Vec<Event> = lines.iter().map(|l| Event::synthetic("t", l)).collect();
        chain.run(&mut v);
        assert!(
            v[0].raw_fields().is_some(),
            "nothing to redact: not decoded"
        );
        assert_eq!(v[0].get("msg").unwrap().to_text(), "all fine");
        for (e, secret) in v[1..].iter().zip([
            "bob@example.com",
            "12345",
            "abc",
            "true",
            "4111 1111 1111 1111",
            "bob@example.com",
        ]) {
            let out = e.to_value().to_string();
            assert!(!out.contains(secret), "{secret} in {out}");
            assert!(out.contains("[REDACTED:"), "{out}");
        }
        // An anchored custom pattern cannot be checked on the whole text: decode.
        let mut anchored = redact("{ builtins: [], patterns: [{ name: whole, regex: '^x$' }] }");
        let mut p = crate::processors::json::Json::new(
            &serde_json::from_value(serde_json::json!({})).unwrap(),
            "t",
        )
        .unwrap();
        let mut v = vec![Event::synthetic("t", r#"{"a":"x"}"#)];
        crate::processors::Processor::process(&mut p, &mut v);
        assert!(v[0].raw_fields().is_some());
        anchored.process(&mut v);
        assert_eq!(v[0].get("a").unwrap().to_text(), "[REDACTED:whole]");
    }

    #[test]
    fn only_listed_fields() {
        let mut p = redact("{ builtins: [email], fields: [user.email] }");
        let mut e = Event::synthetic("t", "bob@example.com");
        e.insert("user.email", Value::String("bob@example.com".into()));
        let mut v = vec![e];
        p.process(&mut v);
        assert_eq!(v[0].message_str(), "bob@example.com");
        assert_eq!(
            v[0].get("user.email").unwrap().to_text(),
            "[REDACTED:email]"
        );
    }

    #[test]
    fn shared_metadata_is_scanned_once_and_redacted() {
        let mut meta = Map::new();
        meta.insert("owner".into(), Value::String("ops@example.com".into()));
        let src = Arc::new(crate::event::Source {
            meta: Some(Arc::new(meta)),
            ..Default::default()
        });
        let mut p = redact("{ builtins: [email] }");
        let mut v = vec![
            Event::new(src.clone(), Text::from("a"), 0, 0),
            Event::new(src, Text::from("b"), 0, 0),
        ];
        p.process(&mut v);
        for e in &v {
            assert_eq!(e.get("owner").unwrap().to_text(), "[REDACTED:email]");
        }
    }

    #[test]
    fn hash_fields_are_keyed_pseudonyms() {
        let cfg = |key: &str| {
            format!("{{ builtins: [email], hash_fields: [user.id], hash_key: '{key}' }}")
        };
        let mut p = redact(&cfg("0123456789abcdef-key"));
        let mut q = redact(&cfg("another-key-0123456789"));
        let mk = |id: &str| {
            let mut e = Event::synthetic("t", "m");
            e.insert("user.id", Value::String(id.into()));
            e
        };
        let mut v = vec![mk("alice"), mk("alice"), mk("bob")];
        p.process(&mut v);
        let ids: Vec<String> = v
            .iter()
            .map(|e| e.get("user.id").unwrap().to_text().into_owned())
            .collect();
        assert_eq!(ids[0], ids[1]);
        assert_ne!(ids[0], ids[2]);
        assert_eq!(ids[0].len(), 32);
        assert!(!ids[0].contains("alice"));
        let mut w = vec![mk("alice")];
        q.process(&mut w);
        assert_ne!(
            w[0].get("user.id").unwrap().to_text(),
            ids[0],
            "depends on the key"
        );
        // Missing or short keys are refused; the key never shows in Debug.
        assert!(
            Redact::new(
                &serde_yaml_ng::from_str("{ hash_fields: [a] }").unwrap(),
                "t"
            )
            .is_err()
        );
        assert!(Redact::new(&serde_yaml_ng::from_str(&cfg("short")).unwrap(), "t").is_err());
        let c: RedactConfig = serde_yaml_ng::from_str(&cfg("0123456789abcdef-key")).unwrap();
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn luhn_known_values() {
        let d = |s: &str| s.bytes().map(|b| b - b'0').collect::<Vec<_>>();
        assert!(luhn(&d("79927398713")));
        assert!(!luhn(&d("79927398710")));
    }
}
