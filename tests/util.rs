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
        Sandbox { tmp: tempfile::tempdir().expect("temp dir") }
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
        Agent { child: Some(child), stderr_path }
    }

    /// Runs a logferry subcommand to completion: (status, stdout, stderr).
    pub fn run_cmd(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let out = Command::new(bin()).args(args).current_dir(self.path()).output().expect("run logferry");
        (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
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
                panic!("logferry did not exit within {limit:?}; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
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
    let Ok(text) = fs::read_to_string(path) else { return Vec::new() };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).expect("valid json line")).collect()
}

/// The `message` of every event, as a multiset.
pub fn message_counts(events: &[Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for e in events {
        *m.entry(e["message"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
    }
    m
}

/// Appends lines to a file (creating it).
pub fn append_lines(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut f = fs::OpenOptions::new().create(true).append(true).open(path).expect("open for append");
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
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}
