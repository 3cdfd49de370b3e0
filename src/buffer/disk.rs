//! Disk buffer: a segmented write-ahead log under `data_dir/buffers/<output>/`, so that an
//! output that is slow or down holds its backlog on disk instead of pausing the inputs.
//!
//! Layout: segments `<base>.wal` (0600, in a 0700 directory), each a run of records framed by
//! [`record`] (`u32 length | u32 CRC-32 | payload`, payload = one event encoded by [`codec`]).
//! Positions in the buffer are *logical byte positions*: a segment's file name is the logical
//! position of its first byte (20 zero-padded digits), so positions grow monotonically across
//! segments and one `u64` says how far the buffer is acknowledged. (The design named segments
//! `<seq>.wal`; naming them by their base position is that sequence, and it makes "is this
//! segment wholly acknowledged" a comparison.) `ack` holds the acknowledged position, written
//! atomically; `lock` is held with `flock` so that two processes never share one buffer.
//!
//! Invariants:
//! - **A pushed event's original finalizer is resolved only once its record is durable** per
//!   `fsync`: `always` syncs before `push` returns; `interval` resolves them from a background
//!   thread right after the sync (at most once a second) that covers them; `never` resolves
//!   once the write returned (a process crash loses nothing, a power loss may). That is what lets
//!   file positions advance past events that are safe in the buffer (ARCHITECTURE.md, 1). A
//!   failed write or sync is cut back and retried, blocking the input, never acknowledged.
//! - **Popped events carry fresh finalizers** from an [`OrderedAcker`] owned by the buffer,
//!   one token per `pop` ending at the logical position after its last record. Its committed
//!   offset is the acknowledged position: a segment is deleted once it passes the segment's end,
//!   and it is persisted (at most every 250 ms, and when the buffer is dropped) so a restart
//!   replays only unacknowledged records; records acknowledged after the last persist are sent
//!   again (at-least-once, duplicates bounded by a quarter second of deliveries).
//! - **Bounded:** `push` blocks while the unacknowledged bytes (write end − acknowledged
//!   position) would exceed `max_bytes`, except into an empty buffer, so one batch larger than
//!   the buffer still passes. Space on disk stays below `max_bytes` plus about one segment:
//!   acknowledged bytes linger only in the oldest segment left, until all of it is acknowledged
//!   (the segment being written is deleted once it is full and acknowledged).
//! - **Recovery** (at open) scans every segment in order and validates every record; a torn
//!   or corrupt tail (kill -9 mid-write, garbage after a crash) is cut off by truncating the
//!   file at the last good record, logged and counted in
//!   `logferry_buffer_corrupt_records_total{output}`. Reading resumes at the first record at or
//!   after the persisted acknowledged position.
//! - **Close** stops pushes (blocked producers get `Closed`); `pop` drains what is on disk and
//!   then returns `None`, as the memory buffer does: `backfill` relies on it to deliver before
//!   it exits, and at shutdown the agent bounds the drain by `shutdown_timeout` (what is left
//!   stays on disk for the next run). Because of the lock, `logferry backfill` cannot open an
//!   output's disk buffer while the daemon runs with the same `data_dir`: it stops with an error
//!   that says so instead of corrupting the log.
//!
//! Metrics: `logferry_buffer_bytes{output}` (unacknowledged bytes), and
//! `logferry_buffer_corrupt_records_total{output}` (tails cut at recovery, records skipped).
//!
//! `len()` counts records written and not yet popped (what is queued for the output, as for the
//! memory buffer), not records popped and still in flight. `capacity()` is `max_bytes` divided
//! by the mean record size seen so far (512 bytes before the first write): an estimate, since a
//! disk buffer is bounded by bytes. `pop` reads with `pread` from the output's async task:
//! at most [`READ_CHUNK`] bytes (or one larger record) per call, usually from the page cache
//! just written, so it does not hold a runtime thread for long.

pub mod codec;
pub mod record;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use self::codec::{Decoder, Encoder};
use self::record::{Frame, HEADER};
use super::Closed;
use crate::ack::{Finalizer, OrderedAcker};
use crate::config::FsyncPolicy;
use crate::event::Event;

/// Most bytes one `pop` reads (a larger record is read whole); less when `max` is small.
pub const READ_CHUNK: usize = 1 << 20;

/// How often the background thread looks at acknowledgements.
const TICK: Duration = Duration::from_millis(100);
/// How often `fsync: interval` syncs.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Least time between two writes of the `ack` file.
const PERSIST_EVERY: Duration = Duration::from_millis(250);
/// How often a producer waiting for space looks at the acknowledged position.
const SPACE_POLL: Duration = Duration::from_millis(20);
/// Pause before retrying a failed write.
const WRITE_RETRY: Duration = Duration::from_secs(1);

