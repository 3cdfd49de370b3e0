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
//! Presets (`preset: java | python | go | ruby`) keep a log record and its whole trace in one
//! event whatever the record's header looks like: instead of describing the header, they
//! recognise the lines of a trace, with a little state (one [`RegexSet`] pass per line, then a
//! small state machine per language; see [`Preset`] for what each one joins). Lines a preset
//! does not recognise start a new event, so a preset never swallows unrelated records; its
//! known limit is an exception *message* that itself spans several lines (the lines after
//! its first start new events, as with Filebeat's recipes).
//!
//! Invariant (property-tested, patterns and presets): the events partition the lines —
//! joining each event's lines with `\n`, in order, gives back the input exactly.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use regex::bytes::{Regex, RegexSet};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::{ByteSize, ConfigSource, Diagnostic, Dur};

/// `multiline:` on an input.
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// Regular expression tested against each line. Exactly one of `pattern` and `preset`.
    pub pattern: Option<String>,
    /// A built-in rule that keeps a record and its whole stack trace together, whatever the
    /// header format: `java`, `python`, `go` or `ruby`. Exactly one of `pattern` and `preset`;
    /// `negate` and `match` do not apply to it.
    pub preset: Option<Preset>,
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
        if self.max_lines == 0 {
            return Err(("max_lines", "must be at least 1".into()));
        }
        let p = match (&self.pattern, self.preset) {
            (Some(_), Some(_)) => {
                return Err((
                    "preset",
                    "`preset` and `pattern` are mutually exclusive: keep one".into(),
                ));
            }
            (None, None) => {
                return Err((
                    "pattern",
                    "one of `pattern` or `preset` (java, python, go, ruby) is required".into(),
                ));
            }
            (None, Some(preset)) => {
                if self.negate || self.match_ != MatchMode::After {
                    return Err((
                        "preset",
                        "`negate` and `match` apply to `pattern` only, not to a preset".into(),
                    ));
                }
                return Ok(Rule::Preset(PresetRule::new(preset)));
            }
            (Some(p), None) => p,
        };
        let regex =
            Regex::new(p).map_err(|e| ("pattern", format!("invalid regular expression: {e}")))?;
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
    Preset(PresetRule),
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
    fn decide(&mut self, line: &[u8]) -> Decision {
        match self {
            Rule::Preset(p) => p.decide(line),
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

/// `preset:` — what each one joins to the line before it (every other line starts an event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// `\tat ...` frames, `Caused by:`, `Suppressed:`, `... N more`; the exception line
    /// itself (`java.lang.IllegalStateException: ...`, `Exception in thread "main" ...`) right
    /// after a record's header; java.util.logging's second header line (`SEVERE: ...`) after
    /// a line holding a time; blank lines inside a trace.
    Java,
    /// `Traceback (most recent call last):` through the final `SomeError: ...` line, chained
    /// tracebacks with the blank lines and "The above exception was the direct cause..." /
    /// "During handling of the above exception..." between them, exception groups, and
    /// indented lines after a record.
    Python,
    /// `panic:` / `fatal error:` and goroutine dumps (`goroutine N [...]:`, function and
    /// `\t/file.go:N` lines, `created by`, `[signal ...]`, blank lines, `exit status N`).
    Go,
    /// Backtrace lines (`/app/x.rb:10:in 'm'`, `\tfrom ...`, `... N levels...`) and the
    /// `file:N:in 'm': message (Class)` lines of causes inside a trace.
    Ruby,
}

/// Where a preset's state machine is: between records, after a record's first line, or
/// inside a trace (with the few sub-states Python's chained tracebacks need).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TraceState {
    /// Nothing pending, or the pending event ended in a way no trace line can continue.
    Outside,
    /// A record's first line; `time`: it held a time (java.util.logging's first header line).
    Header { time: bool },
    /// java.util.logging's level line after its first header line.
    HeaderDone,
    /// Inside a trace (Python: inside a `Traceback` block; `group`: an exception group).
    Trace { group: bool },
    /// Python: just after a traceback's final `SomeError: ...` line.
    Final,
    /// Python: after "The above exception was the direct cause of the following exception:".
    Chain,
    /// Ruby: after a `\tfrom ...` line of an uncaught exception's trace.
    FromTrace,
}

#[derive(Debug, Clone)]
struct PresetRule {
    preset: Preset,
    set: RegexSet,
    state: TraceState,
}

