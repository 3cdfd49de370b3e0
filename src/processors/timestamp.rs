//! `timestamp`: sets `@timestamp` from a field, trying the configured formats in order.
//!
//! Formats: `rfc3339`; `unix`, `unix_ms`, `unix_us`, `unix_ns` (a JSON number or a numeric
//! string; a fraction is allowed, `1700000000.25`); anything else is a strftime pattern
//! (chrono's), e.g. nginx's `%d/%b/%Y:%H:%M:%S %z` or syslog's `%b %e %H:%M:%S`. A pattern
//! without a year (syslog) takes the year of the read time, or the year before when that
//! would put the event more than a day in the future (December lines read in January).
//!
//! Time zones, for patterns without an offset: `UTC` (default), `Local` (the host's zone,
//! DST-aware through the system's zone file, as chrono reads it) or a fixed offset such as
//! `+02:00`. Named IANA zones (`Europe/Paris`) are refused with a hint: they would need the
//! `chrono-tz` database compiled in, which we chose not to add for one key.
//!
//! Invariant: a value that fits no format keeps the read time, sets the
//! `log.flags: [timestamp_failed]` flag, is counted in
//! `logferry_processor_errors_total{processor="timestamp"}`, and keeps its field (even with
//! `remove: true`) so nothing is lost.

use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{DateTime, Datelike, FixedOffset, Local, NaiveDateTime, TimeZone, Utc};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{Processor, record_error};
use crate::event::{Event, FLAG_TIMESTAMP_FAILED, FieldRef};

/// `timestamp: { field: ts, formats: [rfc3339, unix_ms, "%d/%b/%Y:%H:%M:%S %z"], remove: true }`
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimestampConfig {
    /// The field holding the time.
    pub field: String,
    /// Formats tried in order: `rfc3339`, `unix`, `unix_ms`, `unix_us`, `unix_ns`, or a
    /// strftime pattern such as `%d/%b/%Y:%H:%M:%S %z`.
    pub formats: Vec<String>,
    /// Zone of times that carry no offset: `UTC`, `Local`, or a fixed offset like `+02:00`.
    #[serde(default = "default_tz")]
    pub timezone: String,
    /// Remove `field` once it has been parsed (kept when no format fits).
    #[serde(default)]
    pub remove: bool,
    /// A missing `field` is not a failure (by default it is flagged like a bad value).
    #[serde(default)]
    pub ignore_missing: bool,
    /// Also say why in `error.message` / `error.type` when no format fits (the
    /// `timestamp_failed` flag is always set).
    #[serde(default)]
    pub add_error_key: bool,
}

fn default_tz() -> String {
    "UTC".into()
}

#[derive(Debug, Clone)]
enum Format {
    Rfc3339,
    /// Seconds since the epoch scaled by 10^-exp: 0 = s, 3 = ms, 6 = µs, 9 = ns.
    Unix(u32),
    Strftime {
        items: Vec<Item<'static>>,
        has_year: bool,
    },
}

#[derive(Debug, Clone, Copy)]
enum Zone {
    Utc,
    Local,
    Fixed(FixedOffset),
}

pub struct Timestamp {
    field: String,
    formats: Vec<Format>,
    format_names: String,
    zone: Zone,
    remove: bool,
    ignore_missing: bool,
    add_error_key: bool,
    errors: metrics::Counter,
}

impl Timestamp {
    pub fn new(c: &TimestampConfig, input_id: &str) -> Result<Timestamp, (String, String)> {
        if c.field.is_empty() {
            return Err(("field".into(), "must name a field".into()));
        }
        if c.formats.is_empty() {
            return Err((
                "formats".into(),
                "list at least one format (rfc3339, unix, unix_ms, unix_us, unix_ns or a strftime pattern)".into(),
            ));
        }
        let formats = c
            .formats
            .iter()
            .enumerate()
            .map(|(i, f)| parse_format(f).map_err(|m| (format!("formats[{i}]"), m)))
            .collect::<Result<Vec<_>, _>>()?;
        let zone = parse_zone(&c.timezone).map_err(|m| ("timezone".to_owned(), m))?;
        Ok(Timestamp {
            field: c.field.clone(),
            formats,
            format_names: c.formats.join(", "),
            zone,
            remove: c.remove,
            ignore_missing: c.ignore_missing,
            add_error_key: c.add_error_key,
            errors: super::error_counter(input_id, "timestamp"),
        })
    }

