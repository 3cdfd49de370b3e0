//! Multiline: joins the lines of one record (a log line and its stack trace) into one event.
//!
//! Runs per file (per container stream), on lines, before events exist, so that a joined
//! event's offset is its first line's and its acknowledgement covers every line in it: the
//! reader only issues acknowledgement tokens up to the end of the last *completed* event, and
//! a pending event's lines are re-read after a restart.
//!
//! Semantics are Filebeat's: a line "matches" when `pattern` matches it (inverted by
//! `negate`). With `match: after`, matching lines are appended to the preceding non-matching
//! line; with `match: before`, matching lines are prepended to the next non-matching line.
//! Beyond Filebeat, `max_lines` and `max_bytes` never drop lines: the event is flushed and the
//! next line starts a new one. `timeout` flushes a pending event after that much quiet.
//!
//! Invariant (property-tested): the events partition the lines — joining each event's lines
//! with `\n`, in order, gives back the input exactly.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use regex::bytes::Regex;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::{ByteSize, ConfigSource, Diagnostic, Dur};

/// `multiline:` on an input.
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// Regular expression tested against each line.
    pub pattern: Option<String>,
    /// Invert the pattern: lines that do *not* match it are continuation lines.
    #[serde(default)]
    pub negate: bool,
    /// `after`: continuation lines join the line before them; `before`: the line after them.
    #[serde(default, rename = "match")]
    pub match_: MatchMode,
    /// Flush the event once it holds this many lines (the next line starts a new event).
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// Flush the event before it grows past this size; default: the input's `max_line_bytes`.
    pub max_bytes: Option<ByteSize>,
    /// Flush a pending event after this much quiet.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

fn default_max_lines() -> usize {
    500
}
fn default_timeout() -> Dur {
    Dur::secs(5)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    #[default]
    After,
    Before,
}

impl MultilineConfig {
    pub fn validate(&self, source: &ConfigSource, path: &str) -> Vec<Diagnostic> {
        match self.rule() {
            Ok(_) => Vec::new(),
            Err((key, msg)) => vec![source.diag(&format!("{path}.{key}"), msg)],
        }
    }

    fn rule(&self) -> Result<Rule, (&'static str, String)> {
        let Some(p) = &self.pattern else {
            return Err(("pattern", "`pattern` is required".into()));
        };
        let regex =
            Regex::new(p).map_err(|e| ("pattern", format!("invalid regular expression: {e}")))?;
        if self.max_lines == 0 {
            return Err(("max_lines", "must be at least 1".into()));
        }
        Ok(Rule::Pattern {
            regex,
            negate: self.negate,
            mode: self.match_,
        })
    }

    /// A joiner for one file. `max_line_bytes` is the input's cap, the default `max_bytes`.
    pub fn joiner(&self, max_line_bytes: u64) -> Result<Joiner, String> {
        let rule = self.rule().map_err(|(k, m)| format!("{k}: {m}"))?;
        Ok(Joiner {
            rule,
            max_lines: self.max_lines,
            max_bytes: self.max_bytes.map_or(max_line_bytes, |b| b.0) as usize,
            timeout: self.timeout.0,
            pending: None,
            last_push: None,
        })
    }
}

#[derive(Debug, Clone)]
enum Rule {
    Pattern {
        regex: Regex,
        negate: bool,
        mode: MatchMode,
    },
}

/// What to do with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Append to the pending event (start one if there is none).
    Continue,
    /// Flush the pending event; the line starts a new one.
    Start,
    /// Append to the pending event, then flush it.
    EndAfter,
}

impl Rule {
    fn decide(&self, line: &[u8]) -> Decision {
        match self {
            Rule::Pattern {
                regex,
                negate,
                mode,
            } => {
                let m = regex.is_match(line) != *negate;
                match (mode, m) {
                    (MatchMode::After, true) => Decision::Continue,
                    (MatchMode::After, false) => Decision::Start,
                    (MatchMode::Before, true) => Decision::Continue,
                    (MatchMode::Before, false) => Decision::EndAfter,
                }
            }
        }
    }
}

/// One line in: its text (no line ending), offset of its first byte, offset just past its
/// line ending, and whether it was cut at `max_line_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineIn {
    pub text: Bytes,
    pub offset: u64,
    pub end: u64,
    pub truncated: bool,
}

/// A completed event: one line or several joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub text: Bytes,
    pub offset: u64,
    pub end: u64,
    pub lines: usize,
    pub truncated: bool,
}

#[derive(Debug)]
struct Pending {
    buf: BytesMut,
    offset: u64,
    end: u64,
    lines: usize,
    truncated: bool,
}

/// The per-file multiline state machine.
#[derive(Debug)]
pub struct Joiner {
    rule: Rule,
    max_lines: usize,
    max_bytes: usize,
    timeout: Duration,
    pending: Option<Pending>,
    last_push: Option<Instant>,
}

