//! Pod metadata from the Kubernetes API server: list, then watch, this node's pods.
//!
//! Plain HTTP (reqwest) against the API server rather than `kube`: two calls are needed
//! (`GET /api/v1/pods?fieldSelector=spec.nodeName=<node>` and the same with `watch=true`),
//! and the kube dependency tree costs more build time than it saves here.
//!
//! - The list replaces what is known (pods gone from it are marked deleted); the watch then
//!   follows from the list's `resourceVersion`, keeping the last version seen (bookmarks
//!   included) so that a watch that ends is resumed without a relist. A `410 Gone` / `ERROR`
//!   event, or a failed connection, relists (after a capped backoff).
//! - A deleted pod's metadata is kept for `metadata_ttl`, so the last lines of its files,
//!   read after the deletion, are still enriched.
//! - Every change bumps [`PodCache::version`]; the follower then refreshes the metadata of
//!   the files it follows (a file may be found before its pod is known).
//! - The watch runs on its own thread and runtime; a down API server never stops the files
//!   from being read (events are then shipped with the path metadata only).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::KubernetesInputConfig;

/// What is known of one pod.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub labels: Map<String, Value>,
    pub annotations: Map<String, Value>,
}

#[derive(Debug)]
struct Entry {
    info: PodInfo,
    deleted_at: Option<Instant>,
}

/// Pods of this node by uid, shared by the watch (writer) and the follower (reader).
#[derive(Debug, Clone)]
pub struct PodCache {
    pods: Arc<RwLock<HashMap<String, Entry>>>,
    version: Arc<AtomicU64>,
    ttl: Duration,
}

impl PodCache {
    pub fn new(ttl: Duration) -> PodCache {
        PodCache {
            pods: Arc::new(RwLock::new(HashMap::new())),
            version: Arc::new(AtomicU64::new(0)),
            ttl,
        }
    }

    /// Bumped on every change.
    pub fn version(&self) -> Arc<AtomicU64> {
        self.version.clone()
    }

    pub fn get(&self, uid: &str) -> Option<PodInfo> {
        let pods = self.pods.read().ok()?;
        pods.get(uid).map(|e| e.info.clone())
    }

    fn bump(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }

    fn upsert(&self, uid: String, info: PodInfo) {
        if let Ok(mut pods) = self.pods.write() {
            pods.insert(
                uid,
                Entry {
                    info,
                    deleted_at: None,
                },
            );
        }
        self.bump();
    }

    fn delete(&self, uid: &str) {
        if let Ok(mut pods) = self.pods.write()
            && let Some(e) = pods.get_mut(uid)
        {
            e.deleted_at.get_or_insert_with(Instant::now);
        }
    }

    /// Replaces the set with a list's result: pods not in it are marked deleted.
    fn replace(&self, list: Vec<(String, PodInfo)>) {
        if let Ok(mut pods) = self.pods.write() {
            let now = Instant::now();
            for e in pods.values_mut() {
                e.deleted_at.get_or_insert(now);
            }
            for (uid, info) in list {
                pods.insert(
                    uid,
                    Entry {
                        info,
                        deleted_at: None,
                    },
                );
            }
        }
        self.bump();
    }

    /// Forgets pods deleted more than `ttl` ago.
    fn purge(&self) {
        let ttl = self.ttl;
        if let Ok(mut pods) = self.pods.write() {
            pods.retain(|_, e| e.deleted_at.is_none_or(|t| t.elapsed() < ttl));
        }
    }
}

#[derive(Deserialize)]
struct ObjectMeta {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    labels: Map<String, Value>,
    #[serde(default)]
    annotations: Map<String, Value>,
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
}

#[derive(Deserialize)]
struct Pod {
    metadata: ObjectMeta,
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
}

#[derive(Deserialize)]
struct PodList {
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: Value,
}

struct Api {
    client: reqwest::Client,
    base: String,
    token_file: Option<String>,
    selector: String,
}

impl Api {
    fn token(&self) -> Option<String> {
        let f = self.token_file.as_ref()?;
        // Re-read on every request: projected tokens are rotated by the kubelet.
        std::fs::read_to_string(f).ok().map(|t| t.trim().to_owned())
    }

    fn get(&self, query: &str) -> reqwest::RequestBuilder {
        let url = format!(
            "{}/api/v1/pods?fieldSelector={}{query}",
            self.base, self.selector
        );
        let mut r = self.client.get(url);
        if let Some(t) = self.token() {
            r = r.bearer_auth(t);
        }
        r
    }
}

fn info(meta: ObjectMeta) -> (String, PodInfo) {
    (
        meta.uid,
        PodInfo {
            labels: meta.labels,
            annotations: meta.annotations,
        },
    )
}

/// How one watch ended.
enum WatchEnd {
    /// Resume from the last version.
    Resume,
    /// The version is too old (410) or the stream is unusable: list again.
    Relist,
    Stopped,
}

