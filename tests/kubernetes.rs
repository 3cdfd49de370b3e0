//! The kubernetes input end to end: the real binary reading CRI fixture trees (several pods,
//! partial `P` lines split across writes and interleaved by stream, kubelet rotation with a
//! later gzip, a pod appearing while the agent runs), and the API enrichment against an
//! in-repo server that answers the Kubernetes pod list and watch calls
//! (`GET /api/v1/pods?fieldSelector=spec.nodeName%3D<node>` with and without `watch=true`,
//! newline-delimited watch events) — no API server can run here.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{Sandbox, read_ndjson, wait_until};

const CONFIG: &str = r#"
data_dir: {dir}/data
api: { enabled: false }
inputs:
  - id: pods
    type: kubernetes
    path: {dir}/pods
    start_at: beginning
    scan_interval: 100ms
    close_inactive: 1s
{extra}
outputs:
  - id: out
    type: file
    path: "{dir}/out.ndjson"
    batch: { max_events: 500, timeout: 50ms }
"#;

fn cri(stream: &str, tag: &str, msg: &str) -> String {
    format!("2024-05-06T07:08:09.123456Z {stream} {tag} {msg}\n")
}

fn append(path: &Path, data: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(data.as_bytes()).unwrap();
}

fn events_of(sb: &Sandbox) -> Vec<Value> {
    read_ndjson(&sb.join("out.ndjson"))
}

fn wait_for(sb: &Sandbox, what: &str, mut f: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    wait_until(Duration::from_secs(30), what, || f(&events_of(sb)));
    events_of(sb)
}

