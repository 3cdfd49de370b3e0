//! The test harness: temp dirs, configs, the real `logferry` binary, waiting on conditions
//! with deadlines (never fixed sleeps), signals, and reading what arrived.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_logferry"))
}

/// A temp dir that holds logs, a config, the data dir and outputs.
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            tmp: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// Writes a file (creating directories).
    pub fn write(&self, rel: &str, data: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(rel);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).expect("mkdir");
        }
        fs::write(&p, data).expect("write");
        p
    }

    /// Writes `agent.yaml`; `{dir}` in the text is replaced by the sandbox path.
    pub fn config(&self, yaml: &str) -> PathBuf {
        let text = yaml.replace("{dir}", &self.path().display().to_string());
        self.write("agent.yaml", text)
    }

    /// Starts `logferry run -c agent.yaml`.
    pub fn start(&self) -> Agent {
        self.start_with_env(&[])
    }

    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Agent {
        let stderr_path = self.join(&format!("agent-{}.stderr", unique()));
        let stderr = fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .arg("-c")
            .arg(self.join("agent.yaml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .env("LOGFERRY_LOG", "info,logferry=debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn logferry");
        Agent {
            child: Some(child),
            stderr_path,
        }
    }

    /// Runs a logferry subcommand to completion: (status, stdout, stderr).
    pub fn run_cmd(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let out = Command::new(bin())
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("run logferry");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A running agent; killed (SIGKILL) on drop if still running.
pub struct Agent {
    child: Option<Child>,
    pub stderr_path: PathBuf,
}

impl Agent {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGTERM, then waits for exit (deadline 60 s); returns the status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(60))
    }

    /// SIGKILL, no chance to save anything.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait(Duration::from_secs(30));
    }

    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                self.child = None;
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "logferry did not exit within {limit:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` until it returns true; panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    loop {
        if f() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Parses an NDJSON file; a torn last line (no newline yet) is ignored.
pub fn read_ndjson(path: &Path) -> Vec<Value> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("valid json line"))
        .collect()
}

/// The `message` of every event, as a multiset.
pub fn message_counts(events: &[Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for e in events {
        *m.entry(e["message"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    m
}

/// Appends lines to a file (creating it).
pub fn append_lines(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    let mut buf = String::new();
    for l in lines {
        buf.push_str(&l);
        buf.push('\n');
    }
    f.write_all(buf.as_bytes()).expect("append");
}

/// A line long enough (with its siblings) to pass the 1 KiB fingerprint quickly.
pub fn line(tag: &str, i: usize) -> String {
    format!("{tag} line {i:06} {}", "x".repeat(60))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The config most tests start from: state under the sandbox, no API, one file input `app`
/// over `{dir}/logs/*.log` read from the beginning and scanned every 100 ms. `top` adds
/// top-level keys (whole lines), `input` adds lines to the input (or further inputs),
/// `outputs` is the list of outputs (items indented by two spaces). `{dir}` is left for
/// [`Sandbox::config`].
pub fn app_config(top: &str, input: &str, outputs: &str) -> String {
    app_config_with_api("{ enabled: false }", top, input, outputs)
}

/// [`app_config`] with `api` set to `api` (a YAML flow mapping).
pub fn app_config_with_api(api: &str, top: &str, input: &str, outputs: &str) -> String {
    format!(
        r#"
data_dir: {{dir}}/data
api: {api}
{top}
inputs:
  - id: app
    type: file
    paths: ["{{dir}}/logs/*.log"]
    start_at: beginning
    scan_interval: 100ms
{input}
outputs:
{outputs}
"#
    )
}

/// Appends `n` numbered lines tagged `tag` to `{dir}/logs/<file>`; returns them.
pub fn write_lines(sb: &Sandbox, file: &str, tag: &str, n: usize) -> Vec<String> {
    let path = sb.join(&format!("logs/{file}"));
    fs::create_dir_all(path.parent().expect("logs dir")).expect("create logs dir");
    let lines: Vec<String> = (0..n).map(|i| line(tag, i)).collect();
    append_lines(&path, lines.clone());
    lines
}

/// Lines as a multiset.
pub fn counts(lines: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for l in lines {
        *m.entry(l.clone()).or_default() += 1;
    }
    m
}

/// A small deterministic generator (xorshift) for randomised test moments, seeded from the
/// environment variable `var` when set (to replay a failure) or from the clock; the seed is
/// printed so a failing run can be replayed.
pub struct Rng(u64, u64);

impl Rng {
    /// The seed it started from.
    pub fn seed(&self) -> u64 {
        self.1
    }

    pub fn from_env(var: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        eprintln!("random moments: seed {seed} ({var}={seed} replays them)");
        Rng(seed, seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A thread appending numbered lines (`line(tag, n)`) to a file, `chunk` at a time with a
/// pause between, until stopped or `max` lines are written.
pub struct Appender {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    written: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Appender {
    pub fn start(path: &Path, tag: &str, chunk: usize, pause: Duration, max: usize) -> Appender {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, w, path, tag) = (
            stop.clone(),
            written.clone(),
            path.to_path_buf(),
            tag.to_owned(),
        );
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            while !s.load(Ordering::SeqCst) && i < max {
                append_lines(&path, (i..i + chunk).map(|n| line(&tag, n)));
                i += chunk;
                w.store(i, Ordering::SeqCst);
                std::thread::sleep(pause);
            }
        });
        Appender {
            stop,
            written,
            thread: Some(thread),
        }
    }

    /// Stops the writer; returns how many lines it wrote.
    pub fn stop(mut self) -> usize {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("appender thread");
        }
        self.written.load(Ordering::SeqCst)
    }
}
