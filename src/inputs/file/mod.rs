//! The `file` input: follows files matched by globs, by identity rather than by path.
//!
//! One thread per input runs a loop:
//! - **scan** every `scan_interval` (the source of truth): walk the glob roots, `stat` each
//!   match, and match it to the files already followed by device+inode; a new file gets its
//!   identity (fingerprint: checksum of its first `bytes`, or device+inode), its saved
//!   position, or `start_at`. A followed file whose path now leads elsewhere (rotated by
//!   rename, deleted) keeps its open handle and is read to its end;
//! - **read** the files that may have data, round-robin with a byte budget per file per round,
//!   so that one busy file never starves the others; at most `max_open_files` handles are open
//!   (idle ones are closed first and reopened by path when they grow);
//! - **wait** for `notify` (inotify) to wake it early, for the next scan, or for a multiline
//!   timeout. `notify` is only a hint: nothing is missed when it drops events.
//!
//! Rotation: rename+create is the same identity at a new path (or under no matching path),
//! read to its end and released after `close_inactive` without growth; copytruncate is seen as
//! a size below the read offset (or a changed fingerprint) and read again from 0; a deleted
//! file is drained and its handle released at once so the disk space comes back.

pub mod fingerprint;
pub mod glob;
pub mod lines;
pub mod reader;

#[cfg(test)]
mod model_tests;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use self::fingerprint::{FingerprintConfig, Strategy};
use self::glob::Globs;
use self::reader::FileReader;
use crate::config::{ConfigSource, Diagnostic, Dur, InputCommon, StartAt};
use crate::event::{Event, Source, format_rfc3339_nanos, now_nanos};
use crate::inputs::decode::Format;
use crate::inputs::{FileStatus, InputContext, InputHandle, InputSpec, InputStatus};
use crate::positions::Positions;
use crate::processors::multiline::MultilineConfig;
use crate::router::{Pipeline, Stopped};

/// `type: file`
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileInputConfig {
    /// Globs of the files to follow (`*` within a directory, `**` across directories).
    pub paths: Vec<String>,
    /// Globs of files to leave alone; a glob without `/` is matched against the file name.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// How a file is identified across renames.
    #[serde(default)]
    pub fingerprint: FingerprintConfig,
    /// How often the globs are scanned and files checked for growth, rotation, truncation.
    #[serde(default = "default_scan")]
    pub scan_interval: Dur,
    /// Release the handle of a file that has not grown for this long (reopened when it grows;
    /// a rotated-away file is released for good).
    #[serde(default = "default_close_inactive")]
    pub close_inactive: Dur,
    /// Most file handles held open at once.
    #[serde(default = "default_max_open")]
    pub max_open_files: usize,
}

fn default_scan() -> Dur {
    // Filebeat's default. Changes wake the reader at once through inotify; the poll is the
    // safety net (network filesystems, dropped events) and costs a stat per file.
    Dur::secs(10)
}
fn default_close_inactive() -> Dur {
    Dur::secs(300)
}
fn default_max_open() -> usize {
    1024
}

impl InputSpec for FileInputConfig {
    fn validate(&self, source: &ConfigSource, path: &str) -> Vec<Diagnostic> {
        let mut d = Vec::new();
        if self.paths.is_empty() {
            d.push(source.diag(
                &format!("{path}.paths"),
                "at least one path glob is required",
            ));
        }
        if let Err((i, e)) = Globs::new(&self.paths, &self.exclude) {
            d.push(source.diag(&format!("{path}.{i}"), e));
        }
        if self.fingerprint.bytes == 0 || self.fingerprint.bytes > 1 << 20 {
            d.push(source.diag(
                &format!("{path}.fingerprint.bytes"),
                "expected 1 to 1048576",
            ));
        }
        if self.max_open_files == 0 {
            d.push(source.diag(&format!("{path}.max_open_files"), "must be at least 1"));
        }
        if self.scan_interval.0.is_zero() {
            d.push(source.diag(&format!("{path}.scan_interval"), "must be more than 0"));
        }
        d
    }

    fn describe(&self) -> String {
        let mut s = format!("file {}", self.paths.join(", "));
        if !self.exclude.is_empty() {
            s.push_str(&format!(" (exclude {})", self.exclude.join(", ")));
        }
        s
    }