/// Why a disk buffer cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the disk buffer {0} is in use by another logferry process (stop it, or give this one its own data_dir)"
    )]
    Locked(PathBuf),
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DiskError + 'a {
    move |source| DiskError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// One segment file: its logical base position and the bytes of valid records in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    base: u64,
    len: u64,
}

impl Segment {
    fn end(&self) -> u64 {
        self.base + self.len
    }
}

struct Writer {
    file: File,
    base: u64,
    len: u64,
    /// `fsync: interval`: finalizers of records written since the last sync.
    unsynced: Vec<Finalizer>,
}

struct Reader {
    cursor: u64,
    file: Option<(u64, File)>,
    decoder: Decoder,
}

struct Metrics {
    corrupt: metrics::Counter,
    dropped: metrics::Counter,
    bytes: metrics::Gauge,
}

struct Shared {
    id: String,
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    fsync: FsyncPolicy,
    writer: Mutex<Writer>,
    /// Producers waiting for space (or for a write to be retried) wait here, on `writer`.
    space: Condvar,
    /// Ordered by base; the last one is being written. Deletion never removes the last.
    segments: Mutex<VecDeque<Segment>>,
    reader: Mutex<Reader>,
    readable: Notify,
    acker: Arc<OrderedAcker>,
    closed: AtomicBool,
    /// Records written and not yet popped.
    queued: AtomicU64,
    written_records: AtomicU64,
    written_bytes: AtomicU64,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    metrics: Metrics,
    /// Holds the `flock` for as long as the buffer lives.
    _lock: File,
}

/// A disk buffer; see the module documentation.
pub struct DiskBuffer {
    shared: Arc<Shared>,
    maintenance: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The directory of output `output_id`'s disk buffer.
pub fn buffer_dir(data_dir: &Path, output_id: &str) -> PathBuf {
    data_dir.join("buffers").join(output_id)
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.wal"))
}

impl DiskBuffer {
    /// Opens (recovering) or creates the disk buffer of `output_id` under `data_dir`.
    pub fn open(
        data_dir: &Path,
        output_id: &str,
        max_bytes: u64,
        segment_bytes: u64,
        fsync: FsyncPolicy,
    ) -> Result<DiskBuffer, DiskError> {
        let dir = buffer_dir(data_dir, output_id);
        crate::util::private_dir(&dir).map_err(io_err("create", &dir))?;
        let lock = lock_dir(&dir)?;
        let labels = [("output", output_id.to_owned())];
        let metrics = Metrics {
            corrupt: metrics::counter!("logferry_buffer_corrupt_records_total", &labels),
            dropped: metrics::counter!("logferry_output_events_total", "output" => output_id.to_owned(), "result" => "dropped"),
            bytes: metrics::gauge!("logferry_buffer_bytes", &labels),
        };
        metrics.corrupt.increment(0);
        let rec = recover(&dir, output_id, &metrics)?;
        let writer = open_writer(&dir, &rec, segment_bytes.max(1))?;
        let mut segments: VecDeque<Segment> = rec.segments.iter().copied().collect();
        if segments.back().map(|s| s.base) != Some(writer.base) {
            segments.push_back(Segment {
                base: writer.base,
                len: writer.len,
            });
            if fsync != FsyncPolicy::Never {
                crate::util::sync_dir(&dir).map_err(io_err("sync", &dir))?;
            }
        }
        metrics
            .bytes
            .set((writer.base + writer.len).saturating_sub(rec.cursor) as f64);
        let shared = Arc::new(Shared {
            id: output_id.to_owned(),
            max_bytes: max_bytes.max(1),
            segment_bytes: segment_bytes.max(1),
            fsync,
            writer: Mutex::new(writer),
            space: Condvar::new(),
            segments: Mutex::new(segments),
            reader: Mutex::new(Reader {
                cursor: rec.cursor,
                file: None,
                decoder: Decoder::default(),
            }),
            readable: Notify::new(),
            acker: OrderedAcker::new(rec.cursor),
            closed: AtomicBool::new(false),
            queued: AtomicU64::new(rec.queued),
            written_records: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            metrics,
            _lock: lock,
            dir,
        });
        if rec.queued > 0 {
            tracing::info!(output = %output_id, records = rec.queued, "disk buffer: resuming unacknowledged records");
        }
        let s = shared.clone();
        let persisted = rec.ack;
        let handle = std::thread::Builder::new()
            .name(format!("buffer-{output_id}"))
            .spawn(move || maintain(&s, persisted))
            .map_err(io_err("start the maintenance thread of", &shared.dir))?;
        Ok(DiskBuffer {
            shared,
            maintenance: Mutex::new(Some(handle)),
        })
    }

    /// Writes a batch, waiting while the buffer is full; resolves the events' finalizers once
    /// their records are durable (see the module documentation).
    pub fn push(&self, events: Vec<Event>) -> Result<(), Closed> {
        self.shared.push(events)
    }

