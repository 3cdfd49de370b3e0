//! The `_bulk` response: what became of each document, and what is retryable.
//!
//! The parser is a small hand-written scanner over the response bytes. It reads only what the
//! classification needs — the top-level `errors` flag, and per item its operation, `status`,
//! `error.type`, `error.reason` and one level of `error.caused_by` — and skips everything else
//! without building values. When `errors` is `false` and comes before `items` (Elasticsearch
//! and OpenSearch write it first), the items are not read at all: every document is in.
//!
//! Invariant (ARCHITECTURE.md, 5): it never panics on arbitrary bytes. Nesting is bounded
//! (no unbounded recursion), every index is checked, and a malformed body is an error that the
//! caller turns into a retry (a 200 with an unreadable body may or may not have indexed the
//! documents; sending them again keeps at-least-once).
//!
//! Classification of one item (Elasticsearch's documented semantics):
//! 2xx delivered; 409 on `create` delivered (the `_id` exists: an idempotent redelivery);
//! 429 and 5xx retried alone; any other status rejected with Elasticsearch's reason.

use crate::outputs::ItemOutcome;

/// Deepest nesting the skipper follows before it calls the body malformed.
const MAX_DEPTH: u32 = 128;
/// Longest reason kept for a dead letter (Elasticsearch can quote a whole document).
const MAX_REASON: usize = 2048;

/// The body could not be read as a bulk response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable bulk response at byte {at}: {what}")]
pub struct ParseError {
    pub at: usize,
    pub what: &'static str,
}

/// The operation an item answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Index,
    Other,
}

/// One item of the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub op: Op,
    /// 0 when the item carries no status.
    pub status: u16,
    /// `type: reason (caused by type: reason)`, only for failed items.
    pub error: Option<String>,
}

/// What the parser read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkResponse {
    pub errors: Option<bool>,
    /// Empty when `errors: false` was seen before the items (they were not read).
    pub items: Vec<Item>,
    /// Whether the items were read.
    pub items_read: bool,
}

impl BulkResponse {
    /// Every document is in, by the response's own account.
    pub fn all_ok(&self) -> bool {
        self.errors == Some(false)
            || (self.items_read
                && self
                    .items
                    .iter()
                    .all(|i| classify(i) == ItemOutcome::Delivered))
    }
}

/// What one item means for its document.
pub fn classify(item: &Item) -> ItemOutcome {
    let why = || {
        let detail = item.error.as_deref().unwrap_or("no reason given");
        format!("{} {detail}", item.status)
    };
    match item.status {
        200..=299 => ItemOutcome::Delivered,
        409 if item.op == Op::Create => ItemOutcome::Delivered,
        429 | 500..=599 => ItemOutcome::Retry(why()),
        // No status at all: nothing says the document is in; sending it again is safe.
        0 => ItemOutcome::Retry("bulk item without a status".to_owned()),
        _ => ItemOutcome::Rejected(why()),
    }
}

