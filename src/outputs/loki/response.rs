//! What Loki's answer to a push means for each entry.
//!
//! - 2xx: every entry is stored.
//! - 429 (rate limit, per-stream rate limit, stream limit) and 5xx: nothing certain was
//!   stored; the whole request is retried (after `Retry-After` when given). 401/403/404 are
//!   configuration problems: retried too, so the lines wait in their files rather than being
//!   thrown away while a token or URL is being fixed. 413: the driver halves the batch.
//! - 400: **permanent, and partial.** Loki 3 validates and stores entry by entry: the
//!   distributor drops entries that are too old, too new or too long and still pushes the
//!   rest; the ingester drops entries too far behind their stream and stores the rest. Both
//!   then answer 400 naming what they dropped. So after a 400 nothing of the request is ever
//!   sent again: the entries Loki names go to the dead letters with Loki's words, every other
//!   entry of the request is taken as stored. That is the choice that keeps "an entry Loki
//!   accepted is never sent twice"; its cost is that a 400 naming entries we cannot match
//!   (a stream we did not send, a timestamp in none of ours) dead-letters nothing for them.
//!
//! How entries are matched (streams are compared by their label sets, as a subset, because
//! Loki may add labels such as `service_name` to the stream it names):
//! - distributor, `entry for stream '{..}' has timestamp too old: T, oldest acceptable
//!   timestamp is: C` / `... too new: T`: the entries of that stream whose time falls in
//!   second `T` (Loki prints RFC 3339 without fractions);
//! - distributor, `Max entry size 'N' bytes exceeded for stream '{..}' while adding an entry
//!   with length 'L' bytes`: the entries of that stream whose line is `L` bytes long;
//! - ingester, `entry with timestamp T ignored, reason: '...',` lines (at most
//!   `max_returned_stream_errors`, 10 by default) closed by `user 'x', total ignored: N out of
//!   M for stream: {..}`: the ingester checks a stream's entries in the order sent, and we send
//!   each stream sorted by time, so the `N` it ignored are the `N` oldest of the `M` we sent
//!   (entries too far behind the stream's newest line) — exact even when Loki listed only ten.
//!   If `M` is not the number we sent for that stream (less those the distributor named),
//!   only the entries whose timestamps are listed are rejected.
//!
//! Loki's own limits show through: when the ingester fails, the distributor answers with the
//! ingester's error alone (its own validation errors are not repeated), and an ingester names
//! only the last failing stream of a push; entries Loki dropped without naming them cannot be
//! dead-lettered by any client.
//! - any other 400 that names a stream (`stream '{..}'`) rejects that stream's entries; a 400
//!   that names none (a body Loki could not parse, a request-wide limit) rejects every entry
//!   of the request: Loki stored none of them.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use regex::Regex;

use super::encode::{Prepared, Stream};
use crate::event::Event;

/// The fate of the entries of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Stored,
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    TooLarge(String),
    /// Per event of the batch (indexed like the events): `Some(reason)` for the rejected.
    Partial(Vec<Option<String>>),
}

/// Classifies a response to the request built from `p`.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
    events: &[Event],
    p: &Prepared,
) -> Verdict {
    let body = body.trim();
    let said = |what: &str| {
        if body.is_empty() {
            format!("loki answered {status} ({what})")
        } else {
            format!("loki answered {status}: {}", clip(body, 2000))
        }
    };
    match status {
        200..=299 => Verdict::Stored,
        429 => Verdict::Retry {
            reason: said("rate limited"),
            after: retry_after,
        },
        413 => Verdict::TooLarge(said("request too large")),
        400 => Verdict::Partial(attribute_400(body, events, p)),
        401 | 403 | 404 | 408 => Verdict::Retry {
            reason: said("check url, tenant and credentials"),
            after: retry_after,
        },
        500..=599 => Verdict::Retry {
            reason: said("server error"),
            after: retry_after,
        },
        _ => {
            let reason = said("rejected");
            Verdict::Partial(
                p.placement
                    .iter()
                    .map(|pl| match pl {
                        super::encode::Placement::Stream(_) => Some(reason.clone()),
                        super::encode::Placement::Rejected(_) => None,
                    })
                    .collect(),
            )
        }
    }
}

fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn distributor_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"entry for stream '|Max entry size '\d+' bytes exceeded for stream '|total ignored: (\d+) out of (\d+) for stream: |stream '",
        )
        .expect("static regex")
    })
}

fn ingester_entry_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"entry with timestamp ([^\n]*?) ignored, reason: '([^\n]*)',")
            .expect("static regex")
    })
}

