//! `check`, config errors, `version`, `-c -`.

use crate::util::Sandbox;

#[test]
fn config_errors_name_file_line_column_and_key_path() {
    let sb = Sandbox::new();
    sb.config(
        "data_dir: {dir}/data\ninputs:\n  - id: app\n    type: file\n    paths: [/var/log/*.log]\n    pathz: [oops]\noutputs:\n  - id: out\n    type: stdout\n    batch:\n      max_bytes: lots\n",
    );
    let cfg = sb.join("agent.yaml");
    let (st, _out, err) = sb.run_cmd(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(st.code(), Some(78), "stderr: {err}");
    assert!(err.contains("agent.yaml:6:"), "line of the unknown key: {err}");
    assert!(err.contains("inputs[0].pathz"), "key path: {err}");
    assert!(err.contains("unknown key `pathz`"), "{err}");
    assert!(err.contains("outputs[0].batch.max_bytes"), "{err}");
    assert!(err.contains(":11:"), "line of the bad size: {err}");
    assert!(err.contains("expected e.g."), "{err}");
}

#[test]
fn semantic_errors_are_located() {
    let sb = Sandbox::new();
    sb.config(
        "inputs:\n  - id: app\n    type: file\n    paths: [/x/*.log]\n    multiline:\n      pattern: '(['\n  - id: app\n    type: nope\noutputs:\n  - id: out\n    type: stdout\n    inputs: [ghost]\n",
    );
    let (st, _o, err) = sb.run_cmd(&["check", "-c", sb.join("agent.yaml").to_str().unwrap()]);
    assert_eq!(st.code(), Some(78));
    assert!(err.contains("inputs[0].multiline.pattern") && err.contains("agent.yaml:6:"), "{err}");
    assert!(err.contains("inputs[1].type") && err.contains("unknown input type `nope`"), "{err}");
    assert!(err.contains("outputs[0].inputs[0]") && err.contains("ghost"), "{err}");
}

#[test]
fn missing_env_var_is_an_error() {
    let sb = Sandbox::new();
    sb.config("inputs:\n  - id: a\n    type: file\n    paths: [\"${LOGFERRY_TEST_UNSET_VAR}/x.log\"]\noutputs:\n  - { id: o, type: stdout }\n");
    let (st, _o, err) = sb.run_cmd(&["check", "-c", sb.join("agent.yaml").to_str().unwrap()]);
    assert_eq!(st.code(), Some(78));
    assert!(err.contains("LOGFERRY_TEST_UNSET_VAR") && err.contains(":4:"), "{err}");
}

#[test]
fn check_prints_topology_and_reads_stdin() {
    let yaml = "inputs:\n  - id: app\n    type: file\n    paths: [/var/log/app/*.log]\n    processors:\n      - drop_event: { when: { field: level, equals: debug } }\n  - id: sys\n    type: file\n    paths: [/var/log/syslog]\noutputs:\n  - { id: out, type: stdout, inputs: [app] }\n  - { id: errors, type: file, path: /tmp/errors-%Y-%m-%d.ndjson, when: { field: level, equals: error } }\n";
    let out = std::process::Command::new(crate::util::bin())
        .args(["check", "-c", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(yaml.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("app [file /var/log/app/*.log] | drop_event -> out, errors"), "{text}");
    assert!(text.contains("sys [file /var/log/syslog] -> errors"), "{text}");
    assert!(text.contains("errors [file /tmp/errors-%Y-%m-%d.ndjson] <- all inputs (when ...)"), "{text}");
}

#[test]
fn version_prints_features() {
    let sb = Sandbox::new();
    let (st, out, _) = sb.run_cmd(&["version"]);
    assert!(st.success());
    assert!(out.starts_with("logferry ") && out.contains("outputs:"), "{out}");
}

#[test]
fn example_configs_are_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    for f in ["examples/quickstart.yaml", "agent.yaml.example"] {
        let path = format!("{root}/{f}");
        let out = std::process::Command::new(crate::util::bin())
            .args(["check", "-c", &path])
            .env("PWD", root)
            .env("ES_PASSWORD", "x")
            .output()
            .unwrap();
        assert!(out.status.success(), "{f}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn configuration_reference_is_current() {
    let root = env!("CARGO_MANIFEST_DIR");
    let committed = std::fs::read_to_string(format!("{root}/docs/configuration.md")).unwrap_or_default();
    let out = std::process::Command::new(crate::util::bin()).arg("config-docs").output().unwrap();
    let generated = String::from_utf8_lossy(&out.stdout);
    assert!(
        committed == generated,
        "docs/configuration.md is stale: run `cargo run -- config-docs > docs/configuration.md`"
    );
}