    /// The time in `v`, in nanoseconds since the epoch, by the first format that fits.
    fn parse(&self, v: &FieldRef<'_>, read_time: i64) -> Option<i64> {
        self.formats.iter().find_map(|f| match (f, v) {
            (Format::Unix(exp), FieldRef::Json(Value::Number(n))) => unix_number(n, *exp),
            (_, FieldRef::Json(Value::Number(_))) => None,
            (f, v) => {
                let s = v.to_text();
                parse_text(f, s.trim(), self.zone, read_time)
            }
        })
    }

    fn fail(&self, e: &mut Event, why: String) {
        e.flags |= FLAG_TIMESTAMP_FAILED;
        self.errors.increment(1);
        if self.add_error_key {
            record_error(e, "timestamp", why);
        }
    }
}

impl Processor for Timestamp {
    fn process(&mut self, events: &mut Vec<Event>) {
        for e in events.iter_mut() {
            let parsed = match e.get(&self.field) {
                None if self.ignore_missing => continue,
                None => Err(format!("timestamp: `{}` is missing", self.field)),
                Some(v) => self.parse(&v, e.timestamp).ok_or_else(|| {
                    let text = v.to_text();
                    let shown: String = text.chars().take(64).collect();
                    format!(
                        "timestamp: `{}` value {shown:?} fits none of the formats [{}]",
                        self.field, self.format_names
                    )
                }),
            };
            match parsed {
                Ok(ns) => {
                    e.timestamp = ns;
                    if self.remove {
                        e.remove(&self.field);
                    }
                }
                Err(why) => self.fail(e, why),
            }
        }
    }
}

fn parse_format(f: &str) -> Result<Format, String> {
    Ok(match f {
        "rfc3339" => Format::Rfc3339,
        "unix" => Format::Unix(0),
        "unix_ms" => Format::Unix(3),
        "unix_us" => Format::Unix(6),
        "unix_ns" => Format::Unix(9),
        pattern => {
            if !pattern.contains('%') {
                return Err(format!(
                    "unknown format {pattern:?}: use rfc3339, unix, unix_ms, unix_us, unix_ns or a strftime pattern"
                ));
            }
            let items = StrftimeItems::new(pattern)
                .parse_to_owned()
                .map_err(|e| format!("invalid strftime pattern {pattern:?}: {e}"))?;
            let has_year = ["%Y", "%G", "%y", "%C", "%F", "%D", "%x", "%c", "%+", "%s"]
                .iter()
                .any(|spec| pattern.contains(spec));
            Format::Strftime { items, has_year }
        }
    })
}

fn parse_zone(tz: &str) -> Result<Zone, String> {
    match tz {
        "UTC" | "utc" | "Z" => return Ok(Zone::Utc),
        "Local" | "local" => return Ok(Zone::Local),
        _ => {}
    }
    let mut parsed = Parsed::new();
    let items = [Item::Fixed(chrono::format::Fixed::TimezoneOffset)];
    chrono::format::parse(&mut parsed, tz, items.iter())
        .ok()
        .and_then(|_| parsed.offset())
        .and_then(FixedOffset::east_opt)
        .map(Zone::Fixed)
        .ok_or_else(|| {
            format!(
                "unknown time zone {tz:?}: use UTC, Local or a fixed offset like +02:00 (named zones need a zone database this build does not carry)"
            )
        })
}

/// A JSON number in units of 10^-exp seconds.
fn unix_number(n: &serde_json::Number, exp: u32) -> Option<i64> {
    let scale = 10i64.pow(9 - exp);
    if let Some(i) = n.as_i64() {
        return i.checked_mul(scale);
    }
    // The shortest decimal form of the float is what the log wrote: parse it exactly.
    if let Some(ns) = unix_text(&n.to_string(), exp) {
        return Some(ns);
    }
    let f = n.as_f64()? * scale as f64;
    (f.is_finite() && f.abs() < i64::MAX as f64).then_some(f.round() as i64)
}

