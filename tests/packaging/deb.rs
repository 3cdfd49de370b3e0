//! The Debian package: `cargo deb` (cargo-deb, installed by `scripts/setup-peers`) builds it
//! from `[package.metadata.deb]` in Cargo.toml, and it holds the binary, the systemd unit, the
//! config as a conffile and the postinst that makes the `logferry` user.
//!
//! The release build is not repeated here (minutes on CI): the binary the tests already have is
//! linked as `release/logferry` into a temporary `CARGO_TARGET_DIR`, and `cargo deb --no-build`
//! packs it through the very asset list a release uses (cargo-deb resolves the `target/release/`
//! paths of that list against the target dir). `cargo deb` on its own, as in the release
//! instructions, builds the release binary first and packs it the same way.
//!
//! The package is then installed, removed and purged with dpkg in a container of the local
//! Debian bookworm base image (`scripts/setup-base-image`) on the test Docker engine, so the
//! maintainer scripts really run: the user, the state directory, the config's owner and mode,
//! the unit enabled, the conffile kept on remove and gone on purge. That part takes the docker
//! tests' lock (one of them restarts the daemon).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::root;
use crate::docker::{DOCKER, require_daemon};
use crate::util::bin;

const BASE_IMAGE: &str = "local/debian:bookworm-slim";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Builds the package from the tests' binary; returns the .deb (inside `out`).
fn build_package(out: &Path) -> PathBuf {
    let has_cargo_deb = Command::new(cargo())
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_cargo_deb,
        "cargo-deb is not installed: run scripts/setup-peers (cargo install cargo-deb --locked)"
    );
    // In the real target dir, so that the binary is hard-linked, not copied.
    let target = bin().parent().unwrap().parent().unwrap().to_path_buf();
    let fake_target = tempfile::Builder::new()
        .prefix("deb-test-")
        .tempdir_in(&target)
        .unwrap();
    let release = fake_target.path().join("release");
    std::fs::create_dir(&release).unwrap();
    if std::fs::hard_link(bin(), release.join("logferry")).is_err() {
        std::fs::copy(bin(), release.join("logferry")).unwrap();
    }
    run(Command::new(cargo())
        .args(["deb", "--no-build", "--fast", "--manifest-path"])
        .arg(format!("{}/Cargo.toml", root()))
        .arg("--output")
        .arg(out)
        .env("CARGO_TARGET_DIR", fake_target.path()));
    let debs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package: {debs:?}");
    debs.into_iter().next().unwrap()
}

/// `dpkg-deb -c`: path (without the leading `.`) → permissions.
fn file_list(deb: &Path) -> Vec<(String, String)> {
    run(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let mode = f.next()?.to_owned();
            let path = f.last()?.trim_start_matches('.').to_owned();
            Some((path, mode))
        })
        .collect()
}

#[test]
fn cargo_deb_packs_binary_unit_conffile_and_postinst_that_install_on_bookworm() {
    let out = tempfile::tempdir().unwrap();
    let deb = build_package(out.path());

    let files = file_list(&deb);
    let mode_of = |path: &str| {
        files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, m)| m.as_str())
    };
    assert_eq!(
        mode_of("/usr/bin/logferry"),
        Some("-rwxr-xr-x"),
        "{files:?}"
    );
    let unit = ["/lib/systemd/system", "/usr/lib/systemd/system"]
        .iter()
        .map(|d| format!("{d}/logferry.service"))
        .find(|p| mode_of(p).is_some())
        .unwrap_or_else(|| panic!("no systemd unit in {files:?}"));
    assert_eq!(mode_of(&unit), Some("-rw-r--r--"));
    // The config may hold credentials: not world-readable.
    assert_eq!(mode_of("/etc/logferry/agent.yaml"), Some("-rw-r-----"));

    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    assert!(info.contains("Package: logferry"), "{info}");
    let depends = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .unwrap_or_default();
    assert!(
        depends.contains("adduser"),
        "postinst needs adduser: {info}"
    );
    // `$auto`, resolved by dpkg-shlibdeps: the C library the binary links.
    assert!(depends.contains("libc6"), "{info}");
    for member in ["conffiles", "postinst", "control"] {
        assert!(info.contains(member), "no {member}: {info}");
    }

    // The control members: the config is a conffile (an upgrade keeps local edits), the
    // postinst makes the user and state directory, then enables the unit.
    let control = out.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conffiles.lines().any(|l| l == "/etc/logferry/agent.yaml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    let ours = std::fs::read_to_string(format!("{}/packaging/debian/postinst", root())).unwrap();
    let (head, _) = ours.split_once("#DEBHELPER#").unwrap();
    assert!(
        postinst.starts_with(head),
        "postinst is packaging/debian/postinst"
    );
    assert!(
        !postinst.contains("#DEBHELPER#"),
        "the systemd snippets replaced #DEBHELPER#"
    );
    assert!(
        postinst.contains("deb-systemd-helper enable logferry.service"),
        "{postinst}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(control.join("postinst"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "postinst is executable");
    run(Command::new("sh").arg("-n").arg(control.join("postinst")));

    // The files as packed: unit and config are the repository's, and the packaged binary
    // validates the packaged config.
    let tree = out.path().join("tree");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree));
    let packed = |p: &str| std::fs::read(tree.join(p.trim_start_matches('/'))).unwrap();
    let repo = |p: &str| std::fs::read(format!("{}/{p}", root())).unwrap();
    assert_eq!(packed(&unit), repo("systemd/logferry.service"));
    assert_eq!(
        packed("/etc/logferry/agent.yaml"),
        repo("packaging/debian/agent.yaml")
    );
    let check = run(Command::new(tree.join("usr/bin/logferry"))
        .arg("check")
        .arg("-c")
        .arg(tree.join("etc/logferry/agent.yaml")));
    assert!(check.contains("configuration OK"), "{check}");

    install_remove_purge(&deb);
}

/// dpkg -i / -r / --purge in a throwaway bookworm container; the script prints what it finds
/// and the test compares.
fn install_remove_purge(deb: &Path) {
    let _g = DOCKER.lock().unwrap_or_else(|e| e.into_inner());
    require_daemon();
    let script = r#"set -e
dpkg -i /tmp/logferry.deb >/dev/null
echo "user $(id -nu logferry) $(id -ng logferry)"
stat -c "mode %U:%G %a %n" /etc/logferry/agent.yaml /var/lib/logferry
test -e /etc/systemd/system/multi-user.target.wants/logferry.service && echo "unit enabled"
logferry check -c /etc/logferry/agent.yaml >/dev/null && echo "check ok"
dpkg -r logferry >/dev/null
echo "after remove: $(dpkg-query -W -f '${Status}' logferry)"
test -f /etc/logferry/agent.yaml && echo "conffile kept"
dpkg --purge logferry >/dev/null
test -e /etc/logferry/agent.yaml || echo "conffile purged"
"#;
    let mount = format!("{}:/tmp/logferry.deb:ro", deb.display());
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-v", &mount, BASE_IMAGE])
        .args(["sh", "-c", script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "install in {BASE_IMAGE} (run scripts/setup-peers first): {stdout}{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "user logferry logferry",
            "mode root:logferry 640 /etc/logferry/agent.yaml",
            "mode logferry:logferry 700 /var/lib/logferry",
            "unit enabled",
            "check ok",
            "after remove: deinstall ok config-files",
            "conffile kept",
            "conffile purged",
        ],
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("adduser: Warning"), "{stderr}");
}