impl Joiner {
    /// Feeds one line; completed events are appended to `out`.
    pub fn push(&mut self, line: LineIn, now: Instant, out: &mut Vec<Joined>) {
        self.last_push = Some(now);
        let decision = self.rule.decide(&line.text);
        if decision == Decision::Start {
            self.flush_into(out);
        }
        // Limits: never drop, flush and start over.
        if let Some(p) = &self.pending
            && (p.lines >= self.max_lines || p.buf.len() + 1 + line.text.len() > self.max_bytes)
        {
            self.flush_into(out);
        }
        match &mut self.pending {
            Some(p) => {
                p.buf.extend_from_slice(b"\n");
                p.buf.extend_from_slice(&line.text);
                p.end = line.end;
                p.lines += 1;
                p.truncated |= line.truncated;
            }
            None => {
                let mut buf = BytesMut::with_capacity(line.text.len());
                buf.extend_from_slice(&line.text);
                self.pending = Some(Pending {
                    buf,
                    offset: line.offset,
                    end: line.end,
                    lines: 1,
                    truncated: line.truncated,
                });
            }
        }
        if decision == Decision::EndAfter {
            self.flush_into(out);
        }
    }

    /// Flushes the pending event if it has been quiet for `timeout`.
    pub fn flush_if_idle(&mut self, now: Instant, out: &mut Vec<Joined>) {
        if self.pending.is_some()
            && self
                .last_push
                .is_some_and(|t| now.saturating_duration_since(t) >= self.timeout)
        {
            self.flush_into(out);
        }
    }

    /// When the pending event would time out, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref()?;
        self.last_push.map(|t| t + self.timeout)
    }

    /// Flushes the pending event (rotation, EOF in backfill, shutdown).
    pub fn flush_into(&mut self, out: &mut Vec<Joined>) {
        if let Some(p) = self.pending.take() {
            out.push(Joined {
                text: p.buf.freeze(),
                offset: p.offset,
                end: p.end,
                lines: p.lines,
                truncated: p.truncated,
            });
        }
    }

    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Offset of the first byte of the pending event (where a restart must resume).
    pub fn pending_offset(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(yaml: &str) -> MultilineConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn run(j: &mut Joiner, lines: &[&str]) -> Vec<Joined> {
        let mut out = Vec::new();
        let mut off = 0u64;
        let now = Instant::now();
        for l in lines {
            let end = off + l.len() as u64 + 1;
            j.push(
                LineIn {
                    text: Bytes::copy_from_slice(l.as_bytes()),
                    offset: off,
                    end,
                    truncated: false,
                },
                now,
                &mut out,
            );
            off = end;
        }
        j.flush_into(&mut out);
        out
    }

    fn texts(v: &[Joined]) -> Vec<String> {
        v.iter()
            .map(|j| String::from_utf8(j.text.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn after_with_negate() {
        let mut j = cfg("{ pattern: '^\\d{4}-', negate: true, match: after }")
            .joiner(1 << 20)
            .unwrap();
        let out = run(
            &mut j,
            &[
                "2024-01-01 a",
                "  at x",
                "  at y",
                "2024-01-01 b",
                "2024-01-01 c",
                "x",
            ],
        );
        assert_eq!(
            texts(&out),
            vec![
                "2024-01-01 a\n  at x\n  at y",
                "2024-01-01 b",
                "2024-01-01 c\nx"
            ]
        );
        assert_eq!(out[1].offset, 27);
        assert_eq!(out[0].lines, 3);
    }

    #[test]
    fn before_continuation_backslash() {
        let mut j = cfg("{ pattern: '\\\\$', match: before }")
            .joiner(1 << 20)
            .unwrap();
        let out = run(&mut j, &["a \\", "b \\", "c", "d"]);
        assert_eq!(texts(&out), vec!["a \\\nb \\\nc", "d"]);
    }

    #[test]
    fn max_lines_splits_without_loss() {
        let mut j = cfg("{ pattern: '^\\s', match: after, max_lines: 2 }")
            .joiner(1 << 20)
            .unwrap();
        let out = run(&mut j, &["a", " 1", " 2", " 3"]);
        assert_eq!(texts(&out), vec!["a\n 1", " 2\n 3"]);
    }

    #[test]
    fn timeout_flushes() {
        let mut j = cfg("{ pattern: '^\\s', match: after, timeout: 1s }")
            .joiner(1 << 20)
            .unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        j.push(
            LineIn {
                text: Bytes::from_static(b"a"),
                offset: 0,
                end: 2,
                truncated: false,
            },
            t0,
            &mut out,
        );
        j.flush_if_idle(t0 + Duration::from_millis(500), &mut out);
        assert!(out.is_empty());
        j.flush_if_idle(t0 + Duration::from_secs(1), &mut out);
        assert_eq!(out.len(), 1);
    }

    proptest! {
        #[test]
        fn events_partition_lines(
            lines in proptest::collection::vec("[ a-c1]{0,6}", 0..40),
            pattern in prop_oneof![Just("^\\s"), Just("^a"), Just("b$"), Just("^$"), Just("1")],
            negate in any::<bool>(),
            before in any::<bool>(),
            max_lines in 1usize..6,
            max_bytes in 1u64..40,
        ) {
            let c = MultilineConfig {
                pattern: Some(pattern.to_owned()),
                negate,
                match_: if before { MatchMode::Before } else { MatchMode::After },
                max_lines,
                max_bytes: Some(ByteSize(max_bytes)),
                timeout: Dur::secs(5),
            };
            let mut j = c.joiner(1 << 20).unwrap();
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let out = run(&mut j, &refs);
            let joined: Vec<String> = texts(&out);
            prop_assert_eq!(joined.join("\n"), lines.join("\n"));
            prop_assert_eq!(out.iter().map(|j| j.lines).sum::<usize>(), lines.len());
            let mut expect_off = 0;
            for ev in &out {
                prop_assert_eq!(ev.offset, expect_off);
                prop_assert!(ev.lines <= max_lines);
                expect_off = ev.end;
            }
        }
    }
}
