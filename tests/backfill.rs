//! `logferry backfill`: whole files, gzip, rotated sets oldest first, time filters, exit
//! statuses, and the daemon's positions left alone.

use std::io::Write;

use crate::util::{Sandbox, line, read_ndjson};

const CFG: &str = r#"
data_dir: {dir}/data
api: { enabled: false }
inputs:
  - id: app
    type: file
    paths: ["{dir}/logs/*.log"]
outputs:
  - id: out
    type: file
    path: "{dir}/out.ndjson"
"#;

fn gz(path: &std::path::Path, text: &str) {
    let f = std::fs::File::create(path).unwrap();
    let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap();
}

fn lines(tag: &str, n: usize) -> String {
    (0..n).map(|i| line(tag, i) + "\n").collect()
}

#[test]
fn reads_a_plain_and_gz_rotated_set_oldest_first() {
    let sb = Sandbox::new();
    sb.config(CFG);
    std::fs::create_dir_all(sb.join("logs")).unwrap();
    gz(&sb.join("logs/x.log.2.gz"), &lines("oldest", 100));
    sb.write("logs/x.log.1", lines("middle", 100));
    // The live file ends without a newline: backfill ships that last line too.
    sb.write("logs/x.log", lines("newest", 99) + &line("newest", 99));
    let cfg = sb.join("agent.yaml");
    let (st, _out, err) = sb.run_cmd(&["backfill", "-c", cfg.to_str().unwrap()]);
    assert!(st.success(), "{err}");
    assert!(err.contains("backfill: 3 files"), "summary line: {err}");
    let events = read_ndjson(&sb.join("out.ndjson"));
    assert_eq!(events.len(), 300);
    let msgs: Vec<&str> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(msgs[0], line("oldest", 0));
    assert_eq!(msgs[100], line("middle", 0));
    assert_eq!(msgs[299], line("newest", 99));
    assert!(
        !sb.join("data/positions.json").exists(),
        "backfill never writes the daemon's positions"
    );
}

#[test]
fn explicit_paths_and_time_filter() {
    let sb = Sandbox::new();
    sb.config(&CFG.replace(
        "    paths: [\"{dir}/logs/*.log\"]\n",
        "    paths: [\"{dir}/logs/*.log\"]\n    processors:\n      - rename_fields: { fields: { message: msg } }\n",
    ));
    let p = sb.write("elsewhere/a.log", lines("a", 10));
    let cfg = sb.join("agent.yaml");
    // Everything was read "now": --until in the past keeps nothing, --since in the past keeps all.
    let (st, _o, err) = sb.run_cmd(&[
        "backfill",
        "-c",
        cfg.to_str().unwrap(),
        "--until",
        "2000-01-01",
        p.to_str().unwrap(),
    ]);
    assert!(st.success(), "{err}");
    assert_eq!(read_ndjson(&sb.join("out.ndjson")).len(), 0);
    let (st, _o, err) = sb.run_cmd(&[
        "backfill",
        "-c",
        cfg.to_str().unwrap(),
        "--since",
        "1h",
        p.to_str().unwrap(),
    ]);
    assert!(st.success(), "{err}");
    let events = read_ndjson(&sb.join("out.ndjson"));
    assert_eq!(events.len(), 10);
    assert_eq!(events[0]["msg"], line("a", 0), "the input's processors ran");
}

#[test]
fn bad_config_exits_78() {
    let sb = Sandbox::new();
    sb.config("inputs: []\noutputs: []\nbogus: 1\n");
    let (st, _o, err) = sb.run_cmd(&["backfill", "-c", sb.join("agent.yaml").to_str().unwrap()]);
    assert_eq!(st.code(), Some(78), "{err}");
}
