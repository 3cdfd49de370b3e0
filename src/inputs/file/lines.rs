//! The line splitter: bytes read from a file → lines with their offsets.
//!
//! - Lines are slices of the read buffer (`Bytes`, no copy), found with `memchr`. When a read
//!   brought little data, lines are copied instead, so that a trickle of small reads never
//!   pins large buffers in memory while events wait in a buffer.
//! - `\n` and `\r\n` endings are stripped; offsets count the raw bytes.
//! - A line longer than `max_line` keeps its first `max_line` bytes, is flagged `truncated`,
//!   and the rest up to the newline is skipped (never buffered): memory stays bounded.
//! - A last line without a newline stays buffered until it gets one, or until [`finish`]
//!   (EOF in backfill, a rotated-away file).
//!
//! Invariant (property-tested): any chunking of the input gives the same lines.
//!
//! [`finish`]: LineSplitter::finish

use std::io::{self, Read};

use bytes::{Bytes, BytesMut};

use crate::processors::multiline::LineIn;

/// Splits a byte stream into lines.
#[derive(Debug)]
pub struct LineSplitter {
    buf: BytesMut,
    /// File offset of `buf[0]`.
    base: u64,
    /// Bytes of `buf` already searched for a newline.
    scanned: usize,
    max_line: usize,
    /// The kept head of an over-long line whose rest is being skipped: (text, offset).
    skipping: Option<(Bytes, u64)>,
    /// Copy lines out instead of slicing (the last read was small).
    copy: bool,
}

/// Size of one read.
pub const READ_CHUNK: usize = 64 * 1024;

impl LineSplitter {
    /// A splitter whose next byte is at `offset` in the file.
    pub fn new(offset: u64, max_line: usize) -> LineSplitter {
        LineSplitter {
            buf: BytesMut::new(),
            base: offset,
            scanned: 0,
            max_line: max_line.max(1),
            skipping: None,
            copy: false,
        }
    }

    /// Offset of the next byte to read from the file.
    pub fn read_offset(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Bytes held that do not form a complete line yet.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.skipping.as_ref().map_or(0, |s| s.0.len())
    }

    /// Reads once from `r` (at most `max` bytes) into the buffer; returns the byte count.
    pub fn read_from<R: Read>(&mut self, r: &mut R, max: usize) -> io::Result<usize> {
        let len = self.buf.len();
        let want = max.clamp(1, READ_CHUNK);
        self.buf.resize(len + want, 0);
        match r.read(&mut self.buf[len..]) {
            Ok(n) => {
                self.buf.truncate(len + n);
                self.copy = n < want / 4;
                Ok(n)
            }
            Err(e) => {
                self.buf.truncate(len);
                Err(e)
            }
        }
    }

    /// Whether lines are copied out (the last read was small) rather than sliced.
    pub fn copies(&self) -> bool {
        self.copy
    }

