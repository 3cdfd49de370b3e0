//! The `kubernetes` input: CRI log files under `/var/log/pods` on this node.
//!
//! Files are `<path>/<namespace>_<pod>_<uid>/<container>/<n>.log`, in the CRI format
//! (`<time> <stream> <P|F> <message>`), followed by the file follower with the CRI decoder:
//! `P` pieces are joined per stream with their `F` line up to `max_line_bytes`, multiline
//! applies after the join, `@timestamp` is the runtime's time. Metadata
//! (`kubernetes.namespace`, `.pod.name`, `.pod.uid`, `.container.name`) comes from the path.
//!
//! Kubelet rotation renames `0.log` to `0.log.<timestamp>` (later gzipped): a rename, so the
//! follower keeps the renamed file by identity and reads it to its end; the glob only matches
//! `*.log`, so rotated and `.gz` names are never taken for new files.
//!
//! With `api: true`, pod labels and annotations come from the API server (see [`api`]): a
//! list and watch of this node's pods, kept for `metadata_ttl` after a pod is deleted so that
//! its last lines are still enriched. Files found before their pod is known get the labels
//! once the watch delivers it.

pub mod api;

use std::path::Path;
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{ConfigSource, Diagnostic, Dur, InputCommon};
use crate::inputs::decode::Format;
use crate::inputs::file::fingerprint::{FingerprintConfig, Strategy};
use crate::inputs::file::glob::Globs;
use crate::inputs::file::{FileInputConfig, FileSet, Follower, FollowerKind, MetaFn};
use crate::inputs::{InputContext, InputHandle, InputSpec, InputStatus};

/// `type: kubernetes`
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesInputConfig {
    /// Root of the pod log directories.
    #[serde(default = "default_path")]
    pub path: String,
    /// This node's name (pods are watched with `spec.nodeName=<node_name>`); required with
    /// `api: true`.
    #[serde(default)]
    pub node_name: Option<String>,
    /// Enrich events with pod labels and annotations from the API server.
    #[serde(default)]
    pub api: bool,
    /// API server URL; default: in-cluster (`KUBERNETES_SERVICE_HOST`/`_PORT`, https).
    #[serde(default)]
    pub api_server: Option<String>,
    /// Bearer token file; default: the service account's.
    #[serde(default = "default_token_file")]
    pub token_file: String,
    /// CA bundle for the API server; default: the service account's.
    #[serde(default = "default_ca_file")]
    pub ca_file: String,
    /// How long a deleted pod's metadata is kept (its last lines are still enriched).
    #[serde(default = "default_ttl")]
    pub metadata_ttl: Dur,
    /// How often the pod directories are scanned for new, rotated and removed files.
    #[serde(default = "default_scan")]
    pub scan_interval: Dur,
    /// Release the handle of a file that has not grown for this long.
    #[serde(default = "default_close_inactive")]
    pub close_inactive: Dur,
}

fn default_path() -> String {
    "/var/log/pods".into()
}
fn default_token_file() -> String {
    "/var/run/secrets/kubernetes.io/serviceaccount/token".into()
}
fn default_ca_file() -> String {
    "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt".into()
}
fn default_ttl() -> Dur {
    Dur::secs(300)
}
fn default_scan() -> Dur {
    Dur::secs(1)
}
fn default_close_inactive() -> Dur {
    Dur::secs(300)
}

impl KubernetesInputConfig {
    fn glob(&self) -> String {
        format!("{}/*/*/*.log", self.path.trim_end_matches('/'))
    }