async fn list(api: &Api, cache: &PodCache) -> anyhow::Result<String> {
    let resp = api
        .get("")
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .context("listing pods")?;
    let status = resp.status();
    if !status.is_success() {
        anyhow::bail!("listing pods: HTTP {status}");
    }
    let list: PodList = resp.json().await.context("decoding the pod list")?;
    let rv = list.metadata.resource_version.unwrap_or_default();
    cache.replace(list.items.into_iter().map(|p| info(p.metadata)).collect());
    Ok(rv)
}

async fn watch(
    api: &Api,
    cache: &PodCache,
    rv: &mut String,
    stop: &AtomicBool,
) -> anyhow::Result<WatchEnd> {
    let q = format!(
        "&watch=true&allowWatchBookmarks=true&timeoutSeconds=290&resourceVersion={}",
        rv
    );
    let resp = api.get(&q).send().await.context("starting the pod watch")?;
    let status = resp.status();
    if status == reqwest::StatusCode::GONE {
        return Ok(WatchEnd::Relist);
    }
    if !status.is_success() {
        anyhow::bail!("watching pods: HTTP {status}");
    }
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(WatchEnd::Stopped);
        }
        let chunk = match tokio::time::timeout(Duration::from_millis(500), body.next()).await {
            Err(_) => continue,
            Ok(None) => return Ok(WatchEnd::Resume),
            Ok(Some(Err(e))) => return Err(e).context("reading the pod watch"),
            Ok(Some(Ok(c))) => c,
        };
        buf.extend_from_slice(&chunk);
        while let Some(nl) = memchr::memchr(b'\n', &buf) {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            let ev: WatchEvent = match serde_json::from_slice(line) {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable pod watch event; relisting");
                    return Ok(WatchEnd::Relist);
                }
            };
            if ev.kind == "ERROR" {
                // A Status object: 410 Gone (version too old) or another failure.
                return Ok(WatchEnd::Relist);
            }
            let Ok(pod) = serde_json::from_value::<Pod>(ev.object) else {
                continue;
            };
            if let Some(v) = &pod.metadata.resource_version {
                rv.clone_from(v);
            }
            match ev.kind.as_str() {
                "ADDED" | "MODIFIED" => {
                    let (uid, i) = info(pod.metadata);
                    cache.upsert(uid, i);
                }
                "DELETED" => cache.delete(&pod.metadata.uid),
                _ => {}
            }
        }
    }
}

async fn run(api: Api, cache: PodCache, input: String, stop: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(500);
    let mut rv: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        cache.purge();
        let current = match rv.take() {
            Some(v) => Ok(v),
            None => list(&api, &cache).await,
        };
        let mut v = match current {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(input = %input, error = format!("{e:#}"), "kubernetes API unreachable; files are still read, without pod labels");
                sleep_unless_stopped(backoff, &stop).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        match watch(&api, &cache, &mut v, &stop).await {
            Ok(WatchEnd::Resume) => {
                backoff = Duration::from_millis(500);
                rv = Some(v);
            }
            Ok(WatchEnd::Relist) => {}
            Ok(WatchEnd::Stopped) => return,
            Err(e) => {
                tracing::warn!(input = %input, error = format!("{e:#}"), "pod watch failed; relisting");
                sleep_unless_stopped(backoff, &stop).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the list+watch thread for `cfg`'s node.
pub fn spawn_watch(
    cfg: &KubernetesInputConfig,
    input: String,
    cache: PodCache,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let node = cfg.node_name.clone().unwrap_or_default();
    let (base, in_cluster) = match &cfg.api_server {
        Some(u) => (u.trim_end_matches('/').to_owned(), false),
        None => {
            let host = std::env::var("KUBERNETES_SERVICE_HOST").context(
                "KUBERNETES_SERVICE_HOST is not set (not in a cluster?); set api_server",
            )?;
            let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            (format!("https://{host}:{port}"), true)
        }
    };
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
    if base.starts_with("https://") {
        match std::fs::read(&cfg.ca_file) {
            Ok(pem) => {
                let cert = reqwest::Certificate::from_pem(&pem)
                    .with_context(|| format!("reading the CA bundle {}", cfg.ca_file))?;
                builder = builder.add_root_certificate(cert);
            }
            Err(e) if in_cluster => {
                return Err(e).with_context(|| format!("reading the CA bundle {}", cfg.ca_file));
            }
            Err(_) => {}
        }
    }
    let client = builder.build().context("building the API client")?;
    let token_file = std::path::Path::new(&cfg.token_file)
        .exists()
        .then(|| cfg.token_file.clone());
    let api = Api {
        client,
        base,
        token_file,
        selector: format!("spec.nodeName%3D{}", urlencode(&node)),
    };
    std::thread::Builder::new()
        .name(format!("k8s-watch-{input}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(input = %input, error = %e, "cannot start the pod watch");
                    return;
                }
            };
            rt.block_on(run(api, cache, input, stop));
        })
        .context("starting the pod watch thread")?;
    Ok(())
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
