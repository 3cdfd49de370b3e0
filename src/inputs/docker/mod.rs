//! The `docker` input: the json-file logs of the containers of a Docker engine, with their
//! metadata.
//!
//! Two parts:
//! - the **engine task** (its own thread and runtime, [`engine`]) talks to the Engine API
//!   with bollard (version negotiated): it lists the containers, then follows the events
//!   stream (`start`, `destroy`), and tells the follower which log files to follow, each with
//!   its metadata (`container.*`), through a channel. When the API is unreachable it retries
//!   with a capped backoff, then lists again (catching what it missed) and resubscribes with
//!   `since`; the follower meanwhile keeps tailing the files it knows.
//! - the **file follower** shared with the `file` input reads each `LogPath` (under
//!   `host_root` when the agent runs in a container) with the json-file decoder: positions,
//!   Docker's rename rotation (`-json.log` → `-json.log.1`, read to its end by identity),
//!   16 KiB pieces joined per stream up to `max_line_bytes`, `@timestamp` from Docker's time.
//!   A destroyed container's file is drained, then released.
//!
//! Identity is device+inode: a new container's log starts empty (too short to checksum) and
//! must ship its first line within seconds.

pub mod engine;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use globset::{Glob, GlobSet, GlobSetBuilder};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::{ConfigSource, Diagnostic, Dur, InputCommon};
use crate::inputs::decode::Format;
use crate::inputs::file::fingerprint::{FingerprintConfig, Strategy};
use crate::inputs::file::{FileInputConfig, FileSet, Follower, FollowerKind};
use crate::inputs::{InputContext, InputHandle, InputSpec, InputStatus};

/// Which containers: a container matches when all of `labels` match, or its name matches one
/// of `names`, or its image one of `images` (criteria left out do not match).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerSelector {
    /// Label → value glob; all must match.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Container name globs (without the leading `/`).
    #[serde(default)]
    pub names: Vec<String>,
    /// Image name globs (`nginx:*`, `registry.local/*`).
    #[serde(default)]
    pub images: Vec<String>,
}

/// `type: docker`
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerInputConfig {
    /// The Engine API: `unix:///var/run/docker.sock`, or `tcp://host:2375` / `http://...`.
    #[serde(default = "default_host")]
    pub host: String,
    /// Only these containers (default: all).
    #[serde(default)]
    pub include: Option<ContainerSelector>,
    /// Never these containers (wins over `include`).
    #[serde(default)]
    pub exclude: Option<ContainerSelector>,
    /// Globs of the container labels copied to events as `container.labels.*` (dots in label
    /// names become `_`). `com.docker.compose.project` / `.service` are also always shipped as
    /// `container.compose.project` / `container.compose.service`.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Where the host's `/` is mounted when the agent runs in a container (the engine's
    /// `LogPath` is read under it).
    #[serde(default)]
    pub host_root: Option<String>,
    /// How often the followed log files are checked for growth, rotation and removal.
    #[serde(default = "default_scan")]
    pub scan_interval: Dur,
    /// Release the handle of a log that has not grown for this long (reopened when it grows).
    #[serde(default = "default_close_inactive")]
    pub close_inactive: Dur,
}

fn default_host() -> String {
    "unix:///var/run/docker.sock".into()
}
fn default_scan() -> Dur {
    Dur::secs(1)
}
fn default_close_inactive() -> Dur {
    Dur::secs(300)
}

fn globset(globs: &[String]) -> Result<GlobSet, (usize, String)> {
    let mut b = GlobSetBuilder::new();
    for (i, g) in globs.iter().enumerate() {
        b.add(Glob::new(g).map_err(|e| (i, e.to_string()))?);
    }
    b.build().map_err(|e| (0, e.to_string()))
}

/// A compiled [`ContainerSelector`].
#[derive(Debug, Clone)]
pub struct Selector {
    labels: Vec<(String, globset::GlobMatcher)>,
    names: GlobSet,
    images: GlobSet,
}

impl Selector {
    pub fn new(s: &ContainerSelector) -> Result<Selector, String> {
        let mut labels = Vec::new();
        for (k, v) in &s.labels {
            let m = Glob::new(v)
                .map_err(|e| format!("labels.{k}: {e}"))?
                .compile_matcher();
            labels.push((k.clone(), m));
        }
        Ok(Selector {
            labels,
            names: globset(&s.names).map_err(|(i, e)| format!("names[{i}]: {e}"))?,
            images: globset(&s.images).map_err(|(i, e)| format!("images[{i}]: {e}"))?,
        })
    }

