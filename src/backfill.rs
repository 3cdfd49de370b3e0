//! `logferry backfill`: one shot through the pipeline, from the first byte to EOF.
//!
//! Reads the given files (or the globs of the selected file inputs, with their rotated
//! siblings `x.log.1`, `x.log.2.gz`, `x.log-20240101`), plain or gzip, oldest first within a
//! rotated set; a last line without a newline and a pending multiline event are shipped at EOF.
//! Waits until every event is acknowledged (delivered or dead-lettered). Never reads or writes
//! the daemon's positions. `--since/--until` keep events whose `@timestamp` (after the
//! processors, so a `timestamp` processor's parsed time) falls in `[since, until)`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::agent;
use crate::config::Config;
use crate::event::{Source, now_nanos};
use crate::inputs::file::glob::Globs;
use crate::inputs::file::reader::FileReader;
use crate::router::{Pipeline, TimeFilter};

/// What to backfill.
#[derive(Debug, Clone, Default)]
pub struct BackfillArgs {
    pub inputs: Vec<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub paths: Vec<PathBuf>,
    pub progress: bool,
}

/// The outcome, printed as the summary line.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub files: usize,
    pub bytes: u64,
    pub events: u64,
    pub dead_lettered: u64,
    pub read_errors: u64,
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "backfill: {} files, {} bytes, {} events read, {} dead-lettered, {} read errors, in {:.1}s",
            self.files,
            self.bytes,
            self.events,
            self.dead_lettered,
            self.read_errors,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Parses `--since`/`--until`: RFC 3339 (`2024-05-01T00:00:00Z`), a date (`2024-05-01`, UTC
/// midnight), or a duration ago (`2h`, `7d`).
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return t
            .timestamp_nanos_opt()
            .ok_or_else(|| format!("`{s}` is out of range"));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_utc().timestamp_nanos_opt())
            .ok_or_else(|| format!("`{s}` is out of range"));
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now_nanos() - i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    }
    Err(format!(
        "invalid time `{s}`: expected RFC 3339, YYYY-MM-DD, or a duration ago such as `2h`"
    ))
}

/// Position of a file in its rotated set: (base name, older-first rank).
fn rotation_key(p: &Path) -> (PathBuf, u8, i64) {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
    let stem = name.strip_suffix(".gz").unwrap_or(&name);
    // x.log.N
    if let Some((base, n)) = stem.rsplit_once('.')
        && !n.is_empty()
        && n.len() <= 6
        && n.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = n.parse::<i64>()
    {
        return (dir.join(base), 0, -n);
    }
    // x.log-YYYYMMDD[HH...]
    if let Some((base, d)) = stem.rsplit_once('-')
        && d.len() >= 8
        && d.bytes().all(|b| b.is_ascii_digit())
        && let Ok(d) = d.parse::<i64>()
    {
        return (dir.join(base), 0, d);
    }
    (dir.join(stem), 1, 0)
}

/// Orders files so that each rotated set is read oldest first.
pub fn order_rotated(mut files: Vec<PathBuf>) -> Vec<PathBuf> {
    files.sort();
    files.dedup();
    files.sort_by_key(|p| rotation_key(p));
    files
}

/// The files of the inputs' globs, with their rotated siblings.
fn expand_globs(paths: &[String], exclude: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let globs = Globs::new(paths, exclude).map_err(|(k, e)| anyhow::anyhow!("{k}: {e}"))?;
    let mut out = Vec::new();
    for p in globs.walk() {
        if let (Some(dir), Some(name)) = (p.parent(), p.file_name()) {
            let name = name.to_string_lossy().into_owned();
            if let Ok(rd) = std::fs::read_dir(dir) {
                for entry in rd.flatten() {
                    let sib = entry.file_name().to_string_lossy().into_owned();
                    if sib != name && sib.starts_with(&name) && rotation_key(&entry.path()).0 == p {
                        out.push(entry.path());
                    }
                }
            }
        }
        out.push(p);
    }
    Ok(order_rotated(out))
}

