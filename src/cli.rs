//! The command line: `run`, `check`, `backfill`, `status`, `version`.
//!
//! Exit statuses follow the spec: 0 success; 1 a failure at run time (probe failed, events
//! dead-lettered, agent unreachable or an output failing); 78 (`EX_CONFIG`) invalid config.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, LogFormat};

/// Exit status for an invalid configuration (sysexits' EX_CONFIG).
pub const EX_CONFIG: i32 = 78;
const DEFAULT_CONFIG: &str = "/etc/logferry/agent.yaml";

#[derive(Debug, Parser)]
#[command(
    name = "logferry",
    version,
    about = "Ships log files and container logs without losing a line"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Follow the inputs and ship until SIGTERM/SIGINT.
    Run {
        /// Config file (`-` reads stdin).
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: String,
    },
    /// Validate the config and print the topology.
    Check {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: String,
        /// Also connect to every output and report reachability and auth.
        #[arg(long)]
        probe: bool,
    },
    /// Read files from the first byte to EOF through the pipeline, wait for every ack, exit.
    Backfill {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: String,
        /// Only these inputs (repeatable); with PATHs, the pipeline of the first one is used.
        #[arg(long = "input")]
        inputs: Vec<String>,
        /// Only events at or after this time (RFC 3339, YYYY-MM-DD, or a duration ago: `2h`).
        #[arg(long)]
        since: Option<String>,
        /// Only events before this time.
        #[arg(long)]
        until: Option<String>,
        /// Files to read instead of the inputs' globs.
        paths: Vec<PathBuf>,
    },
    /// Show a running agent's status.
    Status {
        /// The API's base URL (`http://127.0.0.1:5066` or `host:port`); default: from `-c`.
        #[arg(long)]
        api: Option<String>,
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: String,
    },
    /// Print version, commit and features.
    Version,
    /// Print the configuration reference (docs/configuration.md) generated from the config types.
    #[command(hide = true)]
    ConfigDocs,
}

/// Runs the CLI; returns the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match cli.command {
        Command::Version => {
            println!(
                "logferry {} (commit {}; inputs: {}; outputs: {})",
                env!("CARGO_PKG_VERSION"),
                option_env!("LOGFERRY_COMMIT").unwrap_or("unknown"),
                crate::inputs::REGISTRY
                    .iter()
                    .map(|r| r.name)
                    .collect::<Vec<_>>()
                    .join(", "),
                crate::outputs::REGISTRY
                    .iter()
                    .map(|r| r.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            0
        }
        Command::ConfigDocs => {
            print!("{}", crate::docs::configuration_md());
            0
        }
        Command::Check { config, probe } => check(&config, probe),
        Command::Run { config } => run(&config),
        Command::Backfill {
            config,
            inputs,
            since,
            until,
            paths,
        } => backfill(&config, inputs, since, until, paths),
        Command::Status { api, config } => status(api, &config),
    }
}

fn load_or_report(path: &str) -> Result<Config, i32> {
    match config::load(path) {
        Ok(c) => Ok(c),
        Err(e) => {
            eprintln!("invalid configuration:\n{e}");
            Err(EX_CONFIG)
        }
    }
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LOGFERRY_LOG")
        .or_else(|_| EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("logferry-rt")
        .enable_all()
        .build()
}

/// The topology, one line per input and output.
pub fn topology(cfg: &Config) -> String {
    let mut s = String::new();
    s.push_str("inputs:\n");
    for i in &cfg.inputs {
        let procs: Vec<&str> = i.common.processors.iter().map(|p| p.name()).collect();
        let outs: Vec<&str> = cfg
            .outputs
            .iter()
            .filter(|o| {
                o.common
                    .inputs
                    .as_ref()
                    .is_none_or(|ins| ins.contains(&i.common.id))
            })
            .map(|o| o.common.id.as_str())
            .collect();
        s.push_str(&format!(
            "  {} [{}]{}{} -> {}\n",
            i.common.id,
            i.kind.spec.describe(),
            if i.common.multiline.is_some() {
                " | multiline"
            } else {
                ""
            },
            if procs.is_empty() {
                String::new()
            } else {
                format!(" | {}", procs.join(" | "))
            },
            if outs.is_empty() {
                "(no output: events are acknowledged and dropped)".to_owned()
            } else {
                outs.join(", ")
            }
        ));
    }
    s.push_str("outputs:\n");
    for o in &cfg.outputs {
        let from = match &o.common.inputs {
            Some(ins) => ins.join(", "),
            None => "all inputs".to_owned(),
        };
        let b = &o.common.buffer;
        let buffer = match b.kind {
            config::BufferType::Memory => format!("memory buffer {} events", b.memory_max_events()),
            config::BufferType::Disk => format!("disk buffer {}", b.disk_max_bytes()),
        };
        s.push_str(&format!(
            "  {} [{}] <- {}{}; {}\n",
            o.common.id,
            o.kind.spec.describe(),
            from,
            if o.common.when.is_some() {
                " (when ...)"
            } else {
                ""
            },
            buffer
        ));
    }
    s
}

fn check(path: &str, probe: bool) -> i32 {
    let cfg = match load_or_report(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!("configuration OK: {}", cfg.source.name);
    print!("{}", topology(&cfg));
    if !probe {
        return 0;
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return 1;
        }
    };
    let mut failed = false;
    println!("probe:");
    for o in &cfg.outputs {
        let ctx = crate::outputs::OutputContext {
            id: o.common.id.clone(),
            data_dir: cfg.data_dir.clone(),
            host_name: cfg.host_name.clone(),
        };
        let res = match o.kind.spec.build(&ctx) {
            Ok(out) => rt.block_on(async {
                match tokio::time::timeout(std::time::Duration::from_secs(15), out.probe()).await {
                    Ok(r) => r,
                    Err(_) => Err("timed out after 15s".to_owned()),
                }
            }),
            Err(e) => Err(format!("{e:#}")),
        };
        match res {
            Ok(msg) => println!("  {}: ok ({msg})", o.common.id),
            Err(e) => {
                failed = true;
                println!("  {}: FAILED: {e}", o.common.id);
            }
        }
    }
    i32::from(failed)
}

fn run(path: &str) -> i32 {
    let cfg = match load_or_report(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&cfg);
    crate::api::install_metrics();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return 1;
        }
    };
    let res = rt.block_on(crate::agent::run(cfg, path, || {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }));
    match res {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "logferry failed");
            1
        }
    }
}