/// Parses a bulk response body. With `stop_early`, returns as soon as `errors: false` is
/// seen before the items.
pub fn parse(body: &[u8], stop_early: bool) -> Result<BulkResponse, ParseError> {
    let mut s = Scan { b: body, i: 0 };
    let mut out = BulkResponse::default();
    s.expect(b'{')?;
    if s.peek() == Some(b'}') {
        return Ok(out);
    }
    loop {
        let key = s.string()?;
        s.expect(b':')?;
        match key {
            b"errors" => {
                let v = s.boolean()?;
                out.errors = Some(v);
                if !v && stop_early && !out.items_read {
                    return Ok(out);
                }
            }
            b"items" => {
                // A repeated key replaces the earlier one, as JSON readers do.
                out.items.clear();
                s.items(&mut out.items)?;
                out.items_read = true;
            }
            _ => s.skip(0)?,
        }
        if !s.comma_or_end(b'}')? {
            break;
        }
    }
    Ok(out)
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn err<T>(&self, what: &'static str) -> Result<T, ParseError> {
        Err(ParseError { at: self.i, what })
    }

    fn peek(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.i += 1;
            } else {
                return Some(c);
            }
        }
        None
    }

    fn expect(&mut self, c: u8) -> Result<(), ParseError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            self.err(match c {
                b'{' => "expected `{`",
                b'[' => "expected `[`",
                b':' => "expected `:`",
                _ => "unexpected byte",
            })
        }
    }

    /// After a member or element: `true` on `,` (more follow), `false` on `close`.
    fn comma_or_end(&mut self, close: u8) -> Result<bool, ParseError> {
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                Ok(true)
            }
            Some(c) if c == close => {
                self.i += 1;
                Ok(false)
            }
            _ => self.err("expected `,` or the end of an object or array"),
        }
    }

    /// A string's raw bytes between the quotes (escapes left as they are).
    fn string(&mut self) -> Result<&'a [u8], ParseError> {
        if self.peek() != Some(b'"') {
            return self.err("expected a string");
        }
        let start = self.i + 1;
        let mut j = start;
        loop {
            let rest = self.b.get(j..).unwrap_or_default();
            match memchr::memchr2(b'"', b'\\', rest) {
                None => {
                    self.i = self.b.len();
                    return self.err("unterminated string");
                }
                Some(k) => {
                    let at = j + k;
                    if self.b.get(at) == Some(&b'\\') {
                        // Skip the escaped byte (for \uXXXX the hex digits need no care).
                        j = at + 2;
                        if j > self.b.len() {
                            self.i = self.b.len();
                            return self.err("unterminated string");
                        }
                    } else {
                        self.i = at + 1;
                        return Ok(self.b.get(start..at).unwrap_or_default());
                    }
                }
            }
        }
    }

    /// A string, unescaped.
    fn text(&mut self) -> Result<String, ParseError> {
        let raw = self.string()?;
        if !raw.contains(&b'\\') {
            return Ok(String::from_utf8_lossy(raw).into_owned());
        }
        // Re-read the quoted form with serde_json for exact unescaping; the bounds come from
        // `string`, so the quotes sit right around `raw`.
        let end = self.i;
        let start = end.saturating_sub(raw.len() + 2);
        match self.b.get(start..end).map(serde_json::from_slice::<String>) {
            Some(Ok(s)) => Ok(s),
            _ => Ok(String::from_utf8_lossy(raw).into_owned()),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), ParseError> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            self.err("invalid literal")
        }
    }

    fn boolean(&mut self) -> Result<bool, ParseError> {
        match self.peek() {
            Some(b't') => self.literal(b"true").map(|_| true),
            Some(b'f') => self.literal(b"false").map(|_| false),
            _ => self.err("expected true or false"),
        }
    }

    /// A number; returns its integer part when it is a small non-negative integer.
    fn number(&mut self) -> Result<Option<u64>, ParseError> {
        self.peek();
        let start = self.i;
        let mut int: Option<u64> = Some(0);
        let mut digits = 0;
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'0'..=b'9' => {
                    digits += 1;
                    int = int
                        .and_then(|v| v.checked_mul(10))
                        .and_then(|v| v.checked_add(u64::from(c - b'0')));
                }
                b'-' | b'+' | b'.' | b'e' | b'E' => int = None,
                _ => break,
            }
            self.i += 1;
        }
        if digits == 0 || self.i == start {
            return self.err("invalid number");
        }
        Ok(int)
    }

    /// Skips any value, bounded in depth.
    fn skip(&mut self, depth: u32) -> Result<(), ParseError> {
        if depth > MAX_DEPTH {
            return self.err("nesting too deep");
        }
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{') => {
                self.i += 1;
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.string()?;
                    self.expect(b':')?;
                    self.skip(depth + 1)?;
                    if !self.comma_or_end(b'}')? {
                        return Ok(());
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.skip(depth + 1)?;
                    if !self.comma_or_end(b']')? {
                        return Ok(());
                    }
                }
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            _ => self.err("expected a value"),
        }
    }

    /// `[ {"<op>": {...}}, ... ]`
    fn items(&mut self, out: &mut Vec<Item>) -> Result<(), ParseError> {
        self.expect(b'[')?;
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            out.push(self.item()?);
            if !self.comma_or_end(b']')? {
                return Ok(());
            }
        }
    }

    fn item(&mut self) -> Result<Item, ParseError> {
        self.expect(b'{')?;
        let mut item = Item {
            op: Op::Other,
            status: 0,
            error: None,
        };
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(item);
        }
        loop {
            let op = self.string()?;
            self.expect(b':')?;
            item.op = match op {
                b"create" => Op::Create,
                b"index" => Op::Index,
                _ => Op::Other,
            };
            self.item_body(&mut item)?;
            if !self.comma_or_end(b'}')? {
                return Ok(item);
            }
        }
    }

    fn item_body(&mut self, item: &mut Item) -> Result<(), ParseError> {
        self.expect(b'{')?;
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.expect(b':')?;
            match key {
                b"status" => {
                    item.status = match self.number()? {
                        Some(v) => u16::try_from(v).unwrap_or(u16::MAX),
                        None => 0,
                    }
                }
                b"error" => item.error = Some(self.error_value(0)?),
                _ => self.skip(1)?,
            }
            if !self.comma_or_end(b'}')? {
                return Ok(());
            }
        }
    }

    /// `error`: an object with `type`, `reason`, `caused_by`, or a bare string.
    fn error_value(&mut self, depth: u32) -> Result<String, ParseError> {
        if self.peek() != Some(b'{') {
            if self.peek() == Some(b'"') {
                return self.text().map(cap);
            }
            self.skip(depth + 2)?;
            return Ok("unknown error".to_owned());
        }
        self.i += 1;
        let mut kind = String::new();
        let mut reason = String::new();
        let mut cause: Option<String> = None;
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok("unknown error".to_owned());
        }
        loop {
            let key = self.string()?;
            self.expect(b':')?;
            match key {
                b"type" if self.peek() == Some(b'"') => kind = self.text()?,
                b"reason" if self.peek() == Some(b'"') => reason = self.text()?,
                b"caused_by" if depth == 0 => cause = Some(self.error_value(depth + 1)?),
                _ => self.skip(depth + 2)?,
            }
            if !self.comma_or_end(b'}')? {
                break;
            }
        }
        let mut s = match (kind.is_empty(), reason.is_empty()) {
            (false, false) => format!("{kind}: {reason}"),
            (false, true) => kind,
            (true, false) => reason,
            (true, true) => "unknown error".to_owned(),
        };
        if let Some(c) = cause {
            s.push_str(" (caused by ");
            s.push_str(&c);
            s.push(')');
        }
        Ok(cap(s))
    }
}