    /// Takes up to `max` events, waiting for some; `None` once closed and drained.
    pub async fn pop(&self, max: usize) -> Option<Vec<Event>> {
        let max = max.max(1);
        loop {
            let notified = self.shared.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let closed = self.shared.closed.load(Ordering::SeqCst);
            match self.shared.read_batch(max) {
                Ok(batch) if !batch.is_empty() => return Some(batch),
                Ok(_) if closed => return None,
                Ok(_) => notified.await,
                Err(e) => {
                    tracing::error!(output = %self.shared.id, error = %e, "cannot read the disk buffer; retrying");
                    if closed {
                        return None;
                    }
                    tokio::time::sleep(WRITE_RETRY).await;
                }
            }
        }
    }

    /// No more pushes: blocked producers return `Closed`; `pop` drains what is on disk.
    pub fn close(&self) {
        {
            let _w = lock(&self.shared.writer);
            self.shared.closed.store(true, Ordering::SeqCst);
        }
        self.shared.space.notify_all();
        self.shared.readable.notify_waiters();
        // `interval`: what was written last becomes durable now, so the positions the agent
        // writes at shutdown include it.
        self.shared.sync_unsynced();
    }

    /// Records written and not yet popped.
    pub fn len(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `max_bytes` over the mean record size: an estimate of the capacity in events.
    pub fn capacity(&self) -> usize {
        let n = self.shared.written_records.load(Ordering::Relaxed);
        let b = self.shared.written_bytes.load(Ordering::Relaxed);
        let mean = b.checked_div(n).unwrap_or(512).max(1);
        (self.shared.max_bytes / mean) as usize
    }

    /// The logical position every record before which is acknowledged.
    pub fn acknowledged(&self) -> u64 {
        self.shared.acker.committed()
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

impl Drop for DiskBuffer {
    fn drop(&mut self) {
        if let Ok(mut stop) = self.shared.stop.lock() {
            *stop = true;
        }
        self.shared.stop_cv.notify_all();
        let handle = self.maintenance.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// Locks a mutex, taking it back from a thread that panicked while holding it: every state
/// guarded here is updated only after the I/O it describes succeeded, so it stays consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn push(&self, mut events: Vec<Event>) -> Result<(), Closed> {
        if events.is_empty() {
            return Ok(());
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(Closed(events));
        }
        let mut buf = Vec::with_capacity(events.iter().map(Event::size_hint).sum());
        let mut enc = Encoder::default();
        let mut written = 0u64;
        for e in &mut events {
            let at = record::begin(&mut buf);
            enc.encode(e, &mut buf);
            if record::finish(&mut buf, at) {
                written += 1;
            } else {
                // Only an event over 256 MiB gets here; it cannot be framed, so it is refused
                // the way `drop_newest` refuses: counted and logged, not silently lost.
                tracing::error!(output = %self.id, "event too large for the disk buffer (over 256 MiB); dropped");
                self.metrics.dropped.increment(1);
                e.finalizer.resolve();
            }
        }
        if buf.is_empty() {
            return Ok(());
        }
        let bytes = buf.len() as u64;
        let mut w = lock(&self.writer);
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Err(Closed(events));
            }
            let unacked = (w.base + w.len).saturating_sub(self.acker.committed());
            if unacked == 0 || unacked + bytes <= self.max_bytes {
                break;
            }
            w = match self.space.wait_timeout(w, SPACE_POLL) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        let mut failures = 0u32;
        loop {
            match self.append(&mut w, &buf) {
                Ok(()) => break,
                Err(e) => {
                    if failures.is_multiple_of(60) {
                        tracing::error!(output = %self.id, error = %e, "cannot write the disk buffer; the input waits and the write is retried");
                    }
                    failures = failures.saturating_add(1);
                    w = match self.space.wait_timeout(w, WRITE_RETRY) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    };
                    if self.closed.load(Ordering::SeqCst) {
                        return Err(Closed(events));
                    }
                }
            }
        }
        let n = written;
        self.queued.fetch_add(n, Ordering::Relaxed);
        self.written_records.fetch_add(n, Ordering::Relaxed);
        self.written_bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.fsync == FsyncPolicy::Interval {
            w.unsynced
                .extend(events.iter_mut().map(|e| std::mem::take(&mut e.finalizer)));
            drop(w);
        } else {
            drop(w);
            for e in &mut events {
                e.finalizer.resolve();
            }
        }
        self.readable.notify_waiters();
        Ok(())
    }

    /// Appends whole records to the segment being written (rolling to a new one when it is
    /// full); on failure the segment is cut back to where it was, so it holds whole records.
    fn append(&self, w: &mut Writer, buf: &[u8]) -> io::Result<()> {
        if w.len > 0 && w.len + buf.len() as u64 > self.segment_bytes {
            self.roll(w)?;
        }
        let res = w.file.write_all(buf).and_then(|()| {
            if self.fsync == FsyncPolicy::Always {
                w.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = res {
            // After a failed fsync the kernel may have dropped the dirty pages: rewrite them.
            let _ = w.file.set_len(w.len);
            return Err(e);
        }
        w.len += buf.len() as u64;
        if let Some(last) = lock(&self.segments).back_mut() {
            last.len = w.len;
        }
        Ok(())
    }

    fn roll(&self, w: &mut Writer) -> io::Result<()> {
        if self.fsync != FsyncPolicy::Never {
            // `interval`: the finalizers waiting for a sync may cover this segment.
            w.file.sync_data()?;
        }
        let base = w.base + w.len;
        let file = crate::util::append_private(&segment_path(&self.dir, base))?;
        if self.fsync != FsyncPolicy::Never {
            crate::util::sync_dir(&self.dir)?;
        }
        w.file = file;
        w.base = base;
        w.len = 0;
        lock(&self.segments).push_back(Segment { base, len: 0 });
        Ok(())
    }

    /// The segment holding `cursor`, moving the cursor over the end of a finished segment (or
    /// a gap left by a cut tail) to the next one. `None`: nothing to read now.
    fn locate(&self, cursor: &mut u64) -> Option<Segment> {
        let segs = lock(&self.segments);
        for s in segs.iter() {
            if *cursor < s.base {
                *cursor = s.base;
            }
            if *cursor < s.end() {
                return Some(*s);
            }
        }
        None
    }

    /// Reads the next records after the cursor (at most `max` events) and gives them one fresh
    /// finalizer token. Empty: nothing to read now.
    fn read_batch(&self, max: usize) -> io::Result<Vec<Event>> {
        let mut guard = lock(&self.reader);
        let r = &mut *guard;
        loop {
            let mut cursor = r.cursor;
            let Some(seg) = self.locate(&mut cursor) else {
                r.cursor = cursor;
                return Ok(Vec::new());
            };
            r.cursor = cursor;
            if r.file.as_ref().map(|(b, _)| *b) != Some(seg.base) {
                let f = File::open(segment_path(&self.dir, seg.base))?;
                r.file = Some((seg.base, f));
            }
            let Some((_, file)) = r.file.as_ref() else {
                return Ok(Vec::new());
            };
            let avail = seg.end() - cursor;
            let at_in_file = cursor - seg.base;
            // Enough for `max` records of the mean size seen (twice over), within one chunk.
            let n = self.written_records.load(Ordering::Relaxed);
            let mean = self
                .written_bytes
                .load(Ordering::Relaxed)
                .checked_div(n)
                .unwrap_or(512);
            let hint = (max as u64)
                .saturating_mul(mean.saturating_mul(2))
                .max(4096);
            let mut want = avail.min(hint).min(READ_CHUNK as u64) as usize;
            let mut buf = vec![0u8; want];
            file.read_exact_at(&mut buf, at_in_file)?;
            if let Frame::Incomplete { needed } = record::next_frame(&buf, 0)
                && (want as u64) < avail
            {
                // One record larger than a chunk: read it whole.
                want = (want + needed).min(avail as usize);
                buf.resize(want, 0);
                file.read_exact_at(&mut buf, at_in_file)?;
            }
            let chunk = Bytes::from(buf);
            let mut events = Vec::new();
            let mut at = 0usize;
            let mut records = 0u64;
            while events.len() < max {
                match record::next_frame(&chunk, at) {
                    Frame::Record { payload, next } => {
                        records += 1;
                        at = next;
                        match r.decoder.decode(&chunk.slice(payload)) {
                            Ok(e) => events.push(e),
                            Err(e) => {
                                self.metrics.corrupt.increment(1);
                                tracing::error!(output = %self.id, position = cursor + at as u64, error = %e, "disk buffer record cannot be decoded; skipped");
                            }
                        }
                    }
                    Frame::Incomplete { .. } if at > 0 => break,
                    Frame::Incomplete { .. } | Frame::Corrupt(_) => {
                        // The writer appends whole records only, so the segment's end as seen
                        // now is a record boundary: skip to it.
                        self.metrics.corrupt.increment(1);
                        tracing::error!(output = %self.id, segment = seg.base, position = cursor + at as u64, skipped = avail - at as u64, "corrupt record in the disk buffer; skipping to the end of what is written");
                        at = avail as usize;
                        break;
                    }
                }
            }
            r.cursor = cursor + at as u64;
            let _ = self
                .queued
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                    Some(q.saturating_sub(records))
                });
            let token = self.acker.issue(r.cursor);
            for e in &mut events {
                e.finalizer = Finalizer::new(token.clone());
            }
            drop(token);
            if !events.is_empty() || at == 0 {
                return Ok(events);
            }
        }
    }

    /// `fsync: interval`: syncs the segment being written and resolves the finalizers of the
    /// records written before the sync began.
    fn sync_unsynced(&self) {
        let (file, mut fins) = {
            let mut w = lock(&self.writer);
            if w.unsynced.is_empty() {
                return;
            }
            (w.file.try_clone(), std::mem::take(&mut w.unsynced))
        };
        match file.and_then(|f| f.sync_data()) {
            Ok(()) => {
                for f in &mut fins {
                    f.resolve();
                }
            }
            Err(e) => {
                tracing::error!(output = %self.id, error = %e, "cannot sync the disk buffer; retrying");
                let mut w = lock(&self.writer);
                fins.append(&mut w.unsynced);
                w.unsynced = fins;
            }
        }
    }

    /// Deletes the finished segments every record of which is acknowledged.
    fn delete_acked(&self, committed: u64) {
        let mut segs = lock(&self.segments);
        while segs.len() > 1 && segs.front().is_some_and(|s| s.end() <= committed) {
            let Some(s) = segs.pop_front() else { break };
            let path = segment_path(&self.dir, s.base);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::error!(output = %self.id, path = %path.display(), error = %e, "cannot delete an acknowledged disk buffer segment");
            }
        }
    }

    fn persist_ack(&self, committed: u64) -> io::Result<()> {
        crate::util::write_atomic(&self.dir.join("ack"), format!("{committed}\n").as_bytes())
    }
}

/// The background thread: `interval` syncs, segment deletion, the `ack` file, space wake-ups.
fn maintain(s: &Shared, mut persisted: u64) {
    let mut last_sync = Instant::now();
    let mut last_persist = Instant::now();
    // None: look at the first tick whatever the position (acks may come before it).
    let mut seen: Option<u64> = None;
    let mut stuck_logged = false;
    loop {
        let stopping = {
            let stop = lock(&s.stop);
            if *stop {
                true
            } else {
                match s.stop_cv.wait_timeout(stop, TICK) {
                    Ok((g, _)) => *g,
                    Err(p) => *p.into_inner().0,
                }
            }
        };
        if s.fsync == FsyncPolicy::Interval && (stopping || last_sync.elapsed() >= SYNC_INTERVAL) {
            s.sync_unsynced();
            last_sync = Instant::now();
        }
        let committed = s.acker.committed();
        if seen != Some(committed) {
            seen = Some(committed);
            s.delete_acked(committed);
            s.space.notify_all();
        }
        let end = {
            let w = lock(&s.writer);
            w.base + w.len
        };
        s.metrics.bytes.set(end.saturating_sub(committed) as f64);
        if committed != persisted && (stopping || last_persist.elapsed() >= PERSIST_EVERY) {
            match s.persist_ack(committed) {
                Ok(()) => persisted = committed,
                Err(e) => {
                    tracing::error!(output = %s.id, error = %e, "cannot write the disk buffer's acknowledged position")
                }
            }
            last_persist = Instant::now();
        }
        if !stuck_logged && s.acker.stuck() && !stopping {
            stuck_logged = true;
            tracing::error!(output = %s.id, "events from the disk buffer were dropped undelivered; the buffer's acknowledged position stops here until restart, which sends them again");
        }
        if stopping {
            return;
        }
    }
}

fn lock_dir(dir: &Path) -> Result<File, DiskError> {
    let path = dir.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    // SAFETY: flock on a file descriptor we own for the lifetime of `f`.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Err(DiskError::Locked(dir.to_owned()));
        }
        return Err(DiskError::Io {
            action: "lock",
            path,
            source: e,
        });
    }
    Ok(f)
}

