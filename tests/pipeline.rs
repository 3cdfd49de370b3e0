//! The pipeline end to end: real multi-line output written by programs no one here wrote
//! (java.util.logging with nested exceptions, Python's `logging.exception` with chained
//! tracebacks) shipped by the real binary, and redaction that leaves no secret in any output.
//!
//! The record boundaries the agent must find are computed independently of it: each program
//! writes a known number of records, and the test splits the file at the header lines that
//! the program's formatter writes (an oracle that knows the header format, unlike the presets).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::{Sandbox, app_config, read_ndjson, wait_until};

/// file input → file output, with `{multiline}` spliced into the input.
fn config(multiline: &str, processors: &str) -> String {
    app_config(
        "",
        &format!("{multiline}\n{processors}"),
        r#"  - id: out
    type: file
    path: "{dir}/out.ndjson"
    batch: { max_events: 500, timeout: 50ms }"#,
    )
}

/// Splits `text` into records at lines for which `is_header` holds (the oracle).
fn records(text: &str, is_header: impl Fn(&str) -> bool) -> Vec<String> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let mut out: Vec<String> = Vec::new();
    for line in body.split('\n') {
        match out.last_mut() {
            Some(r) if !is_header(line) => {
                r.push('\n');
                r.push_str(line);
            }
            _ => out.push(line.to_owned()),
        }
    }
    out
}

/// Ships `log` with the given multiline config and returns the events' messages.
fn ship(log_text: &str, multiline: &str, expect: usize) -> Vec<Value> {
    let sb = Sandbox::new();
    sb.config(&config(multiline, ""));
    sb.write("logs/app.log", log_text);
    let mut agent = sb.start();
    let out = sb.join("out.ndjson");
    wait_until(Duration::from_secs(60), &format!("{expect} events"), || {
        read_ndjson(&out).len() >= expect
    });
    assert!(agent.stop().success(), "{}", agent.stderr());
    read_ndjson(&out)
}