    fn start(&self, common: &InputCommon, ctx: InputContext) -> anyhow::Result<InputHandle> {
        let status = Arc::new(Mutex::new(InputStatus {
            id: common.id.clone(),
            kind: "file".into(),
            ..InputStatus::default()
        }));
        let globs = Globs::new(&self.paths, &self.exclude).map_err(|(_, e)| anyhow::anyhow!(e))?;
        let kind = FollowerKind {
            set: FileSet::Globs(globs),
            format: Format::Plain,
            input_type: "file",
            meta_fn: None,
            meta_version: None,
        };
        let mut follower = Follower::new(self.clone(), kind, common, ctx, status.clone());
        let thread = std::thread::Builder::new()
            .name(format!("input-{}", common.id))
            .spawn(move || follower.run())?;
        Ok(InputHandle { thread, status })
    }

    fn backfill_globs(&self) -> Option<(Vec<String>, Vec<String>)> {
        Some((self.paths.clone(), self.exclude.clone()))
    }
}

/// Marks a key given to a truncated file too short to fingerprint yet.
const PROVISIONAL: &str = "+truncated@";

/// Gives a followed file a new identity (its content was replaced): positions move to the
/// new key, and events from now on carry it (idempotent ids use it).
fn rekey(positions: &Positions, input: &str, t: &mut Tracked, key: Arc<str>) {
    positions.untrack(input, &t.key);
    t.key = key.clone();
    let source = Arc::new(Source {
        file_key: key,
        ..(*t.reader.source).clone()
    });
    t.reader.set_source(source);
    positions.track(
        input,
        &t.key,
        &t.path.to_string_lossy(),
        t.reader.acker.clone(),
    );
}

/// Scans between two `touch`es of a followed file's position entry.
const TOUCH_EVERY_SCANS: u64 = 60;

/// Byte budget of one file in one round of reads.
const ROUND_BUDGET: usize = 128 * 1024;

struct Tracked {
    key: Arc<str>,
    dev: u64,
    ino: u64,
    path: PathBuf,
    file: Option<File>,
    reader: FileReader,
    size: u64,
    /// Modification time at the last scan: a rewrite to the same size still changes it.
    mtime: (i64, i64),
    last_data: Instant,
    last_read_wall: i64,
    /// The path no longer leads to this file (renamed away or deleted).
    gone: bool,
    /// No link is left: drained, then released at once.
    deleted: bool,
    /// May have unread data.
    active: bool,
    seen_scan: u64,
}

/// Per-file metadata from the path (`None`: not a file of this input, leave it alone).
pub type MetaFn = Arc<dyn Fn(&Path) -> Option<Map<String, Value>> + Send + Sync>;

/// A change to a [`FileSet::Dynamic`] set.
#[derive(Debug)]
pub enum PathChange {
    /// Follow this file; its events carry `meta` (nested objects, merged at the root).
    /// `fresh`: its writer started after this agent did, so it is read from its start even
    /// under `start_at: end` (the engine may be listed a moment after the agent started).
    Add {
        path: PathBuf,
        meta: Map<String, Value>,
        fresh: bool,
    },
    /// Stop looking for this path (a file already followed is read to its end).
    Remove(PathBuf),
    /// The initial set is complete: the first scan (which applies `start_at: end` to the
    /// files already there) waits for it.
    Ready,
}

/// Which files a follower follows.
pub enum FileSet {
    /// Files matched by globs (`file`, `kubernetes`).
    Globs(Globs),
    /// Exact paths fed through a channel by another task (`docker`), each with metadata.
    Dynamic {
        rx: Receiver<PathChange>,
        paths: HashMap<PathBuf, Arc<Map<String, Value>>>,
        /// Paths whose writer started after the agent: never skipped by `start_at: end`.
        fresh: HashSet<PathBuf>,
        /// The initial set has been received.
        ready: bool,
    },
}

impl FileSet {
    fn matches(&self, p: &Path) -> bool {
        match self {
            FileSet::Globs(g) => g.matches(p),
            FileSet::Dynamic { paths, .. } => paths.contains_key(p),
        }
    }