/// What recovery found.
struct Recovered {
    /// Segments left after cutting torn tails and deleting acknowledged ones.
    segments: Vec<Segment>,
    /// The acknowledged position read from `ack` (0 without one).
    ack: u64,
    /// Where reading resumes: the first record at or after `ack`, else the end.
    cursor: u64,
    /// Records from `cursor` on.
    queued: u64,
}

fn read_ack(dir: &Path, id: &str) -> u64 {
    let path = dir.join("ack");
    match fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(v) => v,
            Err(_) => {
                tracing::error!(output = %id, path = %path.display(), "the disk buffer's acknowledged position is unreadable; replaying the whole buffer (duplicates, no loss)");
                0
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => {
            tracing::error!(output = %id, path = %path.display(), error = %e, "cannot read the disk buffer's acknowledged position; replaying the whole buffer");
            0
        }
    }
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, DiskError> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".wal")
            && let Ok(base) = stem.parse::<u64>()
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// How a segment scan ended.
struct Scan {
    valid: u64,
    file_len: u64,
    problem: Option<String>,
}

/// Validates the records of one segment; `on_record` gets each record's offset in the file.
fn scan_file(path: &Path, on_record: &mut dyn FnMut(u64)) -> io::Result<Scan> {
    let f = File::open(path)?;
    let file_len = f.metadata()?.len();
    let mut r = BufReader::with_capacity(READ_CHUNK, f);
    let mut pos = 0u64;
    let mut payload = Vec::new();
    let problem = loop {
        let left = file_len - pos;
        if left == 0 {
            break None;
        }
        if left < HEADER as u64 {
            break Some(format!("torn record header ({left} bytes)"));
        }
        let mut header = [0u8; HEADER];
        r.read_exact(&mut header)?;
        let (len, crc) = match record::parse_header(&header) {
            Ok(h) => h,
            Err(c) => break Some(c.to_string()),
        };
        if left - (HEADER as u64) < len as u64 {
            break Some(format!(
                "torn record ({len}-byte payload, {} bytes present)",
                left - HEADER as u64
            ));
        }
        payload.resize(len, 0);
        r.read_exact(&mut payload)?;
        if let Err(c) = record::verify(len, crc, &payload) {
            break Some(c.to_string());
        }
        on_record(pos);
        pos += (HEADER + len) as u64;
    };
    Ok(Scan {
        valid: pos,
        file_len,
        problem,
    })
}