fn cap(mut s: String) -> String {
    if s.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_false_stops_before_items() {
        let body = br#"{"took":3,"errors":false,"items":[{"index":{"status":201}}]}"#;
        let r = parse(body, true).unwrap();
        assert_eq!(r.errors, Some(false));
        assert!(!r.items_read);
        assert!(r.all_ok());
        let r = parse(body, false).unwrap();
        assert_eq!(r.items.len(), 1);
    }

    #[test]
    fn reads_statuses_and_reasons() {
        let body = br#"{"took":30,"errors":true,"items":[
          {"index":{"_index":"a","_id":"1","_version":1,"result":"created","_shards":{"total":2,"successful":1,"failed":0},"status":201}},
          {"create":{"_index":"a","_id":"2","status":409,"error":{"type":"version_conflict_engine_exception","reason":"[2]: version conflict, document already exists (current version [1])","index":"a"}}},
          {"index":{"_index":"a","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n] of type [long] in document with id '3'. Preview of field's value: 'x'","caused_by":{"type":"illegal_argument_exception","reason":"For input string: \"x\""}}}},
          {"index":{"_index":"a","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution"}}},
          {"index":{"_index":"a","status":503,"error":"unavailable_shards_exception"}},
          {"delete":{"status":404}}
        ]}"#;
        let r = parse(body, true).unwrap();
        assert_eq!(r.errors, Some(true));
        let out: Vec<ItemOutcome> = r.items.iter().map(classify).collect();
        assert_eq!(out[0], ItemOutcome::Delivered);
        assert_eq!(out[1], ItemOutcome::Delivered, "409 on create is delivered");
        match &out[2] {
            ItemOutcome::Rejected(why) => {
                assert!(why.starts_with("400 mapper_parsing_exception: failed to parse"));
                assert!(
                    why.contains("caused by illegal_argument_exception: For input string: \"x\"")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&out[3], ItemOutcome::Retry(w) if w.contains("es_rejected_execution")));
        assert!(matches!(&out[4], ItemOutcome::Retry(w) if w.contains("503 unavailable_shards")));
        assert!(matches!(&out[5], ItemOutcome::Rejected(_)));
        assert!(!r.all_ok());
    }

    #[test]
    fn index_409_is_rejected() {
        let item = Item {
            op: Op::Index,
            status: 409,
            error: Some("version_conflict_engine_exception: x".into()),
        };
        assert!(matches!(classify(&item), ItemOutcome::Rejected(_)));
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for body in [
            &b""[..],
            b"{",
            b"{\"errors\":",
            b"{\"errors\":tru}",
            b"{\"items\":[{\"index\":{\"status\":2",
            b"{\"items\":[{\"index\":{\"error\":{\"reason\":\"\\",
            b"<html>502 Bad Gateway</html>",
            b"{\"a\":-}",
        ] {
            assert!(
                parse(body, true).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(500), "]".repeat(500));
        assert!(parse(deep.as_bytes(), true).is_err());
    }

    #[test]
    fn agrees_with_serde_on_valid_json() {
        let body = br#"{"items":[{"create":{"status":201,"x":[1,2.5e3,-3,{"y":null}],"error":null}}],"errors":false,"took":1}"#;
        let r = parse(body, true).unwrap();
        assert!(r.items_read);
        assert_eq!(r.items.len(), 1);
        assert_eq!(r.items[0].status, 201);
        assert!(serde_json::from_slice::<serde_json::Value>(body).is_ok());
    }
}
