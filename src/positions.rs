//! Durable positions: `data_dir/positions.json`, keyed by input id + file fingerprint.
//!
//! Inputs register each file they follow with its [`OrderedAcker`]; [`Positions::flush`]
//! reads every acker's committed offset (never ahead of delivery) and, when something changed,
//! writes the file atomically (temp file, fsync, rename, fsync dir). Entries of files not seen
//! for `ttl` are pruned. A corrupt file is reported and the agent starts anyway: from the temp
//! copy if that is valid, else with no positions (each input's `start_at` applies).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ack::OrderedAcker;
use crate::event::now_nanos;
use crate::util;

const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    entries: Vec<EntryFormat>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EntryFormat {
    input: String,
    fingerprint: String,
    offset: u64,
    #[serde(default)]
    path: String,
    /// Last time the file was seen, Unix seconds.
    updated: i64,
}

#[derive(Debug)]
struct Entry {
    offset: u64,
    path: String,
    updated: i64,
    live: Option<Arc<OrderedAcker>>,
}

/// The positions of every followed file.
#[derive(Debug)]
pub struct Positions {
    path: Option<PathBuf>,
    entries: Mutex<HashMap<(String, String), Entry>>,
    last_written: Mutex<Option<Vec<u8>>>,
    ttl: Duration,
    /// Bumped whenever an entry is added, removed or changes path.
    generation: std::sync::atomic::AtomicU64,
    /// (ack epoch, generation) at the last flush that found nothing to write or wrote.
    last_epoch: Mutex<Option<((u64, u64), std::time::Instant)>>,
}

fn now_secs() -> i64 {
    now_nanos() / 1_000_000_000
}

impl Positions {
    /// Positions that are never written (backfill, tests).
    pub fn ephemeral() -> Arc<Positions> {
        Arc::new(Positions {
            path: None,
            entries: Mutex::new(HashMap::new()),
            last_written: Mutex::new(None),
            ttl: Duration::from_secs(u64::MAX / 4),
            generation: std::sync::atomic::AtomicU64::new(0),
            last_epoch: Mutex::new(None),
        })
    }