// Pattern indices of each preset's RegexSet.
const J_FRAME: usize = 0;
const J_EXCEPTION: usize = 1;
const J_JUL_LEVEL: usize = 2;
const J_TIME: usize = 3;
const J_BLANK: usize = 4;

const P_TRACEBACK: usize = 0;
const P_GROUP: usize = 1;
const P_INDENTED: usize = 2;
const P_CHAIN: usize = 3;
const P_BLANK: usize = 4;

const G_PANIC: usize = 0;
const G_GOROUTINE: usize = 1;
const G_DUMP_LINE: usize = 2;

const R_FRAME: usize = 0;
const R_FROM: usize = 1;
const R_EXC_HEAD: usize = 2;

impl PresetRule {
    fn new(preset: Preset) -> PresetRule {
        let patterns: &[&str] = match preset {
            Preset::Java => &[
                r"^\s+at\s|^\s*\.\.\. \d+ (?:more|common frames omitted)\s*$|^\s*(?:Caused by|Suppressed|Wrapped by): ",
                r#"^(?:Exception in thread "[^"]*" )?(?:[A-Za-z_$][\w$]*\.)+[\w$]*(?:Exception|Error|Throwable)(?::.*)?$"#,
                r"^(?:SEVERE|WARNING|INFO|CONFIG|FINE|FINER|FINEST): ",
                r"\d{1,2}:\d{2}:\d{2}",
                r"^\s*$",
            ],
            Preset::Python => &[
                r"^Traceback \(most recent call last\):\s*$",
                r"^\s*\+ Exception Group Traceback \(most recent call last\):\s*$",
                r"^\s+\S",
                r"^(?:The above exception was the direct cause of the following exception:|During handling of the above exception, another exception occurred:)\s*$",
                r"^\s*$",
            ],
            Preset::Go => &[
                r"^(?:panic: |fatal error: )",
                r"^goroutine \d+ [^\n]*\[[^\]]*\]:\s*$",
                r"^\s|^$|^\S+\(.*\)\s*$|^created by \S|^\[signal |^\.\.\.|^exit status \d+\s*$",
            ],
            Preset::Ruby => &[
                r"^\s*\S+:\d+:in [`'][^`']*['`]\s*$|^\s*\.\.\. \d+ levels\.\.\.\s*$",
                r"^\s+from \S+:\d+:in ",
                r"^\s*\S+:\d+:in [`'][^`']*['`]: .*\([A-Z][\w:]*\)\s*$",
            ],
        };
        // The patterns are constants of this module; a test compiles every preset.
        let set = RegexSet::new(patterns).unwrap_or_else(|_| RegexSet::empty());
        PresetRule {
            preset,
            set,
            state: TraceState::Outside,
        }
    }

    fn decide(&mut self, line: &[u8]) -> Decision {
        let m = self.set.matches(line);
        let (decision, next) = match self.preset {
            Preset::Java => java(self.state, |i| m.matched(i)),
            Preset::Python => python(self.state, |i| m.matched(i)),
            Preset::Go => go(self.state, |i| m.matched(i)),
            Preset::Ruby => ruby(self.state, |i| m.matched(i)),
        };
        self.state = next;
        decision
    }
}

use Decision::{Continue, Start};
use TraceState::{Chain, Final, FromTrace, Header, HeaderDone, Outside, Trace};

fn java(state: TraceState, m: impl Fn(usize) -> bool) -> (Decision, TraceState) {
    if m(J_FRAME) {
        return (Continue, Trace { group: false });
    }
    match state {
        Header { .. } | HeaderDone if m(J_EXCEPTION) => (Continue, Trace { group: false }),
        // A bare exception line (printStackTrace without a logger) starts a record of its own.
        _ if m(J_EXCEPTION) => (Start, Trace { group: false }),
        Header { time: true } if m(J_JUL_LEVEL) => (Continue, HeaderDone),
        Trace { .. } if m(J_BLANK) => (Continue, state),
        _ => (Start, Header { time: m(J_TIME) }),
    }
}