/// A decimal string (`-12`, `1700000000.25`) in units of 10^-exp seconds, exactly.
fn unix_text(s: &str, exp: u32) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scale = 10i64.pow(9 - exp);
    let mut ns = int.parse::<i64>().ok()?.checked_mul(scale)?;
    // Fraction digits below a nanosecond are dropped.
    let mut unit = scale;
    for b in frac.bytes() {
        unit /= 10;
        if unit == 0 {
            break;
        }
        ns = ns.checked_add(i64::from(b - b'0') * unit)?;
    }
    Some(if neg { -ns } else { ns })
}

fn parse_text(f: &Format, s: &str, zone: Zone, read_time: i64) -> Option<i64> {
    match f {
        Format::Rfc3339 => DateTime::parse_from_rfc3339(s).ok()?.timestamp_nanos_opt(),
        Format::Unix(exp) => unix_text(s, *exp),
        Format::Strftime { items, has_year } => {
            let mut parsed = Parsed::new();
            chrono::format::parse(&mut parsed, s, items.iter()).ok()?;
            let read_year = DateTime::from_timestamp_nanos(read_time).year();
            if !has_year {
                parsed.set_year(i64::from(read_year)).ok()?;
            }
            let naive = naive_of(&parsed)?;
            let ns = resolve(naive, parsed.offset(), zone)?;
            if !has_year && ns > read_time.saturating_add(86_400_000_000_000) {
                // Syslog has no year: a December line read in January is last year's.
                return resolve(naive.with_year(read_year - 1)?, parsed.offset(), zone);
            }
            Some(ns)
        }
    }
}

/// The wall-clock time `parsed` holds (midnight for a date alone).
fn naive_of(parsed: &Parsed) -> Option<NaiveDateTime> {
    match parsed.to_naive_datetime_with_offset(parsed.offset().unwrap_or(0)) {
        Ok(n) => Some(n),
        Err(_) => parsed.to_naive_date().ok()?.and_hms_opt(0, 0, 0),
    }
}

/// `naive` as an instant: at the parsed offset if there is one, else in `zone`.
fn resolve(naive: NaiveDateTime, offset: Option<i32>, zone: Zone) -> Option<i64> {
    if let Some(off) = offset {
        let off = FixedOffset::east_opt(off)?;
        return off
            .from_local_datetime(&naive)
            .single()?
            .timestamp_nanos_opt();
    }
    match zone {
        Zone::Utc => Utc.from_utc_datetime(&naive).timestamp_nanos_opt(),
        Zone::Fixed(off) => off
            .from_local_datetime(&naive)
            .single()?
            .timestamp_nanos_opt(),
        // In a DST overlap the earlier instant; in a DST gap the time does not exist.
        Zone::Local => Local
            .from_local_datetime(&naive)
            .earliest()?
            .timestamp_nanos_opt(),
    }
}