fn by_message(events: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut m: HashMap<String, Vec<Value>> = HashMap::new();
    for e in events {
        m.entry(e["message"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(e.clone());
    }
    m
}

#[test]
fn cri_fixture_tree_partials_rotation_and_new_pods() {
    let sb = Sandbox::new();
    sb.config(&CONFIG.replace("{extra}", ""));
    let web = sb.join("pods/shop_web-1_uid-web/nginx/0.log");
    let side = sb.join("pods/shop_web-1_uid-web/sidecar/0.log");
    let db = sb.join("pods/data_db-0_uid-db/pg/0.log");
    let mut expected: Vec<(String, &str, &str, &str)> = Vec::new(); // message, stream, pod, container
    for i in 0..50 {
        append(&web, &cri("stdout", "F", &format!("web {i}")));
        expected.push((format!("web {i}"), "stdout", "web-1", "nginx"));
    }
    // Partial lines: stdout pieces interleaved with a complete stderr line.
    append(&web, &cri("stdout", "P", "long-"));
    append(&web, &cri("stderr", "F", "an error"));
    append(&web, &cri("stdout", "P", "line-"));
    append(&web, &cri("stdout", "F", "end"));
    expected.push(("long-line-end".into(), "stdout", "web-1", "nginx"));
    expected.push(("an error".into(), "stderr", "web-1", "nginx"));
    append(&side, &cri("stderr", "F", "sidecar up"));
    expected.push(("sidecar up".into(), "stderr", "web-1", "sidecar"));
    append(&db, &cri("stdout", "F", "db ready"));
    expected.push(("db ready".into(), "stdout", "db-0", "pg"));
    let mut agent = sb.start();
    wait_for(&sb, "first events", |e| e.len() >= expected.len());

    // A piece written without its newline, then the rest (a write torn mid-line).
    let torn = cri("stdout", "P", "torn-");
    append(&db, &torn[..10]);
    std::thread::sleep(Duration::from_millis(300));
    append(&db, &torn[10..]);
    append(&db, &cri("stdout", "F", "piece"));
    expected.push(("torn-piece".into(), "stdout", "db-0", "pg"));

    // Kubelet rotation: rename, new 0.log, then the renamed file is gzipped and removed.
    for i in 50..80 {
        append(&web, &cri("stdout", "F", &format!("web {i}")));
        expected.push((format!("web {i}"), "stdout", "web-1", "nginx"));
    }
    let rotated = sb.join("pods/shop_web-1_uid-web/nginx/0.log.20240506-070809");
    std::fs::rename(&web, &rotated).unwrap();
    for i in 80..100 {
        append(&web, &cri("stdout", "F", &format!("web {i}")));
        expected.push((format!("web {i}"), "stdout", "web-1", "nginx"));
    }
    wait_for(&sb, "lines after rotation", |e| {
        e.iter().any(|v| v["message"] == "web 99") && e.iter().any(|v| v["message"] == "web 79")
    });
    let data = std::fs::read(&rotated).unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(sb.join("pods/shop_web-1_uid-web/nginx/0.log.20240506-070809.gz"))
            .unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&data).unwrap();
    gz.finish().unwrap();
    std::fs::remove_file(&rotated).unwrap();

    // A pod that appears while the agent runs.
    let late = sb.join("pods/shop_late-2_uid-late/app/0.log");
    append(&late, &cri("stdout", "F", "late hello"));
    expected.push(("late hello".into(), "stdout", "late-2", "app"));
    // The late pod is found by a scan that came after the .gz appeared: had the glob taken
    // the .gz (or the renamed file) for a new file, its lines would be in by now.
    wait_for(&sb, "every expected line", |e| {
        e.iter().any(|v| v["message"] == "late hello") && e.len() >= expected.len()
    });
    assert!(agent.stop().success());
    let events = events_of(&sb);

    let got = by_message(&events);
    for (msg, stream, pod, container) in &expected {
        let Some(evs) = got.get(msg) else {
            panic!("missing {msg:?}");
        };
        assert_eq!(evs.len(), 1, "{msg:?} must arrive exactly once");
        let e = &evs[0];
        assert_eq!(e["stream"], *stream, "{msg}");
        assert_eq!(e["kubernetes"]["pod"]["name"], *pod, "{msg}");
        assert_eq!(e["kubernetes"]["container"]["name"], *container, "{msg}");
        assert_eq!(e["@timestamp"], "2024-05-06T07:08:09.123456000Z");
        assert_eq!(e["input"]["type"], "kubernetes");
    }
    let e = &got["db ready"][0];
    assert_eq!(e["kubernetes"]["namespace"], "data");
    assert_eq!(e["kubernetes"]["pod"]["uid"], "uid-db");
    assert_eq!(
        events.len(),
        expected.len(),
        "no extra events (rotated/.gz names are not new files)"
    );
}

/// An in-repo Kubernetes API server: the pod list, and one watch stream at a time fed from
/// a channel. Records the request lines it saw.
struct FakeApi {
    port: u16,
    events: Sender<Value>,
    requests: Arc<Mutex<Vec<String>>>,
}

fn pod(uid: &str, name: &str, labels: Value, rv: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "shop", "uid": uid, "resourceVersion": rv,
           "labels": labels, "annotations": {"team": "blue"}}})
}

impl FakeApi {
    fn start(list: Vec<Value>) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = channel::<Value>();
        let rx = Arc::new(Mutex::new(rx));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let rx = rx.clone();
                let reqs = reqs.clone();
                let list = list.clone();
                std::thread::spawn(move || serve(conn, &list, &rx, &reqs));
            }
        });
        FakeApi {
            port,
            events: tx,
            requests,
        }
    }
}

