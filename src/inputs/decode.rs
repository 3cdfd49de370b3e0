//! Line decoders for container log files: Docker's json-file lines and CRI lines.
//!
//! A decoder turns one raw line (as the splitter cut it, newline stripped) into the message,
//! its stream (stdout/stderr), the runtime's timestamp, and whether it is a *partial* piece
//! (Docker: a `log` value without a trailing newline, cut at 16 KiB; CRI: the `P` tag) that
//! the reader joins with the pieces that follow on the same stream.
//!
//! Both work on bytes and avoid copies: the message is a slice of the raw line unless the
//! JSON string holds escapes other than its trailing `\n`; then it is unescaped, in the same
//! pass that finds its end, into the file's arena ([`Decoder`]) — no allocation per line. A
//! json-file object is read like serde_json reads it (a repeated key: the last counts).
//! Invariants (fuzzed): any input gives `Ok` or `Err`, never a panic; a decoder kept across a
//! file's lines gives the same result as a fresh one.

use bytes::{Bytes, BytesMut};

/// How a file's lines are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Each line is a message (the `file` input).
    Plain,
    /// Docker's json-file driver: `{"log":"...\n","stream":"stdout","time":"..."}`.
    DockerJson,
    /// The CRI format kubelet writes: `<time> <stream> <P|F> <message>`.
    Cri,
}

/// Index of a stream in the reader's per-stream state.
pub const STDOUT: usize = 0;
pub const STDERR: usize = 1;

/// One decoded line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// [`STDOUT`] or [`STDERR`].
    pub stream: usize,
    /// Runtime timestamp, ns since the epoch.
    pub time: i64,
    /// A piece of a longer line: joined with what follows on its stream.
    pub partial: bool,
    pub text: Bytes,
}

/// Why a line could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a JSON object")]
    NotObject,
    #[error("malformed JSON")]
    BadJson,
    #[error("no `log` field")]
    NoLog,
    #[error("unknown stream")]
    BadStream,
    #[error("bad timestamp")]
    BadTime,
    #[error("missing CRI field")]
    CriFields,
    #[error("unknown CRI tag")]
    BadTag,
}

fn stream_index(s: &[u8]) -> Result<usize, DecodeError> {
    match s {
        b"stdout" => Ok(STDOUT),
        b"stderr" => Ok(STDERR),
        _ => Err(DecodeError::BadStream),
    }
}

/// Parses an RFC 3339 timestamp with any number of fraction digits (0 to 9 kept, more
/// ignored) and `Z` or a `±HH:MM` offset, into ns since the epoch.
pub fn parse_rfc3339(s: &[u8]) -> Option<i64> {
    rfc3339_rest(s, rfc3339_secs(s)?)
}

