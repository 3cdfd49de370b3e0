//! Dead letters: `data_dir/dead_letter/<output>.ndjson`, one JSON object a line —
//! `{"@timestamp", "output", "reason", "event"}` — size-capped: at `max_bytes` the file is
//! rotated to `<output>.ndjson.1` (the previous `.1` is removed). Files are 0600.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

use crate::event::{Event, format_rfc3339_nanos, now_nanos};
use crate::util;

/// Default cap of one dead-letter file.
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;

pub struct DeadLetters {
    output: String,
    path: PathBuf,
    max_bytes: u64,
    file: Mutex<Option<(File, u64)>>,
    counter: metrics::Counter,
    count: AtomicU64,
}

impl DeadLetters {
    pub fn new(data_dir: &std::path::Path, output: &str, max_bytes: u64) -> DeadLetters {
        DeadLetters {
            output: output.to_owned(),
            path: data_dir
                .join("dead_letter")
                .join(format!("{output}.ndjson")),
            max_bytes,
            file: Mutex::new(None),
            counter: metrics::counter!("logferry_output_events_total", "output" => output.to_owned(), "result" => "dead_letter"),
            count: AtomicU64::new(0),
        }
    }

    /// Events dead-lettered by this process.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Writes the rejected events with the reason. Never fails the caller: an I/O error is
    /// logged (the events are still counted as dead-lettered, they cannot be retried).
    pub fn write(&self, events: &[(&Event, &str)]) {
        if events.is_empty() {
            return;
        }
        self.counter.increment(events.len() as u64);
        self.count.fetch_add(events.len() as u64, Ordering::Relaxed);
        let mut buf = Vec::new();
        let now = format_rfc3339_nanos(now_nanos());
        for (e, reason) in events {
            let mut m = Map::new();
            m.insert("@timestamp".into(), Value::String(now.clone()));
            m.insert("output".into(), Value::String(self.output.clone()));
            m.insert("reason".into(), Value::String((*reason).to_owned()));
            m.insert("event".into(), e.to_value());
            // A Value always serializes.
            let _ = serde_json::to_writer(&mut buf, &Value::Object(m));
            buf.push(b'\n');
        }
        if let Err(err) = self.append(&buf) {
            tracing::error!(output = %self.output, path = %self.path.display(), error = %err,
                count = events.len(), "cannot write dead letters");
        }
    }

    fn append(&self, data: &[u8]) -> std::io::Result<()> {
        let mut guard = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("dead-letter lock poisoned"))?;
        if guard.is_none() {
            if let Some(dir) = self.path.parent() {
                util::private_dir(dir)?;
            }
            let f = util::append_private(&self.path)?;
            let len = f.metadata()?.len();
            *guard = Some((f, len));
        }
        if let Some((_, len)) = guard.as_ref()
            && *len > 0
            && len + data.len() as u64 > self.max_bytes
        {
            *guard = None;
            let rotated = self.path.with_extension("ndjson.1");
            std::fs::rename(&self.path, &rotated)?;
            let f = util::append_private(&self.path)?;
            *guard = Some((f, 0));
        }
        if let Some((f, len)) = guard.as_mut() {
            f.write_all(data)?;
            *len += data.len() as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetters::new(dir.path(), "es", 400);
        let e = Event::synthetic("app", "bad doc");
        for _ in 0..5 {
            dl.write(&[(&e, "mapper_parsing_exception: failed to parse")]);
        }
        let text = std::fs::read_to_string(dl.path()).unwrap();
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["output"], "es");
        assert_eq!(first["event"]["message"], "bad doc");
        assert!(first["reason"].as_str().unwrap().contains("mapper_parsing"));
        assert!(dir.path().join("dead_letter/es.ndjson.1").exists());
    }
}