fn serve(conn: TcpStream, list: &[Value], rx: &Mutex<Receiver<Value>>, reqs: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut auth = String::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        if h.to_ascii_lowercase().starts_with("authorization:") {
            auth = h.trim().to_owned();
        }
    }
    reqs.lock()
        .unwrap()
        .push(format!("{} {}", request_line.trim(), auth));
    let mut conn = conn;
    if request_line.contains("watch=true") {
        // One watch at a time holds the channel; events are written as they come.
        let Ok(rx) = rx.lock() else { return };
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
        );
        while let Ok(ev) = rx.recv() {
            let mut line = ev.to_string();
            line.push('\n');
            if conn.write_all(line.as_bytes()).is_err() {
                return;
            }
        }
    } else {
        let body = json!({"kind": "PodList", "apiVersion": "v1",
                          "metadata": {"resourceVersion": "100"}, "items": list})
        .to_string();
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

#[test]
fn api_enrichment_from_list_and_watch_kept_after_deletion() {
    let api = FakeApi::start(vec![pod("uid-a", "a-1", json!({"app": "web"}), "90")]);
    let sb = Sandbox::new();
    sb.write("token", "s3cret\n");
    let extra = format!(
        "    api: true\n    node_name: node-1\n    api_server: http://127.0.0.1:{}\n    token_file: {}\n    metadata_ttl: 1h",
        api.port,
        sb.join("token").display()
    );
    sb.config(&CONFIG.replace("{extra}", &extra));
    let a = sb.join("pods/shop_a-1_uid-a/app/0.log");
    append(&a, &cri("stdout", "F", "a first"));
    let mut agent = sb.start();
    // The list may land after the first scan: lines keep coming until one is labelled.
    let mut i = 0;
    wait_until(Duration::from_secs(30), "a labelled event of pod a", || {
        i += 1;
        append(&a, &cri("stdout", "F", &format!("a probe {i}")));
        std::thread::sleep(Duration::from_millis(50));
        events_of(&sb)
            .iter()
            .any(|e| e["kubernetes"]["labels"]["app"] == "web")
    });
    let e = events_of(&sb)
        .into_iter()
        .find(|e| e["kubernetes"]["labels"]["app"] == "web")
        .unwrap();
    assert_eq!(e["kubernetes"]["annotations"]["team"], "blue");
    assert_eq!(e["kubernetes"]["pod"]["uid"], "uid-a");

    // A pod added through the watch.
    let b = sb.join("pods/shop_b-1_uid-b/app/0.log");
    append(&b, &cri("stdout", "F", "b before"));
    api.events
        .send(json!({"type": "ADDED", "object": pod("uid-b", "b-1", json!({"app": "db"}), "101")}))
        .unwrap();
    let mut j = 0;
    wait_until(Duration::from_secs(30), "a labelled event of pod b", || {
        j += 1;
        append(&b, &cri("stdout", "F", &format!("b probe {j}")));
        std::thread::sleep(Duration::from_millis(50));
        events_of(&sb)
            .iter()
            .any(|e| e["kubernetes"]["labels"]["app"] == "db")
    });

    // Pod b is deleted; a marker pod added after it proves the deletion was processed;
    // b's last lines are still enriched.
    api.events
        .send(
            json!({"type": "DELETED", "object": pod("uid-b", "b-1", json!({"app": "db"}), "102")}),
        )
        .unwrap();
    api.events
        .send(json!({"type": "ADDED", "object": pod("uid-c", "c-1", json!({"app": "marker"}), "103")}))
        .unwrap();
    let c = sb.join("pods/shop_c-1_uid-c/app/0.log");
    let mut k = 0;
    wait_until(Duration::from_secs(30), "a labelled event of pod c", || {
        k += 1;
        append(&c, &cri("stdout", "F", &format!("c probe {k}")));
        std::thread::sleep(Duration::from_millis(50));
        events_of(&sb)
            .iter()
            .any(|e| e["kubernetes"]["labels"]["app"] == "marker")
    });
    append(&b, &cri("stdout", "F", "b after deletion"));
    let events = wait_for(&sb, "b's last line", |e| {
        e.iter().any(|v| v["message"] == "b after deletion")
    });
    let last = events
        .iter()
        .find(|v| v["message"] == "b after deletion")
        .unwrap();
    assert_eq!(last["kubernetes"]["labels"]["app"], "db");
    assert!(agent.stop().success());

    let reqs = api.requests.lock().unwrap().clone();
    assert!(
        reqs.iter().any(
            |r| r.contains("fieldSelector=spec.nodeName%3Dnode-1") && !r.contains("watch=true")
        ),
        "{reqs:?}"
    );
    assert!(
        reqs.iter()
            .any(|r| r.contains("watch=true") && r.contains("resourceVersion=100")),
        "{reqs:?}"
    );
    assert!(
        reqs.iter()
            .all(|r| r.ends_with("authorization: Bearer s3cret")
                || r.ends_with("Authorization: Bearer s3cret")),
        "{reqs:?}"
    );
}
