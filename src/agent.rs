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

use crate::buffer::{Buffer, DiskBuffer, MemoryBuffer};
use crate::config::{BufferType, Config, OutputConfig};
use crate::inputs::{InputContext, InputHandle, InputStatus};
use crate::outputs::dead_letter::{DEFAULT_MAX_BYTES, DeadLetters};
use crate::outputs::driver::Driver;
use crate::outputs::stats::{OutputStats, OutputStatus};
use crate::outputs::{Output, OutputContext};
use crate::positions::Positions;
use crate::processors::Chain;
use crate::processors::condition::Condition;
use crate::router::{Pipeline, Route, RouteTable, TimeFilter};

/// A built output: what the router feeds and what the API reports.
pub struct RunningOutput {
    pub id: String,
    pub kind: String,
    pub buffer: Buffer,
    pub stats: Arc<OutputStats>,
    pub dead_letters: Arc<DeadLetters>,
    pub task: tokio::task::JoinHandle<()>,
}

/// One output as the API sees it.
pub struct OutputEntry {
    pub id: String,
    pub kind: String,
    pub buffer: Buffer,
    pub stats: Arc<OutputStats>,
}

/// Live view of the agent for the API.
pub struct AgentState {
    pub inputs: Mutex<Vec<Arc<Mutex<InputStatus>>>>,
    pub outputs: Mutex<Vec<OutputEntry>>,
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
                    .map(|o| o.stats.snapshot(&o.id, &o.kind, &o.buffer))
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
    cfg.outputs.iter().map(|o| start_output(cfg, o)).collect()
}