/// Per event: the rejection reason, for the entries of a 400 (see the module doc).
pub fn attribute_400(body: &str, events: &[Event], p: &Prepared) -> Vec<Option<String>> {
    let mut out: Vec<Option<String>> = vec![None; events.len()];
    let mut attributed = false;
    let mut named_any = false;
    // Start of the text not yet consumed by an ingester block (its entry lines precede it).
    let mut block_start = 0;
    for m in distributor_re().captures_iter(body) {
        let Some(whole) = m.get(0) else { continue };
        let Some((labels, after)) = parse_labels(&body[whole.end()..]) else {
            continue;
        };
        named_any = true;
        let tail_at = body.len() - after.len();
        let tail = &body[tail_at..];
        let stream = find_stream(&p.streams, &labels);
        let text = whole.as_str();
        if let (Some(n), Some(mm)) = (m.get(1), m.get(2)) {
            // Ingester: the entry lines between the previous block and this one.
            let block = &body[block_start..whole.start()];
            block_start = tail_at;
            let ignored: usize = n.as_str().parse().unwrap_or(0);
            let total: usize = mm.as_str().parse().unwrap_or(0);
            let Some(s) = stream else { continue };
            let entries = &p.streams[s].entries;
            let listed: Vec<(Option<i64>, String)> = ingester_entry_re()
                .captures_iter(block)
                .map(|c| {
                    let ts = c.get(1).and_then(|t| parse_go_time(t.as_str()));
                    let line = c.get(0).map_or("", |l| l.as_str()).trim_end_matches(',');
                    (ts, line.to_owned())
                })
                .collect();
            let summary = format!(
                "loki: total ignored: {ignored} out of {total} for stream: {}",
                p.streams[s].labels
            );
            let reason_for = |ts: i64| -> String {
                listed
                    .iter()
                    .find(|(t, _)| *t == Some(ts))
                    .or(listed.first())
                    .map(|(_, l)| format!("loki: {l} ({summary})"))
                    .unwrap_or_else(|| summary.clone())
            };
            // The ingester only saw what the distributor let through.
            let candidates: Vec<u32> = entries
                .iter()
                .copied()
                .filter(|&i| out[i as usize].is_none())
                .collect();
            if total == candidates.len() {
                for &i in candidates.iter().take(ignored) {
                    out[i as usize] = Some(reason_for(events[i as usize].timestamp));
                    attributed = true;
                }
            } else {
                for &i in entries {
                    let ts = events[i as usize].timestamp;
                    if listed.iter().any(|(t, _)| *t == Some(ts)) {
                        out[i as usize] = Some(reason_for(ts));
                        attributed = true;
                    }
                }
            }
            continue;
        }
        let Some(s) = stream else { continue };
        let sentence = format!(
            "loki: {text}{}{}",
            &body[whole.end()..tail_at],
            first_line(tail)
        );
        let entries = &p.streams[s].entries;
        if text.starts_with("entry for stream '") {
            // `' has timestamp too old: T, ...` or `' has timestamp too new: T`
            let Some(ts) = tail
                .strip_prefix("' has timestamp too old: ")
                .or_else(|| tail.strip_prefix("' has timestamp too new: "))
                .and_then(|r| parse_rfc3339(r.split([',', '\n']).next().unwrap_or("")))
            else {
                // Another per-stream distributor error: the whole stream.
                reject_all(entries, &sentence, &mut out, &mut attributed);
                continue;
            };
            let second = ts.div_euclid(1_000_000_000);
            for &i in entries {
                if events[i as usize].timestamp.div_euclid(1_000_000_000) == second {
                    out[i as usize] = Some(sentence.clone());
                    attributed = true;
                }
            }
        } else if text.starts_with("Max entry size '") {
            let len: Option<usize> = tail
                .strip_prefix("' while adding an entry with length '")
                .and_then(|r| r.split('\'').next())
                .and_then(|n| n.parse().ok());
            match len {
                Some(len) => {
                    for &i in entries {
                        if p.line(events, i as usize).len() == len {
                            out[i as usize] = Some(sentence.clone());
                            attributed = true;
                        }
                    }
                }
                None => reject_all(entries, &sentence, &mut out, &mut attributed),
            }
        } else {
            reject_all(entries, &sentence, &mut out, &mut attributed);
        }
    }
    if !attributed && !named_any {
        let reason = format!("loki answered 400: {}", clip(body, 2000));
        for (i, pl) in p.placement.iter().enumerate() {
            if matches!(pl, super::encode::Placement::Stream(_)) {
                out[i] = Some(reason.clone());
            }
        }
    }
    out
}

