//! Record framing of the disk buffer's segments: `u32 length | u32 CRC-32 | payload`, both
//! integers little-endian. The CRC covers the four length bytes and the payload, so a flipped
//! length is caught as surely as a flipped payload byte.
//!
//! Invariants: a record is valid only if its length is between 1 and [`MAX_RECORD`] and its
//! CRC matches; a length of 0 is rejected because a run of zero bytes (what a file system may
//! leave after a crash) would otherwise frame as an endless series of valid empty records. The
//! reader never trusts a length before checking it against the bytes actually present, so
//! arbitrary input can make it stop, never read out of bounds or allocate without bound.

use std::ops::Range;

/// Bytes before the payload: length and CRC.
pub const HEADER: usize = 8;

/// Largest payload accepted (a 1 MiB line with its fields fits many times over).
pub const MAX_RECORD: usize = 256 << 20;

/// What lies at a position of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A valid record: where its payload is, and where the next record starts.
    Record { payload: Range<usize>, next: usize },
    /// The bytes end inside a record (or exactly at `at`: then `needed` is 0). At the end of a
    /// file this is a torn tail; inside a larger read it means "read `needed` more bytes".
    Incomplete { needed: usize },
    /// The bytes at `at` are not a record.
    Corrupt(Corrupt),
}

/// Why the bytes at a position are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Corrupt {
    #[error("record length 0 (zeroed or garbage bytes)")]
    ZeroLength,
    #[error("record length {0} exceeds the {MAX_RECORD}-byte limit")]
    TooLong(usize),
    #[error("record checksum mismatch")]
    Checksum,
}

/// Starts a record at the end of `out`: reserves the header and returns where it begins.
/// Write the payload after it, then call [`finish`].
pub fn begin(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    at
}

/// Fills in the header of the record begun at `at`, whose payload runs to the end of `out`.
/// Returns false (and removes the record) if the payload is empty or too long.
pub fn finish(out: &mut Vec<u8>, at: usize) -> bool {
    let len = out.len() - at - HEADER;
    if len == 0 || len > MAX_RECORD {
        out.truncate(at);
        return false;
    }
    let len_bytes = (len as u32).to_le_bytes();
    let crc = checksum(&len_bytes, &out[at + HEADER..]);
    out[at..at + 4].copy_from_slice(&len_bytes);
    out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    true
}

fn checksum(len_bytes: &[u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len_bytes);
    h.update(payload);
    h.finalize()
}

/// Reads a header: the payload length and the expected CRC, or why it cannot be one.
pub fn parse_header(header: &[u8; HEADER]) -> Result<(usize, u32), Corrupt> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 {
        return Err(Corrupt::ZeroLength);
    }
    if len > MAX_RECORD {
        return Err(Corrupt::TooLong(len));
    }
    Ok((len, crc))
}

/// Checks a payload against the header it came with.
pub fn verify(len: usize, crc: u32, payload: &[u8]) -> Result<(), Corrupt> {
    if checksum(&(len as u32).to_le_bytes(), payload) == crc {
        Ok(())
    } else {
        Err(Corrupt::Checksum)
    }
}

/// The frame at `at` in `buf` (`at` must be a record boundary).
pub fn next_frame(buf: &[u8], at: usize) -> Frame {
    let rest = buf.get(at..).unwrap_or_default();
    let Some(header) = rest.first_chunk::<HEADER>() else {
        return Frame::Incomplete {
            needed: HEADER - rest.len(),
        };
    };
    let (len, crc) = match parse_header(header) {
        Ok(h) => h,
        Err(c) => return Frame::Corrupt(c),
    };
    let have = rest.len() - HEADER;
    if have < len {
        return Frame::Incomplete { needed: len - have };
    }
    let payload = at + HEADER..at + HEADER + len;
    if let Err(c) = verify(len, crc, &buf[payload.clone()]) {
        return Frame::Corrupt(c);
    }
    Frame::Record {
        next: payload.end,
        payload,
    }
}

/// Walks `buf` from 0: the payload ranges of the valid records, and the length of the valid
/// prefix (where a torn or corrupt tail begins).
pub fn scan(buf: &[u8]) -> (Vec<Range<usize>>, usize) {
    let mut at = 0;
    let mut out = Vec::new();
    while let Frame::Record { payload, next } = next_frame(buf, at) {
        out.push(payload);
        at = next;
    }
    (out, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            let at = begin(&mut out);
            out.extend_from_slice(p);
            assert!(finish(&mut out, at));
        }
        out
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let buf = framed(&[b"one", b"two two", b"three"]);
        let (recs, valid) = scan(&buf);
        assert_eq!(recs.len(), 3);
        assert_eq!(valid, buf.len());
        assert_eq!(&buf[recs[1].clone()], b"two two");
        for cut in 0..buf.len() {
            let (recs, valid) = scan(&buf[..cut]);
            assert!(valid <= cut);
            assert!(recs.len() < 3);
            assert!(matches!(
                next_frame(&buf[..cut], valid),
                Frame::Incomplete { .. }
            ));
        }
    }

    #[test]
    fn corruption_is_caught() {
        let buf = framed(&[b"alpha", b"beta"]);
        let first_end = HEADER + 5;
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            let (recs, valid) = scan(&bad);
            if i < first_end {
                assert_eq!(valid, 0, "flip at {i}");
            } else {
                assert_eq!((recs.len(), valid), (1, first_end), "flip at {i}");
            }
        }
        assert_eq!(
            next_frame(&[0u8; 16], 0),
            Frame::Corrupt(Corrupt::ZeroLength)
        );
        let mut empty = Vec::new();
        let at = begin(&mut empty);
        assert!(!finish(&mut empty, at));
        assert!(empty.is_empty());
    }
}