fn recover(dir: &Path, id: &str, metrics: &Metrics) -> Result<Recovered, DiskError> {
    let ack = read_ack(dir, id);
    let mut segments: Vec<Segment> = Vec::new();
    let mut cursor: Option<u64> = None;
    let mut queued = 0u64;
    for base in list_segments(dir)? {
        let path = segment_path(dir, base);
        if let Some(prev) = segments.last()
            && base < prev.end()
        {
            // Only a hand-made file can overlap; keep it for inspection, out of the way.
            let aside = path.with_extension("overlap");
            tracing::error!(output = %id, path = %path.display(), "disk buffer segment overlaps the previous one; moved aside");
            fs::rename(&path, &aside).map_err(io_err("move aside", &path))?;
            continue;
        }
        let scan = scan_file(&path, &mut |off| {
            let at = base + off;
            if at >= ack {
                cursor.get_or_insert(at);
                queued += 1;
            }
        })
        .map_err(io_err("read", &path))?;
        if let Some(problem) = &scan.problem {
            let cut = scan.file_len - scan.valid;
            tracing::warn!(output = %id, path = %path.display(), valid_bytes = scan.valid, cut_bytes = cut, %problem, "disk buffer: cutting a torn or corrupt tail");
            metrics.corrupt.increment(1);
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err("open", &path))?;
            f.set_len(scan.valid).map_err(io_err("truncate", &path))?;
            f.sync_all().map_err(io_err("sync", &path))?;
        }
        segments.push(Segment {
            base,
            len: scan.valid,
        });
    }
    // Segments every record of which was acknowledged before the restart.
    let mut kept = Vec::with_capacity(segments.len());
    for s in segments {
        if s.end() <= ack {
            let path = segment_path(dir, s.base);
            fs::remove_file(&path).map_err(io_err("delete", &path))?;
        } else {
            kept.push(s);
        }
    }
    let end = kept.last().map_or(ack, |s| s.end().max(ack));
    Ok(Recovered {
        cursor: cursor.unwrap_or(end),
        segments: kept,
        ack,
        queued,
    })
}