fn python(state: TraceState, m: impl Fn(usize) -> bool) -> (Decision, TraceState) {
    if m(P_TRACEBACK) {
        return (Continue, Trace { group: false });
    }
    if m(P_GROUP) {
        return (Continue, Trace { group: true });
    }
    match state {
        Trace { .. } if m(P_INDENTED) => (Continue, state),
        // The first unindented line of a traceback is its final `SomeError: ...` line (an
        // exception group has none: its last line is indented).
        Trace { group: false } => (Continue, Final),
        Final | Chain if m(P_BLANK) => (Continue, state),
        Final if m(P_CHAIN) => (Continue, Chain),
        // Indented lines after a record (a multi-line message) stay with it.
        Header { .. } | Outside if m(P_INDENTED) => (Continue, Header { time: false }),
        _ => (Start, Header { time: false }),
    }
}

fn go(state: TraceState, m: impl Fn(usize) -> bool) -> (Decision, TraceState) {
    if m(G_GOROUTINE) {
        return (Continue, Trace { group: false });
    }
    match state {
        _ if m(G_PANIC) => (Start, Trace { group: false }),
        Trace { .. } if m(G_DUMP_LINE) => (Continue, state),
        _ => (Start, Header { time: false }),
    }
}

fn ruby(state: TraceState, m: impl Fn(usize) -> bool) -> (Decision, TraceState) {
    if m(R_FROM) {
        return (Continue, FromTrace);
    }
    if m(R_FRAME) {
        return (Continue, Trace { group: false });
    }
    match state {
        // Ruby prints an uncaught exception's causes as `x.rb:1:in 'm': cause (ArgumentError)`
        // after its `from` lines: that continues the trace; the same line anywhere else is an
        // uncaught exception's first line.
        FromTrace if m(R_EXC_HEAD) => (Continue, state),
        _ if m(R_EXC_HEAD) => (Start, Trace { group: false }),
        _ => (Start, Header { time: false }),
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

#[derive(Debug, Clone)]
struct Pending {
    buf: BytesMut,
    offset: u64,
    end: u64,
    lines: usize,
    truncated: bool,
}

/// The per-file multiline state machine.
#[derive(Debug, Clone)]
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

    fn preset(name: &str) -> Joiner {
        cfg(&format!("{{ preset: {name} }}"))
            .joiner(1 << 20)
            .unwrap()
    }

    #[test]
    fn every_preset_compiles() {
        for p in [Preset::Java, Preset::Python, Preset::Go, Preset::Ruby] {
            let r = PresetRule::new(p);
            assert!(r.set.len() >= 2, "{p:?} failed to compile");
        }
    }

    #[test]
    fn preset_and_pattern_are_exclusive() {
        assert!(cfg("{ preset: java, pattern: x }").joiner(1).is_err());
        assert!(cfg("{ preset: java, negate: true }").joiner(1).is_err());
        assert!(cfg("{ max_lines: 3 }").joiner(1).is_err());
        assert!(serde_yaml_ng::from_str::<MultilineConfig>("{ preset: cobol }").is_err());
    }

    #[test]
    fn java_preset_logback_and_jul() {
        let mut j = preset("java");
        let out = run(
            &mut j,
            &[
                "2024-01-01 10:00:00 ERROR [main] c.e.App - failed",
                "java.lang.IllegalStateException: outer",
                "\tat com.example.App.run(App.java:10)",
                "\tSuppressed: java.io.IOException: close",
                "\t\tat com.example.App.close(App.java:20)",
                "\t\t... 1 more",
                "Caused by: java.lang.RuntimeException: inner",
                "\t... 3 more",
                "2024-01-01 10:00:01 INFO [main] c.e.App - fine",
                "2024-01-01 10:00:02 INFO [main] c.e.App - also fine",
                "Jan 05, 2024 3:04:05 PM com.example.App main",
                "SEVERE: boom",
                "java.lang.IllegalArgumentException: bad",
                "\tat com.example.App.main(App.java:5)",
                "",
                "java.lang.Error: printed without a logger",
                "\tat x.Y.z(Y.java:1)",
                "Jan 05, 2024 3:04:06 PM com.example.App main",
                "INFO: no trace",
            ],
        );
        let t = texts(&out);
        assert_eq!(t.len(), 6, "{t:#?}");
        assert!(t[0].starts_with("2024-01-01 10:00:00") && t[0].ends_with("\t... 3 more"));
        assert_eq!(out[0].lines, 8);
        assert!(t[3].starts_with("Jan 05") && t[3].ends_with("App.java:5)\n"));
        // A bare exception after a trace (printStackTrace, no logger) is a record of its own.
        assert!(t[4].starts_with("java.lang.Error") && t[4].ends_with("(Y.java:1)"));
        assert_eq!(
            t[5],
            "Jan 05, 2024 3:04:06 PM com.example.App main\nINFO: no trace"
        );
    }

    #[test]
    fn python_preset_chained() {
        let mut j = preset("python");
        let out = run(
            &mut j,
            &[
                "2024-01-01 10:00:00,000 ERROR app: failed",
                "Traceback (most recent call last):",
                "  File \"a.py\", line 3, in f",
                "    g()",
                "    ~^^",
                "KeyError: 'k'",
                "",
                "The above exception was the direct cause of the following exception:",
                "",
                "Traceback (most recent call last):",
                "  File \"a.py\", line 5, in h",
                "ValueError: wrapped",
                "2024-01-01 10:00:01,000 INFO app: next",
                "2024-01-01 10:00:02,000 INFO app: another",
            ],
        );
        let t = texts(&out);
        assert_eq!(t.len(), 3, "{t:#?}");
        assert_eq!(out[0].lines, 12);
        assert!(t[0].ends_with("ValueError: wrapped"));
    }

    #[test]
    fn go_preset_panic_and_dump() {
        let mut j = preset("go");
        let out = run(
            &mut j,
            &[
                "2024/01/01 10:00:00 starting",
                "panic: runtime error: index out of range [5] with length 3",
                "",
                "goroutine 1 [running]:",
                "main.main()",
                "\t/tmp/x.go:8 +0x1d",
                "created by main.init in goroutine 1",
                "exit status 2",
                "2024/01/01 10:00:01 http: panic serving 127.0.0.1:1: boom",
                "goroutine 5 [running]:",
                "net/http.(*conn).serve.func1()",
                "\t/usr/lib/go/src/net/http/server.go:1898 +0xbe",
                "2024/01/01 10:00:02 done",
            ],
        );
        let t = texts(&out);
        assert_eq!(t.len(), 4, "{t:#?}");
        assert_eq!(out[1].lines, 7);
        assert_eq!(out[2].lines, 4);
    }

    #[test]
    fn ruby_preset() {
        let mut j = preset("ruby");
        let out = run(
            &mut j,
            &[
                "E, [2024-01-01T10:00:00 #1] ERROR -- : boom (RuntimeError)",
                "/app/x.rb:10:in `bar'",
                "/app/x.rb:5:in 'Foo#baz'",
                "x.rb:2:in 'foo': unhandled (RuntimeError)",
                "\tfrom x.rb:5:in '<main>'",
                "x.rb:1:in 'x': cause (ArgumentError)",
                "\tfrom x.rb:4:in '<main>'",
                "I, [2024-01-01T10:00:01 #1]  INFO -- : ok",
            ],
        );
        let t = texts(&out);
        assert_eq!(t.len(), 3, "{t:#?}");
        assert_eq!(out[0].lines, 3);
        assert_eq!(out[1].lines, 4);
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
                preset: None,
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

        #[test]
        fn preset_events_partition_lines(
            lines in proptest::collection::vec(prop_oneof![
                proptest::sample::select(vec![
                "2024-01-01 INFO x", "Jan 5, 2024 1:02:03 PM a b", "SEVERE: s",
                "java.lang.IllegalStateException: e", "\tat a.B.c(B.java:1)",
                "Caused by: x.Y: z", "\t... 3 more", "", "  indented",
                "Traceback (most recent call last):", "ValueError: v",
                "The above exception was the direct cause of the following exception:",
                "panic: p", "goroutine 1 [running]:", "main.main()",
                "x.rb:1:in 'm'", "x.rb:1:in 'm': e (E)", "\tfrom x.rb:2:in 'n'",
                                ]).prop_map(String::from),
                "[ a-c:.()\t]{0,8}",
            ], 0..60),
            which in 0usize..4,
            max_lines in 1usize..8,
            max_bytes in 1u64..80,
        ) {
            let c = MultilineConfig {
                pattern: None,
                preset: Some([Preset::Java, Preset::Python, Preset::Go, Preset::Ruby][which]),
                negate: false,
                match_: MatchMode::After,
                max_lines,
                max_bytes: Some(ByteSize(max_bytes)),
                timeout: Dur::secs(5),
            };
            let mut j = c.joiner(1 << 20).unwrap();
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let out = run(&mut j, &refs);
            prop_assert_eq!(texts(&out).join("\n"), lines.join("\n"));
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