    fn file_config(&self) -> FileInputConfig {
        FileInputConfig {
            paths: vec![self.glob()],
            exclude: Vec::new(),
            // Kubelet rotates by rename; a new `0.log` starts empty, too short to checksum.
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

/// What the path of a CRI log file says: (namespace, pod, uid, container).
pub fn parse_pod_path(path: &Path) -> Option<(&str, &str, &str, &str)> {
    let container_dir = path.parent()?;
    let pod_dir = container_dir.parent()?;
    let container = container_dir.file_name()?.to_str()?;
    let mut parts = pod_dir.file_name()?.to_str()?.splitn(3, '_');
    let ns = parts.next()?;
    let pod = parts.next()?;
    let uid = parts.next()?;
    if ns.is_empty() || pod.is_empty() || uid.is_empty() || container.is_empty() {
        return None;
    }
    Some((ns, pod, uid, container))
}

/// `kubernetes.*` metadata of a file, with the pod's labels and annotations if known.
pub fn path_meta(path: &Path, pods: Option<&api::PodCache>) -> Option<Map<String, Value>> {
    let (ns, pod, uid, container) = parse_pod_path(path)?;
    let mut k = Map::new();
    k.insert("namespace".into(), Value::String(ns.into()));
    let mut p = Map::new();
    p.insert("name".into(), Value::String(pod.into()));
    p.insert("uid".into(), Value::String(uid.into()));
    k.insert("pod".into(), Value::Object(p));
    let mut c = Map::new();
    c.insert("name".into(), Value::String(container.into()));
    k.insert("container".into(), Value::Object(c));
    if let Some(info) = pods.and_then(|c| c.get(uid)) {
        if !info.labels.is_empty() {
            k.insert("labels".into(), Value::Object(info.labels.clone()));
        }
        if !info.annotations.is_empty() {
            k.insert(
                "annotations".into(),
                Value::Object(info.annotations.clone()),
            );
        }
    }
    let mut root = Map::new();
    root.insert("kubernetes".into(), Value::Object(k));
    Some(root)
}

impl InputSpec for KubernetesInputConfig {
    fn validate(&self, source: &ConfigSource, path: &str) -> Vec<Diagnostic> {
        let mut d = Vec::new();
        if self.api && self.node_name.as_deref().is_none_or(str::is_empty) {
            d.push(source.diag(
                &format!("{path}.node_name"),
                "node_name is required with api: true (set it from the downward API: NODE_NAME)",
            ));
        }
        if self.scan_interval.0.is_zero() {
            d.push(source.diag(&format!("{path}.scan_interval"), "must be more than 0"));
        }
        if let Some(url) = &self.api_server
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            d.push(source.diag(
                &format!("{path}.api_server"),
                "expected an http:// or https:// URL",
            ));
        }
        d
    }

    fn describe(&self) -> String {
        let mut s = format!("kubernetes {}", self.glob());
        if self.api {
            s.push_str(" (+ pod metadata from the API server)");
        }
        s
    }

    fn start(&self, common: &InputCommon, ctx: InputContext) -> anyhow::Result<InputHandle> {
        let status = Arc::new(Mutex::new(InputStatus {
            id: common.id.clone(),
            kind: "kubernetes".into(),
            ..InputStatus::default()
        }));
        let cfg = self.file_config();
        let globs = Globs::new(&cfg.paths, &cfg.exclude).map_err(|(_, e)| anyhow::anyhow!(e))?;
        let (meta_fn, meta_version): (MetaFn, _) = if self.api {
            let cache = api::PodCache::new(self.metadata_ttl.0);
            let version = cache.version();
            api::spawn_watch(self, common.id.clone(), cache.clone(), ctx.stop.clone())?;
            (
                Arc::new(move |p: &Path| path_meta(p, Some(&cache))),
                Some(version),
            )
        } else {
            (Arc::new(|p: &Path| path_meta(p, None)), None)
        };
        let kind = FollowerKind {
            set: FileSet::Globs(globs),
            format: Format::Cri,
            input_type: "kubernetes",
            meta_fn: Some(meta_fn),
            meta_version,
        };
        let mut follower = Follower::new(cfg, kind, common, ctx, status.clone());
        let thread = std::thread::Builder::new()
            .name(format!("input-{}", common.id))
            .spawn(move || follower.run())?;
        Ok(InputHandle { thread, status })
    }

    fn backfill_globs(&self) -> Option<(Vec<String>, Vec<String>)> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_gives_pod_metadata() {
        let p = Path::new("/var/log/pods/default_web-7d9f_0b5c-11aa/nginx/0.log");
        assert_eq!(
            parse_pod_path(p),
            Some(("default", "web-7d9f", "0b5c-11aa", "nginx"))
        );
        let m = path_meta(p, None).unwrap();
        assert_eq!(m["kubernetes"]["pod"]["name"], "web-7d9f");
        assert_eq!(m["kubernetes"]["container"]["name"], "nginx");
        assert_eq!(parse_pod_path(Path::new("/var/log/pods/bad/c/0.log")), None);
    }
}