fn num(b: &[u8]) -> Option<i64> {
    let mut v = 0i64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

/// Length of an RFC 3339 time's date-and-seconds head, `YYYY-MM-DDTHH:MM:SS`.
const TIME_HEAD: usize = 19;

/// The fixed-width head (the first [`TIME_HEAD`] bytes) as seconds since the epoch before the
/// zone offset; `None` unless `s` is long enough to hold a zone too.
fn rfc3339_secs(s: &[u8]) -> Option<i64> {
    if s.len() <= TIME_HEAD || s[4] != b'-' || s[7] != b'-' || !matches!(s[10], b'T' | b't' | b' ')
    {
        return None;
    }
    if s[13] != b':' || s[16] != b':' {
        return None;
    }
    let y = num(&s[0..4])?;
    let mo = num(&s[5..7])?;
    let d = num(&s[8..10])?;
    let h = num(&s[11..13])?;
    let mi = num(&s[14..16])?;
    let se = num(&s[17..19])?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

/// The fraction and zone after the head, applied to `secs` (from [`rfc3339_secs`] of `s`).
fn rfc3339_rest(s: &[u8], secs: i64) -> Option<i64> {
    let mut i = TIME_HEAD;
    let mut frac = 0i64;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            if i - start < 9 {
                frac = frac * 10 + i64::from(s[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..9 {
            frac *= 10;
        }
    }
    let offset = match s.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let v = num(&[*oh1, *oh2])? * 3600 + num(&[*om1, *om2])? * 60;
            if *sign == b'+' { v } else { -v }
        }
        _ => return None,
    };
    (secs - offset)
        .checked_mul(1_000_000_000)?
        .checked_add(frac)
}

/// The head of the last timestamp parsed and its seconds: consecutive lines of a log mostly
/// share their second, so the date arithmetic runs once per second of log, not per line.
#[derive(Debug, Default, Clone)]
struct TimeCache {
    head: [u8; TIME_HEAD],
    secs: i64,
    valid: bool,
}

impl TimeCache {
    fn parse(&mut self, s: &[u8]) -> Option<i64> {
        if self.valid && s.len() > TIME_HEAD && s[..TIME_HEAD] == self.head {
            return rfc3339_rest(s, self.secs);
        }
        let secs = rfc3339_secs(s)?;
        self.head.copy_from_slice(&s[..TIME_HEAD]);
        self.secs = secs;
        self.valid = true;
        rfc3339_rest(s, secs)
    }
}

/// Size of a fresh arena chunk for unescaped Docker messages.
const ARENA_CHUNK: usize = 64 * 1024;

/// A file's decoding state, kept across its lines.
///
/// - Docker messages with escapes are unescaped into an arena (`BytesMut`) and split off as
///   `Bytes`, so that a line costs no allocation of its own: a chunk is allocated once per
///   ~64 KiB of unescaped text and freed when the last event in it is dropped. In `compact`
///   mode (the file is read in small pieces: a trickle) each message gets an allocation of its
///   exact size instead, so a slow file never pins a chunk; [`Decoder::release`] drops the
///   arena when the file is caught up.
/// - The date-and-seconds head of the last timestamp is cached ([`TimeCache`]).
///
/// Decoding a line gives the same result whatever the lines before it (fuzzed).
#[derive(Debug, Default)]
pub struct Decoder {
    arena: BytesMut,
    time: TimeCache,
    compact: bool,
}

impl Decoder {
    /// Unescape into exact-size allocations (small reads) rather than the shared arena.
    pub fn set_compact(&mut self, compact: bool) {
        self.compact = compact;
    }

    /// Gives the arena's spare capacity back (the file is caught up).
    pub fn release(&mut self) {
        self.arena = BytesMut::new();
    }

    /// Decodes one json-file line.
    pub fn docker(&mut self, line: &Bytes) -> Result<Decoded, DecodeError> {
        let r = decode_docker_with(line, &mut self.time, &mut self.arena, self.compact);
        if r.is_err() {
            // A message unescaped before the line turned out bad.
            self.arena.clear();
        }
        r
    }

    /// Decodes one CRI line.
    pub fn cri(&mut self, line: &Bytes) -> Result<Decoded, DecodeError> {
        decode_cri_with(line, &mut self.time)
    }
}

/// Where a JSON string ends: `s[start]` is the opening quote; returns (index of the closing
/// quote, whether the string holds escapes).
fn string_end(s: &[u8], start: usize) -> Result<(usize, bool), DecodeError> {
    let mut i = start + 1;
    let mut escaped = false;
    loop {
        let rel = memchr::memchr2(b'"', b'\\', s.get(i..).ok_or(DecodeError::BadJson)?)
            .ok_or(DecodeError::BadJson)?;
        i += rel;
        if s[i] == b'"' {
            return Ok((i, escaped));
        }
        escaped = true;
        i += 2;
    }
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// Skips a JSON value that is not a string (an object such as `attrs`, a number, ...).
fn skip_value(s: &[u8], mut i: usize) -> Result<usize, DecodeError> {
    let mut depth = 0usize;
    while i < s.len() {
        match s[i] {
            b'"' => {
                i = string_end(s, i)?.0 + 1;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                if depth == 0 {
                    return Ok(i);
                }
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            b',' if depth == 0 => return Ok(i),
            _ => {}
        }
        i += 1;
    }
    Err(DecodeError::BadJson)
}

/// Decodes one json-file line (a fresh [`Decoder`]; readers keep one per file).
pub fn decode_docker(line: &Bytes) -> Result<Decoded, DecodeError> {
    Decoder::default().docker(line)
}

/// The four hex digits of a `\uXXXX` escape.
fn hex4(h: Option<&[u8]>) -> Option<u32> {
    let h = h?;
    if h.len() != 4 {
        return None;
    }
    h.iter()
        .try_fold(0u32, |v, &c| Some(v * 16 + char::from(c).to_digit(16)?))
}

/// Appends the escape that starts at `s[i]` (a backslash) unescaped to `out`; returns the
/// index after it. A `\u` escape of a lone surrogate becomes U+FFFD (Docker's encoder never
/// writes one; the message is kept rather than dropped).
fn unescape_one(s: &[u8], mut i: usize, out: &mut BytesMut) -> Result<usize, DecodeError> {
    let c = *s.get(i + 1).ok_or(DecodeError::BadJson)?;
    i += 2;
    let byte = match c {
        b'"' | b'\\' | b'/' => c,
        b'n' => b'\n',
        b't' => b'\t',
        b'r' => b'\r',
        b'b' => 0x08,
        b'f' => 0x0c,
        b'u' => {
            let hi = hex4(s.get(i..i + 4)).ok_or(DecodeError::BadJson)?;
            i += 4;
            let ch = if (0xD800..0xDC00).contains(&hi) && s.get(i..i + 2) == Some(b"\\u") {
                match hex4(s.get(i + 2..i + 6)) {
                    Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                        i += 6;
                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                    }
                    _ => None,
                }
            } else {
                char::from_u32(hi)
            };
            let mut buf = [0u8; 4];
            let ch = ch.unwrap_or(char::REPLACEMENT_CHARACTER);
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            return Ok(i);
        }
        _ => return Err(DecodeError::BadJson),
    };
    out.extend_from_slice(&[byte]);
    Ok(i)
}

/// The `log` value of a json-file line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Log {
    /// `line[start..end]` as it is (no escape but the ending); `partial` when it had no
    /// trailing newline.
    Slice {
        start: usize,
        end: usize,
        partial: bool,
    },
    /// Unescaped into the arena (ending stripped); `partial` when it had no trailing newline.
    Arena { partial: bool },
}

/// Reads the JSON string value that opens at `s[q]` as a `log` message, in one pass: up to
/// its first backslash it is only scanned; when the only escape is the trailing `\n` (or
/// `\r\n`) it stays a slice of the line; otherwise it is unescaped into `arena` while the
/// scan goes on. Returns the value and the index of its closing quote.
fn scan_log(
    s: &[u8],
    q: usize,
    arena: &mut BytesMut,
    compact: bool,
) -> Result<(Log, usize), DecodeError> {
    let start = q + 1;
    let bad = DecodeError::BadJson;
    let mut i = start + memchr::memchr2(b'"', b'\\', s.get(start..).ok_or(bad)?).ok_or(bad)?;
    if s[i] == b'"' {
        let partial = true;
        return Ok((
            Log::Slice {
                start,
                end: i,
                partial,
            },
            i,
        ));
    }
    for (ending, len) in [(&b"\\n\""[..], 2), (&b"\\r\\n\""[..], 4)] {
        if s[i..].starts_with(ending) {
            let partial = false;
            return Ok((
                Log::Slice {
                    start,
                    end: i,
                    partial,
                },
                i + len,
            ));
        }
    }
    // Unescaping never makes a string longer: the rest of the line is room enough.
    let room = s.len() - start;
    arena.clear();
    if arena.capacity() < room {
        *arena = BytesMut::with_capacity(if compact { room } else { ARENA_CHUNK.max(room) });
    }
    arena.extend_from_slice(&s[start..i]);
    loop {
        i = unescape_one(s, i, arena)?;
        let rel = memchr::memchr2(b'"', b'\\', s.get(i..).ok_or(bad)?).ok_or(bad)?;
        arena.extend_from_slice(&s[i..i + rel]);
        i += rel;
        if s[i] == b'"' {
            break;
        }
    }
    // A message ends with `\n` (`\r\n`), however escaped, unless it is a partial piece.
    let partial = !arena.ends_with(b"\n");
    if !partial {
        arena.truncate(arena.len() - 1);
        if arena.ends_with(b"\r") {
            arena.truncate(arena.len() - 1);
        }
    }
    Ok((Log::Arena { partial }, i))
}

/// The JSON string value `s[a..b]` (between its quotes), unescaped into `tmp` if it holds
/// escapes (never in what Docker writes for `stream` and `time`).
fn string_value<'a>(
    s: &'a [u8],
    a: usize,
    b: usize,
    esc: bool,
    tmp: &'a mut BytesMut,
) -> Result<&'a [u8], DecodeError> {
    if !esc {
        return Ok(&s[a..b]);
    }
    tmp.clear();
    let mut i = a;
    while let Some(rel) = memchr::memchr(b'\\', &s[i..b]) {
        tmp.extend_from_slice(&s[i..i + rel]);
        i = unescape_one(&s[..b], i + rel, tmp)?;
    }
    tmp.extend_from_slice(&s[i..b]);
    Ok(&tmp[..])
}

