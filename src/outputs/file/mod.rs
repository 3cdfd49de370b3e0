//! `file`: NDJSON appended to a file whose path may hold `%Y-%m-%d` (the event's time, UTC).
//! Files are created 0600 with their directory; a write error is retried by the driver.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::{ConfigSource, Diagnostic};
use crate::event::{Event, MetaCache};
use crate::outputs::stdout::{LineFormat, encode_lines};
use crate::outputs::template::Template;
use crate::outputs::{Output, OutputContext, OutputSpec, SendOutcome};

/// `type: file`
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileOutputConfig {
    /// File to append to; may hold `%Y`, `%m`, `%d`, `%H` (event time, UTC).
    pub path: String,
    /// `json` (the event) or `text` (the message).
    #[serde(default)]
    pub format: LineFormat,
    /// fsync after every batch (slower; survives a power loss).
    #[serde(default)]
    pub fsync: bool,
}

impl OutputSpec for FileOutputConfig {
    fn validate(&self, source: &ConfigSource, path: &str) -> Vec<Diagnostic> {
        match Template::parse(&self.path) {
            Ok(t) if t.parts_use_fields() => vec![source.diag(
                &format!("{path}.path"),
                "the file path may use %Y %m %d %H, not event fields",
            )],
            Ok(_) => Vec::new(),
            Err(e) => vec![source.diag(&format!("{path}.path"), e)],
        }
    }
    fn describe(&self) -> String {
        format!("file {}", self.path)
    }
    fn build(&self, _ctx: &OutputContext) -> anyhow::Result<Arc<dyn Output>> {
        let template = Template::parse(&self.path).map_err(anyhow::Error::msg)?;
        Ok(Arc::new(FileOutput {
            template,
            format: self.format,
            fsync: self.fsync,
            files: Arc::new(Mutex::new(HashMap::new())),
        }))
    }
}

pub struct FileOutput {
    template: Template,
    format: LineFormat,
    fsync: bool,
    files: Arc<Mutex<HashMap<PathBuf, File>>>,
}

impl Output for FileOutput {
    fn send<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, SendOutcome> {
        // Group consecutive events by rendered path (one path for the whole batch, usually).
        let mut groups: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        let mut path = String::new();
        // The path changes at most every hour (%H is the finest unit): render once per hour.
        let mut rendered_hour = None;
        let mut meta = MetaCache::default();
        for e in events {
            let hour = e.timestamp.div_euclid(3_600_000_000_000);
            if rendered_hour != Some(hour) {
                if let Err(err) = self.template.render_time(e.timestamp, &mut path) {
                    return Box::pin(async move {
                        SendOutcome::Retry {
                            reason: err,
                            after: None,
                        }
                    });
                }
                rendered_hour = Some(hour);
            }
            match groups.last_mut() {
                Some((p, buf)) if p.as_os_str() == path.as_str() => {
                    encode_lines(std::slice::from_ref(e), self.format, buf, &mut meta)
                }
                _ => {
                    let mut buf = Vec::with_capacity(events.len() * 300);
                    encode_lines(std::slice::from_ref(e), self.format, &mut buf, &mut meta);
                    groups.push((PathBuf::from(&path), buf));
                }
            }
        }
        let files = self.files.clone();
        let fsync = self.fsync;
        Box::pin(async move {
            let res =
                tokio::task::spawn_blocking(move || write_groups(&files, groups, fsync)).await;
            match res {
                Ok(Ok(())) => SendOutcome::Delivered,
                Ok(Err(e)) => SendOutcome::Retry {
                    reason: e,
                    after: None,
                },
                Err(e) => SendOutcome::Retry {
                    reason: format!("file writer failed: {e}"),
                    after: None,
                },
            }
        })
    }
}

fn write_groups(
    files: &Mutex<HashMap<PathBuf, File>>,
    groups: Vec<(PathBuf, Vec<u8>)>,
    fsync: bool,
) -> Result<(), String> {
    let mut files = files
        .lock()
        .map_err(|_| "file output lock poisoned".to_owned())?;
    for (path, buf) in groups {
        if !files.contains_key(&path) {
            if files.len() >= 4 {
                files.clear();
            }
            if let Some(dir) = path.parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let f = crate::util::append_private(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            files.insert(path.clone(), f);
        }
        let Some(f) = files.get_mut(&path) else {
            continue;
        };
        if let Err(e) = f.write_all(&buf) {
            files.remove(&path);
            return Err(format!("cannot write {}: {e}", path.display()));
        }
        if fsync && let Err(e) = f.sync_data() {
            return Err(format!("cannot fsync {}: {e}", path.display()));
        }
    }
    Ok(())
}
