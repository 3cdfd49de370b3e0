//! One file's reading state: bytes → lines → (multiline) → events with finalizers.
//!
//! Shared by the follower (`file` input) and `backfill`, and meant for the container inputs,
//! which put their own line decoder in front of the same machinery.
//!
//! Invariant: a batch's acknowledgement token ends at the end of the last *completed* event
//! in it; lines held by the splitter (no newline yet) or the multiline joiner (pending event)
//! are never covered, so a position never passes them.

use std::sync::Arc;
use std::time::Instant;

use crate::ack::{Finalizer, OrderedAcker};
use crate::event::{Event, FLAG_MULTILINE, FLAG_TRUNCATED, Source, Text};
use crate::inputs::file::lines::LineSplitter;
use crate::processors::multiline::{Joined, Joiner, LineIn};

/// Reading state of one file.
pub struct FileReader {
    pub splitter: LineSplitter,
    pub joiner: Option<Joiner>,
    pub source: Arc<Source>,
    pub acker: Arc<OrderedAcker>,
    joined: Vec<Joined>,
    invalid_utf8: metrics::Counter,
}

impl FileReader {
    pub fn new(
        source: Arc<Source>,
        start: u64,
        max_line: usize,
        joiner: Option<Joiner>,
    ) -> FileReader {
        let input = source.input_id.to_string();
        FileReader {
            splitter: LineSplitter::new(start, max_line),
            joiner,
            acker: OrderedAcker::new(start),
            source,
            joined: Vec::new(),
            invalid_utf8: metrics::counter!("logferry_input_invalid_utf8_total", "input" => input),
        }
    }

    fn event(
        &self,
        text: bytes::Bytes,
        offset: u64,
        ts: i64,
        truncated: bool,
        multiline: bool,
    ) -> Event {
        let (text, bad) = Text::from_bytes_lossy(text);
        if bad {
            self.invalid_utf8.increment(1);
        }
        let mut e = Event::new(self.source.clone(), text, offset, ts);
        if truncated {
            e.flags |= FLAG_TRUNCATED;
        }
        if multiline {
            e.flags |= FLAG_MULTILINE;
        }
        e
    }

    fn take_line(
        &mut self,
        line: LineIn,
        now: Instant,
        ts: i64,
        out: &mut Vec<Event>,
        end: &mut Option<u64>,
    ) {
        match &mut self.joiner {
            None => {
                *end = Some(line.end);
                let e = self.event(line.text, line.offset, ts, line.truncated, false);
                out.push(e);
            }
            Some(j) => {
                j.push(line, now, &mut self.joined);
                self.drain_joined(ts, out, end);
            }
        }
    }

    fn drain_joined(&mut self, ts: i64, out: &mut Vec<Event>, end: &mut Option<u64>) {
        for j in std::mem::take(&mut self.joined) {
            *end = Some(j.end);
            let e = self.event(j.text, j.offset, ts, j.truncated, j.lines > 1);
            out.push(e);
        }
    }

    /// Turns every complete line buffered into events appended to `out`; returns the end
    /// offset of the last completed event (for the batch token), if any.
    pub fn drain_lines(&mut self, now: Instant, ts: i64, out: &mut Vec<Event>) -> Option<u64> {
        let mut end = None;
        while let Some(line) = self.splitter.next_line() {
            self.take_line(line, now, ts, out, &mut end);
        }
        end
    }

    /// Flushes a multiline event that has been quiet for its timeout.
    pub fn flush_idle(&mut self, now: Instant, ts: i64, out: &mut Vec<Event>) -> Option<u64> {
        let mut end = None;
        if let Some(j) = &mut self.joiner {
            j.flush_if_idle(now, &mut self.joined);
            self.drain_joined(ts, out, &mut end);
        }
        end
    }

    /// Flushes everything held: the multiline event and, with `partial`, a last line without
    /// a newline (rotated away, deleted, EOF in backfill). Shutdown flushes only the joiner.
    pub fn flush_all(
        &mut self,
        partial: bool,
        now: Instant,
        ts: i64,
        out: &mut Vec<Event>,
    ) -> Option<u64> {
        let mut end = None;
        if partial && let Some(line) = self.splitter.finish() {
            self.take_line(line, now, ts, out, &mut end);
        }
        if let Some(j) = &mut self.joiner {
            j.flush_into(&mut self.joined);
            self.drain_joined(ts, out, &mut end);
        }
        end
    }

    /// When the pending multiline event would time out.
    pub fn deadline(&self) -> Option<Instant> {
        self.joiner.as_ref().and_then(Joiner::deadline)
    }

    /// Attaches one acknowledgement token, ending at `end`, to `events`.
    pub fn seal(&self, events: &mut [Event], end: u64) {
        if events.is_empty() {
            return;
        }
        let token = self.acker.issue(end);
        for e in events.iter_mut() {
            e.finalizer = Finalizer::new(token.clone());
        }
    }

    /// Forgets buffered bytes and restarts at `offset` (copytruncate). A pending multiline
    /// event is flushed first into `out` (its lines were read before the truncation).
    pub fn reset(
        &mut self,
        offset: u64,
        now: Instant,
        ts: i64,
        out: &mut Vec<Event>,
    ) -> Option<u64> {
        let end = self.flush_all(false, now, ts, out);
        self.splitter.reset(offset);
        end
    }
}
