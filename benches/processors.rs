//! Throughput of each processor, in events per second (criterion's `thrpt`), on lines shaped
//! like the end-to-end harness's (`/work/shared/bench/gen_logs.py`: ~250-byte JSON and plain
//! lines). Each iteration processes one batch of `BATCH` fresh events, as the pipeline does;
//! building the batch is done outside the timed section.
//!
//!     cargo bench --bench processors

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use logferry::event::Event;
use logferry::processors::multiline::{LineIn, MultilineConfig};
use logferry::processors::{Chain, ProcessorConfig};

const BATCH: usize = 1000;

fn json_line(i: usize) -> String {
    format!(
        r#"{{"ts":"2024-05-01T12:{:02}:{:02}.{:03}Z","level":"info","service":"checkout","seq":{i},"request_id":"9f2c4e1a7b3d4c5e8f901a2b3c4d5e6f","method":"GET","path":"/api/v1/orders/{}","status":200,"latency_ms":{}.{:03},"msg":"handler processed request batch commit queue worker upstream {}"}}"#,
        (i / 60) % 60,
        i % 60,
        i % 1000,
        i * 7,
        i % 250,
        i % 1000,
        i
    )
}

fn plain_line(i: usize) -> String {
    format!(
        "2024-05-01T12:00:00.{:03}Z INFO  checkout[node-07] seq={i} req=9f2c4e1a7b3d4c5e8f901a2b3c4d5e6f GET /api/v1/orders/{} status=200 latency_ms=12.5 ua=\"curl/8.5\" msg=\"handler processed request batch commit queue worker\"",
        i % 1000,
        i * 7
    )
}

fn chain(yaml: &str) -> Chain {
    // Through a JSON value, as the config loader does (externally tagged enums).
    let v: serde_json::Value = serde_yaml_ng::from_str(yaml).expect("bench yaml");
    let cfgs: Vec<ProcessorConfig> = serde_json::from_value(v).expect("bench config");
    Chain::build(&cfgs, "bench").expect("bench chain")
}

fn events(lines: &[String]) -> Vec<Event> {
    lines.iter().map(|l| Event::synthetic("bench", l)).collect()
}

