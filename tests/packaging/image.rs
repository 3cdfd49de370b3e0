//! The container image: `packaging/docker/Dockerfile` built on the REAL test Docker engine
//! (Debian's docker.io, started by `scripts/setup-docker`) from the local Debian bookworm slim
//! base that `scripts/setup-base-image` makes with debootstrap (no registry is reachable), with
//! the binary the tests have in place of the release binary (the Dockerfile's `BINARY` build
//! argument). The container runs the image's own default config with a log directory mounted
//! at `/logs`: every line arrives on its stdout (`docker logs`), and `docker stop` (SIGTERM to
//! the agent as PID 1) ends it with exit 0. Takes the docker tests' lock: one of them restarts
//! the daemon. The image and container carry a per-run id and are removed even on failure.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::root;
use crate::docker::{DOCKER, docker, require_daemon};
use crate::util::{Sandbox, append_lines, bin, line, message_counts, wait_until};

const BASE_IMAGE: &str = "local/debian:bookworm-slim";

/// Removes the run's container (with its anonymous state volume) and image when dropped.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.container])
            .output();
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

/// The build context the release path has (`.dockerignore` keeps the binary and the config),
/// with the tests' binary as `logferry`. Made in the target dir so the binary is hard-linked.
fn build_context() -> tempfile::TempDir {
    let target = bin().parent().unwrap().parent().unwrap().to_path_buf();
    let ctx = tempfile::Builder::new()
        .prefix("image-test-")
        .tempdir_in(target)
        .unwrap();
    let dst = ctx.path().join("logferry");
    if std::fs::hard_link(bin(), &dst).is_err() {
        std::fs::copy(bin(), &dst).unwrap();
    }
    let docker_dir = ctx.path().join("packaging/docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    for f in ["Dockerfile", "agent.yaml"] {
        std::fs::copy(
            format!("{}/packaging/docker/{f}", root()),
            docker_dir.join(f),
        )
        .unwrap();
    }
    ctx
}

/// The JSON events on the container's stdout so far (its stderr holds the agent's own log).
fn stdout_events(container: &str) -> Vec<Value> {
    let Ok(out) = Command::new("docker").args(["logs", container]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn make_readable_dir(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_image_ships_a_mounted_log_directory_and_stops_cleanly() {
    let _g = DOCKER.lock().unwrap_or_else(|e| e.into_inner());
    require_daemon();
    let has_base = Command::new("docker")
        .args(["image", "inspect", BASE_IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_base,
        "no {BASE_IMAGE}: run scripts/setup-peers (scripts/setup-base-image) as root first"
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("lfimg{}x{}", std::process::id(), nanos % 1_000_000_000);
    let cleanup = Cleanup {
        container: id.clone(),
        image: format!("logferry-test:{id}"),
    };

    // The classic builder (docker.io 20.10 has no BuildKit by default; a newer client without
    // buildx falls back to it too), with no network: the engine runs without a bridge.
    let ctx = build_context();
    let built = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "--network", "none", "--label"])
        .arg(format!("logferry-test={id}"))
        .args(["--build-arg", &format!("BASE_IMAGE={BASE_IMAGE}")])
        .args(["--build-arg", "BINARY=logferry"])
        .args(["-t", &cleanup.image, "-f"])
        .arg(ctx.path().join("packaging/docker/Dockerfile"))
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "docker build: {}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    drop(ctx);
    assert_eq!(
        docker(&["image", "inspect", "-f", "{{.Config.User}}", &cleanup.image]),
        "10001:10001",
        "the agent does not run as root by default"
    );

    // Readable by the image's unprivileged user; the files pass the 1 KiB fingerprint.
    let sb = Sandbox::new();
    let logs = sb.join("logs");
    make_readable_dir(&logs);
    make_readable_dir(&logs.join("app"));
    append_lines(&logs.join("top.log"), (0..40).map(|i| line("top", i)));
    append_lines(
        &logs.join("app/nested.log"),
        (0..40).map(|i| line("nested", i)),
    );
    let mount = format!("{}:/logs:ro", logs.display());
    docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &cleanup.container,
        "--label",
        &format!("logferry-test={id}"),
        "-v",
        &mount,
        &cleanup.image,
    ]);
    // Lines appended while it runs arrive too.
    let mut expected: HashMap<String, usize> = (0..40)
        .flat_map(|i| [line("top", i), line("nested", i)])
        .map(|m| (m, 1))
        .collect();
    wait_until(Duration::from_secs(60), "the first lines on stdout", || {
        !stdout_events(&cleanup.container).is_empty()
    });
    append_lines(&logs.join("top.log"), (40..60).map(|i| line("top", i)));
    expected.extend((40..60).map(|i| (line("top", i), 1)));
    let mut events = Vec::new();
    wait_until(Duration::from_secs(60), "every line on stdout", || {
        events = stdout_events(&cleanup.container);
        events.len() >= expected.len()
    });
    assert_eq!(message_counts(&events), expected);
    for e in &events {
        let path = e["log"]["file"]["path"].as_str().unwrap_or_default();
        assert!(
            path == "/logs/top.log" || path == "/logs/app/nested.log",
            "{e}"
        );
    }

    docker(&["stop", "-t", "30", &cleanup.container]);
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &cleanup.container]);
    let stderr = Command::new("docker")
        .args(["logs", &cleanup.container])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    assert_eq!(code, "0", "exit after SIGTERM; the agent's log:\n{stderr}");
}