/// Parses one value with one format spec, for the fuzz target: never panics.
pub fn fuzz_parse(format: &str, value: &str, timezone: &str) -> Option<i64> {
    let f = parse_format(format).ok()?;
    let zone = parse_zone(timezone).ok()?;
    parse_text(&f, value, zone, 1_700_000_000_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(yaml: &str) -> Timestamp {
        Timestamp::new(&serde_yaml_ng::from_str(yaml).unwrap(), "t").unwrap()
    }

    fn event_with(field: &str, v: Value) -> Event {
        let mut e = Event::synthetic("t", "m");
        e.timestamp = 1_700_000_000_000_000_000;
        e.insert(field, v);
        e
    }

    fn run(p: &mut Timestamp, e: Event) -> Event {
        let mut v = vec![e];
        p.process(&mut v);
        v.pop().unwrap()
    }

    const T: i64 = 1_704_103_200_000_000_000; // 2024-01-01T10:00:00Z

    #[test]
    fn formats() {
        let mut p = ts(
            "{ field: ts, formats: [rfc3339, unix_ms, '%d/%b/%Y:%H:%M:%S %z', '%Y-%m-%d %H:%M:%S'], remove: true }",
        );
        for v in [
            Value::String("2024-01-01T10:00:00Z".into()),
            Value::String("2024-01-01T12:00:00+02:00".into()),
            Value::from(1_704_103_200_000i64),
            Value::String("1704103200000".into()),
            Value::String("01/Jan/2024:11:00:00 +0100".into()),
            Value::String("2024-01-01 10:00:00".into()),
        ] {
            let e = run(&mut p, event_with("ts", v.clone()));
            assert_eq!(e.timestamp, T, "{v}");
            assert!(e.get("ts").is_none(), "removed");
            assert_eq!(e.flags & FLAG_TIMESTAMP_FAILED, 0);
        }
        let e = run(
            &mut p,
            event_with("ts", Value::String("2024-01-01T10:00:00.123456789Z".into())),
        );
        assert_eq!(e.timestamp, T + 123_456_789);
    }

    #[test]
    fn unix_scales_and_fractions() {
        for (fmt, v, want) in [
            ("unix", Value::from(1_704_103_200i64), T),
            (
                "unix",
                Value::String("1704103200.5".into()),
                T + 500_000_000,
            ),
            ("unix", Value::from(1_704_103_200.25f64), T + 250_000_000),
            (
                "unix_us",
                Value::String("1704103200000001".into()),
                T + 1_000,
            ),
            ("unix_ns", Value::from(T), T),
            ("unix_ns", Value::String(T.to_string()), T),
        ] {
            let mut p = ts(&format!("{{ field: ts, formats: [{fmt}] }}"));
            assert_eq!(
                run(&mut p, event_with("ts", v.clone())).timestamp,
                want,
                "{fmt} {v}"
            );
        }
    }

    #[test]
    fn timezones() {
        let mut p = ts("{ field: ts, formats: ['%Y-%m-%d %H:%M:%S'], timezone: '+02:00' }");
        let e = run(
            &mut p,
            event_with("ts", Value::String("2024-01-01 12:00:00".into())),
        );
        assert_eq!(e.timestamp, T);
        assert!(
            Timestamp::new(
                &serde_yaml_ng::from_str(
                    "{ field: ts, formats: [rfc3339], timezone: Europe/Paris }"
                )
                .unwrap(),
                "t"
            )
            .is_err()
        );
        assert!(
            Timestamp::new(
                &serde_yaml_ng::from_str("{ field: ts, formats: [nope] }").unwrap(),
                "t"
            )
            .is_err()
        );
    }

    #[test]
    fn syslog_without_year() {
        let mut p = ts("{ field: ts, formats: ['%b %e %H:%M:%S'] }");
        // Read time 2023-11-14T22:13:20Z: a November time is this year's; a December one
        // would lie more than a day ahead, so it is last year's.
        let e = run(
            &mut p,
            event_with("ts", Value::String("Nov 14 22:00:00".into())),
        );
        assert_eq!(e.timestamp, 1_699_999_200_000_000_000);
        let e = run(
            &mut p,
            event_with("ts", Value::String("Dec 31 23:00:00".into())),
        );
        assert_eq!(e.timestamp, 1_672_527_600_000_000_000); // 2022-12-31T23:00:00Z
    }

    #[test]
    fn failure_keeps_read_time_and_flags() {
        let mut p =
            ts("{ field: ts, formats: [rfc3339, unix], remove: true, add_error_key: true }");
        let e = run(&mut p, event_with("ts", Value::String("yesterday".into())));
        assert_eq!(e.timestamp, 1_700_000_000_000_000_000);
        assert_ne!(e.flags & FLAG_TIMESTAMP_FAILED, 0);
        assert_eq!(
            e.get("ts").unwrap().to_text(),
            "yesterday",
            "kept on failure"
        );
        assert!(
            e.get("error.message")
                .unwrap()
                .to_text()
                .contains("fits none")
        );
        let e = run(&mut p, Event::synthetic("t", "no ts"));
        assert_ne!(e.flags & FLAG_TIMESTAMP_FAILED, 0, "missing is flagged");
        let mut quiet = ts("{ field: ts, formats: [rfc3339], ignore_missing: true }");
        assert_eq!(run(&mut quiet, Event::synthetic("t", "x")).flags, 0);
    }
}
