//! Encoder benchmarks for the network outputs: the work each output does per batch before
//! the bytes reach the socket, on 2,000 events of ~250-byte lines (the driver's default
//! batch).
//!
//! `cargo bench --bench outputs` — figures are recorded in docs/benchmarks.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logferry::event::{Event, Source, Text};
use logferry::outputs::logstash::frame::WindowEncoder;
use logferry::outputs::loki::encode::{self, LineMode, Shape};
use logferry::outputs::template::Template;

fn events(n: usize) -> Vec<Event> {
    let source = Arc::new(Source {
        input_id: Arc::from("app"),
        input_type: "file",
        host_name: Arc::from("bench-host"),
        path: Some(Arc::from("/var/log/app/app.log")),
        file_key: Arc::from("k"),
        meta: None,
        stream: None,
    });
    (0..n)
        .map(|i| {
            let line = format!(
                "2024-05-01T12:00:{:02}.{:03}Z INFO  [worker-{}] request handled method=GET path=/api/v1/items/{} status=200 duration_ms={} user=u{} seq={i} {}",
                i % 60,
                i % 1000,
                i % 16,
                i * 7,
                i % 500,
                i % 9973,
                "x".repeat(60)
            );
            Event::new(source.clone(), Text::from(line), i as u64 * 250, 1_714_564_800_000_000_000 + i as i64)
        })
        .collect()
}

fn lumberjack(c: &mut Criterion) {
    let ev = events(2000);
    let mut g = c.benchmark_group("lumberjack_window");
    g.throughput(Throughput::Elements(ev.len() as u64));
    let mut enc = WindowEncoder::new();
    let mut out = Vec::new();
    for level in [0u32, 3] {
        g.bench_function(format!("compression_level_{level}"), |b| {
            b.iter(|| {
                enc.encode(black_box(&ev), level, &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn loki(c: &mut Criterion) {
    let ev = events(2000);
    let shape = Shape {
        labels: vec![
            ("host".into(), Template::parse("{{ host.name }}").unwrap()),
            ("job".into(), Template::parse("{{ input.id }}").unwrap()),
            (
                "level".into(),
                Template::parse("{{ level | default: \"info\" }}").unwrap(),
            ),
        ],
        metadata: Vec::new(),
        line: LineMode::Message,
    };
    let mut g = c.benchmark_group("loki_push");
    g.throughput(Throughput::Elements(ev.len() as u64));
    let mut s = encode::Scratch::default();
    let mut raw = Vec::new();
    g.bench_function("prepare_protobuf_snappy", |b| {
        b.iter(|| {
            let p = shape.prepare(black_box(&ev));
            black_box(encode::encode_snappy(&ev, &p, &mut s).len())
        })
    });
    let p = shape.prepare(&ev);
    g.bench_function("protobuf_snappy_only", |b| {
        b.iter(|| black_box(encode::encode_snappy(black_box(&ev), &p, &mut s).len()))
    });
    g.bench_function("prepare_json", |b| {
        b.iter(|| {
            let p = shape.prepare(black_box(&ev));
            raw.clear();
            encode::encode_json(&ev, &p, &mut raw);
            black_box(raw.len())
        })
    });
    g.finish();
}

criterion_group!(benches, lumberjack, loki);
criterion_main!(benches);
