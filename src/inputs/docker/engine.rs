//! The engine task of the `docker` input: which json-file logs to follow, with what metadata.
//!
//! Loop: connect (negotiating the API version) → list every container and inspect each →
//! send the follower its path set (`Add` per followed container, `Remove` for containers gone
//! while we were not looking, then `Ready` once) → follow the events stream (`start`:
//! inspect and add; `destroy`: remove) from `since` the last event seen. When the stream
//! fails (daemon restarted, socket gone) the task backs off (capped), then lists again.
//! Nothing here blocks the follower: the files already known keep being tailed meanwhile.
//!
//! A container with another log driver cannot be read from a file: it gets one warning,
//! once per container.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use anyhow::Context;
use bollard::Docker;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::{DockerInputConfig, Filters};
use crate::inputs::file::PathChange;

/// What the task knows about one container.
struct Known {
    path: Option<PathBuf>,
}

struct Engine {
    cfg: DockerInputConfig,
    filters: Filters,
    input: String,
    tx: Sender<PathChange>,
    stop: Arc<AtomicBool>,
    known: HashMap<String, Known>,
    warned_driver: HashSet<String>,
    ready_sent: bool,
    /// Unix seconds of the last event seen (the `since` of the next subscription).
    since: Option<i64>,
    /// When this input started: a container started since is read from its start even
    /// under `start_at: end`.
    started: chrono::DateTime<chrono::Utc>,
}

/// Starts the engine task.
pub fn spawn(
    cfg: DockerInputConfig,
    filters: Filters,
    input: String,
    tx: Sender<PathChange>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut engine = Engine {
        cfg,
        filters,
        input: input.clone(),
        tx,
        stop,
        known: HashMap::new(),
        warned_driver: HashSet::new(),
        ready_sent: false,
        since: None,
        started: chrono::Utc::now(),
    };
    std::thread::Builder::new()
        .name(format!("docker-{input}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(input = %engine.input, error = %e, "cannot start the docker engine task");
                    return;
                }
            };
            rt.block_on(engine.run());
        })
        .context("starting the docker engine task")?;
    Ok(())
}

