//! `logstash`: Lumberjack v2 to Logstash's beats input, as Filebeat speaks it — a `2W` window,
//! `2J` JSON frames numbered from 1 (in one `2C` zlib frame when `compression_level` > 0), and
//! cumulative `2A` acks, keepalive acks included (see [`ack`], [`frame`], [`conn`]).
//!
//! One `send` is one batch from the driver; it goes out as one or more windows on one
//! connection, each window sized by Filebeat's slow start ([`window`]). When a connection
//! fails or an ack does not come within `timeout`, the frames the server acknowledged are
//! reported `Delivered` and the rest `Retry` (`SendOutcome::Partial`), so the driver sends
//! exactly the unacknowledged rest again, after its backoff, on a new connection: nothing is
//! lost, and the only duplicates are frames the server processed but had not acknowledged.
//!
//! Hosts: with `loadbalance: true` new connections go round-robin over the hosts; otherwise
//! one host is used until it fails, then the next (failover). `ttl` closes a connection after
//! that age so that connections spread again over hosts that came back. The output never
//! sleeps or retries itself (ARCHITECTURE.md, 3).

pub mod ack;
pub mod conn;
pub mod frame;
pub mod tls;
pub mod window;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;

use self::conn::{Conn, Tls, WindowResult, split_host, tls_for};
use self::tls::TlsConfig;
use self::window::Window;
use crate::config::{ConfigSource, Diagnostic, Dur};
use crate::event::Event;
use crate::outputs::{ItemOutcome, Output, OutputContext, OutputSpec, SendOutcome};

/// A pooled connection idle longer than this is closed rather than reused: Logstash's beats
/// input drops idle clients after `client_inactivity_timeout` (60 s by default), and writing a
/// window into a connection the server is closing only costs a retry.
const IDLE_REUSE: Duration = Duration::from_secs(15);

/// `type: logstash` — Lumberjack v2 (Filebeat's protocol) to Logstash's beats input.
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogstashConfig {
    /// `host:port` of each beats input (the port defaults to 5044; IPv6 as `[addr]:port`).
    pub hosts: Vec<String>,
    /// `true`: spread connections round-robin over every host. `false` (default): use the
    /// first host that works and move to the next one when it fails.
    #[serde(default)]
    pub loadbalance: bool,
    /// zlib level of the `2C` frame, 0 (off) to 9; default 3, as Filebeat.
    #[serde(default = "default_level")]
    pub compression_level: u32,
    /// Largest window: events sent before waiting for their acks (default 2048). The window
    /// starts at 10, grows while acks come back and halves after an error.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Longest wait to connect, to write a window, or for the next ack (a keepalive ack
    /// restarts it); default 30s.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Close a connection after it has been open this long, so that connections spread again
    /// over all hosts (e.g. after one came back); default: never.
    pub ttl: Option<Dur>,
    /// TLS to the beats input (`ssl_enabled` there); client certificates for
    /// `ssl_client_authentication: required`.
    pub tls: Option<TlsConfig>,
}

fn default_level() -> u32 {
    3
}
fn default_window() -> usize {
    2048
}
fn default_timeout() -> Dur {
    Dur::secs(30)
}

impl OutputSpec for LogstashConfig {
    fn validate(&self, source: &ConfigSource, path: &str) -> Vec<Diagnostic> {
        let mut v = Vec::new();
        if self.hosts.is_empty() {
            v.push(source.diag(
                &format!("{path}.hosts"),
                "at least one `host:port` is required",
            ));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if let Err(e) = split_host(h) {
                v.push(source.diag(&format!("{path}.hosts[{i}]"), e));
            }
        }
        if self.compression_level > 9 {
            v.push(source.diag(
                &format!("{path}.compression_level"),
                format!(
                    "{} is out of range: expected 0 (off) to 9",
                    self.compression_level
                ),
            ));
        }
        if self.window == 0 {
            v.push(source.diag(&format!("{path}.window"), "must be at least 1"));
        }
        if self.timeout.0.is_zero() {
            v.push(source.diag(&format!("{path}.timeout"), "must be more than 0"));
        }
        if let Some(tls) = &self.tls {
            for (k, m) in tls.problems() {
                v.push(source.diag(&format!("{path}.tls.{k}"), m));
            }
        }
        v
    }

    fn describe(&self) -> String {
        let mut s = format!("logstash {}", self.hosts.join(", "));
        let mut notes = Vec::new();
        if self.hosts.len() > 1 {
            notes.push(if self.loadbalance {
                "loadbalance"
            } else {
                "failover"
            });
        }
        if self.tls.as_ref().is_some_and(|t| t.enabled) {
            notes.push("tls");
        }
        if !notes.is_empty() {
            s.push_str(&format!(" ({})", notes.join(", ")));
        }
        s
    }