    /// Appends bytes (tests, decoders that read elsewhere).
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        self.copy = false;
    }

    /// The next complete line, if there is one.
    pub fn next_line(&mut self) -> Option<LineIn> {
        if let Some((head, offset)) = self.skipping.take() {
            match memchr::memchr(b'\n', &self.buf) {
                Some(i) => {
                    let _ = self.buf.split_to(i + 1);
                    self.base += i as u64 + 1;
                    self.scanned = 0;
                    return Some(LineIn {
                        text: head,
                        offset,
                        end: self.base,
                        truncated: true,
                    });
                }
                None => {
                    self.base += self.buf.len() as u64;
                    self.buf.clear();
                    self.scanned = 0;
                    self.skipping = Some((head, offset));
                    return None;
                }
            }
        }
        match memchr::memchr(b'\n', &self.buf[self.scanned..]) {
            Some(i) => {
                let nl = self.scanned + i;
                let raw = self.buf.split_to(nl + 1);
                let offset = self.base;
                self.base += nl as u64 + 1;
                self.scanned = 0;
                let mut end = nl;
                if end > 0 && raw[end - 1] == b'\r' {
                    end -= 1;
                }
                let truncated = end > self.max_line;
                let keep = end.min(self.max_line);
                let text = if self.copy {
                    Bytes::copy_from_slice(&raw[..keep])
                } else {
                    let mut raw = raw;
                    raw.truncate(keep);
                    raw.freeze()
                };
                Some(LineIn {
                    text,
                    offset,
                    end: self.base,
                    truncated,
                })
            }
            None => {
                self.scanned = self.buf.len();
                let over = self.buf.len() > self.max_line + 1
                    || (self.buf.len() == self.max_line + 1 && self.buf[self.max_line] != b'\r');
                if over {
                    // Keep the head, skip the rest of the line as it arrives.
                    let head = Bytes::copy_from_slice(&self.buf[..self.max_line]);
                    let offset = self.base;
                    self.base += self.buf.len() as u64;
                    self.buf.clear();
                    self.scanned = 0;
                    self.skipping = Some((head, offset));
                }
                None
            }
        }
    }

    /// Takes the last line even though it has no newline (EOF in backfill, rotated away).
    pub fn finish(&mut self) -> Option<LineIn> {
        if let Some((head, offset)) = self.skipping.take() {
            self.base += self.buf.len() as u64;
            self.buf.clear();
            self.scanned = 0;
            return Some(LineIn {
                text: head,
                offset,
                end: self.base,
                truncated: true,
            });
        }
        if self.buf.is_empty() {
            return None;
        }
        let raw = self.buf.split().freeze();
        let offset = self.base;
        self.base += raw.len() as u64;
        self.scanned = 0;
        let mut end = raw.len();
        if end > 0 && raw[end - 1] == b'\r' {
            end -= 1;
        }
        let truncated = end > self.max_line;
        Some(LineIn {
            text: raw.slice(..end.min(self.max_line)),
            offset,
            end: self.base,
            truncated,
        })
    }

    /// Releases spare buffer capacity (a caught-up file keeps at most its partial line).
    pub fn shrink(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        } else if self.buf.capacity() > 2 * self.buf.len() + 4096 {
            self.buf = BytesMut::from(&self.buf[..]);
        }
    }

    /// Forgets everything buffered and restarts at `offset` (truncation).
    pub fn reset(&mut self, offset: u64) {
        self.buf.clear();
        self.base = offset;
        self.scanned = 0;
        self.skipping = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split_all(input: &[u8], cuts: &[usize], max: usize) -> Vec<(Vec<u8>, u64, u64, bool)> {
        let mut s = LineSplitter::new(0, max);
        let mut out = Vec::new();
        let mut pos = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort();
        cuts.push(input.len());
        for c in cuts {
            if c < pos {
                continue;
            }
            s.feed(&input[pos..c]);
            pos = c;
            while let Some(l) = s.next_line() {
                out.push((l.text.to_vec(), l.offset, l.end, l.truncated));
            }
        }
        if let Some(l) = s.finish() {
            out.push((l.text.to_vec(), l.offset, l.end, l.truncated));
        }
        out
    }

    #[test]
    fn basics() {
        let out = split_all(b"a\r\nbb\n\nccc", &[], 100);
        assert_eq!(
            out,
            vec![
                (b"a".to_vec(), 0, 3, false),
                (b"bb".to_vec(), 3, 6, false),
                (b"".to_vec(), 6, 7, false),
                (b"ccc".to_vec(), 7, 10, false),
            ]
        );
    }

    #[test]
    fn long_lines_are_cut_and_flagged() {
        let mut input = vec![b'x'; 100];
        input.push(b'\n');
        input.extend_from_slice(b"ok\n");
        let out = split_all(&input, &[3, 50, 99], 10);
        assert_eq!(out[0], (vec![b'x'; 10], 0, 101, true));
        assert_eq!(out[1], (b"ok".to_vec(), 101, 104, false));
    }

    #[test]
    fn partial_line_waits() {
        let mut s = LineSplitter::new(0, 100);
        s.feed(b"abc");
        assert!(s.next_line().is_none());
        s.feed(b"d\n");
        assert_eq!(s.next_line().unwrap().text.as_ref(), b"abcd");
    }

    proptest! {
        /// Any chunking of the input gives the same lines, offsets and flags.
        #[test]
        fn chunking_does_not_matter(
            input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(b'b')], 0..300),
            cuts in proptest::collection::vec(0usize..400, 0..20),
            max in 1usize..40,
        ) {
            let whole = split_all(&input, &[], max);
            let chunked = split_all(&input, &cuts, max);
            prop_assert_eq!(&whole, &chunked);
            // Offsets tile the input.
            let mut expect = 0;
            for (_, off, end, _) in &whole {
                prop_assert_eq!(*off, expect);
                expect = *end;
            }
            prop_assert_eq!(expect, input.len() as u64);
        }
    }
}
