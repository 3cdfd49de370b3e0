//! The running agent: builds outputs (buffer + driver), inputs (thread + pipeline), the
//! positions flusher and the API from a [`Config`], and tears them down in the order that
//! keeps the delivery promise.
//!
//! Shutdown (SIGTERM/SIGINT): inputs stop reading and flush pending multiline events; the
//! buffers close; each driver sends what it holds; the agent waits up to `shutdown_timeout`
//! for acknowledgements; positions are written last, so they never pass undelivered bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::buffer::{Buffer, MemoryBuffer};
use crate::config::{BufferType, Config};
use crate::inputs::{InputContext, InputHandle, InputStatus};
use crate::outputs::dead_letter::{DEFAULT_MAX_BYTES, DeadLetters};
use crate::outputs::driver::Driver;
use crate::outputs::stats::{OutputStats, OutputStatus};
use crate::outputs::{Output, OutputContext};
use crate::positions::Positions;
use crate::processors::Chain;
use crate::processors::condition::Condition;
use crate::router::{Pipeline, Route, TimeFilter};

/// A built output: what the router feeds and what the API reports.
pub struct RunningOutput {
    pub id: String,
    pub kind: String,
    pub buffer: Buffer,
    pub stats: Arc<OutputStats>,
    pub dead_letters: Arc<DeadLetters>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Live view of the agent for the API.
pub struct AgentState {
    pub inputs: Mutex<Vec<Arc<Mutex<InputStatus>>>>,
    pub outputs: Mutex<Vec<(String, String, Buffer, Arc<OutputStats>)>>,
    pub started: Instant,
}

impl AgentState {
    pub fn status(&self) -> crate::api::Status {
        let inputs = self
            .inputs
            .lock()
            .map(|v| {
                v.iter()
                    .filter_map(|s| s.lock().ok().map(|s| s.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let outputs: Vec<OutputStatus> = self
            .outputs
            .lock()
            .map(|v| {
                v.iter()
                    .map(|(id, kind, b, s)| s.snapshot(id, kind, b))
                    .collect()
            })
            .unwrap_or_default();
        crate::api::Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            healthy: outputs.iter().all(|o| !o.failing),
            inputs,
            outputs,
        }
    }
}

/// Builds each output's buffer, dead letters, backend and driver task.
pub fn start_outputs(cfg: &Config) -> anyhow::Result<Vec<RunningOutput>> {
    let mut out = Vec::new();
    for o in &cfg.outputs {
        let id = o.common.id.clone();
        let b = &o.common.buffer;
        let buffer = match b.kind {
            BufferType::Memory => Buffer::Memory(Arc::new(MemoryBuffer::new(
                &id,
                b.memory_max_events(),
                b.memory_max_bytes().0 as usize,
                b.when_full.unwrap_or_default(),
            ))),
            BufferType::Disk => {
                anyhow::bail!("{}: the disk buffer is not available in this build (use type: memory)", o.path)
            }
        };
        let ctx = OutputContext {
            id: id.clone(),
            data_dir: cfg.data_dir.clone(),
            host_name: cfg.host_name.clone(),
        };
        let backend: Arc<dyn Output> = o
            .kind
            .spec
            .build(&ctx)
            .with_context(|| format!("output `{id}`"))?;
        let stats = Arc::new(OutputStats::default());
        let dead_letters = Arc::new(DeadLetters::new(&cfg.data_dir, &id, DEFAULT_MAX_BYTES));
        let driver = Driver {
            id: id.clone(),
            output: backend,
            buffer: buffer.clone(),
            batch: o.common.batch.clone(),
            max_in_flight: o.common.max_in_flight,
            retry: o.common.retry.clone(),
            dead_letters: dead_letters.clone(),
            stats: stats.clone(),
        };
        let task = tokio::spawn(driver.run());
        out.push(RunningOutput {
            id,
            kind: o.kind.name.to_owned(),
            buffer,
            stats,
            dead_letters,
            task,
        });
    }
    Ok(out)
}

/// The pipeline of input `idx`: its processors and the routes to the outputs that take it.
pub fn pipeline_for(
    cfg: &Config,
    idx: usize,
    outputs: &[RunningOutput],
) -> anyhow::Result<Pipeline> {
    let input = &cfg.inputs[idx];
    let id = &input.common.id;
    let chain = Chain::build(&input.common.processors, id).map_err(anyhow::Error::msg)?;
    let mut routes = Vec::new();
    for (oc, ro) in cfg.outputs.iter().zip(outputs) {
        let takes = oc
            .common
            .inputs
            .as_ref()
            .is_none_or(|ins| ins.iter().any(|i| i == id));
        if !takes {
            continue;
        }
        let when = match &oc.common.when {
            Some(w) => Some(Condition::compile(w).map_err(anyhow::Error::msg)?),
            None => None,
        };
        routes.push(Route {
            output: ro.id.clone(),
            when,
            buffer: ro.buffer.clone(),
        });
    }
    Ok(Pipeline::new(
        id,
        chain,
        routes,
        input.common.fields.clone(),
    ))
}

/// Registers every metric the spec names at 0, so dashboards see them from the start.
pub fn register_metrics(cfg: &Config) {
    for i in &cfg.inputs {
        let id = i.common.id.clone();
        metrics::counter!("logferry_input_events_total", "input" => id.clone()).increment(0);
        metrics::counter!("logferry_input_bytes_total", "input" => id.clone()).increment(0);
        metrics::gauge!("logferry_files_open", "input" => id.clone()).set(0.0);
        metrics::gauge!("logferry_input_lag_bytes", "input" => id).set(0.0);
    }
    for o in &cfg.outputs {
        let id = o.common.id.clone();
        for result in ["sent", "dead_letter", "dropped"] {
            metrics::counter!("logferry_output_events_total", "output" => id.clone(), "result" => result).increment(0);
        }
        metrics::counter!("logferry_output_retries_total", "output" => id.clone()).increment(0);
        metrics::gauge!("logferry_buffer_events", "output" => id.clone()).set(0.0);
        let _ = metrics::histogram!("logferry_output_request_seconds", "output" => id);
    }
}

/// Runs the daemon until SIGTERM/SIGINT, then drains. `ready` is called once running.
pub async fn run(cfg: Config, ready: impl FnOnce()) -> anyhow::Result<()> {
    crate::util::private_dir(&cfg.data_dir)
        .with_context(|| format!("cannot create data_dir {}", cfg.data_dir.display()))?;
    let (positions, warning) = Positions::load(&cfg.data_dir, cfg.positions.ttl.0);
    if let Some(w) = warning {
        tracing::error!("{w}");
        metrics::counter!("logferry_positions_corrupt_total").increment(1);
    }
    register_metrics(&cfg);
    let outputs = start_outputs(&cfg)?;
    let stop = Arc::new(AtomicBool::new(false));
    let host: Arc<str> = Arc::from(cfg.host_name.as_str());
    let mut inputs: Vec<InputHandle> = Vec::new();
    for (idx, ic) in cfg.inputs.iter().enumerate() {
        let pipeline = pipeline_for(&cfg, idx, &outputs)?;
        let ctx = InputContext {
            host_name: host.clone(),
            positions: positions.clone(),
            pipeline,
            stop: stop.clone(),
            data_dir: cfg.data_dir.clone(),
        };
        let h = ic
            .kind
            .spec
            .start(&ic.common, ctx)
            .with_context(|| format!("input `{}`", ic.common.id))?;
        inputs.push(h);
    }
    let state = Arc::new(AgentState {
        inputs: Mutex::new(inputs.iter().map(|h| h.status.clone()).collect()),
        outputs: Mutex::new(
            outputs
                .iter()
                .map(|o| {
                    (
                        o.id.clone(),
                        o.kind.clone(),
                        o.buffer.clone(),
                        o.stats.clone(),
                    )
                })
                .collect(),
        ),
        started: Instant::now(),
    });

    // Positions flusher and buffer gauges.
    let flusher = {
        let positions = positions.clone();
        let every = cfg.positions.flush_interval.0;
        let gauges: Vec<(metrics::Gauge, Buffer)> = outputs
            .iter()
            .map(|o| {
                (
                    metrics::gauge!("logferry_buffer_events", "output" => o.id.clone()),
                    o.buffer.clone(),
                )
            })
            .collect();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for (g, b) in &gauges {
                    g.set(b.len() as f64);
                }
                let p = positions.clone();
                match tokio::task::spawn_blocking(move || p.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot write positions"),
                    Err(e) => tracing::error!(error = %e, "positions writer failed"),
                }
            }
        })
    };