    fn walk(&self) -> Vec<PathBuf> {
        match self {
            FileSet::Globs(g) => g.walk(),
            FileSet::Dynamic { paths, .. } => {
                let mut v: Vec<PathBuf> = paths.keys().cloned().collect();
                v.sort();
                v
            }
        }
    }

    fn roots(&self) -> Vec<(PathBuf, usize)> {
        match self {
            FileSet::Globs(g) => g.roots(),
            FileSet::Dynamic { paths, .. } => paths
                .keys()
                .filter_map(|p| p.parent().map(|d| (d.to_path_buf(), 1)))
                .collect(),
        }
    }
}

/// What distinguishes the inputs built on the follower.
pub struct FollowerKind {
    pub set: FileSet,
    pub format: Format,
    pub input_type: &'static str,
    pub meta_fn: Option<MetaFn>,
    /// Bumped when `meta_fn` may give other metadata (pod labels learnt): refreshed at the
    /// next scan.
    pub meta_version: Option<Arc<std::sync::atomic::AtomicU64>>,
}

pub struct Follower {
    id: Arc<str>,
    cfg: FileInputConfig,
    set: FileSet,
    format: Format,
    input_type: &'static str,
    meta_fn: Option<MetaFn>,
    meta_version: Option<Arc<std::sync::atomic::AtomicU64>>,
    seen_meta_version: u64,
    start_at: StartAt,
    max_line: usize,
    multiline: Option<MultilineConfig>,
    host: Arc<str>,
    positions: Arc<Positions>,
    pipeline: Pipeline,
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<InputStatus>>,
    files: HashMap<(u64, u64), Tracked>,
    by_path: HashMap<PathBuf, (u64, u64)>,
    /// Files too short to fingerprint yet → their size at startup (for `start_at: end`).
    waiting: HashMap<(u64, u64), Option<u64>>,
    scans: u64,
    open: usize,
    wake_rx: Receiver<PathBuf>,
    wake_tx: SyncSender<PathBuf>,
    watcher: Option<notify::RecommendedWatcher>,
    watched: HashSet<PathBuf>,
    files_open: metrics::Gauge,
    lag: metrics::Gauge,
    last_status: Instant,
}

impl Follower {
    pub fn new(
        cfg: FileInputConfig,
        kind: FollowerKind,
        common: &InputCommon,
        ctx: InputContext,
        status: Arc<Mutex<InputStatus>>,
    ) -> Follower {
        let (wake_tx, wake_rx) = sync_channel(4096);
        let id: Arc<str> = Arc::from(common.id.as_str());
        Follower {
            files_open: metrics::gauge!("logferry_files_open", "input" => common.id.clone()),
            lag: metrics::gauge!("logferry_input_lag_bytes", "input" => common.id.clone()),
            id,
            set: kind.set,
            format: kind.format,
            input_type: kind.input_type,
            meta_fn: kind.meta_fn,
            meta_version: kind.meta_version,
            seen_meta_version: 0,
            start_at: common.start_at,
            max_line: usize::try_from(common.max_line_bytes.0).unwrap_or(usize::MAX),
            multiline: common.multiline.clone(),
            host: ctx.host_name,
            positions: ctx.positions,
            pipeline: ctx.pipeline,
            stop: ctx.stop,
            status,
            files: HashMap::new(),
            by_path: HashMap::new(),
            waiting: HashMap::new(),
            scans: 0,
            open: 0,
            wake_rx,
            wake_tx,
            watcher: None,
            watched: HashSet::new(),
            cfg,
            last_status: Instant::now() - Duration::from_secs(60),
        }
    }

    /// Applies the changes another task sent to a dynamic file set; returns whether any.
    fn apply_changes(&mut self) -> bool {
        let FileSet::Dynamic {
            rx,
            paths,
            fresh,
            ready,
        } = &mut self.set
        else {
            return false;
        };
        let mut changed = false;
        while let Ok(c) = rx.try_recv() {
            changed = true;
            match c {
                PathChange::Add {
                    path,
                    meta,
                    fresh: is_fresh,
                } => {
                    if is_fresh {
                        fresh.insert(path.clone());
                    } else {
                        fresh.remove(&path);
                    }
                    paths.insert(path, Arc::new(meta));
                }
                PathChange::Remove(p) => {
                    fresh.remove(&p);
                    paths.remove(&p);
                }
                PathChange::Ready => *ready = true,
            }
        }
        changed
    }