    fn build(&self, _ctx: &OutputContext) -> anyhow::Result<Arc<dyn Output>> {
        let tls = match &self.tls {
            Some(t) => tls_for(t)?,
            None => None,
        };
        Ok(Arc::new(Logstash {
            hosts: self.hosts.clone(),
            loadbalance: self.loadbalance,
            level: self.compression_level.min(9),
            timeout: self.timeout.0,
            ttl: self.ttl.map(|d| d.0).filter(|d| !d.is_zero()),
            tls,
            window: Mutex::new(Window::new(self.window)),
            idle: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
        }))
    }
}

pub struct Logstash {
    hosts: Vec<String>,
    loadbalance: bool,
    level: u32,
    timeout: Duration,
    ttl: Option<Duration>,
    tls: Option<Arc<Tls>>,
    window: Mutex<Window>,
    /// Connections not carrying a window right now.
    idle: Mutex<Vec<Conn>>,
    /// loadbalance: the next host to dial; failover: the active host.
    next: AtomicUsize,
}

impl Logstash {
    fn window_size(&self) -> usize {
        self.window.lock().map(|w| w.get()).unwrap_or(1)
    }

    fn grow(&self, sent: usize) {
        if let Ok(mut w) = self.window.lock() {
            w.grow(sent);
        }
    }

    fn shrink(&self) {
        if let Ok(mut w) = self.window.lock() {
            w.shrink();
        }
    }

    fn fresh(&self, c: &Conn) -> bool {
        c.last_used.elapsed() < IDLE_REUSE && self.ttl.is_none_or(|ttl| c.opened.elapsed() < ttl)
    }

    /// An idle connection, or a new one to the host the mode picks (trying each host once).
    async fn checkout(&self) -> Result<Conn, String> {
        if let Ok(mut idle) = self.idle.lock() {
            while let Some(c) = idle.pop() {
                if self.fresh(&c) && (self.loadbalance || c.host == self.active()) {
                    return Ok(c);
                }
            }
        }
        let n = self.hosts.len();
        let mut errors = Vec::new();
        for _ in 0..n {
            let i = if self.loadbalance {
                self.next.fetch_add(1, Ordering::Relaxed) % n
            } else {
                self.active()
            };
            match Conn::dial(&self.hosts[i], i, self.tls.as_deref(), self.timeout).await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    if !self.loadbalance {
                        self.fail_over(i);
                    }
                    errors.push(e);
                }
            }
        }
        Err(errors.join("; "))
    }

    fn active(&self) -> usize {
        self.next.load(Ordering::Relaxed) % self.hosts.len().max(1)
    }

    /// Failover: moves on from host `i` (if it is still the active one).
    fn fail_over(&self, i: usize) {
        let n = self.hosts.len().max(1);
        let _ = self
            .next
            .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn checkin(&self, c: Conn) {
        if self.fresh(&c)
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.push(c);
        }
    }

    async fn send_batch(&self, events: &[Event]) -> SendOutcome {
        if events.is_empty() {
            return SendOutcome::Delivered;
        }
        let mut conn = match self.checkout().await {
            Ok(c) => c,
            Err(reason) => {
                return SendOutcome::Retry {
                    reason,
                    after: None,
                };
            }
        };
        let mut done = 0;
        while done < events.len() {
            let n = self.window_size().min(events.len() - done);
            let window = &events[done..done + n];
            match conn.send_window(window, self.level, self.timeout).await {
                WindowResult::Complete => {
                    done += n;
                    self.grow(n);
                }
                WindowResult::Failed { acked, error } => {
                    done += (acked as usize).min(n);
                    self.shrink();
                    if !self.loadbalance {
                        self.fail_over(conn.host);
                    }
                    let reason = format!("{}: {error}", self.hosts[conn.host]);
                    // The connection is dropped: its state after a failure is unknown.
                    if done == 0 {
                        return SendOutcome::Retry {
                            reason,
                            after: None,
                        };
                    }
                    let mut items = vec![ItemOutcome::Delivered; done];
                    items.resize(events.len(), ItemOutcome::Retry(reason));
                    return SendOutcome::Partial(items);
                }
            }
        }
        self.checkin(conn);
        SendOutcome::Delivered
    }
}

impl Output for Logstash {
    fn send<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.send_batch(events))
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let mut reached = Vec::new();
            let mut failed = Vec::new();
            for (i, h) in self.hosts.iter().enumerate() {
                match Conn::dial(h, i, self.tls.as_deref(), self.timeout).await {
                    Ok(_) => reached.push(h.clone()),
                    Err(e) => failed.push(e),
                }
            }
            let tls = if self.tls.is_some() { " over TLS" } else { "" };
            if reached.is_empty() || (self.loadbalance && !failed.is_empty()) {
                return Err(failed.join("; "));
            }
            Ok(format!("connected to {}{tls}", reached.join(", ")))
        })
    }
}