    let api = if cfg.api.enabled {
        Some(crate::api::serve(&cfg.api.listen, state.clone()).await?)
    } else {
        None
    };

    ready();
    tracing::info!(
        inputs = cfg.inputs.len(),
        outputs = cfg.outputs.len(),
        "logferry running"
    );
    wait_for_signal().await;
    tracing::info!("stopping: draining inputs and outputs");
    let deadline = Instant::now() + cfg.shutdown_timeout.0;

    // 1. Inputs stop reading and flush what they hold.
    stop.store(true, Ordering::SeqCst);
    let threads: Vec<std::thread::JoinHandle<()>> = inputs.into_iter().map(|h| h.thread).collect();
    let joined = join_threads_until(threads, Instant::now() + Duration::from_secs(2)).await;
    // 2. No more events: close the buffers (unblocks an input stuck on a full buffer).
    for o in &outputs {
        o.buffer.close();
    }
    if let Some(rest) = joined {
        let _ = join_threads_until(rest, deadline).await;
    }
    // 3. Drivers send what they hold, until the deadline.
    let mut pending: HashMap<String, tokio::task::JoinHandle<()>> =
        outputs.into_iter().map(|o| (o.id, o.task)).collect();
    for (id, task) in pending.drain() {
        let left = deadline.saturating_duration_since(Instant::now());
        let abort = task.abort_handle();
        if tokio::time::timeout(left, task).await.is_err() {
            tracing::warn!(output = %id, "shutdown_timeout reached with events unacknowledged; they will be sent again after restart");
            abort.abort();
        }
    }
    // 4. Positions last.
    flusher.abort();
    if let Some(api) = api {
        api.abort();
    }
    let p = positions.clone();
    tokio::task::spawn_blocking(move || p.flush())
        .await
        .context("positions writer failed")?
        .context("cannot write positions at shutdown")?;
    tracing::info!("stopped");
    Ok(())
}

/// Joins threads without blocking the runtime; returns those still running at `deadline`.
async fn join_threads_until(
    threads: Vec<std::thread::JoinHandle<()>>,
    deadline: Instant,
) -> Option<Vec<std::thread::JoinHandle<()>>> {
    let mut left = threads;
    loop {
        let (done, running): (Vec<_>, Vec<_>) = left.into_iter().partition(|t| t.is_finished());
        for t in done {
            let _ = t.join();
        }
        if running.is_empty() {
            return None;
        }
        if Instant::now() >= deadline {
            return Some(running);
        }
        left = running;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Builds a pipeline for backfill (no positions) — see `backfill.rs`.
pub fn backfill_pipeline(
    cfg: &Config,
    idx: usize,
    outputs: &[RunningOutput],
    filter: TimeFilter,
) -> anyhow::Result<Pipeline> {
    Ok(pipeline_for(cfg, idx, outputs)?.with_filter(filter))
}
