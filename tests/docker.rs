//! The docker input end to end against a REAL Docker engine (Debian's docker.io, API 1.41),
//! started by `scripts/setup-docker` (run by `scripts/setup-peers`; needs root). Containers
//! run a local busybox image with `--network none`; their names and labels carry a per-run id
//! so that runs never see each other's containers, and a guard removes them even when a test
//! fails. The docker tests take a lock: one of them restarts the daemon.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Sandbox, read_ndjson, wait_until};

const IMAGE: &str = "local/busybox:latest";
const STATE_DIR: &str = "/tmp/logferry-docker";

/// One docker test at a time (the restart test stops the daemon under everyone).
pub(crate) static DOCKER: Mutex<()> = Mutex::new(());

pub(crate) fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub(crate) fn require_daemon() {
    let ok = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "no Docker engine with {IMAGE}: run scripts/setup-docker (as root) first"
    );
}

/// Removes the run's containers when dropped (also on failure).
struct Run {
    id: String,
    names: Vec<String>,
}

impl Run {
    fn new() -> Run {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Run {
            id: format!("lf{}x{}", std::process::id(), nanos % 1_000_000_000),
            names: Vec::new(),
        }
    }

    /// `docker run -d` with the run's label; returns the container id.
    fn start(&mut self, name: &str, opts: &[&str], script: &str) -> String {
        let full = format!("{}-{name}", self.id);
        let label = format!("logferry-test={}", self.id);
        let mut args = vec![
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &full,
            "--label",
            &label,
        ];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[IMAGE, "sh", "-c", script]);
        self.names.push(full.clone());
        docker(&args)
    }

    fn name(&self, n: &str) -> String {
        format!("{}-{n}", self.id)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("docker").args(["rm", "-f", n]).output();
        }
    }
}

fn config(sb: &Sandbox, run: &Run) {
    sb.config(&format!(
        r#"
data_dir: {{dir}}/data
api: {{ enabled: false }}
inputs:
  - id: containers
    type: docker
    include: {{ labels: {{ logferry-test: "{id}" }} }}
    exclude: {{ names: ["{id}-excluded*"] }}
    labels: ["app", "com.docker.compose.*"]
    start_at: end
    scan_interval: 100ms
    close_inactive: 2s
outputs:
  - id: out
    type: file
    path: "{{dir}}/out.ndjson"
    batch: {{ max_events: 1000, timeout: 50ms }}
"#,
        id = run.id
    ));
}

fn events(sb: &Sandbox) -> Vec<Value> {
    read_ndjson(&sb.join("out.ndjson"))
}

fn of_container<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["container"]["name"] == name)
        .collect()
}