fn connect(host: &str) -> anyhow::Result<Docker> {
    let d = if let Some(rest) = host.strip_prefix("tcp://") {
        Docker::connect_with_http(&format!("http://{rest}"), 120, bollard::API_DEFAULT_VERSION)
    } else if host.starts_with("http://") {
        Docker::connect_with_http(host, 120, bollard::API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_unix(host, 120, bollard::API_DEFAULT_VERSION)
    };
    d.with_context(|| format!("connecting to the Docker engine at {host}"))
}

fn dedot(k: &str) -> String {
    k.replace('.', "_")
}

impl Engine {
    async fn run(&mut self) {
        let mut backoff = Duration::from_millis(250);
        let mut down_since: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            match self.session().await {
                Ok(()) => return,
                Err(e) => {
                    if down_since.is_none() {
                        tracing::warn!(input = %self.input, error = format!("{e:#}"), "Docker engine unreachable; known container logs are still read; retrying");
                        down_since = Some(Instant::now());
                    } else {
                        tracing::debug!(input = %self.input, error = format!("{e:#}"), "Docker engine still unreachable");
                    }
                }
            }
            self.sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One connection: list, then follow events until the stream fails (`Err`) or the agent
    /// stops (`Ok`).
    async fn session(&mut self) -> anyhow::Result<()> {
        let docker = connect(&self.cfg.host)?
            .negotiate_version()
            .await
            .context("negotiating the API version")?;
        // The stream is requested on its first poll, after the list: `since` (taken before the
        // list, or the last event seen) replays what happened in between; replays are harmless
        // (adding a followed path again changes nothing).
        let since = self.since.unwrap_or_else(|| chrono::Utc::now().timestamp());
        let mut filters = HashMap::new();
        filters.insert("type".to_owned(), vec!["container".to_owned()]);
        filters.insert(
            "event".to_owned(),
            vec!["start".to_owned(), "destroy".to_owned()],
        );
        let mut events = docker.events(Some(EventsOptions {
            since: Some(since.to_string()),
            until: None,
            filters: Some(filters),
        }));
        self.relist(&docker).await?;
        tracing::info!(input = %self.input, containers = self.known.len(), "connected to the Docker engine");
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let next = tokio::time::timeout(Duration::from_millis(250), events.next()).await;
            let ev = match next {
                Err(_) => continue,
                Ok(None) => anyhow::bail!("the events stream ended"),
                Ok(Some(Err(e))) => return Err(e).context("reading the events stream"),
                Ok(Some(Ok(ev))) => ev,
            };
            if let Some(t) = ev.time {
                self.since = Some(t);
            }
            let Some(id) = ev.actor.and_then(|a| a.id) else {
                continue;
            };
            match ev.action.as_deref() {
                Some("start") => {
                    if let Ok(c) = docker.inspect_container(&id, None).await {
                        self.consider(c);
                    }
                }
                Some("destroy") => self.forget(&id),
                _ => {}
            }
        }
    }

    async fn relist(&mut self, docker: &Docker) -> anyhow::Result<()> {
        let list = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await
            .context("listing containers")?;
        let mut seen = HashSet::new();
        for c in list {
            let Some(id) = c.id else { continue };
            seen.insert(id.clone());
            match docker.inspect_container(&id, None).await {
                Ok(c) => self.consider(c),
                // Removed between the list and the inspect.
                Err(e) => {
                    tracing::debug!(input = %self.input, container = %id, error = %e, "cannot inspect container")
                }
            }
        }
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for id in gone {
            self.forget(&id);
        }
        if !self.ready_sent {
            self.ready_sent = true;
            let _ = self.tx.send(PathChange::Ready);
        }
        Ok(())
    }

    fn forget(&mut self, id: &str) {
        if let Some(k) = self.known.remove(id)
            && let Some(p) = k.path
        {
            tracing::debug!(input = %self.input, container = %id, "container removed; its log is drained, then released");
            let _ = self.tx.send(PathChange::Remove(p));
        }
    }

    /// Decides whether to follow a container, and with what metadata.
    fn consider(&mut self, c: ContainerInspectResponse) {
        let Some(id) = c.id.clone() else { return };
        let name = c
            .name
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned();
        let config = c.config.as_ref();
        let image = config.and_then(|c| c.image.clone()).unwrap_or_default();
        let labels: HashMap<String, String> =
            config.and_then(|c| c.labels.clone()).unwrap_or_default();
        let f = &self.filters;
        let included = f
            .include
            .as_ref()
            .is_none_or(|s| s.matches(&name, &image, &labels));
        let excluded = f
            .exclude
            .as_ref()
            .is_some_and(|s| s.matches(&name, &image, &labels));
        if !included || excluded {
            self.known.insert(id, Known { path: None });
            return;
        }
        let driver = c
            .host_config
            .as_ref()
            .and_then(|h| h.log_config.as_ref())
            .and_then(|l| l.typ.clone())
            .unwrap_or_default();
        if driver != "json-file" {
            if self.warned_driver.insert(id.clone()) {
                tracing::warn!(input = %self.input, container = %name, driver = %driver, "container uses another log driver than json-file; its logs cannot be read");
            }
            self.known.insert(id, Known { path: None });
            return;
        }
        let Some(log_path) = c.log_path.clone().filter(|p| !p.is_empty()) else {
            // Created, never started: LogPath comes with `start`.
            return;
        };
        let path = match &self.cfg.host_root {
            Some(root) => PathBuf::from(root).join(log_path.trim_start_matches('/')),
            None => PathBuf::from(log_path),
        };
        let mut container = Map::new();
        container.insert("id".into(), Value::String(id.clone()));
        container.insert("name".into(), Value::String(name));
        let mut img = Map::new();
        img.insert("name".into(), Value::String(image));
        container.insert("image".into(), Value::Object(img));
        let mut shipped = Map::new();
        for (k, v) in &labels {
            if f.labels.is_match(k) {
                shipped.insert(dedot(k), Value::String(v.clone()));
            }
        }
        if !shipped.is_empty() {
            container.insert("labels".into(), Value::Object(shipped));
        }
        let mut compose = Map::new();
        for (label, key) in [
            ("com.docker.compose.project", "project"),
            ("com.docker.compose.service", "service"),
        ] {
            if let Some(v) = labels.get(label) {
                compose.insert(key.into(), Value::String(v.clone()));
            }
        }
        if !compose.is_empty() {
            container.insert("compose".into(), Value::Object(compose));
        }
        let mut meta = Map::new();
        meta.insert("container".into(), Value::Object(container));
        // Docker reports `StartedAt` in RFC 3339 with nanoseconds; unknown → not fresh.
        let fresh = c
            .state
            .as_ref()
            .and_then(|s| s.started_at.as_deref())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t >= self.started);
        tracing::debug!(input = %self.input, container = %id, path = %path.display(), "following container log");
        self.known.insert(
            id,
            Known {
                path: Some(path.clone()),
            },
        );
        let _ = self.tx.send(PathChange::Add { path, meta, fresh });
    }
}