/// Continues the last segment if it has room, else starts one at the end.
fn open_writer(dir: &Path, rec: &Recovered, segment_bytes: u64) -> Result<Writer, DiskError> {
    let (base, len) = match rec.segments.last() {
        Some(s) if s.len < segment_bytes => (s.base, s.len),
        Some(s) => (s.end().max(rec.cursor), 0),
        None => (rec.cursor, 0),
    };
    let path = segment_path(dir, base);
    let file = crate::util::append_private(&path).map_err(io_err("open", &path))?;
    Ok(Writer {
        file,
        base,
        len,
        unsynced: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Source, Text};
    use serde_json::Value;
    use std::os::unix::fs::PermissionsExt;

    fn source() -> Arc<Source> {
        Arc::new(Source {
            input_id: Arc::from("app"),
            input_type: "file",
            host_name: Arc::from("h"),
            path: Some(Arc::from("/var/log/app.log")),
            file_key: Arc::from("k1"),
            meta: None,
            stream: None,
        })
    }

    /// `n` events numbered from `from`, each holding a finalizer of `acker` ending at its
    /// number + 1 (so the acker's committed offset counts durable events).
    fn events(acker: &Arc<OrderedAcker>, from: usize, n: usize) -> Vec<Event> {
        let src = source();
        (from..from + n)
            .map(|i| {
                let mut e =
                    Event::new(src.clone(), Text::from(format!("line {i:05}")), i as u64, 1);
                e.insert("n", Value::from(i));
                e.finalizer = Finalizer::new(acker.issue(i as u64 + 1));
                e
            })
            .collect()
    }

    fn open(dir: &Path, max: u64, seg: u64, fsync: FsyncPolicy) -> DiskBuffer {
        DiskBuffer::open(dir, "out", max, seg, fsync).unwrap()
    }

    fn numbers(events: &[Event]) -> Vec<u64> {
        events
            .iter()
            .map(|e| e.get_value("n").and_then(|v| v.as_u64()).unwrap())
            .collect()
    }

    async fn pop_n(b: &DiskBuffer, n: usize) -> Vec<Event> {
        let mut out = Vec::new();
        while out.len() < n {
            let got = tokio::time::timeout(Duration::from_secs(10), b.pop(n - out.len()))
                .await
                .expect("pop within 10 s")
                .expect("not closed");
            out.extend(got);
        }
        out
    }

    fn resolve_all(events: Vec<Event>) {
        for mut e in events {
            e.finalizer.resolve();
        }
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wal_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn round_trip_resolves_on_durability_and_acks_on_delivery() {
        let tmp = tempfile::tempdir().unwrap();
        let b = open(tmp.path(), 1 << 20, 1 << 20, FsyncPolicy::Always);
        let input = OrderedAcker::new(0);
        let sent = events(&input, 0, 20);
        let expect: Vec<Value> = sent.iter().map(Event::to_value).collect();
        b.push(sent).unwrap();
        assert_eq!(
            input.committed(),
            20,
            "durable in the buffer: positions may advance"
        );
        assert_eq!(b.len(), 20);
        let got = pop_n(&b, 20).await;
        assert_eq!(b.len(), 0, "len counts records not yet popped");
        assert_eq!(got.iter().map(Event::to_value).collect::<Vec<_>>(), expect);
        assert!(
            Arc::ptr_eq(&got[0].source, &got[19].source),
            "sources shared"
        );
        assert_eq!(b.acknowledged(), 0, "nothing delivered yet");
        resolve_all(got);
        assert!(b.acknowledged() > 0);
        let dir = b.dir().to_owned();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mode = fs::metadata(&wal_files(&dir)[0])
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[tokio::test]
    async fn segments_roll_over_and_are_deleted_once_acknowledged() {
        let tmp = tempfile::tempdir().unwrap();
        let b = open(tmp.path(), 1 << 20, 2048, FsyncPolicy::Never);
        let input = OrderedAcker::new(0);
        for k in 0..20 {
            b.push(events(&input, k * 5, 5)).unwrap();
        }
        let dir = b.dir().to_owned();
        let before = wal_files(&dir).len();
        assert!(before >= 5, "rolled over into several segments: {before}");
        let first = pop_n(&b, 50).await;
        assert_eq!(numbers(&first), (0..50).collect::<Vec<_>>());
        resolve_all(first);
        wait_for("acknowledged segments deleted", || {
            wal_files(&dir).len() < before
        });
        let rest = pop_n(&b, 50).await;
        assert_eq!(numbers(&rest), (50..100).collect::<Vec<_>>());
        resolve_all(rest);
        wait_for("every finished segment deleted", || {
            wal_files(&dir).len() == 1
        });
    }

    #[tokio::test]
    async fn restart_replays_only_unacknowledged_records() {
        let tmp = tempfile::tempdir().unwrap();
        let input = OrderedAcker::new(0);
        {
            let b = open(tmp.path(), 1 << 20, 1024, FsyncPolicy::Always);
            b.push(events(&input, 0, 30)).unwrap();
            let delivered = pop_n(&b, 12).await;
            resolve_all(delivered);
            // Popped but never delivered: dropped unresolved, as by a crash of the task.
            let lost_in_flight = pop_n(&b, 5).await;
            drop(lost_in_flight);
        }
        let b = open(tmp.path(), 1 << 20, 1024, FsyncPolicy::Always);
        assert_eq!(b.len(), 18, "records after the acknowledged position");
        let again = pop_n(&b, 18).await;
        assert_eq!(numbers(&again), (12..30).collect::<Vec<_>>());
        b.push(events(&input, 30, 3)).unwrap();
        assert_eq!(numbers(&pop_n(&b, 3).await), vec![30, 31, 32]);
    }

    #[tokio::test]
    async fn torn_and_garbage_tails_are_cut_on_recovery() {
        let tmp = tempfile::tempdir().unwrap();
        let input = OrderedAcker::new(0);
        let dir = {
            let b = open(tmp.path(), 1 << 20, 1 << 20, FsyncPolicy::Always);
            b.push(events(&input, 0, 5)).unwrap();
            b.dir().to_owned()
        };
        let seg = wal_files(&dir).pop().unwrap();
        let full = fs::metadata(&seg).unwrap().len();
        // kill -9 in the middle of the last record.
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(full - 3)
            .unwrap();
        {
            let b = open(tmp.path(), 1 << 20, 1 << 20, FsyncPolicy::Always);
            assert_eq!(b.len(), 4);
            let good = fs::metadata(&seg).unwrap().len();
            assert!(good < full - 3, "the torn record was cut off");
            assert_eq!(numbers(&pop_n(&b, 4).await), vec![0, 1, 2, 3]);
            // Records written after the cut follow on cleanly.
            b.push(events(&input, 100, 2)).unwrap();
        }
        let len = fs::metadata(&seg).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"\x05\x00\x00\x00garbage after a crash")
            .unwrap();
        drop(f);
        let b = open(tmp.path(), 1 << 20, 1 << 20, FsyncPolicy::Always);
        assert_eq!(fs::metadata(&seg).unwrap().len(), len, "garbage cut");
        assert_eq!(numbers(&pop_n(&b, 6).await), vec![0, 1, 2, 3, 100, 101]);
        drop(b);
        // Zeroed bytes (a file system's leftovers) are not records either.
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[0u8; 64]).unwrap();
        drop(f);
        let b = open(tmp.path(), 1 << 20, 1 << 20, FsyncPolicy::Always);
        assert_eq!(b.len(), 6);
        assert_eq!(fs::metadata(&seg).unwrap().len(), len);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_buffer_blocks_push_until_acknowledged() {
        let tmp = tempfile::tempdir().unwrap();
        let b = Arc::new(open(tmp.path(), 4096, 1024, FsyncPolicy::Never));
        let input = OrderedAcker::new(0);
        let mut pushed = 0;
        while (b.shared.writer.lock().map(|w| w.base + w.len).unwrap()) < 3000 {
            b.push(events(&input, pushed, 5)).unwrap();
            pushed += 5;
        }
        let (b2, more) = (b.clone(), events(&input, pushed, 20));
        let producer = std::thread::spawn(move || b2.push(more).is_ok());
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !producer.is_finished(),
            "push waits while the buffer is full"
        );
        let taken = pop_n(&b, pushed).await;
        assert!(
            !producer.is_finished(),
            "popped is not acknowledged: still full"
        );
        resolve_all(taken);
        wait_for("the producer to get through", || producer.is_finished());
        assert!(producer.join().unwrap());
        assert_eq!(numbers(&pop_n(&b, 20).await)[0], pushed as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_unblocks_producers_and_pop_drains_then_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let b = Arc::new(open(tmp.path(), 1024, 1024, FsyncPolicy::Never));
        let input = OrderedAcker::new(0);
        b.push(events(&input, 0, 10)).unwrap();
        let (b2, more) = (b.clone(), events(&input, 10, 10));
        let producer = std::thread::spawn(move || b2.push(more).map_err(|c| c.0.len()));
        std::thread::sleep(Duration::from_millis(50));
        b.close();
        wait_for("the blocked producer to return", || producer.is_finished());
        assert_eq!(producer.join().unwrap(), Err(10), "events given back");
        assert!(b.push(events(&input, 20, 1)).is_err());
        assert_eq!(numbers(&pop_n(&b, 10).await).len(), 10);
        assert!(b.pop(10).await.is_none());
    }

    #[tokio::test]
    async fn interval_fsync_resolves_after_the_covering_sync() {
        let tmp = tempfile::tempdir().unwrap();
        let b = open(tmp.path(), 1 << 20, 1 << 20, FsyncPolicy::Interval);
        let input = OrderedAcker::new(0);
        b.push(events(&input, 0, 7)).unwrap();
        assert_eq!(input.committed(), 0, "not durable before the sync");
        wait_for("the background sync", || input.committed() == 7);
        b.push(events(&input, 7, 3)).unwrap();
        b.close();
        assert_eq!(input.committed(), 10, "close syncs what is pending");
    }

    #[tokio::test]
    async fn records_larger_than_a_read_chunk_and_single_pops() {
        let tmp = tempfile::tempdir().unwrap();
        let b = open(tmp.path(), 64 << 20, 8 << 20, FsyncPolicy::Never);
        let input = OrderedAcker::new(0);
        let mut big = events(&input, 0, 3);
        big[1].message = Some(Text::from("y".repeat(3 * READ_CHUNK)));
        b.push(big).unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            got.extend(b.pop(1).await.unwrap());
        }
        assert_eq!(numbers(&got), vec![0, 1, 2]);
        assert_eq!(got[1].message_str().len(), 3 * READ_CHUNK);
        resolve_all(got);
        assert_eq!(
            b.acknowledged(),
            b.shared.writer.lock().map(|w| w.len).unwrap()
        );
    }

    #[test]
    fn a_second_process_cannot_share_the_buffer() {
        let tmp = tempfile::tempdir().unwrap();
        let _b = open(tmp.path(), 1 << 20, 1 << 20, FsyncPolicy::Never);
        assert!(matches!(
            DiskBuffer::open(tmp.path(), "out", 1, 1, FsyncPolicy::Never),
            Err(DiskError::Locked(_))
        ));
    }
}