    /// Whether the container matches.
    pub fn matches(
        &self,
        name: &str,
        image: &str,
        labels: &std::collections::HashMap<String, String>,
    ) -> bool {
        let by_labels = !self.labels.is_empty()
            && self
                .labels
                .iter()
                .all(|(k, m)| labels.get(k).is_some_and(|v| m.is_match(v)));
        by_labels || self.names.is_match(name) || self.images.is_match(image)
    }
}

/// The filters of one input, compiled.
#[derive(Debug, Clone)]
pub struct Filters {
    pub include: Option<Selector>,
    pub exclude: Option<Selector>,
    pub labels: GlobSet,
}

impl DockerInputConfig {
    fn filters(&self) -> Result<Filters, (String, String)> {
        let include = match &self.include {
            Some(s) => Some(Selector::new(s).map_err(|e| ("include".to_owned(), e))?),
            None => None,
        };
        let exclude = match &self.exclude {
            Some(s) => Some(Selector::new(s).map_err(|e| ("exclude".to_owned(), e))?),
            None => None,
        };
        let labels = globset(&self.labels).map_err(|(i, e)| (format!("labels[{i}]"), e))?;
        Ok(Filters {
            include,
            exclude,
            labels,
        })
    }

    fn file_config(&self) -> FileInputConfig {
        FileInputConfig {
            paths: Vec::new(),
            exclude: Vec::new(),
            fingerprint: FingerprintConfig {
                strategy: Strategy::DeviceInode,
                ..FingerprintConfig::default()
            },
            scan_interval: self.scan_interval,
            close_inactive: self.close_inactive,
            max_open_files: 1024,
        }
    }
}

impl InputSpec for DockerInputConfig {
    fn validate(&self, source: &ConfigSource, path: &str) -> Vec<Diagnostic> {
        let mut d = Vec::new();
        if let Err((k, e)) = self.filters() {
            d.push(source.diag(&format!("{path}.{k}"), e));
        }
        let h = &self.host;
        if !(h.starts_with("unix://")
            || h.starts_with("tcp://")
            || h.starts_with("http://")
            || h.starts_with('/'))
        {
            d.push(source.diag(
                &format!("{path}.host"),
                "expected unix:///path/to/docker.sock, tcp://host:port or http://host:port",
            ));
        }
        if self.scan_interval.0.is_zero() {
            d.push(source.diag(&format!("{path}.scan_interval"), "must be more than 0"));
        }
        d
    }

    fn describe(&self) -> String {
        format!("docker {}", self.host)
    }

    fn start(&self, common: &InputCommon, ctx: InputContext) -> anyhow::Result<InputHandle> {
        let status = Arc::new(Mutex::new(InputStatus {
            id: common.id.clone(),
            kind: "docker".into(),
            ..InputStatus::default()
        }));
        let filters = self
            .filters()
            .map_err(|(k, e)| anyhow::anyhow!("{k}: {e}"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        engine::spawn(
            self.clone(),
            filters,
            common.id.clone(),
            tx,
            ctx.stop.clone(),
        )?;
        let kind = FollowerKind {
            set: FileSet::Dynamic {
                rx,
                paths: std::collections::HashMap::new(),
                fresh: std::collections::HashSet::new(),
                ready: false,
            },
            format: Format::DockerJson,
            input_type: "docker",
            meta_fn: None,
            meta_version: None,
        };
        let mut follower = Follower::new(self.file_config(), kind, common, ctx, status.clone());
        let thread = std::thread::Builder::new()
            .name(format!("input-{}", common.id))
            .spawn(move || follower.run())?;
        Ok(InputHandle { thread, status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn selectors() {
        let s = Selector::new(&ContainerSelector {
            labels: [("logging".to_owned(), "enabled".to_owned())].into(),
            names: vec!["web-*".into()],
            images: vec!["nginx:*".into()],
        })
        .unwrap();
        let none = HashMap::new();
        let on: HashMap<String, String> = [("logging".to_owned(), "enabled".to_owned())].into();
        assert!(s.matches("x", "busybox", &on));
        assert!(s.matches("web-1", "busybox", &none));
        assert!(s.matches("x", "nginx:1.25", &none));
        assert!(!s.matches("x", "busybox", &none));
        let empty = Selector::new(&ContainerSelector::default()).unwrap();
        assert!(!empty.matches("x", "y", &on));
    }
}
