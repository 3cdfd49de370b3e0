//! Model test of the file follower (after Vector's file-source model tests): random sequences
//! of writes, rename rotations (with the writer still appending to the old handle),
//! copytruncates and deletions run against the real follower thread; after each step the
//! lines delivered must equal, as a multiset, every line the model says was written — no
//! loss, no duplicate.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::buffer::{Buffer, MemoryBuffer};
use crate::config::{InputCommon, WhenFull};
use crate::inputs::file::FileInputConfig;
use crate::inputs::{InputContext, InputSpec};
use crate::positions::Positions;
use crate::processors::Chain;
use crate::router::{Pipeline, Route};

#[derive(Debug, Clone)]
enum Op {
    /// Append n lines to the live file `f`.
    Write(usize, usize),
    /// Rename `f` to a rotated name and create a new live file; the old handle writes k more.
    Rotate(usize, usize),
    /// Truncate `f` in place (copytruncate).
    Truncate(usize),
    /// Delete `f`.
    Delete(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..3, 1usize..40).prop_map(|(f, n)| Op::Write(f, n)),
        1 => (0usize..3, 0usize..10).prop_map(|(f, k)| Op::Rotate(f, k)),
        1 => (0usize..3).prop_map(Op::Truncate),
        1 => (0usize..3).prop_map(Op::Delete),
    ]
}

struct Harness {
    dir: tempfile::TempDir,
    buffer: Arc<MemoryBuffer>,
    rt: tokio::runtime::Runtime,
    got: HashMap<String, usize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let buffer = Arc::new(MemoryBuffer::new("m", 100_000, 1 << 30, WhenFull::Block));
        let common: InputCommon = serde_json::from_value(serde_json::json!({
            "id": "m", "type": "file", "start_at": "beginning"
        }))
        .unwrap();
        let cfg: FileInputConfig = serde_json::from_value(serde_json::json!({
            "paths": [format!("{}/*.log", dir.path().display())],
            "scan_interval": "20ms",
            "close_inactive": "300ms",
            "fingerprint": { "strategy": "checksum", "bytes": 16 },
        }))
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let pipeline = Pipeline::new(
            "m",
            Chain::default(),
            vec![Route {
                output: "o".into(),
                when: None,
                buffer: Buffer::Memory(buffer.clone()),
            }],
            serde_json::Map::new(),
        );
        let handle = cfg
            .start(
                &common,
                InputContext {
                    host_name: Arc::from("h"),
                    positions: Positions::ephemeral(),
                    pipeline,
                    stop: stop.clone(),
                    data_dir: dir.path().to_path_buf(),
                },
            )
            .unwrap();
        Harness {
            dir,
            buffer,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            got: HashMap::new(),
            stop,
            thread: Some(handle.thread),
        }
    }

    fn live(&self, f: usize) -> PathBuf {
        self.dir.path().join(format!("f{f}.log"))
    }

    /// Drains delivered events until the multiset equals `want` (or the deadline passes).
    fn settle(&mut self, want: &HashMap<String, usize>) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let batch = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_millis(30), self.buffer.pop(10_000))
                    .await
                    .ok()
                    .flatten()
            });
            if let Some(events) = batch {
                for mut e in events {
                    *self.got.entry(e.message_str().to_owned()).or_default() += 1;
                    e.finalizer.resolve();
                }
            }
            if &self.got == want {
                return Ok(());
            }
            if let Some((k, n)) = self
                .got
                .iter()
                .find(|(k, n)| **n > want.get(*k).copied().unwrap_or(0))
            {
                return Err(format!(
                    "line {k:?} delivered {n} times, written {}",
                    want.get(k).copied().unwrap_or(0)
                ));
            }
            if Instant::now() > deadline {
                let missing: Vec<&String> = want
                    .keys()
                    .filter(|k| !self.got.contains_key(*k))
                    .take(5)
                    .collect();
                return Err(format!("missing lines after 5s, e.g. {missing:?}"));
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.buffer.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_lines(
    path: &std::path::Path,
    tag: &str,
    n: usize,
    seq: &mut usize,
    want: &mut HashMap<String, usize>,
) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buf = String::new();
    for _ in 0..n {
        *seq += 1;
        let l = format!("{tag} {seq:08} {}", "z".repeat(40));
        buf.push_str(&l);
        buf.push('\n');
        *want.entry(l).or_default() += 1;
    }
    f.write_all(buf.as_bytes()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 20, ..ProptestConfig::default() })]
    #[test]
    fn follower_matches_model(ops in proptest::collection::vec(op(), 1..14)) {
        let mut h = Harness::new();
        let mut want: HashMap<String, usize> = HashMap::new();
        let mut seq = 0usize;
        let mut rotations = 0usize;
        for (step, op) in ops.iter().enumerate() {
            match op {
                Op::Write(f, n) => write_lines(&h.live(*f), &format!("w{f}"), *n, &mut seq, &mut want),
                Op::Rotate(f, k) => {
                    let live = h.live(*f);
                    if live.exists() {
                        let old = std::fs::OpenOptions::new().append(true).open(&live).unwrap();
                        rotations += 1;
                        let rotated = h.dir.path().join(format!("f{f}.log.{rotations}"));
                        std::fs::rename(&live, &rotated).unwrap();
                        drop(old);
                        // The writer still holds the old handle.
                        write_lines(&rotated, &format!("old{f}"), *k, &mut seq, &mut want);
                        write_lines(&live, &format!("w{f}"), 3, &mut seq, &mut want);
                    }
                }
                Op::Truncate(f) => {
                    let live = h.live(*f);
                    if live.exists() {
                        std::fs::OpenOptions::new().write(true).truncate(true).open(&live).unwrap();
                        write_lines(&live, &format!("t{f}"), 2, &mut seq, &mut want);
                    }
                }
                Op::Delete(f) => {
                    let live = h.live(*f);
                    if live.exists() {
                        std::fs::remove_file(&live).unwrap();
                    }
                }
            }
            if let Err(e) = h.settle(&want) {
                prop_assert!(false, "after step {step} ({op:?}) of {ops:?}: {e}");
            }
        }
    }
}