    pub fn run(&mut self) {
        self.watcher = self.make_watcher();
        let scan_every = self.cfg.scan_interval.0;
        let mut next_scan = Instant::now();
        let mut early_scan: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if self.apply_changes() {
                early_scan = Some(now);
            }
            let ready = !matches!(self.set, FileSet::Dynamic { ready: false, .. });
            if ready && (now >= next_scan || early_scan.is_some_and(|t| now >= t)) {
                self.scan();
                next_scan = Instant::now() + scan_every;
                early_scan = None;
            }
            // Hints from notify.
            while let Ok(p) = self.wake_rx.try_recv() {
                if let Some(k) = self.by_path.get(&p) {
                    if let Some(t) = self.files.get_mut(k) {
                        t.active = true;
                    }
                } else if self.set.matches(&p) && early_scan.is_none() {
                    early_scan = Some(Instant::now() + Duration::from_millis(50));
                }
            }
            let progressed = match self.read_round() {
                Ok(p) => p,
                Err(Stopped) => break,
            };
            if self.housekeeping().is_err() {
                break;
            }
            if !progressed {
                let mut until = next_scan;
                if let Some(t) = early_scan {
                    until = until.min(t);
                }
                for t in self.files.values() {
                    if let Some(d) = t.reader.deadline() {
                        until = until.min(d);
                    }
                }
                let wait = until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(2));
                match self.wake_rx.recv_timeout(wait) {
                    Ok(p) => {
                        if let Some(k) = self.by_path.get(&p) {
                            if let Some(t) = self.files.get_mut(k) {
                                t.active = true;
                            }
                        } else if self.set.matches(&p) && early_scan.is_none() {
                            early_scan = Some(Instant::now() + Duration::from_millis(50));
                        }
                    }
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
                }
            }
        }
        self.shutdown();
    }

    fn make_watcher(&mut self) -> Option<notify::RecommendedWatcher> {
        let tx = self.wake_tx.clone();
        let w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Only changes wake the reader: our own reads raise access/open/close events,
            // which would otherwise wake it in a loop.
            use notify::EventKind;
            use notify::event::ModifyKind;
            if let Ok(ev) = res {
                let wanted = match ev.kind {
                    EventKind::Create(_) | EventKind::Remove(_) => true,
                    EventKind::Modify(ModifyKind::Metadata(_)) => false,
                    EventKind::Modify(_) => true,
                    _ => false,
                };
                if !wanted {
                    return;
                }
                for p in ev.paths {
                    // A full channel only means the reader is busy: the scan covers it.
                    let _ = tx.try_send(p);
                }
            }
        });
        match w {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(input = %self.id, error = %e, "cannot watch for file events; relying on scans");
                None
            }
        }
    }

    fn watch_roots(&mut self) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        use notify::Watcher;
        for (root, depth) in self.set.roots() {
            if self.watched.contains(&root) || !root.is_dir() {
                continue;
            }
            let mode = if depth > 1 {
                notify::RecursiveMode::Recursive
            } else {
                notify::RecursiveMode::NonRecursive
            };
            match w.watch(&root, mode) {
                Ok(()) => {
                    self.watched.insert(root);
                }
                Err(e) => {
                    tracing::debug!(input = %self.id, root = %root.display(), error = %e, "cannot watch directory; relying on scans");
                    self.watched.insert(root);
                }
            }
        }
    }

    /// Walks the globs and reconciles what is there with what is followed.
    fn scan(&mut self) {
        self.scans += 1;
        let scan_no = self.scans;
        let first = scan_no == 1;
        self.watch_roots();
        let mut seen_waiting = HashSet::new();
        for path in self.set.walk() {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let k = (meta.dev(), meta.ino());
            if let Some(t) = self.files.get_mut(&k) {
                t.seen_scan = scan_no;
                let renamed = t.path != path;
                if renamed {
                    // A rename within the globs: same file, new path.
                    self.by_path.remove(&t.path);
                    t.path = path.clone();
                    self.by_path.insert(path.clone(), k);
                }
                t.gone = false;
                let mtime = (meta.mtime(), meta.mtime_nsec());
                if meta.len() != t.size || mtime != t.mtime {
                    t.active = true;
                }
                t.size = meta.len();
                t.mtime = mtime;
                // Keeps the entry from being pruned; the TTL is hours, a minute is plenty.
                if renamed || scan_no.is_multiple_of(TOUCH_EVERY_SCANS) {
                    self.positions
                        .touch(&self.id, &t.key, &t.path.to_string_lossy());
                }
                continue;
            }
            self.discover(&path, &meta, first, &mut seen_waiting);
        }
        self.waiting.retain(|k, _| seen_waiting.contains(k));
        self.refresh_meta();
        // Files not seen at their path any more.
        let keys: Vec<(u64, u64)> = self
            .files
            .iter()
            .filter(|(_, t)| t.seen_scan != scan_no)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            let Some(t) = self.files.get_mut(&k) else {
                continue;
            };
            let still_there = std::fs::metadata(&t.path).is_ok_and(|m| (m.dev(), m.ino()) == k);
            if still_there {
                // Excluded now, or the glob walk missed it: keep following where it is.
                t.seen_scan = scan_no;
                continue;
            }
            if !t.gone {
                t.gone = true;
                t.active = true;
                self.by_path.remove(&t.path);
                tracing::debug!(input = %self.id, path = %t.path.display(), "file renamed away or deleted; reading it to its end");
            }
            match &t.file {
                Some(f) => {
                    if let Ok(m) = f.metadata() {
                        t.deleted = m.nlink() == 0;
                        if m.len() != t.size {
                            t.active = true;
                        }
                        t.size = m.len();
                    }
                }
                None => t.deleted = true,
            }
        }
        self.update_status(false);
    }

    /// Recomputes every followed file's metadata when the metadata source changed.
    fn refresh_meta(&mut self) {
        let (Some(version), Some(f)) = (&self.meta_version, &self.meta_fn) else {
            return;
        };
        let v = version.load(Ordering::Acquire);
        if v == self.seen_meta_version {
            return;
        }
        self.seen_meta_version = v;
        for t in self.files.values_mut() {
            let Some(path) = t.reader.source.path.clone() else {
                continue;
            };
            let Some(m) = f(Path::new(&*path)) else {
                continue;
            };
            let meta = merge_meta(Some(Arc::new(m)), self.pipeline.fields());
            if meta.as_deref() != t.reader.source.meta.as_deref() {
                let source = Arc::new(Source {
                    meta,
                    ..(*t.reader.source).clone()
                });
                t.reader.set_source(source);
            }
        }
    }

    fn discover(
        &mut self,
        path: &Path,
        meta: &std::fs::Metadata,
        first: bool,
        seen_waiting: &mut HashSet<(u64, u64)>,
    ) {
        let k = (meta.dev(), meta.ino());
        // `start_at: end` skips only what was written before the agent started.
        let first =
            first && !matches!(&self.set, FileSet::Dynamic { fresh, .. } if fresh.contains(path));
        let file_meta: Option<Arc<Map<String, Value>>> = match (&self.set, &self.meta_fn) {
            (FileSet::Dynamic { paths, .. }, _) => match paths.get(path) {
                Some(m) => Some(m.clone()),
                None => return,
            },
            (_, Some(f)) => match f(path) {
                Some(m) => Some(Arc::new(m)),
                None => return,
            },
            _ => None,
        };
        let key = match self.cfg.fingerprint.strategy {
            Strategy::DeviceInode => fingerprint::device_inode(meta),
            Strategy::Checksum => {
                if meta.len() < self.cfg.fingerprint.bytes as u64 {
                    seen_waiting.insert(k);
                    self.waiting
                        .entry(k)
                        .or_insert_with(|| first.then_some(meta.len()));
                    return;
                }
                let f = match File::open(path) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(input = %self.id, path = %path.display(), error = %e, "cannot open file");
                        return;
                    }
                };
                match fingerprint::checksum(&f, self.cfg.fingerprint.bytes) {
                    Ok(Some(key)) => key,
                    Ok(None) => {
                        seen_waiting.insert(k);
                        self.waiting
                            .entry(k)
                            .or_insert_with(|| first.then_some(meta.len()));
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(input = %self.id, path = %path.display(), error = %e, "cannot read file");
                        return;
                    }
                }
            }
        };
        // A copy of a file already followed (e.g. copytruncate's copy): skip it.
        if self.files.values().any(|t| *t.key == *key && !t.gone) {
            return;
        }
        let waited = self.waiting.remove(&k);
        let saved = self.positions.get(&self.id, &key);
        let start = match saved {
            Some(off) if off <= meta.len() => off,
            Some(_) => 0,
            None => match self.start_at {
                StartAt::Beginning => 0,
                StartAt::End => {
                    if first {
                        meta.len()
                    } else {
                        waited.flatten().unwrap_or(0)
                    }
                }
            },
        };
        let source = Arc::new(Source {
            input_id: self.id.clone(),
            input_type: self.input_type,
            host_name: self.host.clone(),
            path: Some(Arc::from(path.to_string_lossy().as_ref())),
            file_key: key.clone(),
            meta: merge_meta(file_meta, self.pipeline.fields()),
            stream: None,
        });
        let multiline = self.multiline.clone();
        let max_line = self.max_line;
        let reader = FileReader::with_format(source, start, self.max_line, self.format, || {
            multiline
                .as_ref()
                .and_then(|m| m.joiner(max_line as u64).ok())
        });
        self.positions.track(
            &self.id,
            &key,
            &path.to_string_lossy(),
            reader.acker.clone(),
        );
        tracing::debug!(input = %self.id, path = %path.display(), fingerprint = %key, offset = start, "following file");
        self.by_path.insert(path.to_path_buf(), k);
        self.files.insert(
            k,
            Tracked {
                key,
                dev: k.0,
                ino: k.1,
                path: path.to_path_buf(),
                file: None,
                reader,
                size: meta.len(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                last_data: Instant::now(),
                last_read_wall: 0,
                gone: false,
                deleted: false,
                active: true,
                seen_scan: self.scans,
            },
        );
    }

    /// One round: each file that may have data reads up to its budget.
    fn read_round(&mut self) -> Result<bool, Stopped> {
        let mut keys: Vec<(u64, u64)> = self
            .files
            .iter()
            .filter(|(_, t)| t.active)
            .map(|(k, _)| *k)
            .collect();
        // Stable order (by inode) so every file gets its turn.
        keys.sort_unstable();
        let mut progressed = false;
        for k in keys {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Stopped);
            }
            if self.read_file(k)? {
                progressed = true;
            }
        }
        Ok(progressed)
    }

    fn ensure_open(&mut self, k: (u64, u64)) -> bool {
        let Some(t) = self.files.get(&k) else {
            return false;
        };
        if t.file.is_some() {
            return true;
        }
        if t.gone {
            return false;
        }
        if self.open >= self.cfg.max_open_files && !self.evict_one(k) {
            return false;
        }
        let Some(t) = self.files.get_mut(&k) else {
            return false;
        };
        let f = match File::open(&t.path) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(input = %self.id, path = %t.path.display(), error = %e, "cannot open file");
                return false;
            }
        };
        match f.metadata() {
            Ok(m) if (m.dev(), m.ino()) == (t.dev, t.ino) => {}
            _ => return false,
        }
        let mut f = f;
        if f.seek(SeekFrom::Start(t.reader.splitter.read_offset()))
            .is_err()
        {
            return false;
        }
        t.file = Some(f);
        self.open += 1;
        self.files_open.set(self.open as f64);
        true
    }

    /// Closes the least recently read idle handle that can be reopened by path.
    fn evict_one(&mut self, except: (u64, u64)) -> bool {
        let victim = self
            .files
            .iter()
            .filter(|(k, t)| **k != except && t.file.is_some() && !t.gone && !t.active)
            .min_by_key(|(_, t)| t.last_data)
            .map(|(k, _)| *k);
        match victim {
            Some(v) => {
                if let Some(t) = self.files.get_mut(&v) {
                    t.file = None;
                    self.open -= 1;
                }
                true
            }
            None => false,
        }
    }

    /// Reads one file up to its budget. Returns whether it produced data.
    fn read_file(&mut self, k: (u64, u64)) -> Result<bool, Stopped> {
        if !self.ensure_open(k) {
            if let Some(t) = self.files.get_mut(&k) {
                t.active = false;
            }
            return Ok(false);
        }
        let now = Instant::now();
        let ts = now_nanos();
        let mut events: Vec<Event> = Vec::new();
        let mut end: Option<u64> = None;
        let fp_bytes = self.cfg.fingerprint.bytes;
        let checksum = self.cfg.fingerprint.strategy == Strategy::Checksum;
        let Some(t) = self.files.get_mut(&k) else {
            return Ok(false);
        };
        // Checksum identity: content replaced in place (truncated, then rewritten past our
        // offset before we noticed) shows as changed first bytes. Read it again from 0, under
        // its new identity.
        let provisional = t.key.contains(PROVISIONAL);
        if checksum
            && provisional
            && let Some(f) = t.file.as_ref()
            && let Ok(Some(key)) = fingerprint::checksum(f, fp_bytes)
        {
            // Truncated while too short to fingerprint: what was read since is this content.
            rekey(&self.positions, &self.id, t, key);
        } else if checksum
            && !provisional
            && let Some(f) = t.file.as_ref()
            && let Ok(Some(key)) = fingerprint::checksum(f, fp_bytes)
            && *key != *t.key
        {
            tracing::info!(input = %self.id, path = %t.path.display(), "file content replaced (fingerprint changed); reading it from the start");
            if let Some(e) = t.reader.reset(0, now, ts, &mut events) {
                end = Some(e);
            }
            if let Some(f) = t.file.as_mut()
                && f.seek(SeekFrom::Start(0)).is_err()
            {
                t.file = None;
                self.open = self.open.saturating_sub(1);
            }
            rekey(&self.positions, &self.id, t, key);
            if !events.is_empty() {
                let e = end.take().unwrap_or(0);
                t.reader.seal(&mut events, e);
                self.pipeline.emit(std::mem::take(&mut events))?;
            }
        }
        let mut budget = ROUND_BUDGET;
        let mut got_any = false;
        while let Some(f) = t.file.as_mut() {
            match t.reader.splitter.read_from(f, budget) {
                Ok(0) => {
                    // EOF: truncated under us?
                    let len = f.metadata().map(|m| m.len()).unwrap_or(t.size);
                    t.size = len;
                    if len < t.reader.splitter.read_offset() {
                        tracing::info!(input = %self.id, path = %t.path.display(), "file truncated; reading it from the start");
                        if let Some(e) = t.reader.reset(0, now, ts, &mut events) {
                            end = Some(e);
                        }
                        if f.seek(SeekFrom::Start(0)).is_err() {
                            break;
                        }
                        // New content, new identity (idempotent ids must not collide with
                        // the old content's): the new checksum, or a generation suffix while
                        // the file is too short for one.
                        let key = match fingerprint::checksum(f, fp_bytes) {
                            Ok(Some(key)) if checksum => key,
                            _ => Arc::from(format!(
                                "{}{PROVISIONAL}{ts}",
                                t.key.split(PROVISIONAL).next().unwrap_or("")
                            )),
                        };
                        rekey(&self.positions, &self.id, t, key);
                        if !events.is_empty() {
                            let e = end.take().unwrap_or(0);
                            t.reader.seal(&mut events, e);
                            self.pipeline.emit(std::mem::take(&mut events))?;
                        }
                        continue;
                    }
                    t.active = false;
                    // Caught up: give the read buffer and the unescape arena back (10,000
                    // idle files must not hold 64 KiB each).
                    t.reader.shrink();
                    break;
                }
                Ok(n) => {
                    got_any = true;
                    self.pipeline.count_bytes(n as u64);
                    budget = budget.saturating_sub(n);
                    if let Some(e) = t.reader.drain_lines(now, ts, &mut events) {
                        end = Some(e);
                    }
                    if budget == 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(input = %self.id, path = %t.path.display(), error = %e, "read failed; will retry");
                    t.file = None;
                    self.open = self.open.saturating_sub(1);
                    t.active = false;
                    break;
                }
            }
        }
        if got_any {
            t.last_data = now;
            t.last_read_wall = ts;
        }
        if let Some(e) = end {
            t.reader.seal(&mut events, e);
        }
        if !events.is_empty() {
            self.pipeline.emit(events)?;
        }
        Ok(got_any)
    }

    /// Multiline timeouts, releasing drained rotated/deleted files, closing idle handles.
    fn housekeeping(&mut self) -> Result<(), Stopped> {
        let now = Instant::now();
        let ts = now_nanos();
        let close_after = self.cfg.close_inactive.0;
        let mut release = Vec::new();
        for (k, t) in self.files.iter_mut() {
            if t.reader.deadline().is_some_and(|d| d <= now) {
                let mut events = Vec::new();
                if let Some(e) = t.reader.flush_idle(now, ts, &mut events) {
                    t.reader.seal(&mut events, e);
                    self.pipeline.emit(events)?;
                }
            }
            if t.active {
                continue;
            }
            let idle = now.saturating_duration_since(t.last_data);
            if t.deleted || (t.gone && idle >= close_after) {
                release.push(*k);
            } else if t.file.is_some() && idle >= close_after {
                t.file = None;
                self.open = self.open.saturating_sub(1);
                tracing::debug!(input = %self.id, path = %t.path.display(), "closing idle file");
            }
        }
        for k in release {
            self.release(k, now, ts)?;
        }
        self.files_open.set(self.open as f64);
        if self.last_status.elapsed() >= Duration::from_secs(10) {
            self.update_status(true);
        }
        Ok(())
    }

    /// Lets a rotated-away or deleted file go, shipping its last line if it had no newline.
    fn release(&mut self, k: (u64, u64), now: Instant, ts: i64) -> Result<(), Stopped> {
        let Some(mut t) = self.files.remove(&k) else {
            return Ok(());
        };
        let mut events = Vec::new();
        if let Some(e) = t.reader.flush_all(true, now, ts, &mut events) {
            t.reader.seal(&mut events, e);
        }
        if t.file.take().is_some() {
            self.open = self.open.saturating_sub(1);
        }
        if self.by_path.get(&t.path) == Some(&k) {
            self.by_path.remove(&t.path);
        }
        tracing::debug!(input = %self.id, path = %t.path.display(), "released file");
        let res = self.pipeline.emit(events);
        self.positions.untrack(&self.id, &t.key);
        res
    }

    fn update_status(&mut self, force: bool) {
        if !force && self.last_status.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_status = Instant::now();
        let mut files = Vec::with_capacity(self.files.len());
        let mut behind_total = 0u64;
        for t in self.files.values() {
            let committed = t.reader.acker.committed();
            let behind = t.size.saturating_sub(committed);
            behind_total += behind;
            files.push(FileStatus {
                path: t.path.to_string_lossy().into_owned(),
                fingerprint: t.key.to_string(),
                offset: committed,
                read_offset: t.reader.splitter.read_offset(),
                size: t.size,
                bytes_behind: behind,
                last_read: (t.last_read_wall != 0).then(|| format_rfc3339_nanos(t.last_read_wall)),
                open: t.file.is_some(),
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        self.lag.set(behind_total as f64);
        if let Ok(mut s) = self.status.lock() {
            s.files = files;
            s.files_open = self.open;
            s.bytes_behind = behind_total;
        }
    }

    /// Stop: flush pending multiline events (not partial lines: the file may still grow).
    fn shutdown(&mut self) {
        let now = Instant::now();
        let ts = now_nanos();
        let keys: Vec<(u64, u64)> = self.files.keys().copied().collect();
        for k in keys {
            let Some(t) = self.files.get_mut(&k) else {
                continue;
            };
            let mut events = Vec::new();
            if let Some(e) = t.reader.flush_all(false, now, ts, &mut events) {
                t.reader.seal(&mut events, e);
                if self.pipeline.emit(events).is_err() {
                    break;
                }
            }
        }
        self.update_status(true);
    }
}

/// Per-file metadata with the input's `fields` over it (both are merged at the event's root).
fn merge_meta(
    file: Option<Arc<Map<String, Value>>>,
    fields: Option<Arc<Map<String, Value>>>,
) -> Option<Arc<Map<String, Value>>> {
    match (file, fields) {
        (None, f) => f,
        (Some(m), None) => Some(m),
        (Some(m), Some(f)) => {
            let mut out = (*m).clone();
            for (k, v) in f.iter() {
                out.insert(k.clone(), v.clone());
            }
            Some(Arc::new(out))
        }
    }
}