/// Decodes a json-file line; a message with escapes is left unescaped in `arena` and split
/// off only when the whole line decodes.
fn decode_docker_with(
    line: &Bytes,
    times: &mut TimeCache,
    arena: &mut BytesMut,
    compact: bool,
) -> Result<Decoded, DecodeError> {
    let s: &[u8] = line;
    let mut i = skip_ws(s, 0);
    if s.get(i) != Some(&b'{') {
        return Err(DecodeError::NotObject);
    }
    i += 1;
    let mut log = None;
    let mut stream = None;
    let mut time = None;
    loop {
        i = skip_ws(s, i);
        match s.get(i) {
            Some(b'}') => break,
            Some(b'"') => {}
            _ => return Err(DecodeError::BadJson),
        }
        let (kend, _) = string_end(s, i)?;
        let key = &s[i + 1..kend];
        i = skip_ws(s, kend + 1);
        if s.get(i) != Some(&b':') {
            return Err(DecodeError::BadJson);
        }
        i = skip_ws(s, i + 1);
        if s.get(i) == Some(&b'"') {
            let vend = if key == b"log" {
                let (l, vend) = scan_log(s, i, arena, compact)?;
                log = Some(l);
                vend
            } else {
                let (vend, esc) = string_end(s, i)?;
                // Read once the whole line is: with a repeated key the last one counts.
                match key {
                    b"stream" => stream = Some((i + 1, vend, esc)),
                    b"time" => time = Some((i + 1, vend, esc)),
                    _ => {}
                }
                vend
            };
            i = vend + 1;
        } else {
            i = skip_value(s, i)?;
        }
        i = skip_ws(s, i);
        match s.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => break,
            _ => return Err(DecodeError::BadJson),
        }
    }
    let log = log.ok_or(DecodeError::NoLog)?;
    let mut tmp = BytesMut::new();
    let (a, b, esc) = stream.ok_or(DecodeError::BadStream)?;
    let stream = stream_index(string_value(s, a, b, esc, &mut tmp)?)?;
    let (a, b, esc) = time.ok_or(DecodeError::BadTime)?;
    let time = times
        .parse(string_value(s, a, b, esc, &mut tmp)?)
        .ok_or(DecodeError::BadTime)?;
    let (text, partial) = match log {
        Log::Slice {
            start,
            end,
            partial,
        } => (line.slice(start..end), partial),
        Log::Arena { partial } => (arena.split().freeze(), partial),
    };
    Ok(Decoded {
        stream,
        time,
        partial,
        text,
    })
}

