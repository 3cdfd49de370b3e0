//! Inputs: one folder per type, one line per type in [`REGISTRY`].
//!
//! An input runs on its own thread (file reading is blocking I/O), turns bytes into events
//! with finalizers, and hands them to its [`Pipeline`]; a full buffer blocks it, which is the
//! backpressure (the files are the buffer).

pub mod decode;
pub mod docker;
pub mod file;
pub mod kubernetes;

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::config::{ConfigSource, Diagnostic, InputCommon, from_value};
use crate::positions::Positions;
use crate::router::Pipeline;

/// What a running input needs from the agent.
pub struct InputContext {
    pub host_name: Arc<str>,
    pub positions: Arc<Positions>,
    pub pipeline: Pipeline,
    /// Set when the agent stops: stop reading, flush pending events, return.
    pub stop: Arc<AtomicBool>,
    pub data_dir: PathBuf,
}

/// One followed file, for `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FileStatus {
    pub path: String,
    pub fingerprint: String,
    /// Offset acknowledged by every output (what a restart resumes from).
    pub offset: u64,
    /// Offset read so far.
    pub read_offset: u64,
    pub size: u64,
    /// `size - offset`.
    pub bytes_behind: u64,
    pub last_read: Option<String>,
    pub open: bool,
}

/// An input's live state, for `/status`.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct InputStatus {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub files: Vec<FileStatus>,
    pub files_open: usize,
    pub bytes_behind: u64,
}

/// A running input.
pub struct InputHandle {
    pub thread: std::thread::JoinHandle<()>,
    pub status: Arc<Mutex<InputStatus>>,
}

/// A parsed, type-specific input configuration.
pub trait InputSpec: Debug + Send + Sync {
    fn validate(&self, _source: &ConfigSource, _path: &str) -> Vec<Diagnostic> {
        Vec::new()
    }
    fn describe(&self) -> String;
    fn start(&self, common: &InputCommon, ctx: InputContext) -> anyhow::Result<InputHandle>;
    /// The globs a backfill reads for this input (`None`: this input cannot be backfilled).
    fn backfill_globs(&self) -> Option<(Vec<String>, Vec<String>)> {
        None
    }
}

/// Parses the type-specific keys of one entry (`path` locates errors).
pub type ParseFn = fn(&ConfigSource, &str, Value) -> Result<Arc<dyn InputSpec>, Diagnostic>;

pub struct Registration {
    pub name: &'static str,
    pub parse: ParseFn,
    pub schema: fn() -> schemars::Schema,
}

fn parse_as<T: DeserializeOwned + InputSpec + 'static>(
    source: &ConfigSource,
    path: &str,
    v: Value,
) -> Result<Arc<dyn InputSpec>, Diagnostic> {
    from_value::<T>(source, path, v).map(|t| Arc::new(t) as Arc<dyn InputSpec>)
}

macro_rules! input {
    ($name:literal, $ty:ty) => {
        Registration {
            name: $name,
            parse: parse_as::<$ty>,
            schema: || schemars::schema_for!($ty),
        }
    };
}

/// Every input type: `type:` → its configuration.
pub const REGISTRY: &[Registration] = &[
    input!("file", file::FileInputConfig),
    input!("docker", docker::DockerInputConfig),
    input!("kubernetes", kubernetes::KubernetesInputConfig),
];

/// A configured input's type-specific part.
#[derive(Debug, Clone)]
pub struct InputKind {
    pub name: &'static str,
    pub spec: Arc<dyn InputSpec>,
}

impl InputKind {
    pub fn parse(
        kind: &str,
        source: &ConfigSource,
        path: &str,
        v: Value,
    ) -> Result<InputKind, Diagnostic> {
        let Some(reg) = REGISTRY.iter().find(|r| r.name == kind) else {
            let names: Vec<&str> = REGISTRY.iter().map(|r| r.name).collect();
            return Err(source.diag(
                &format!("{path}.type"),
                format!(
                    "unknown input type `{kind}`; expected one of {}",
                    names.join(", ")
                ),
            ));
        };
        Ok(InputKind {
            name: reg.name,
            spec: (reg.parse)(source, path, v)?,
        })
    }

    pub fn validate(&self, source: &ConfigSource, path: &str) -> Vec<Diagnostic> {
        self.spec.validate(source, path)
    }
}