    /// Loads `data_dir/positions.json`. Returns the store and a warning when the file was
    /// corrupt (the agent goes on).
    pub fn load(data_dir: &Path, ttl: Duration) -> (Arc<Positions>, Option<String>) {
        let path = data_dir.join("positions.json");
        let tmp = path.with_extension("tmp");
        let mut warning = None;
        let parsed = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<FileFormat>(&bytes) {
                Ok(f) if f.version == VERSION => Some(f),
                Ok(f) => {
                    warning = Some(format!(
                        "{}: unsupported positions version {} (expected {VERSION}); starting without positions",
                        path.display(),
                        f.version
                    ));
                    None
                }
                Err(e) => {
                    let fallback = std::fs::read(&tmp)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<FileFormat>(&b).ok())
                        .filter(|f| f.version == VERSION);
                    warning = Some(format!(
                        "{}: corrupt positions file ({e}); {}",
                        path.display(),
                        if fallback.is_some() {
                            "using the valid temporary copy"
                        } else {
                            "starting without positions (start_at applies)"
                        }
                    ));
                    fallback
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A crash between write and rename leaves only the temp copy.
                std::fs::read(&tmp)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<FileFormat>(&b).ok())
                    .filter(|f| f.version == VERSION)
            }
            Err(e) => {
                warning = Some(format!(
                    "{}: cannot read positions ({e}); starting without positions",
                    path.display()
                ));
                None
            }
        };
        let mut entries = HashMap::new();
        for e in parsed.map(|f| f.entries).unwrap_or_default() {
            entries.insert(
                (e.input, e.fingerprint),
                Entry {
                    offset: e.offset,
                    path: e.path,
                    updated: e.updated,
                    live: None,
                },
            );
        }
        (
            Arc::new(Positions {
                path: Some(path),
                entries: Mutex::new(entries),
                last_written: Mutex::new(None),
                ttl,
                generation: std::sync::atomic::AtomicU64::new(0),
                last_epoch: Mutex::new(None),
            }),
            warning,
        )
    }

    /// The saved offset of a file, if any.
    pub fn get(&self, input: &str, fingerprint: &str) -> Option<u64> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(&(input.to_owned(), fingerprint.to_owned()))
            .map(|e| e.live.as_ref().map_or(e.offset, |a| a.committed()))
    }

    /// Starts following a file: its committed offset is read from `acker` from now on.
    pub fn track(&self, input: &str, fingerprint: &str, path: &str, acker: Arc<OrderedAcker>) {
        if let Ok(mut entries) = self.entries.lock() {
            let e = entries
                .entry((input.to_owned(), fingerprint.to_owned()))
                .or_insert(Entry {
                    offset: 0,
                    path: String::new(),
                    updated: 0,
                    live: None,
                });
            e.offset = acker.committed();
            e.path = path.to_owned();
            e.updated = now_secs();
            e.live = Some(acker);
        }
        self.bump();
    }

    /// Records that a followed file is still there (keeps it from being pruned).
    pub fn touch(&self, input: &str, fingerprint: &str, path: &str) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(e) = entries.get_mut(&(input.to_owned(), fingerprint.to_owned()))
        {
            e.updated = now_secs();
            if e.path != path {
                e.path = path.to_owned();
                self.bump();
            }
        }
    }

    /// Stops following a file; its last committed offset stays until pruned.
    pub fn untrack(&self, input: &str, fingerprint: &str) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(e) = entries.get_mut(&(input.to_owned(), fingerprint.to_owned()))
            && let Some(a) = e.live.take()
        {
            e.offset = a.committed();
            e.updated = now_secs();
        }
        self.bump();
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether every file of `input` being followed has all its batches acknowledged.
    pub fn input_idle(&self, input: &str) -> bool {
        let Ok(entries) = self.entries.lock() else {
            return true;
        };
        entries
            .iter()
            .filter(|((i, _), _)| i == input)
            .all(|(_, e)| e.live.as_ref().is_none_or(|a| a.idle() || a.stuck()))
    }

    /// Writes the positions if they changed. Errors are returned for the caller to log.
    pub fn flush(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let now = now_secs();
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        // Cheap pass first: refresh offsets and fingerprint the content (order-independent,
        // no allocation); build and write the file only when it changed. `updated` changes
        // on every touch and is left out, so idle agents do not rewrite the file.
        // Nothing acknowledged, tracked or moved since the last flush: nothing to do.
        let epoch = (
            crate::ack::ACK_EPOCH.load(std::sync::atomic::Ordering::Relaxed),
            self.generation.load(std::sync::atomic::Ordering::Relaxed),
        );
        if let Ok(last) = self.last_epoch.lock()
            && let Some((e, at)) = *last
            && e == epoch
            && at.elapsed() < Duration::from_secs(60)
        {
            // (Once a minute the full pass runs anyway, to prune entries past their TTL.)
            return Ok(());
        }
        let mut list = Vec::new();
        let mut key = 0u64;
        if let Ok(mut entries) = self.entries.lock() {
            use std::hash::{Hash, Hasher};
            let before = entries.len();
            entries.retain(|_, e| e.live.is_some() || now.saturating_sub(e.updated) <= ttl);
            if entries.len() != before {
                self.bump();
            }
            for e in entries.values_mut() {
                if let Some(a) = &e.live {
                    e.offset = a.committed();
                }
                // Offsets move; keys and paths change only through track/untrack/touch,
                // which bump `generation`.
                key = key.wrapping_add(
                    e.offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ e.path.len() as u64,
                );
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.generation
                .load(std::sync::atomic::Ordering::Relaxed)
                .hash(&mut h);
            key ^= h.finish();
            key ^= entries.len() as u64;
            if let Ok(last) = self.last_written.lock()
                && last.as_deref() == Some(key.to_le_bytes().as_slice())
            {
                if let Ok(mut le) = self.last_epoch.lock() {
                    *le = Some((epoch, std::time::Instant::now()));
                }
                return Ok(());
            }
            for ((input, fp), e) in entries.iter() {
                list.push(EntryFormat {
                    input: input.clone(),
                    fingerprint: fp.clone(),
                    offset: e.offset,
                    path: e.path.clone(),
                    updated: e.updated,
                });
            }
        }
        list.sort_by(|a, b| (&a.input, &a.fingerprint).cmp(&(&b.input, &b.fingerprint)));
        let key = key.to_le_bytes().to_vec();
        let data = serde_json::to_vec_pretty(&FileFormat {
            version: VERSION,
            entries: list,
        })
        .map_err(std::io::Error::other)?;
        util::write_atomic(path, &data)?;
        if let Ok(mut last) = self.last_written.lock() {
            *last = Some(key);
        }
        if let Ok(mut le) = self.last_epoch.lock() {
            *le = Some((epoch, std::time::Instant::now()));
        }
        Ok(())
    }

    /// Every (input, fingerprint, offset) — for tests and `/status`.
    pub fn snapshot(&self) -> Vec<(String, String, u64, String)> {
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        entries
            .iter()
            .map(|((i, f), e)| {
                (
                    i.clone(),
                    f.clone(),
                    e.live.as_ref().map_or(e.offset, |a| a.committed()),
                    e.path.clone(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::Finalizer;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (p, w) = Positions::load(dir.path(), Duration::from_secs(3600));
        assert!(w.is_none());
        let acker = OrderedAcker::new(0);
        p.track("app", "crc:1", "/x", acker.clone());
        let mut f = Finalizer::new(acker.issue(123));
        f.resolve();
        p.flush().unwrap();
        let (p2, _) = Positions::load(dir.path(), Duration::from_secs(3600));
        assert_eq!(p2.get("app", "crc:1"), Some(123));
        // Corrupt the file: the temp copy (a valid earlier write) is used.
        std::fs::write(
            dir.path().join("positions.tmp"),
            std::fs::read(dir.path().join("positions.json")).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("positions.json"), b"{not json").unwrap();
        let (p3, w3) = Positions::load(dir.path(), Duration::from_secs(3600));
        assert!(w3.unwrap().contains("corrupt"));
        assert_eq!(p3.get("app", "crc:1"), Some(123));
        std::fs::write(dir.path().join("positions.tmp"), b"garbage").unwrap();
        let (p4, w4) = Positions::load(dir.path(), Duration::from_secs(3600));
        assert!(w4.unwrap().contains("without positions"));
        assert_eq!(p4.get("app", "crc:1"), None);
    }

    #[test]
    fn prunes_old_untracked_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = Positions::load(dir.path(), Duration::from_secs(0));
        let acker = OrderedAcker::new(5);
        p.track("app", "a", "/a", acker);
        p.untrack("app", "a");
        if let Ok(mut e) = p.entries.lock() {
            e.values_mut().for_each(|e| e.updated -= 10);
        }
        p.flush().unwrap();
        assert_eq!(p.get("app", "a"), None);
    }
}