fn backfill(
    path: &str,
    inputs: Vec<String>,
    since: Option<String>,
    until: Option<String>,
    paths: Vec<PathBuf>,
) -> i32 {
    let cfg = match load_or_report(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&cfg);
    let parse = |s: Option<String>, what: &str| -> Result<Option<i64>, i32> {
        match s {
            None => Ok(None),
            Some(s) => crate::backfill::parse_time(&s).map(Some).map_err(|e| {
                eprintln!("--{what}: {e}");
                2
            }),
        }
    };
    let since = match parse(since, "since") {
        Ok(v) => v,
        Err(c) => return c,
    };
    let until = match parse(until, "until") {
        Ok(v) => v,
        Err(c) => return c,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return 1;
        }
    };
    let args = crate::backfill::BackfillArgs {
        inputs,
        since,
        until,
        paths,
        progress: std::io::stderr().is_terminal(),
    };
    match rt.block_on(crate::backfill::run(cfg, args)) {
        Ok(summary) => {
            eprintln!("{summary}");
            i32::from(summary.dead_lettered > 0 || summary.read_errors > 0)
        }
        Err(e) => {
            eprintln!("backfill failed: {e:#}");
            1
        }
    }
}

/// The `/status` URL from `--api` (a base URL or `host:port`) or the config's `api.listen`.
pub fn status_url(api: Option<&str>, listen_from_config: Option<&str>) -> String {
    let base = api.or(listen_from_config).unwrap_or("127.0.0.1:5066");
    let base = base.trim_end_matches('/');
    let base = base.strip_suffix("/status").unwrap_or(base);
    if base.starts_with("http://") || base.starts_with("https://") {
        format!("{base}/status")
    } else {
        format!("http://{base}/status")
    }
}

fn status(api: Option<String>, config_path: &str) -> i32 {
    let listen = if api.is_none() {
        config::load(config_path).ok().map(|c| c.api.listen)
    } else {
        None
    };
    let url = status_url(api.as_deref(), listen.as_deref());
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return 1;
        }
    };
    let res: Result<crate::api::Status, String> = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url} answered {}", resp.status()));
        }
        resp.json()
            .await
            .map_err(|e| format!("unexpected answer from {url}: {e}"))
    });
    match res {
        Ok(st) => {
            print!("{}", render_status(&st));
            i32::from(!st.healthy)
        }
        Err(e) => {
            eprintln!("logferry status: {e}");
            1
        }
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The status as tables an operator reads at a glance.
pub fn render_status(st: &crate::api::Status) -> String {
    let mut s = format!(
        "logferry {} up {}s — {}\n\nINPUT / FILE{:>46}{:>14}{:>14}  LAST READ\n",
        st.version,
        st.uptime_seconds,
        if st.healthy {
            "healthy"
        } else {
            "OUTPUT FAILING"
        },
        "OFFSET",
        "BEHIND",
        "SIZE"
    );
    for i in &st.inputs {
        s.push_str(&format!(
            "{} ({}, {} files, {} open, {} behind)\n",
            i.id,
            i.kind,
            i.files.len(),
            i.files_open,
            human_bytes(i.bytes_behind)
        ));
        for f in &i.files {
            let mut p = f.path.clone();
            if p.len() > 54 {
                p = format!("…{}", &p[p.len() - 53..]);
            }
            s.push_str(&format!(
                "  {:<54}{:>14}{:>14}{:>14}  {}\n",
                p,
                f.offset,
                human_bytes(f.bytes_behind),
                human_bytes(f.size),
                f.last_read.as_deref().unwrap_or("-")
            ));
        }
    }
    s.push_str(&format!(
        "\n{:<16}{:<15}{:>16}{:>10}  {:<8} LAST SUCCESS / LAST ERROR\n",
        "OUTPUT", "TYPE", "BUFFER", "IN FLIGHT", "STATE"
    ));
    for o in &st.outputs {
        s.push_str(&format!(
            "{:<16}{:<15}{:>16}{:>10}  {:<8} {}\n",
            o.id,
            o.kind,
            format!(
                "{}/{} {}",
                o.buffer_events, o.buffer_capacity, o.buffer_type
            ),
            o.in_flight,
            if o.failing { "FAILING" } else { "ok" },
            o.last_success_at.as_deref().unwrap_or("-")
        ));
        if let Some(e) = &o.last_error {
            s.push_str(&format!(
                "{:>58}  last error {}: {}\n",
                "",
                o.last_error_at.as_deref().unwrap_or("?"),
                e
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_urls() {
        assert_eq!(
            status_url(Some("http://127.0.0.1:5066"), None),
            "http://127.0.0.1:5066/status"
        );
        assert_eq!(
            status_url(Some("127.0.0.1:9"), None),
            "http://127.0.0.1:9/status"
        );
        assert_eq!(
            status_url(None, Some("0.0.0.0:5066")),
            "http://0.0.0.0:5066/status"
        );
        assert_eq!(
            status_url(Some("http://h:1/status"), None),
            "http://h:1/status"
        );
    }
}