/// Builds one output's buffer, dead letters, backend and driver task.
pub fn start_output(cfg: &Config, o: &OutputConfig) -> anyhow::Result<RunningOutput> {
    let id = o.common.id.clone();
    let b = &o.common.buffer;
    let buffer = match b.kind {
        BufferType::Memory => Buffer::Memory(Arc::new(MemoryBuffer::new(
            &id,
            b.memory_max_events(),
            b.memory_max_bytes().0 as usize,
            b.when_full.unwrap_or_default(),
        ))),
        BufferType::Disk => Buffer::Disk(Arc::new(
            DiskBuffer::open(
                &cfg.data_dir,
                &id,
                b.disk_max_bytes().0,
                b.disk_segment_bytes().0,
                b.fsync.unwrap_or_default(),
            )
            .with_context(|| format!("output `{id}`: cannot open its disk buffer"))?,
        )),
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
    Ok(RunningOutput {
        id,
        kind: o.kind.name.to_owned(),
        buffer,
        stats,
        dead_letters,
        task,
    })
}

/// The routes of input `idx` to the running outputs that take it (`inputs` + `when`).
pub fn routes_for(
    cfg: &Config,
    idx: usize,
    outputs: &[RunningOutput],
) -> anyhow::Result<Vec<Route>> {
    let id = &cfg.inputs[idx].common.id;
    let mut routes = Vec::new();
    for oc in &cfg.outputs {
        let takes = oc
            .common
            .inputs
            .as_ref()
            .is_none_or(|ins| ins.iter().any(|i| i == id));
        if !takes {
            continue;
        }
        let Some(ro) = outputs.iter().find(|o| o.id == oc.common.id) else {
            continue;
        };
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
    Ok(routes)
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
    let routes = routes_for(cfg, idx, outputs)?;
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

/// A running input with what reload needs to change it.
struct RunningInput {
    id: String,
    raw: String,
    stop: Arc<AtomicBool>,
    table: Arc<RouteTable>,
    handle: InputHandle,
}

/// What every input shares.
struct Shared {
    positions: Arc<Positions>,
    host: Arc<str>,
}

fn start_input(
    cfg: &Config,
    idx: usize,
    outputs: &[RunningOutput],
    shared: &Shared,
) -> anyhow::Result<RunningInput> {
    let ic = &cfg.inputs[idx];
    let stop = Arc::new(AtomicBool::new(false));
    let table = RouteTable::new(routes_for(cfg, idx, outputs)?);
    let pipeline = pipeline_for(cfg, idx, outputs)?.with_table(table.clone(), stop.clone());
    let ctx = InputContext {
        host_name: shared.host.clone(),
        positions: shared.positions.clone(),
        pipeline,
        stop: stop.clone(),
        data_dir: cfg.data_dir.clone(),
    };
    let handle = ic
        .kind
        .spec
        .start(&ic.common, ctx)
        .with_context(|| format!("input `{}`", ic.common.id))?;
    Ok(RunningInput {
        id: ic.common.id.clone(),
        raw: ic.raw.clone(),
        stop,
        table,
        handle,
    })
}

fn publish(state: &AgentState, inputs: &[RunningInput], outputs: &[RunningOutput]) {
    if let Ok(mut v) = state.inputs.lock() {
        *v = inputs.iter().map(|i| i.handle.status.clone()).collect();
    }
    if let Ok(mut v) = state.outputs.lock() {
        *v = outputs
            .iter()
            .map(|o| OutputEntry {
                id: o.id.clone(),
                kind: o.kind.clone(),
                buffer: o.buffer.clone(),
                stats: o.stats.clone(),
            })
            .collect();
    }
}

/// Stops an input and waits (up to `limit`) for its thread and for every event it emitted to
/// be acknowledged, so that a successor starts from final positions (nothing re-shipped).
async fn stop_input(input: RunningInput, positions: &Positions, limit: Duration) {
    input.stop.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + limit;
    if join_threads_until(vec![input.handle.thread], deadline)
        .await
        .is_some()
    {
        tracing::warn!(input = %input.id, "input did not stop in time");
    }
    while !positions.input_idle(&input.id) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !positions.input_idle(&input.id) {
        tracing::warn!(input = %input.id, "events of the old input are still unacknowledged; they may be sent again");
    }
}

/// Closes an output's buffer and waits up to `limit` for its driver to send what it holds.
async fn drain_output(o: RunningOutput, limit: Duration) {
    o.buffer.close();
    let abort = o.task.abort_handle();
    if tokio::time::timeout(limit, o.task).await.is_err() {
        tracing::warn!(output = %o.id, "output did not drain in time; its unacknowledged events will be read again after a restart");
        abort.abort();
    }
}

/// Applies a new configuration (SIGHUP): validated first; unchanged inputs and outputs keep
/// running; added ones start; changed ones are replaced after draining; removed ones drain.
async fn reload(
    path: &str,
    cfg: &mut Config,
    inputs: &mut Vec<RunningInput>,
    outputs: &mut Vec<RunningOutput>,
    shared: &Shared,
    state: &AgentState,
) {
    let new = match crate::config::load(path) {
        Ok(c) => c,
        Err(e) => {
            metrics::counter!("logferry_reloads_total", "result" => "rejected").increment(1);
            for d in &e.diagnostics {
                tracing::error!("reload rejected, keeping the running configuration: {d}");
            }
            return;
        }
    };
    if new.data_dir != cfg.data_dir
        || new.api.listen != cfg.api.listen
        || new.api.enabled != cfg.api.enabled
    {
        tracing::warn!("data_dir and api changes take effect at the next restart");
    }
    // Every new or changed backend must build before anything is torn down.
    for o in &new.outputs {
        let same = outputs.iter().any(|r| r.id == o.common.id)
            && cfg
                .outputs
                .iter()
                .any(|c| c.common.id == o.common.id && c.raw == o.raw);
        if same {
            continue;
        }
        let ctx = OutputContext {
            id: o.common.id.clone(),
            data_dir: cfg.data_dir.clone(),
            host_name: cfg.host_name.clone(),
        };
        if let Err(e) = o.kind.spec.build(&ctx) {
            metrics::counter!("logferry_reloads_total", "result" => "rejected").increment(1);
            tracing::error!(output = %o.common.id, error = %format!("{e:#}"), "reload rejected, keeping the running configuration");
            return;
        }
    }
    let limit = cfg.shutdown_timeout.0;
    // The new configuration's data_dir is not taken at reload.
    let mut next = new;
    next.data_dir = cfg.data_dir.clone();
    next.api = cfg.api.clone();
    register_metrics(&next);

    // 1. Outputs: keep unchanged, replace changed (drain first: a disk buffer's files move
    //    to the successor), start added.
    let mut old: Vec<RunningOutput> = std::mem::take(outputs);
    let mut fresh = Vec::new();
    for o in &next.outputs {
        let unchanged = cfg
            .outputs
            .iter()
            .any(|c| c.common.id == o.common.id && c.raw == o.raw);
        if let Some(pos) = old.iter().position(|r| r.id == o.common.id) {
            if unchanged {
                fresh.push(old.remove(pos));
                continue;
            }
            tracing::info!(output = %o.common.id, "output changed: draining it, then starting the new one");
            drain_output(old.remove(pos), limit).await;
        } else {
            tracing::info!(output = %o.common.id, "output added");
        }
        match start_output(&next, o) {
            Ok(r) => fresh.push(r),
            Err(e) => {
                tracing::error!(output = %o.common.id, error = %format!("{e:#}"), "cannot start output")
            }
        }
    }
    *outputs = fresh;
    // 2. Running inputs that stay get their new routes now (blocked pushes resume).
    for ri in inputs.iter() {
        if let Some(idx) = next
            .inputs
            .iter()
            .position(|i| i.common.id == ri.id && i.raw == ri.raw)
        {
            match routes_for(&next, idx, outputs) {
                Ok(r) => ri.table.set(r),
                Err(e) => {
                    tracing::error!(input = %ri.id, error = %format!("{e:#}"), "cannot route input")
                }
            }
        }
    }
    // 3. Inputs: stop removed and changed ones, start changed and added ones.
    let mut kept = Vec::new();
    for ri in std::mem::take(inputs) {
        let keep = next
            .inputs
            .iter()
            .any(|i| i.common.id == ri.id && i.raw == ri.raw);
        if keep {
            kept.push(ri);
        } else {
            tracing::info!(input = %ri.id, "input removed or changed: stopping it");
            stop_input(ri, &shared.positions, limit).await;
        }
    }
    for (idx, ic) in next.inputs.iter().enumerate() {
        if kept.iter().any(|r| r.id == ic.common.id) {
            continue;
        }
        tracing::info!(input = %ic.common.id, "starting input");
        match start_input(&next, idx, outputs, shared) {
            Ok(r) => kept.push(r),
            Err(e) => {
                tracing::error!(input = %ic.common.id, error = %format!("{e:#}"), "cannot start input")
            }
        }
    }
    *inputs = kept;
    // 4. Removed outputs drain in the background (no input routes to them any more).
    for o in old {
        tracing::info!(output = %o.id, "output removed: draining it");
        tokio::spawn(drain_output(o, limit));
    }
    publish(state, inputs, outputs);
    *cfg = next;
    metrics::counter!("logferry_reloads_total", "result" => "applied").increment(1);
    tracing::info!(
        inputs = inputs.len(),
        outputs = outputs.len(),
        "configuration reloaded"
    );
}

/// Runs the daemon until SIGTERM/SIGINT, then drains. `config_path` is re-read on SIGHUP.
/// `ready` is called once the pipeline runs.
pub async fn run(cfg: Config, config_path: &str, ready: impl FnOnce()) -> anyhow::Result<()> {
    let mut cfg = cfg;
    crate::util::private_dir(&cfg.data_dir)
        .with_context(|| format!("cannot create data_dir {}", cfg.data_dir.display()))?;
    let (positions, warning) = Positions::load(&cfg.data_dir, cfg.positions.ttl.0);
    if let Some(w) = warning {
        tracing::error!("{w}");
        metrics::counter!("logferry_positions_corrupt_total").increment(1);
    }
    register_metrics(&cfg);
    let mut outputs = start_outputs(&cfg)?;
    let shared = Shared {
        positions: positions.clone(),
        host: Arc::from(cfg.host_name.as_str()),
    };
    let mut inputs = Vec::new();
    for idx in 0..cfg.inputs.len() {
        inputs.push(start_input(&cfg, idx, &outputs, &shared)?);
    }
    let state = Arc::new(AgentState {
        inputs: Mutex::new(Vec::new()),
        outputs: Mutex::new(Vec::new()),
        started: Instant::now(),
    });
    publish(&state, &inputs, &outputs);

    // Positions flusher and buffer gauges.
    let flusher = {
        let positions = positions.clone();
        let every = cfg.positions.flush_interval.0;
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Ok(outs) = state.outputs.lock() {
                    for o in outs.iter() {
                        metrics::gauge!("logferry_buffer_events", "output" => o.id.clone())
                            .set(o.buffer.len() as f64);
                    }
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
    // The main loop: signals, and the systemd watchdog fed from here.
    let mut watchdog =
        tokio::time::interval(watchdog_interval().unwrap_or(Duration::from_secs(3600)));
    let watchdog_on = watchdog_interval().is_some();
    let mut signals = Signals::new();
    loop {
        tokio::select! {
            sig = signals.next() => match sig {
                Sig::Stop => break,
                Sig::Reload => {
                    tracing::info!("SIGHUP: reloading {config_path}");
                    reload(config_path, &mut cfg, &mut inputs, &mut outputs, &shared, &state).await;
                }
            },
            _ = watchdog.tick() => {
                if watchdog_on {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping: draining inputs and outputs");
    let deadline = Instant::now() + cfg.shutdown_timeout.0;

    // 1. Inputs stop reading and flush what they hold.
    for i in &inputs {
        i.stop.store(true, Ordering::SeqCst);
    }
    let threads: Vec<std::thread::JoinHandle<()>> =
        inputs.into_iter().map(|h| h.handle.thread).collect();
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

/// Half the systemd watchdog period, when systemd asked for one.
fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

enum Sig {
    Stop,
    Reload,
}

/// SIGTERM/SIGINT (stop) and SIGHUP (reload).
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate())
            .map_err(|e| tracing::error!(error = %e, "cannot listen for SIGTERM"))
            .ok();
        let hup = signal(SignalKind::hangup())
            .map_err(|e| tracing::error!(error = %e, "cannot listen for SIGHUP"))
            .ok();
        Signals { term, hup }
    }

    async fn next(&mut self) -> Sig {
        let term = async {
            match self.term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let hup = async {
            match self.hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = term => Sig::Stop,
            _ = tokio::signal::ctrl_c() => Sig::Stop,
            _ = hup => Sig::Reload,
        }
    }
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

/// Builds a pipeline for backfill (no positions) — see `backfill.rs`.
pub fn backfill_pipeline(
    cfg: &Config,
    idx: usize,
    outputs: &[RunningOutput],
    filter: TimeFilter,
) -> anyhow::Result<Pipeline> {
    Ok(pipeline_for(cfg, idx, outputs)?.with_filter(filter))
}