fn reject_all(entries: &[u32], reason: &str, out: &mut [Option<String>], attributed: &mut bool) {
    for &i in entries {
        out[i as usize] = Some(reason.to_owned());
        *attributed = true;
    }
}

fn first_line(s: &str) -> &str {
    let s = s.split('\n').next().unwrap_or("");
    clip(s, 500)
}

/// Our stream whose labels are all in `named` with equal values (Loki may add labels); the
/// one with the most labels when several fit.
fn find_stream(streams: &[Stream], named: &BTreeMap<String, String>) -> Option<usize> {
    streams
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.pairs
                .iter()
                .all(|(n, v)| named.get(n).is_some_and(|x| x == v))
        })
        .max_by_key(|(_, s)| s.pairs.len())
        .map(|(i, _)| i)
}

/// Parses a Prometheus label set `{a="b", c="d"}` (values quoted as Go's `strconv.Quote`)
/// at the start of `s`; returns the labels and the rest of `s`.
pub fn parse_labels(s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut rest = s.strip_prefix('{')?;
    let mut labels = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(r) = rest.strip_prefix('}') {
            return Some((labels, r));
        }
        let name_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
        if name_end == 0 {
            return None;
        }
        let name = &rest[..name_end];
        rest = rest[name_end..]
            .trim_start()
            .strip_prefix('=')?
            .trim_start();
        let (value, r) = parse_go_string(rest)?;
        labels.insert(name.to_owned(), value);
        rest = r;
    }
}

