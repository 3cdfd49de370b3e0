//! Line decoders for container log files: Docker's json-file lines and CRI lines.
//!
//! A decoder turns one raw line (as the splitter cut it, newline stripped) into the message,
//! its stream (stdout/stderr), the runtime's timestamp, and whether it is a *partial* piece
//! (Docker: a `log` value without a trailing newline, cut at 16 KiB; CRI: the `P` tag) that
//! the reader joins with the pieces that follow on the same stream.
//!
//! Both work on bytes and avoid copies: the message is a slice of the raw line unless the
//! JSON string holds escapes other than its trailing `\n` (then it is unescaped once).
//! Invariant (fuzzed): any input gives `Ok` or `Err`, never a panic.

use bytes::Bytes;

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
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || !matches!(s[10], b'T' | b't' | b' ') {
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
    let mut i = 19;
    let mut frac = 0i64;
    if s[i] == b'.' {
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
    // Days from civil (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    secs.checked_mul(1_000_000_000)?.checked_add(frac)
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

/// Decodes one json-file line.
pub fn decode_docker(line: &Bytes) -> Result<Decoded, DecodeError> {
    let s: &[u8] = line;
    let mut i = skip_ws(s, 0);
    if s.get(i) != Some(&b'{') {
        return Err(DecodeError::NotObject);
    }
    i += 1;
    let mut log: Option<(usize, usize, bool)> = None;
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
            let (vend, esc) = string_end(s, i)?;
            match key {
                b"log" => log = Some((i, vend, esc)),
                b"stream" => stream = Some(stream_index(&s[i + 1..vend])?),
                b"time" => time = Some(parse_rfc3339(&s[i + 1..vend]).ok_or(DecodeError::BadTime)?),
                _ => {}
            }
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
    let (qstart, qend, esc) = log.ok_or(DecodeError::NoLog)?;
    let stream = stream.ok_or(DecodeError::BadStream)?;
    let time = time.ok_or(DecodeError::BadTime)?;
    let body = &s[qstart + 1..qend];
    // Fast path: no escape but a trailing `\n` (or `\r\n`): a slice of the line.
    let first_bs = if esc {
        memchr::memchr(b'\\', body)
    } else {
        None
    };
    let (text, partial) = match first_bs {
        None => (line.slice(qstart + 1..qend), true),
        Some(p) if p + 2 == body.len() && body[p + 1] == b'n' => {
            (line.slice(qstart + 1..qstart + 1 + p), false)
        }
        Some(p) if p + 4 == body.len() && &body[p..] == b"\\r\\n" => {
            (line.slice(qstart + 1..qstart + 1 + p), false)
        }
        Some(_) => {
            let mut v: String =
                serde_json::from_slice(&s[qstart..=qend]).map_err(|_| DecodeError::BadJson)?;
            let partial = !v.ends_with('\n');
            if !partial {
                v.pop();
                if v.ends_with('\r') {
                    v.pop();
                }
            }
            (Bytes::from(v), partial)
        }
    };
    Ok(Decoded {
        stream,
        time,
        partial,
        text,
    })
}

/// Decodes one CRI line: `<time> <stream> <tags> <message>`; tags are `P` or `F`, possibly
/// followed by more `:`-separated tags.
pub fn decode_cri(line: &Bytes) -> Result<Decoded, DecodeError> {
    let s: &[u8] = line;
    let sp1 = memchr::memchr(b' ', s).ok_or(DecodeError::CriFields)?;
    let time = parse_rfc3339(&s[..sp1]).ok_or(DecodeError::BadTime)?;
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
}
