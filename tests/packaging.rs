//! What an operator installs: example configs, the systemd unit, the Grafana dashboard,
//! `check --probe`; the Kubernetes manifests (`manifests`), the Debian package (`deb`) and the
//! container image (`image`) in their own modules.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::util::{Sandbox, append_lines, free_port, line, wait_until};

mod deb;
mod image;
mod manifests;

fn root() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

#[test]
fn every_example_config_passes_check() {
    let mut checked = 0;
    for entry in std::fs::read_dir(format!("{}/examples", root())).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let out = std::process::Command::new(crate::util::bin())
            .args(["check", "-c"])
            .arg(&path)
            .env("PWD", root())
            .env("NODE_NAME", "node-1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 6, "quickstart + the five deployment examples");
}

/// The logferry configs of the Filebeat migration page (its YAML blocks that start with
/// `# logferry`) pass `check`, so the keys it maps to exist.
#[test]
fn the_filebeat_migration_page_configs_pass_check() {
    let page = std::fs::read_to_string(format!("{}/docs/migration-filebeat.md", root())).unwrap();
    let sb = Sandbox::new();
    let mut checked = 0;
    for block in page.split("```yaml\n").skip(1) {
        let (yaml, _) = block.split_once("```").unwrap();
        if !yaml.starts_with("# logferry") {
            continue;
        }
        let path = sb.write(&format!("migration-{checked}.yaml"), yaml);
        let (st, out, err) = sb.run_cmd(&["check", "-c", path.to_str().unwrap()]);
        assert!(st.success(), "{yaml}\n{out}{err}");
        checked += 1;
    }
    assert!(checked >= 1, "no `# logferry` YAML block in the page");
}

#[test]
fn check_probe_against_a_closed_port_fails_and_names_the_output() {
    let sb = Sandbox::new();
    let port = free_port();
    sb.config(&format!(
        "inputs:\n  - {{ id: a, type: file, paths: [\"{{dir}}/*.log\"] }}\noutputs:\n  - id: es-main\n    type: elasticsearch\n    hosts: [\"http://127.0.0.1:{port}\"]\n    index: x\n  - {{ id: console, type: stdout }}\n"
    ));
    let (st, out, err) = sb.run_cmd(&[
        "check",
        "--probe",
        "-c",
        sb.join("agent.yaml").to_str().unwrap(),
    ]);
    assert_eq!(st.code(), Some(1), "{out}{err}");
    assert!(out.contains("es-main: FAILED"), "{out}");
    assert!(out.contains("console: ok"), "{out}");
}

/// Metric names a running agent exports (names only, histogram series folded).
fn exported_metric_names() -> BTreeSet<String> {
    let sb = Sandbox::new();
    let port = free_port();
    sb.config(&format!(
        "data_dir: {{dir}}/data\napi: {{ listen: \"127.0.0.1:{port}\" }}\ninputs:\n  - {{ id: a, type: file, paths: [\"{{dir}}/logs/*.log\"], start_at: beginning, scan_interval: 100ms }}\noutputs:\n  - {{ id: o, type: file, path: \"{{dir}}/out.ndjson\", batch: {{ timeout: 50ms }} }}\n"
    ));
    std::fs::create_dir_all(sb.join("logs")).unwrap();
    append_lines(&sb.join("logs/x.log"), (0..30).map(|i| line("x", i)));
    let mut agent = sb.start();
    let mut text = String::new();
    wait_until(
        Duration::from_secs(30),
        "metrics with a request recorded",
        || {
            text = http_get(port, "/metrics");
            text.contains("logferry_output_request_seconds_bucket")
        },
    );
    assert!(agent.stop().success());
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| {
            n.trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count")
                .to_owned()
        })
        .collect()
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf
}

#[test]
fn the_grafana_dashboard_queries_only_exported_metrics() {
    let text =
        std::fs::read_to_string(format!("{}/packaging/grafana/logferry.json", root())).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let exported = exported_metric_names();
    let re = regex::Regex::new(r"logferry_[a-z_]+").unwrap();
    let mut used = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            for m in re.find_iter(t["expr"].as_str().unwrap()) {
                let name = m
                    .as_str()
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_sum")
                    .trim_end_matches("_count");
                used.insert(name.to_owned());
            }
        }
    }
    assert!(
        used.len() >= 7,
        "rates, lag, retries, buffer, dead letters, latency: {used:?}"
    );
    for m in &used {
        assert!(
            exported.contains(m),
            "dashboard queries {m}, which the agent does not export ({exported:?})"
        );
    }
}

#[test]
fn the_systemd_unit_is_hardened_and_verifies() {
    let unit = std::fs::read_to_string(format!("{}/systemd/logferry.service", root())).unwrap();
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/logferry",
        "CapabilityBoundingSet=CAP_DAC_READ_SEARCH",
        "PrivateTmp=yes",
        "User=logferry",
    ] {
        assert!(unit.contains(key), "unit lacks {key}");
    }
    // systemd-analyze verify, where it is installed (not in every CI image).
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze not installed: verify skipped");
        return;
    };
    if !out.status.success() {
        return;
    }
    let sb = Sandbox::new();
    let bin = crate::util::bin();
    let local = unit
        .replace("/usr/bin/logferry", bin.to_str().unwrap())
        .replace("User=logferry", "User=root")
        .replace("Group=logferry", "Group=root");
    let path = sb.write("logferry.service", local);
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let relevant: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("logferry.service") && !l.contains("Failed to"))
        .collect();
    assert!(relevant.is_empty(), "systemd-analyze verify: {err}");
}
