//! Hot functions of the file path: splitting lines, building events, encoding them as JSON,
//! and the ordered acker. `cargo bench --bench hot_paths`; figures in docs/benchmarks.md.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logferry::ack::{Finalizer, OrderedAcker};
use logferry::event::{Event, Source, Text};
use logferry::inputs::file::lines::LineSplitter;

fn sample_lines(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n * 250);
    for i in 0..n {
        v.extend_from_slice(
            format!(
                "2026-11-26T10:00:00.{i:06}Z INFO [worker-{}] request id={i:08} path=/api/v1/items/{} status=200 bytes={} duration_ms={} user_agent=\"Mozilla/5.0 (X11; Linux x86_64)\" msg=\"handled request in the usual way\" {}\n",
                i % 8,
                i % 1000,
                i * 7 % 9000,
                i % 300,
                "x".repeat(40)
            )
            .as_bytes(),
        );
    }
    v
}

fn bench(c: &mut Criterion) {
    let data = sample_lines(10_000);
    let n = 10_000u64;
    let mut g = c.benchmark_group("file_path");
    g.throughput(Throughput::Elements(n));
    g.bench_function("split_lines", |b| {
        b.iter(|| {
            let mut s = LineSplitter::new(0, 1 << 20);
            let mut r = &data[..];
            let mut count = 0;
            while s.read_from(&mut r, 64 * 1024).unwrap_or(0) > 0 {
                while s.next_line().is_some() {
                    count += 1;
                }
            }
            assert_eq!(count, n);
        })
    });
    let source = Arc::new(Source {
        input_id: Arc::from("bench"),
        input_type: "file",
        host_name: Arc::from("host-1"),
        path: Some(Arc::from("/var/log/app/app.log")),
        file_key: Arc::from("crc64:0"),
        meta: None,
        stream: None,
    });
    let lines: Vec<Bytes> = {
        let b = Bytes::from(data.clone());
        let mut out = Vec::new();
        let mut start = 0;
        for (i, byte) in data.iter().enumerate() {
            if *byte == b'\n' {
                out.push(b.slice(start..i));
                start = i + 1;
            }
        }
        out
    };
    g.bench_function("build_events", |b| {
        b.iter(|| {
            let v: Vec<Event> = lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    Event::new(
                        source.clone(),
                        Text::from_bytes_lossy(l.clone()).0,
                        i as u64,
                        0,
                    )
                })
                .collect();
            v.len()
        })
    });
    let events: Vec<Event> = lines
        .iter()
        .map(|l| {
            Event::new(
                source.clone(),
                Text::from_bytes_lossy(l.clone()).0,
                0,
                1_700_000_000_000_000_000,
            )
        })
        .collect();
    g.bench_function("encode_json", |b| {
        let mut out = Vec::with_capacity(4 << 20);
        b.iter(|| {
            out.clear();
            for e in &events {
                e.write_json(&mut out);
                out.push(b'\n');
            }
            out.len()
        })
    });
    g.bench_function("ack_batches_of_500", |b| {
        b.iter(|| {
            let acker = OrderedAcker::new(0);
            for batch in 0..(n / 500) {
                let tok = acker.issue((batch + 1) * 500);
                let mut fins: Vec<Finalizer> =
                    (0..500).map(|_| Finalizer::new(tok.clone())).collect();
                drop(tok);
                for f in &mut fins {
                    f.resolve();
                }
            }
            acker.committed()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