fn assert_one_event_per_record(events: &[Value], want: &[String], what: &str) {
    let got: Vec<&str> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(got.len(), want.len(), "{what}: event count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "{what}: event {i}");
    }
    for e in events {
        let lines = e["message"].as_str().unwrap_or_default().lines().count();
        let flagged = e["log"]["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "multiline"));
        assert_eq!(
            flagged,
            lines > 1,
            "{what}: log.flags multiline iff joined: {e}"
        );
    }
}

const JAVA_APP: &str = r#"
import java.util.logging.*;

public class App {
    static void deep() { throw new IllegalStateException("deep failure"); }

    static void middle() {
        try { deep(); } catch (IllegalStateException e) { throw new RuntimeException("wrapped in middle", e); }
    }

    static void top() throws Exception {
        try {
            middle();
        } catch (RuntimeException e) {
            Exception t = new Exception("top-level failure", e);
            t.addSuppressed(new java.io.IOException("close failed"));
            throw t;
        }
    }

    public static void main(String[] args) throws Exception {
        Logger log = Logger.getLogger("app");
        log.setUseParentHandlers(false);
        FileHandler h = new FileHandler(args[0], true);
        h.setFormatter(new SimpleFormatter());
        log.addHandler(h);
        int n = Integer.parseInt(args[1]);
        for (int i = 0; i < n; i++) {
            log.info("request " + i + " ok");
            try { top(); } catch (Exception e) { log.log(Level.SEVERE, "request " + i + " failed", e); }
            log.warning("request " + i + " slow");
        }
        h.close();
    }
}
"#;

fn run_java(dir: &Path, log: &Path, n: usize) {
    std::fs::write(dir.join("App.java"), JAVA_APP).unwrap();
    let st = Command::new("javac")
        .arg("-d")
        .arg(dir)
        .arg(dir.join("App.java"))
        .status()
        .expect("javac");
    assert!(st.success(), "javac failed");
    let st = Command::new("java")
        .args(["-Duser.language=en", "-Duser.country=US", "-cp"])
        .arg(dir)
        .arg("App")
        .arg(log)
        .arg(n.to_string())
        .env_remove("JAVA_TOOL_OPTIONS")
        .status()
        .expect("java");
    assert!(st.success(), "java failed");
}

fn is_jul_header(line: &str) -> bool {
    // SimpleFormatter's first line: "Jan 05, 2024 3:04:05 PM App main".
    let b = line.as_bytes();
    b.len() > 13
        && b[0].is_ascii_uppercase()
        && b[1].is_ascii_lowercase()
        && b[3] == b' '
        && line[4..].contains(", ")
        && (line.contains(" AM ") || line.contains(" PM "))
}

#[test]
fn java_util_logging_traces_are_one_event_per_record() {
    const N: usize = 20;
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("jul.log");
    run_java(tmp.path(), &log, N);
    let text = std::fs::read_to_string(&log).unwrap();
    let want = records(&text, is_jul_header);
    assert_eq!(
        want.len(),
        3 * N,
        "the program writes three records per round"
    );
    let severe: Vec<&String> = want.iter().filter(|r| r.contains("SEVERE:")).collect();
    assert_eq!(severe.len(), N);
    for r in &severe {
        for part in [
            "java.lang.Exception: top-level failure",
            "\tat App.top(",
            "\tSuppressed: java.io.IOException: close failed",
            "Caused by: java.lang.RuntimeException: wrapped in middle",
            "Caused by: java.lang.IllegalStateException: deep failure",
            " more",
        ] {
            assert!(r.contains(part), "the JVM wrote no {part:?} in:\n{r}");
        }
    }
    let preset = ship(
        &text,
        "    multiline: { preset: java, timeout: 300ms }",
        want.len(),
    );
    assert_one_event_per_record(&preset, &want, "java preset");
    let pattern = ship(
        &text,
        "    multiline: { pattern: '^[A-Z][a-z]{2} \\d{1,2}, \\d{4} \\d{1,2}:\\d{2}:\\d{2} [AP]M ', negate: true, match: after, timeout: 300ms }",
        want.len(),
    );
    assert_one_event_per_record(&pattern, &want, "java pattern");
}

const PY_APP: &str = r#"
import logging, sys

logging.basicConfig(filename=sys.argv[1], level=logging.INFO,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("app")

def parse(v):
    return int(v)

def load(v):
    try:
        return parse(v)
    except ValueError as e:
        raise RuntimeError(f"cannot load {v!r}") from e

for i in range(int(sys.argv[2])):
    log.info("request %d ok", i)
    try:
        load("x%d" % i)
    except RuntimeError:
        log.exception("request %d failed", i)
    try:
        try:
            {}["missing"]
        except KeyError:
            raise TypeError("failed while handling")
    except TypeError:
        log.exception("request %d failed again", i)
    log.warning("request %d slow", i)
"#;

fn is_py_header(line: &str) -> bool {
    // "2024-01-01 10:00:00,123 LEVEL app: ..."
    let b = line.as_bytes();
    b.len() > 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[19] == b','
        && b[..4].iter().all(u8::is_ascii_digit)
}

#[test]
fn python_chained_tracebacks_are_one_event_per_record() {
    const N: usize = 20;
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("py.log");
    std::fs::write(tmp.path().join("app.py"), PY_APP).unwrap();
    let st = Command::new("python3")
        .arg(tmp.path().join("app.py"))
        .arg(&log)
        .arg(N.to_string())
        .status()
        .expect("python3");
    assert!(st.success(), "python3 failed");
    let text = std::fs::read_to_string(&log).unwrap();
    let want = records(&text, is_py_header);
    assert_eq!(
        want.len(),
        4 * N,
        "the program writes four records per round"
    );
    for r in want.iter().filter(|r| r.contains(" ERROR ")) {
        assert_eq!(
            r.matches("Traceback (most recent call last):").count(),
            2,
            "two chained tracebacks in:\n{r}"
        );
        assert!(
            r.contains("The above exception was the direct cause of the following exception:")
                || r.contains(
                    "During handling of the above exception, another exception occurred:"
                ),
            "{r}"
        );
    }
    let preset = ship(
        &text,
        "    multiline: { preset: python, timeout: 300ms }",
        want.len(),
    );
    assert_one_event_per_record(&preset, &want, "python preset");
    let pattern = ship(
        &text,
        "    multiline: { pattern: '^\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2},\\d{3} ', negate: true, match: after, timeout: 300ms }",
        want.len(),
    );
    assert_one_event_per_record(&pattern, &want, "python pattern");
}

/// Secrets planted in the input, and lines that look like secrets but are not.
const SECRETS: &[&str] = &[
    "alice.smith@example.com",
    "4111 1111 1111 1111",
    "DE89370400440532013000",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZw",
    "tok3n-abcdef-0123456789",
    "AKIAIOSFODNN7EXAMPLE",
    "hunter2-very-secret",
    "s3cr3t-json-value",
    "123-45-6789",
    "user-4711",
];

fn secret_lines() -> Vec<String> {
    vec![
        format!(
            r#"{{"msg":"login by {}","user":{{"id":"{}"}},"password":"{}"}}"#,
            SECRETS[0], SECRETS[9], SECRETS[6]
        ),
        format!(
            r#"{{"msg":"paid with {} from {}","ssn":"{}"}}"#,
            SECRETS[1], SECRETS[2], SECRETS[8]
        ),
        format!(
            r#"{{"msg":"Authorization: Bearer {} jwt={}","secret":"{}"}}"#,
            SECRETS[4], SECRETS[3], SECRETS[7]
        ),
        format!(
            r#"{{"msg":"aws key {} used","note":"order 4111111111111112 for bob@localhost"}}"#,
            SECRETS[5]
        ),
        format!(
            "not json at all: password={} mail {}",
            SECRETS[6], SECRETS[0]
        ),
    ]
}

const REDACT_PROCESSORS: &str = r#"    processors:
      - json: { field: message, target: "" }
      - redact:
          builtins: [email, credit_card, iban, jwt, bearer_token, aws_access_key, password_kv]
          patterns: [{ name: ssn, regex: '\b\d{3}-\d{2}-\d{4}\b' }]
          hash_fields: [user.id]
          hash_key: ${REDACT_KEY}"#;

#[test]
fn redaction_leaves_no_secret_in_the_output_or_the_agents_logs() {
    let sb = Sandbox::new();
    sb.config(&config("", REDACT_PROCESSORS));
    let mut lines = secret_lines();
    // Past the 1 KiB checksum fingerprint, so the file is picked up at once.
    lines.extend((0..10).map(|i| crate::util::line("filler", i)));
    sb.write("logs/app.log", lines.join("\n") + "\n");
    let mut agent = sb.start_with_env(&[("REDACT_KEY", "test-key-0123456789abcdef")]);
    let out = sb.join("out.ndjson");
    wait_until(Duration::from_secs(30), "every event", || {
        read_ndjson(&out).len() >= lines.len()
    });
    assert!(agent.stop().success(), "{}", agent.stderr());
    let text = std::fs::read_to_string(&out).unwrap();
    let stderr = agent.stderr();
    for s in SECRETS {
        assert!(!text.contains(s), "{s} in output:\n{text}");
        assert!(!stderr.contains(s), "{s} in the agent's logs");
    }
    // Near-misses survive, and every redaction says what it was.
    assert!(
        text.contains("4111111111111112") && text.contains("bob@localhost"),
        "{text}"
    );
    for name in [
        "email",
        "credit_card",
        "iban",
        "jwt",
        "bearer_token",
        "aws_access_key",
        "password_kv",
        "ssn",
    ] {
        assert!(
            text.contains(&format!("[REDACTED:{name}]")),
            "no {name} redaction in:\n{text}"
        );
    }
    let events = read_ndjson(&out);
    let id = events[0]["user"]["id"].as_str().unwrap();
    assert_eq!(id.len(), 32, "user.id is a pseudonym: {id}");
}

/// The dead-letter file gets the event as the pipeline left it: run the input's processor
/// chain from the same config, then the dead-letter writer every output's driver uses.
#[test]
fn redaction_happens_before_dead_letters() {
    let sb = Sandbox::new();
    let text = config("", REDACT_PROCESSORS).replace("{dir}", &sb.path().display().to_string());
    let env = |k: &str| (k == "REDACT_KEY").then(|| "test-key-0123456789abcdef".to_owned());
    let cfg = logferry::config::load_str_with_env("agent.yaml", &text, &env).expect("config");
    let mut chain =
        logferry::processors::Chain::build(&cfg.inputs[0].common.processors, "app").expect("chain");
    let mut events: Vec<logferry::event::Event> = secret_lines()
        .iter()
        .map(|l| logferry::event::Event::synthetic("app", l))
        .collect();
    chain.run(&mut events);
    let dl = logferry::outputs::dead_letter::DeadLetters::new(&sb.join("data"), "out", 1 << 20);
    let refs: Vec<(&logferry::event::Event, &str)> = events
        .iter()
        .map(|e| (e, "mapper_parsing_exception"))
        .collect();
    dl.write(&refs);
    let dead = std::fs::read_to_string(dl.path()).unwrap();
    assert_eq!(dead.lines().count(), events.len());
    for s in SECRETS {
        assert!(!dead.contains(s), "{s} in dead letters:\n{dead}");
    }
    assert!(dead.contains("[REDACTED:password_kv]"));
}