fn bench_chain(c: &mut Criterion, name: &str, yaml: &str, lines: &[String], prep: Option<&str>) {
    let mut g = c.benchmark_group("processors");
    g.throughput(Throughput::Elements(lines.len() as u64));
    let mut ch = chain(yaml);
    let mut pre = prep.map(chain);
    g.bench_function(name, |b| {
        b.iter_batched(
            || {
                let mut v = events(lines);
                if let Some(p) = &mut pre {
                    p.run(&mut v);
                }
                v
            },
            |mut v| {
                ch.run(&mut v);
                black_box(v)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// A chain, then encoding (`write_json`, as every output does) and dropping the events, all
/// timed: what a processor leaves for the output thread to do counts too.
fn bench_end_to_end(c: &mut Criterion, name: &str, yaml: &str, lines: &[String]) {
    let mut g = c.benchmark_group("processors");
    g.throughput(Throughput::Elements(lines.len() as u64));
    let mut ch = chain(yaml);
    let mut out = Vec::with_capacity(1 << 20);
    g.bench_function(name, |b| {
        b.iter_batched(
            || events(lines),
            |mut v| {
                ch.run(&mut v);
                out.clear();
                for e in &v {
                    e.write_json(&mut out);
                    out.push(b'\n');
                }
                drop(v);
                black_box(out.len())
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn processors(c: &mut Criterion) {
    let json: Vec<String> = (0..BATCH).map(json_line).collect();
    let plain: Vec<String> = (0..BATCH).map(plain_line).collect();
    bench_chain(
        c,
        "json",
        r#"[{ json: { field: message, target: "" } }]"#,
        &json,
        None,
    );
    bench_chain(
        c,
        "timestamp_rfc3339",
        "[{ timestamp: { field: ts, formats: [rfc3339], remove: true } }]",
        &json,
        Some(r#"[{ json: { field: message, target: "" } }]"#),
    );
    let nginx: Vec<String> = (0..BATCH)
        .map(|i| format!("{:02}/May/2024:12:00:{:02} +0200", i % 28 + 1, i % 60))
        .collect();
    bench_chain(
        c,
        "timestamp_strftime",
        "[{ timestamp: { field: message, formats: ['%d/%b/%Y:%H:%M:%S %z'] } }]",
        &nginx,
        None,
    );
    bench_chain(c, "redact_plain_message", "[{ redact: {} }]", &plain, None);
    bench_chain(
        c,
        "redact_json_fields",
        "[{ redact: {} }]",
        &json,
        Some(r#"[{ json: { field: message, target: "" } }]"#),
    );
    let secrets: Vec<String> = (0..BATCH)
        .map(|i| {
            format!(
                "{} user{i}@example.com paid 4111 1111 1111 1111 password=hunter{i}",
                plain_line(i)
            )
        })
        .collect();
    bench_chain(c, "redact_with_secrets", "[{ redact: {} }]", &secrets, None);
    bench_chain(
        c,
        "json+redact",
        r#"[{ json: { field: message, target: "" } }, { redact: {} }]"#,
        &json,
        None,
    );
    bench_end_to_end(c, "none+encode", "[]", &json);
    bench_end_to_end(
        c,
        "json+encode",
        r#"[{ json: { field: message, target: "" } }]"#,
        &json,
    );
    bench_end_to_end(
        c,
        "json+redact+encode",
        r#"[{ json: { field: message, target: "" } }, { redact: {} }]"#,
        &json,
    );
    // A field read by path (a condition, an index template) decodes the object.
    bench_end_to_end(
        c,
        "json+read_field+encode",
        r#"[{ json: { field: message, target: "" } }, { drop_event: { when: { field: level, equals: debug } } }]"#,
        &json,
    );
    // Every line carries a secret in a field: the redact prefilter hits, fields are decoded.
    let json_secrets: Vec<String> = json
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.replacen(
                "\"method\"",
                &format!("\"email\":\"user{i}@example.com\",\"method\""),
                1,
            )
        })
        .collect();
    bench_end_to_end(
        c,
        "json+redact+encode_with_secrets",
        r#"[{ json: { field: message, target: "" } }, { redact: {} }]"#,
        &json_secrets,
    );
}

/// Multiline joining of a Java-style log (a header, then 10 trace lines) through the same
/// `Joiner` the file reader drives; throughput counted in lines.
fn multiline(c: &mut Criterion) {
    let mut lines = Vec::new();
    for i in 0..BATCH / 11 {
        lines.push(format!(
            "2024-05-01 12:00:00,{i:03} ERROR [main] c.e.App - request {i} failed"
        ));
        lines.push("java.lang.IllegalStateException: boom".to_owned());
        for f in 0..8 {
            lines.push(format!(
                "\tat com.example.App.level{f}(App.java:{})",
                10 + f
            ));
        }
        lines.push("\t... 12 more".to_owned());
    }
    let lines: Vec<Bytes> = lines.into_iter().map(Bytes::from).collect();
    let mut g = c.benchmark_group("multiline");
    g.throughput(Throughput::Elements(lines.len() as u64));
    for (name, yaml) in [
        (
            "pattern",
            r"{ pattern: '^\d{4}-\d{2}-\d{2} ', negate: true, match: after }",
        ),
        ("preset_java", "{ preset: java }"),
    ] {
        let cfg: MultilineConfig = serde_yaml_ng::from_str(yaml).expect("bench config");
        let mut j = cfg.joiner(1 << 20).expect("joiner");
        let mut out = Vec::with_capacity(lines.len());
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let now = Instant::now();
                let mut off = 0u64;
                for l in &lines {
                    let end = off + l.len() as u64 + 1;
                    j.push(
                        LineIn {
                            text: l.clone(),
                            offset: off,
                            end,
                            truncated: false,
                        },
                        now,
                        &mut out,
                    );
                    off = end;
                }
                j.flush_into(&mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, processors, multiline);
criterion_main!(benches);
