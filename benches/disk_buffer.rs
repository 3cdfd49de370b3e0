//! Disk buffer throughput: push (encode, append, fsync per policy), pop (read, decode) and
//! acknowledge 20,000 events of ~100-byte lines, per `fsync` policy.
//!
//! `cargo bench --bench disk_buffer`

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use logferry::buffer::DiskBuffer;
use logferry::config::FsyncPolicy;
use logferry::event::{Event, Source, Text};

const N: usize = 20_000;
const PUSH: usize = 500;

fn events() -> Vec<Vec<Event>> {
    let src = Arc::new(Source {
        input_id: Arc::from("app"),
        input_type: "file",
        host_name: Arc::from("host-1"),
        path: Some(Arc::from("/var/log/app/app.log")),
        file_key: Arc::from("fp:0123456789abcdef"),
        meta: None,
        stream: None,
    });
    (0..N / PUSH)
        .map(|b| {
            (0..PUSH)
                .map(|i| {
                    let n = b * PUSH + i;
                    let msg = format!("2026-01-01T00:00:00Z INFO request {n:08} handled in 12ms path=/api/v1/items status=200");
                    Event::new(src.clone(), Text::from(msg), n as u64 * 100, 1)
                })
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("disk_buffer");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    for policy in [
        FsyncPolicy::Never,
        FsyncPolicy::Interval,
        FsyncPolicy::Always,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let buf = DiskBuffer::open(tmp.path(), "bench", 1 << 30, 64 << 20, policy).unwrap();
        g.bench_function(format!("push_pop_ack_{policy:?}").to_lowercase(), |b| {
            b.iter_batched(
                events,
                |batches| {
                    for batch in batches {
                        buf.push(batch).unwrap();
                    }
                    rt.block_on(async {
                        let mut n = 0;
                        while n < N {
                            let got = buf.pop(2000).await.unwrap();
                            n += got.len();
                            for mut e in got {
                                e.finalizer.resolve();
                            }
                        }
                    });
                },
                BatchSize::PerIteration,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