/// Parses a Go double-quoted string literal at the start of `s`.
fn parse_go_string(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('"')?.char_indices();
    let body = s.get(1..)?;
    let mut v = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((v, body.get(i + 1..)?)),
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'n' => v.push('\n'),
                    'r' => v.push('\r'),
                    't' => v.push('\t'),
                    'a' => v.push('\u{7}'),
                    'b' => v.push('\u{8}'),
                    'f' => v.push('\u{c}'),
                    'v' => v.push('\u{b}'),
                    '\\' | '"' | '\'' => v.push(e),
                    'x' | 'u' | 'U' => {
                        let digits = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let mut n = 0u32;
                        for _ in 0..digits {
                            let (_, d) = chars.next()?;
                            n = n * 16 + d.to_digit(16)?;
                        }
                        v.push(char::from_u32(n).unwrap_or('\u{fffd}'));
                    }
                    _ => return None,
                }
            }
            c => v.push(c),
        }
    }
    None
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `YYYY-MM-DD` `sep` `HH:MM:SS[.frac]` → (nanos since epoch at UTC+0, rest).
fn parse_date_time(s: &str, sep: char) -> Option<(i64, &str)> {
    let date = s.get(0..10)?;
    let mut d = date.split('-');
    let (y, mo, da) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if s[10..].chars().next()? != sep {
        return None;
    }
    let t = s.get(11..19)?;
    let mut tp = t.split(':');
    let (h, mi, se) = (num(tp.next()?)?, num(tp.next()?)?, num(tp.next()?)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac: i64 = 0;
    if let Some(r) = rest.strip_prefix('.') {
        let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        let digits = &r[..end.min(9)];
        frac = num(digits)? * 10i64.pow(9 - digits.len() as u32);
        rest = &r[end..];
    }
    let days = days_from_civil(y, mo as u32, da as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    Some((secs.checked_mul(1_000_000_000)?.checked_add(frac)?, rest))
}

/// Go's RFC 3339 (`2006-01-02T15:04:05Z07:00`, fractions allowed) → nanos since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let (t, rest) = parse_date_time(s.trim(), 'T')?;
    if rest == "Z" {
        return Some(t);
    }
    let sign = match rest.chars().next()? {
        '+' => 1,
        '-' => -1,
        _ => return None,
    };
    let off = rest.get(1..)?;
    let (h, m) = off.split_once(':')?;
    Some(t - sign * (num(h)? * 3600 + num(m)? * 60) * 1_000_000_000)
}

/// Go's `time.Time.String()` (`2006-01-02 15:04:05.999999999 -0700 MST`) → nanos since the
/// epoch. The zone name is ignored; the numeric offset decides.
pub fn parse_go_time(s: &str) -> Option<i64> {
    let (t, rest) = parse_date_time(s.trim(), ' ')?;
    let off = rest.strip_prefix(' ')?;
    let sign = match off.chars().next()? {
        '+' => 1,
        '-' => -1,
        _ => return None,
    };
    let hh = num(off.get(1..3)?)?;
    let mm = num(off.get(3..5)?)?;
    Some(t - sign * (hh * 3600 + mm * 60) * 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::loki::encode::{LineMode, Shape};
    use crate::outputs::template::Template;
    use serde_json::Value;

    const T0: i64 = 1_700_000_000_000_000_000; // 2023-11-14T22:13:20Z

    fn batch(spec: &[(&str, i64, &str)]) -> (Vec<Event>, Prepared) {
        let events: Vec<Event> = spec
            .iter()
            .map(|(app, ts, msg)| {
                let mut e = Event::synthetic("in", msg);
                e.timestamp = *ts;
                e.insert("app", Value::String((*app).into()));
                e
            })
            .collect();
        let shape = Shape {
            labels: vec![("app".into(), Template::parse("{{ app }}").unwrap())],
            metadata: Vec::new(),
            line: LineMode::Message,
        };
        let p = shape.prepare(&events);
        (events, p)
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(T0));
        assert_eq!(parse_rfc3339("2023-11-14T23:13:20+01:00"), Some(T0));
        assert_eq!(parse_go_time("2023-11-14 22:13:20 +0000 UTC"), Some(T0));
        assert_eq!(
            parse_go_time("2023-11-14 23:13:20.5 +0100 CET"),
            Some(T0 + 500_000_000)
        );
        assert_eq!(parse_go_time("garbage"), None);
        assert_eq!(parse_rfc3339("2023-13-14T22:13:20Z"), None);
    }

    #[test]
    fn labels_parse_with_go_escapes() {
        let (l, rest) = parse_labels(r#"{app="a\"b", x="\u00e9\n"}' tail"#).unwrap();
        assert_eq!(l["app"], "a\"b");
        assert_eq!(l["x"], "é\n");
        assert_eq!(rest, "' tail");
        assert!(parse_labels(r#"{app="unterminated}"#).is_none());
    }

    #[test]
    fn too_old_names_entries_of_one_stream() {
        let (ev, p) = batch(&[
            ("a", T0, "old a"),
            ("b", T0, "old b same second other stream"),
            ("a", T0 + 5_000_000_000, "fresh a"),
        ]);
        let body = "entry for stream '{app=\"a\", service_name=\"a\"}' has timestamp too old: 2023-11-14T22:13:20Z, oldest acceptable timestamp is: 2023-11-14T22:13:21Z";
        let out = attribute_400(body, &ev, &p);
        assert!(out[0].as_deref().unwrap().contains("too old"));
        assert_eq!(out[1], None);
        assert_eq!(out[2], None);
    }

    #[test]
    fn ingester_block_rejects_the_oldest_n() {
        let mut spec = Vec::new();
        for i in 0..15 {
            spec.push(("a", T0 + i * 1_000_000_000, "x"));
        }
        spec.push(("b", T0, "other stream"));
        let (ev, p) = batch(&spec);
        // Loki lists at most 10 entries, but says 12 of 15.
        let mut body = String::new();
        for i in 0..10 {
            body.push_str(&format!(
                "entry with timestamp 2023-11-14 22:13:{:02} +0000 UTC ignored, reason: 'entry too far behind, entry timestamp is: 2023-11-14T22:13:{:02}Z, oldest acceptable timestamp is: 2023-11-14T22:13:32Z',\n",
                20 + i,
                20 + i
            ));
        }
        body.push_str("user 'fake', total ignored: 12 out of 15 for stream: {app=\"a\"}");
        let out = attribute_400(&body, &ev, &p);
        let rejected: Vec<usize> = (0..out.len()).filter(|&i| out[i].is_some()).collect();
        assert_eq!(rejected, (0..12).collect::<Vec<_>>());
        assert!(out[0].as_deref().unwrap().contains("too far behind"));
        assert!(
            out[11]
                .as_deref()
                .unwrap()
                .contains("total ignored: 12 out of 15")
        );
    }

    #[test]
    fn line_too_long_and_unnamed_400() {
        let (ev, p) = batch(&[("a", T0, "short"), ("a", T0 + 1, "much longer line")]);
        let body = "Max entry size '10' bytes exceeded for stream '{app=\"a\"}' while adding an entry with length '16' bytes";
        let out = attribute_400(body, &ev, &p);
        assert_eq!(out[0], None);
        assert!(out[1].as_deref().unwrap().contains("Max entry size"));
        let out = attribute_400(
            "error at least one label pair is required per stream",
            &ev,
            &p,
        );
        assert!(out.iter().all(Option::is_some));
        assert!(matches!(
            classify(
                429,
                Some(Duration::from_secs(2)),
                "Ingestion rate limit exceeded",
                &ev,
                &p
            ),
            Verdict::Retry { after: Some(_), .. }
        ));
        assert_eq!(classify(204, None, "", &ev, &p), Verdict::Stored);
    }
}