/// Decodes one CRI line (a fresh [`Decoder`]; readers keep one per file).
pub fn decode_cri(line: &Bytes) -> Result<Decoded, DecodeError> {
    Decoder::default().cri(line)
}

/// A CRI line: `<time> <stream> <tags> <message>`; tags are `P` or `F`, possibly followed by
/// more `:`-separated tags.
fn decode_cri_with(line: &Bytes, times: &mut TimeCache) -> Result<Decoded, DecodeError> {
    let s: &[u8] = line;
    let sp1 = memchr::memchr(b' ', s).ok_or(DecodeError::CriFields)?;
    let time = times.parse(&s[..sp1]).ok_or(DecodeError::BadTime)?;
    let rest = &s[sp1 + 1..];
    let sp2 = memchr::memchr(b' ', rest).ok_or(DecodeError::CriFields)?;
    let stream = stream_index(&rest[..sp2])?;
    let tag_start = sp1 + 1 + sp2 + 1;
    let tags = &s[tag_start..];
    let (tag_end, msg_start) = match memchr::memchr(b' ', tags) {
        Some(p) => (tag_start + p, tag_start + p + 1),
        // `<time> <stream> F` with an empty message and no trailing space.
        None => (s.len(), s.len()),
    };
    let first_tag = s[tag_start..tag_end].split(|&c| c == b':').next();
    let partial = match first_tag {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(DecodeError::BadTag),
    };
    Ok(Decoded {
        stream,
        time,
        partial,
        text: line.slice(msg_start..),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn rfc3339_variants() {
        let base = parse_rfc3339(b"2024-01-02T03:04:05Z").unwrap();
        assert_eq!(base, 1_704_164_645_000_000_000);
        assert_eq!(
            parse_rfc3339(b"2024-01-02T03:04:05.5Z").unwrap(),
            base + 500_000_000
        );
        assert_eq!(
            parse_rfc3339(b"2024-01-02T03:04:05.123456789Z").unwrap(),
            base + 123_456_789
        );
        assert_eq!(
            parse_rfc3339(b"2024-01-02T03:04:05.1234567891Z").unwrap(),
            base + 123_456_789
        );
        assert_eq!(parse_rfc3339(b"2024-01-02T04:04:05+01:00").unwrap(), base);
        assert_eq!(parse_rfc3339(b"2024-01-02T03:04:05"), None);
        assert_eq!(parse_rfc3339(b"2024-13-02T03:04:05Z"), None);
        assert_eq!(parse_rfc3339(b"2024-01-02T03:04:05.Z"), None);
    }

    #[test]
    fn docker_lines() {
        let d = decode_docker(&b(
            r#"{"log":"hello world\n","stream":"stdout","time":"2024-01-02T03:04:05.123Z"}"#,
        ))
        .unwrap();
        assert_eq!(d.text.as_ref(), b"hello world");
        assert!(!d.partial);
        assert_eq!(d.stream, STDOUT);
        assert_eq!(d.time, 1_704_164_645_123_000_000);

        let d = decode_docker(&b(
            r#"{"log":"crlf\r\n","stream":"stderr","time":"2024-01-02T03:04:05Z"}"#,
        ))
        .unwrap();
        assert_eq!(d.text.as_ref(), b"crlf");
        assert_eq!(d.stream, STDERR);

        let d = decode_docker(&b(
            r#"{"log":"piece","stream":"stdout","time":"2024-01-02T03:04:05Z"}"#,
        ))
        .unwrap();
        assert!(d.partial);
        assert_eq!(d.text.as_ref(), b"piece");

        let d = decode_docker(&b(
            r#"{"log":"a \"q\" \u003cb\u003e\ttab\n","stream":"stdout","attrs":{"x":"}"},"time":"2024-01-02T03:04:05Z"}"#,
        ))
        .unwrap();
        assert_eq!(d.text.as_ref(), "a \"q\" <b>\ttab".as_bytes());
        assert!(!d.partial);

        assert_eq!(decode_docker(&b("not json")), Err(DecodeError::NotObject));
        assert_eq!(
            decode_docker(&b(r#"{"log":"x\n","stream":"stdout"}"#)),
            Err(DecodeError::BadTime)
        );
        assert!(decode_docker(&b(r#"{"log":"x"#)).is_err());
    }

    #[test]
    fn cri_lines() {
        let d = decode_cri(&b("2024-01-02T03:04:05.000000001Z stderr F hello there")).unwrap();
        assert_eq!(d.stream, STDERR);
        assert!(!d.partial);
        assert_eq!(d.text.as_ref(), b"hello there");
        assert_eq!(d.time, 1_704_164_645_000_000_001);
        let d = decode_cri(&b("2024-01-02T03:04:05Z stdout P part")).unwrap();
        assert!(d.partial);
        let d = decode_cri(&b("2024-01-02T03:04:05Z stdout F")).unwrap();
        assert_eq!(d.text.as_ref(), b"");
        let d = decode_cri(&b("2024-01-02T03:04:05Z stdout F:x  two spaces")).unwrap();
        assert_eq!(d.text.as_ref(), b" two spaces");
        assert_eq!(
            decode_cri(&b("2024-01-02T03:04:05Z stdout X m")),
            Err(DecodeError::BadTag)
        );
        assert!(decode_cri(&b("garbage")).is_err());
    }

    /// Docker's encoder with every non-ASCII character written as `\uXXXX` (surrogate pairs
    /// beyond the BMP), so the decoder's `\u` path is exercised as much as the raw UTF-8 one.
    fn json_ascii(s: &str) -> String {
        let mut o = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => o.push_str("\\\""),
                '\\' => o.push_str("\\\\"),
                '\n' => o.push_str("\\n"),
                c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        o.push_str(&format!("\\u{u:04x}"));
                    }
                }
                c => o.push(c),
            }
        }
        o.push('"');
        o
    }

    fn docker_line(log_json: &str, stream: &str) -> Bytes {
        b(&format!(
            r#"{{"log":{log_json},"stream":"{stream}","time":"2024-01-02T03:04:05.000000007Z"}}"#
        ))
    }

    proptest::proptest! {
        /// Any message encoded as a json-file line (by serde_json, or with everything escaped)
        /// decodes back to itself, also when many lines go through one decoder (arena chunks
        /// are split off and replaced while earlier messages are still held).
        #[test]
        fn docker_round_trip(msgs in proptest::collection::vec(".{0,300}", 1..40), ascii: bool) {
            let mut dec = Decoder::default();
            let mut held = Vec::new();
            for m in &msgs {
                let full = format!("{m}\n");
                let enc = if ascii { json_ascii(&full) } else { serde_json::to_string(&full).unwrap() };
                let d = dec.docker(&docker_line(&enc, "stderr")).unwrap();
                proptest::prop_assert!(!d.partial);
                proptest::prop_assert_eq!(d.stream, STDERR);
                proptest::prop_assert_eq!(d.time, 1_704_164_645_000_000_007);
                // A message that itself ends with `\r` loses it: `\r\n` is a line ending.
                let want = m.strip_suffix('\r').unwrap_or(m);
                proptest::prop_assert_eq!(d.text.as_ref(), want.as_bytes());
                held.push((d.text, want.to_string()));
            }
            for (text, want) in &held {
                proptest::prop_assert_eq!(text.as_ref(), want.as_bytes());
            }
        }

        /// Any message without a newline, as a CRI `F` line, decodes back to its bytes.
        #[test]
        fn cri_round_trip(msg in proptest::collection::vec(proptest::num::u8::ANY.prop_filter("no newline", |c| *c != b'\n'), 0..400), err: bool) {
            let stream = if err { "stderr" } else { "stdout" };
            let mut line = format!("2024-01-02T03:04:05.123Z {stream} F ").into_bytes();
            line.extend_from_slice(&msg);
            let d = Decoder::default().cri(&Bytes::from(line)).unwrap();
            proptest::prop_assert_eq!(d.text.as_ref(), &msg[..]);
            proptest::prop_assert!(!d.partial);
            proptest::prop_assert_eq!(d.stream, if err { STDERR } else { STDOUT });
        }

        /// The cached parse of a sequence of times agrees with a fresh parse, and both give
        /// back the time they were written from (any zone offset).
        #[test]
        fn times_round_trip(
            times in proptest::collection::vec((0i64..4_102_444_800, 0i64..1_000_000_000, -1439i64..1440, 0usize..10), 1..30),
        ) {
            let mut cache = TimeCache::default();
            for (secs, nanos, off_min, digits) in times {
                let ns = secs * 1_000_000_000 + nanos;
                let mut text = Vec::new();
                crate::event::write_rfc3339_nanos(&mut text, ns + off_min * 60_000_000_000);
                // `...SS.nnnnnnnnnZ`: keep `digits` fraction digits, then the zone.
                text.truncate(20 + digits);
                if digits == 0 {
                    text.pop();
                }
                let (sign, abs) = if off_min < 0 { ('-', -off_min) } else { ('+', off_min) };
                text.extend_from_slice(format!("{sign}{:02}:{:02}", abs / 60, abs % 60).as_bytes());
                let kept = 10i64.pow(9 - digits as u32);
                let want = ns - nanos % kept;
                proptest::prop_assert_eq!(parse_rfc3339(&text), Some(want));
                proptest::prop_assert_eq!(cache.parse(&text), Some(want));
            }
        }
    }

    #[test]
    fn docker_escapes_and_endings() {
        let cases: &[(&str, &str, bool)] = &[
            (r#""a\u000a""#, "a", false),
            (r#""a\r\u000a""#, "a", false),
            (r#""a\u000d\n""#, "a", false),
            (r#""a\r\r\n""#, "a\r", false),
            (r#""a\\n""#, "a\\n", true),
            (r#""a\\\n""#, "a\\", false),
            (
                r#""\ud83d\ude00 \/\b\f\t""#,
                "\u{1F600} /\u{8}\u{c}\t",
                true,
            ),
            (r#""lone \ud800 \udc00!""#, "lone \u{FFFD} \u{FFFD}!", true),
        ];
        for (enc, want, partial) in cases {
            let d = decode_docker(&docker_line(enc, "stdout")).unwrap();
            assert_eq!(d.text.as_ref(), want.as_bytes(), "{enc}");
            assert_eq!(d.partial, *partial, "{enc}");
        }
        for bad in [r#""\x""#, r#""\u12""#, r#""\u12zz""#] {
            assert_eq!(
                decode_docker(&docker_line(bad, "stdout")),
                Err(DecodeError::BadJson),
                "{bad}"
            );
        }
    }

    #[test]
    fn repeated_keys_count_last_and_escaped_values_are_read() {
        // Found by the fuzzer: serde_json (and Docker's readers) take the last of a repeated
        // key; a bad first `time` must not reject the line.
        let d = decode_docker(&b(
            r#"{"log":"a\n","time":"bad","stream":"x","stream":"stderr","time":"2024-01-02T03:04:05Z"}"#,
        ))
        .unwrap();
        assert_eq!(d.stream, STDERR);
        assert_eq!(d.time, 1_704_164_645_000_000_000);
        let d = decode_docker(&b(
            r#"{"log":"a\n","stream":"std\u006fut","time":"2024-01-02T03:04:05\u005a"}"#,
        ))
        .unwrap();
        assert_eq!(d.stream, STDOUT);
        assert_eq!(d.time, 1_704_164_645_000_000_000);
        assert_eq!(
            decode_docker(&b(r#"{"log":"a\n","stream":"stdout","time":"\u12"}"#)),
            Err(DecodeError::BadJson)
        );
    }

    #[test]
    fn compact_mode_allocates_per_line_and_release_drops_the_arena() {
        let mut dec = Decoder::default();
        let line = docker_line(r#""say \"hi\"\n""#, "stdout");
        assert_eq!(dec.docker(&line).unwrap().text.as_ref(), b"say \"hi\"");
        assert!(dec.arena.capacity() >= ARENA_CHUNK - 16);
        dec.release();
        dec.set_compact(true);
        assert_eq!(dec.docker(&line).unwrap().text.as_ref(), b"say \"hi\"");
        // At most the rest of the line was reserved.
        assert!(dec.arena.capacity() < line.len());
    }
}