/// Runs a backfill; returns the summary. Exit status 1 when anything was dead-lettered.
pub async fn run(cfg: Config, args: BackfillArgs) -> anyhow::Result<Summary> {
    let started = Instant::now();
    crate::util::private_dir(&cfg.data_dir)
        .with_context(|| format!("cannot create data_dir {}", cfg.data_dir.display()))?;
    // Which inputs.
    let selected: Vec<usize> = cfg
        .inputs
        .iter()
        .enumerate()
        .filter(|(_, i)| i.kind.spec.backfill_globs().is_some())
        .filter(|(_, i)| args.inputs.is_empty() || args.inputs.contains(&i.common.id))
        .map(|(n, _)| n)
        .collect();
    for want in &args.inputs {
        if !cfg.inputs.iter().any(|i| &i.common.id == want) {
            anyhow::bail!("no input has the id `{want}`");
        }
    }
    if selected.is_empty() {
        anyhow::bail!("no file input to backfill (select one with --input)");
    }
    let mut plan: Vec<(usize, Vec<PathBuf>)> = Vec::new();
    if !args.paths.is_empty() {
        plan.push((selected[0], order_rotated(args.paths.clone())));
    } else {
        for &i in &selected {
            let Some((globs, exclude)) = cfg.inputs[i].kind.spec.backfill_globs() else {
                continue;
            };
            plan.push((i, expand_globs(&globs, &exclude)?));
        }
    }
    let total_bytes: u64 = plan
        .iter()
        .flat_map(|(_, f)| f.iter())
        .filter_map(|p| std::fs::metadata(p).ok().map(|m| m.len()))
        .sum();

    let outputs = agent::start_outputs(&cfg)?;
    let filter = TimeFilter {
        since: args.since,
        until: args.until,
    };
    let mut pipelines = Vec::new();
    for (i, files) in plan {
        pipelines.push((
            i,
            agent::backfill_pipeline(&cfg, i, &outputs, filter)?,
            files,
        ));
    }
    let bar = args.progress.then(|| {
        let b = indicatif::ProgressBar::new(total_bytes);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let read_bytes = Arc::new(AtomicU64::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let host: Arc<str> = Arc::from(cfg.host_name.as_str());
    let cfg2 = cfg.clone();
    let (rb, ev, er, bar2) = (
        read_bytes.clone(),
        events.clone(),
        errors.clone(),
        bar.clone(),
    );
    let mut nfiles = 0usize;
    for (_, _, f) in &pipelines {
        nfiles += f.len();
    }
    let ackers = tokio::task::spawn_blocking(move || {
        let mut ackers = Vec::new();
        for (i, mut pipeline, files) in pipelines {
            let common = &cfg2.inputs[i].common;
            for path in files {
                if let Some(b) = &bar2 {
                    b.set_message(path.display().to_string());
                }
                match read_file(&path, common, &host, &mut pipeline, &rb, &ev) {
                    Ok(a) => ackers.push(a),
                    Err(e) => {
                        er.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(path = %path.display(), error = %format!("{e:#}"), "cannot read file");
                    }
                }
                if let Some(b) = &bar2 {
                    b.set_position(rb.load(Ordering::Relaxed));
                }
            }
        }
        ackers
    })
    .await
    .context("backfill reader failed")?;
    // Wait for every acknowledgement, then let the drivers finish.
    loop {
        if ackers.iter().all(|a| a.idle()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for o in &outputs {
        o.buffer.close();
    }
    let mut dead = 0;
    for o in outputs {
        let _ = o.task.await;
        dead += o.dead_letters.count();
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(Summary {
        files: nfiles,
        bytes: read_bytes.load(Ordering::Relaxed),
        events: events.load(Ordering::Relaxed),
        dead_lettered: dead,
        read_errors: errors.load(Ordering::Relaxed)
            + ackers.iter().filter(|a| a.stuck()).count() as u64,
        elapsed: started.elapsed(),
    })
}

fn read_file(
    path: &Path,
    common: &crate::config::InputCommon,
    host: &Arc<str>,
    pipeline: &mut Pipeline,
    read_bytes: &AtomicU64,
    events_read: &AtomicU64,
) -> anyhow::Result<Arc<crate::ack::OrderedAcker>> {
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    let mut r: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let max_line = usize::try_from(common.max_line_bytes.0).unwrap_or(usize::MAX);
    let joiner = match &common.multiline {
        Some(m) => Some(
            m.joiner(common.max_line_bytes.0)
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let source = Arc::new(Source {
        input_id: Arc::from(common.id.as_str()),
        input_type: "file",
        host_name: host.clone(),
        path: Some(Arc::from(path.to_string_lossy().as_ref())),
        file_key: Arc::from(format!("backfill:{}", path.display())),
        meta: pipeline.fields(),
        stream: None,
    });
    let mut reader = FileReader::new(source, 0, max_line, joiner);
    let mut eof = false;
    while !eof {
        let mut events = Vec::new();
        let mut end = None;
        let now = Instant::now();
        let ts = now_nanos();
        for _ in 0..4 {
            let n = match reader
                .splitter
                .read_from(&mut r, crate::inputs::file::lines::READ_CHUNK)
            {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
            };
            read_bytes.fetch_add(n as u64, Ordering::Relaxed);
            pipeline.count_bytes(n as u64);
            if n == 0 {
                eof = true;
                if let Some(e) = reader.drain_lines(now, ts, &mut events) {
                    end = Some(e);
                }
                if let Some(e) = reader.flush_all(true, now, ts, &mut events) {
                    end = Some(e);
                }
                break;
            }
            if let Some(e) = reader.drain_lines(now, ts, &mut events) {
                end = Some(e);
            }
        }
        if let Some(e) = end {
            reader.seal(&mut events, e);
        }
        events_read.fetch_add(events.len() as u64, Ordering::Relaxed);
        pipeline
            .emit(events)
            .map_err(|_| anyhow::anyhow!("outputs closed"))?;
    }
    Ok(reader.acker.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_sets_oldest_first() {
        let files = vec![
            PathBuf::from("/l/x.log"),
            PathBuf::from("/l/x.log.1"),
            PathBuf::from("/l/x.log.2.gz"),
            PathBuf::from("/l/x.log.10.gz"),
            PathBuf::from("/l/a.log"),
            PathBuf::from("/l/a.log-20240102.gz"),
            PathBuf::from("/l/a.log-20240101"),
        ];
        let names: Vec<String> = order_rotated(files)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            names,
            vec![
                "/l/a.log-20240101",
                "/l/a.log-20240102.gz",
                "/l/a.log",
                "/l/x.log.10.gz",
                "/l/x.log.2.gz",
                "/l/x.log.1",
                "/l/x.log",
            ]
        );
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-02").unwrap(), 86_400 * 1_000_000_000);
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1_000_000_000);
        assert!(parse_time("2h").unwrap() < now_nanos());
        assert!(parse_time("yesterday-ish").is_err());
    }
}