fn counts(events: &[&Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for e in events {
        *m.entry(e["message"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    m
}

fn wait_running_false(name: &str, limit: Duration) {
    wait_until(limit, &format!("container {name} to exit"), || {
        docker(&["inspect", "-f", "{{.State.Running}}", name]) == "false"
    });
}

/// What the engine wrote for a container (its json-file, rotated files first), decoded with
/// serde_json and joined like `docker logs` does: the ground truth for a test.
fn logged_lines(name: &str) -> Vec<(String, String)> {
    let path = docker(&["inspect", "-f", "{{.LogPath}}", name]);
    let mut files = Vec::new();
    for i in (1..=50).rev() {
        let p = format!("{path}.{i}");
        if Path::new(&p).exists() {
            files.push(p);
        }
    }
    files.push(path);
    let mut out = Vec::new();
    let mut partial: HashMap<String, String> = HashMap::new();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let stream = v["stream"].as_str().unwrap().to_owned();
            let log = v["log"].as_str().unwrap();
            let buf = partial.entry(stream.clone()).or_default();
            buf.push_str(log);
            if buf.ends_with('\n') {
                buf.pop();
                out.push((std::mem::take(buf), stream));
            }
        }
    }
    out
}

#[test]
fn containers_with_metadata_long_lines_stderr_rotation_late_start_and_exclusion() {
    let _g = DOCKER.lock().unwrap_or_else(|e| e.into_inner());
    require_daemon();
    let mut run = Run::new();
    let sb = Sandbox::new();
    config(&sb, &run);
    let mut agent = sb.start();

    run.start(
        "labels",
        &[
            "--label",
            "app=web",
            "--label",
            "com.docker.compose.project=proj",
            "--label",
            "com.docker.compose.service=svc",
            "--label",
            "secret=not-shipped",
        ],
        "i=1; while [ $i -le 100 ]; do echo labels line $i; i=$((i+1)); done",
    );
    run.start(
        "big",
        &[],
        "head -c 40960 /dev/zero | tr '\\0' b; echo; echo after big",
    );
    run.start(
        "stderr",
        &[],
        "i=1; while [ $i -le 20 ]; do echo to stderr $i >&2; i=$((i+1)); done; echo on stdout",
    );
    run.start(
        "rotate",
        &["--log-opt", "max-size=64k", "--log-opt", "max-file=30"],
        "i=1; while [ $i -le 2000 ]; do echo rotate line $i padding-padding-padding-padding-padding-padding-padding; \
         [ $((i % 100)) = 0 ] && sleep 0.1; i=$((i+1)); done",
    );
    run.start("excluded", &[], "echo excluded line");
    run.start("nolog", &["--log-driver", "none"], "echo never read");

    let rot = run.name("rotate");
    wait_until(
        Duration::from_secs(60),
        "all lines of the first containers",
        || {
            let ev = events(&sb);
            of_container(&ev, &rot).len() >= 2000
                && of_container(&ev, &run.name("labels")).len() >= 100
                && of_container(&ev, &run.name("stderr")).len() >= 21
                && of_container(&ev, &run.name("big")).len() >= 2
        },
    );
    // The rotate container really rotated (by rename).
    let rot_path = docker(&["inspect", "-f", "{{.LogPath}}", &rot]);
    assert!(
        Path::new(&format!("{rot_path}.1")).exists(),
        "no rotation happened"
    );

    // A container started while the agent runs: its first line ships within seconds.
    let t0 = Instant::now();
    run.start("late", &[], "echo late hello; sleep 30");
    let late = run.name("late");
    wait_until(Duration::from_secs(15), "the late container's line", || {
        of_container(&events(&sb), &late).len() == 1
    });
    let late_after = t0.elapsed();

    assert!(agent.stop().success());
    let ev = events(&sb);

    let labels = of_container(&ev, &run.name("labels"));
    let c = counts(&labels);
    for i in 1..=100 {
        assert_eq!(
            c.get(&format!("labels line {i}")),
            Some(&1),
            "labels line {i}"
        );
    }
    assert_eq!(labels.len(), 100);
    let e = labels[0];
    assert_eq!(e["stream"], "stdout");
    assert_eq!(e["input"]["type"], "docker");
    assert_eq!(e["container"]["image"]["name"], IMAGE);
    assert_eq!(e["container"]["labels"]["app"], "web");
    assert_eq!(
        e["container"]["labels"]["com_docker_compose_project"],
        "proj"
    );
    assert!(e["container"]["labels"].get("secret").is_none());
    assert!(e["container"]["labels"].get("logferry-test").is_none());
    assert_eq!(e["container"]["compose"]["project"], "proj");
    assert_eq!(e["container"]["compose"]["service"], "svc");
    let id = docker(&["inspect", "-f", "{{.Id}}", &run.name("labels")]);
    assert_eq!(e["container"]["id"], id);
    // @timestamp is Docker's time, which json-file records with nanoseconds.
    let logged_time: Value = serde_json::from_str(
        std::fs::read_to_string(docker(&[
            "inspect",
            "-f",
            "{{.LogPath}}",
            &run.name("labels"),
        ]))
        .unwrap()
        .lines()
        .next()
        .unwrap(),
    )
    .unwrap();
    let first = labels
        .iter()
        .find(|e| e["message"] == "labels line 1")
        .unwrap();
    let docker_time = logged_time["time"].as_str().unwrap();
    assert_eq!(
        first["@timestamp"].as_str().unwrap()[..19],
        docker_time[..19],
        "{docker_time}"
    );

    let big = of_container(&ev, &run.name("big"));
    assert_eq!(big.len(), 2, "a 40 KiB line is one event");
    let long = big.iter().find(|e| e["message"] != "after big").unwrap();
    assert_eq!(long["message"].as_str().unwrap().len(), 40960);
    assert!(long["message"].as_str().unwrap().bytes().all(|b| b == b'b'));
    assert!(long.get("log").and_then(|l| l.get("flags")).is_none());

    let err = of_container(&ev, &run.name("stderr"));
    assert_eq!(err.len(), 21);
    for e in &err {
        let expect = if e["message"] == "on stdout" {
            "stdout"
        } else {
            "stderr"
        };
        assert_eq!(e["stream"], expect, "{e}");
    }
    let c = counts(&err);
    for i in 1..=20 {
        assert_eq!(c.get(&format!("to stderr {i}")), Some(&1));
    }

    let r = of_container(&ev, &rot);
    let c = counts(&r);
    for i in 1..=2000 {
        let m = format!("rotate line {i} padding-padding-padding-padding-padding-padding-padding");
        assert_eq!(c.get(&m), Some(&1), "{m}");
    }
    assert_eq!(r.len(), 2000);

    assert!(of_container(&ev, &run.name("excluded")).is_empty());
    assert!(of_container(&ev, &run.name("nolog")).is_empty());
    let stderr = agent.stderr();
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("another log driver") && l.contains(&run.name("nolog")))
        .count();
    assert_eq!(
        warnings, 1,
        "one warning for the container with another log driver"
    );
    eprintln!("late container's first line shipped after {late_after:?}");
}

fn restart_daemon() {
    let pid: i32 = std::fs::read_to_string(format!("{STATE_DIR}/dockerd.pid"))
        .expect("dockerd.pid from scripts/setup-docker")
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on the daemon the set-up script started (its recorded pid).
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    wait_until(Duration::from_secs(60), "dockerd to exit", || {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) != 0 }
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-docker");
    let st = Command::new(script)
        .env("STATE_DIR", STATE_DIR)
        .status()
        .expect("run scripts/setup-docker");
    assert!(st.success(), "restarting dockerd failed");
}

#[test]
fn daemon_restart_mid_run_loses_nothing() {
    let _g = DOCKER.lock().unwrap_or_else(|e| e.into_inner());
    require_daemon();
    let mut run = Run::new();
    let sb = Sandbox::new();
    config(&sb, &run);
    let mut agent = sb.start();
    run.start(
        "steady",
        &[],
        "i=1; while [ $i -le 300 ]; do echo steady line $i; i=$((i+1)); sleep 0.02; done",
    );
    let steady = run.name("steady");
    wait_until(Duration::from_secs(30), "some steady lines", || {
        of_container(&events(&sb), &steady).len() >= 50
    });
    restart_daemon();
    // After the restart: a new container is picked up (relist / resubscribe).
    run.start(
        "after",
        &[],
        "i=1; while [ $i -le 50 ]; do echo after line $i; i=$((i+1)); done",
    );
    let after = run.name("after");
    wait_running_false(&steady, Duration::from_secs(60));
    wait_running_false(&after, Duration::from_secs(60));
    let mut expected: Vec<(String, String, String)> = Vec::new();
    for name in [&steady, &after] {
        for (m, s) in logged_lines(name) {
            expected.push((name.clone(), m, s));
        }
    }
    assert!(expected.iter().any(|(n, _, _)| n == &after));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while events(&sb).len() < expected.len() {
        if std::time::Instant::now() > deadline {
            let ev = events(&sb);
            panic!(
                "every logged line: got {} of {} ({} steady, {} after); agent stderr tail:\n{}",
                ev.len(),
                expected.len(),
                of_container(&ev, &steady).len(),
                of_container(&ev, &after).len(),
                agent
                    .stderr()
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.stop().success());
    let ev = events(&sb);
    for name in [&steady, &after] {
        let got = counts(&of_container(&ev, name));
        let want: Vec<&(String, String, String)> =
            expected.iter().filter(|(n, _, _)| n == name).collect();
        for (_, m, _) in &want {
            assert_eq!(got.get(m), Some(&1), "{name}: {m:?} exactly once");
        }
        assert_eq!(
            got.values().sum::<usize>(),
            want.len(),
            "{name}: no extra events"
        );
    }
    assert!(
        agent.stderr().contains("connected to the Docker engine"),
        "reconnected"
    );
}

#[test]
fn host_root_maps_the_engine_log_paths() {
    let _g = DOCKER.lock().unwrap_or_else(|e| e.into_inner());
    require_daemon();
    let mut run = Run::new();
    let sb = Sandbox::new();
    // The host's / "mounted" under {dir}/host, as when the agent runs in a container.
    std::os::unix::fs::symlink("/", sb.join("host")).unwrap();
    sb.config(&format!(
        r#"
data_dir: {{dir}}/data
api: {{ enabled: false }}
inputs:
  - id: containers
    type: docker
    include: {{ labels: {{ logferry-test: "{id}" }} }}
    host_root: {{dir}}/host
    scan_interval: 100ms
outputs:
  - id: out
    type: file
    path: "{{dir}}/out.ndjson"
    batch: {{ max_events: 1000, timeout: 50ms }}
"#,
        id = run.id
    ));
    let mut agent = sb.start();
    run.start("hostroot", &[], "echo through host_root");
    let name = run.name("hostroot");
    wait_until(Duration::from_secs(30), "the container's line", || {
        of_container(&events(&sb), &name).len() == 1
    });
    assert!(agent.stop().success());
    let ev = events(&sb);
    let e = of_container(&ev, &name)[0];
    assert_eq!(e["message"], "through host_root");
    let path = e["log"]["file"]["path"].as_str().unwrap();
    assert!(
        path.starts_with(&sb.join("host/var/lib/docker").display().to_string()),
        "{path}"
    );
}
