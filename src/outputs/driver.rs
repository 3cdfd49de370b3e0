//! The sink driver shared by every output: batch by events, bytes and time; send with up to
//! `max_in_flight` concurrent requests; retry retryable failures without end (exponential
//! backoff from `retry.initial` to `retry.max` with full jitter); split on "too large"; write
//! permanent rejections to the dead letters; resolve finalizers.
//!
//! Invariants kept: an event's finalizer is resolved only once it is delivered or
//! dead-lettered (ARCHITECTURE.md, 1); this is the one place that retries (3); nothing waits
//! behind a rejected event. Acknowledgements reach positions in file order whatever order the
//! requests complete in, because the per-file acker only advances over contiguous batches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt;
use tokio::sync::Semaphore;

use super::dead_letter::DeadLetters;
use super::stats::OutputStats;
use super::{ItemOutcome, Output, SendOutcome};
use crate::buffer::Buffer;
use crate::config::{BatchConfig, RetryConfig};
use crate::event::Event;

/// Everything one output's driver needs.
pub struct Driver {
    pub id: String,
    pub output: Arc<dyn Output>,
    pub buffer: Buffer,
    pub batch: BatchConfig,
    pub max_in_flight: usize,
    pub retry: RetryConfig,
    pub dead_letters: Arc<DeadLetters>,
    pub stats: Arc<OutputStats>,
}

struct Metrics {
    sent: metrics::Counter,
    retries: metrics::Counter,
    request_seconds: metrics::Histogram,
}

impl Metrics {
    fn new(id: &str) -> Metrics {
        Metrics {
            sent: metrics::counter!("logferry_output_events_total", "output" => id.to_owned(), "result" => "sent"),
            retries: metrics::counter!("logferry_output_retries_total", "output" => id.to_owned()),
            request_seconds: metrics::histogram!("logferry_output_request_seconds", "output" => id.to_owned()),
        }
    }
}

struct Shared {
    id: String,
    output: Arc<dyn Output>,
    retry: RetryConfig,
    dead_letters: Arc<DeadLetters>,
    stats: Arc<OutputStats>,
    metrics: Metrics,
}

impl Driver {
    /// Runs until the buffer is closed and drained and every request has finished.
    pub async fn run(self) {
        let shared = Arc::new(Shared {
            metrics: Metrics::new(&self.id),
            id: self.id,
            output: self.output,
            retry: self.retry,
            dead_letters: self.dead_letters,
            stats: self.stats,
        });
        let permits = self.max_in_flight.max(1);
        let sem = Arc::new(Semaphore::new(permits));
        let max_events = self.batch.max_events.max(1);
        let max_bytes = self.batch.max_bytes.0 as usize;
        let mut carry: Vec<Event> = Vec::new();
        loop {
            let Some(batch) = collect(
                &self.buffer,
                &mut carry,
                max_events,
                max_bytes,
                self.batch.timeout.0,
            )
            .await
            else {
                break;
            };
            let Ok(permit) = sem.clone().acquire_owned().await else {
                break;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                shared
                    .stats
                    .in_flight
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                send_until_done(&shared, batch).await;
                shared
                    .stats
                    .in_flight
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                drop(permit);
            });
        }
        // Wait for every request in flight.
        let _ = sem.acquire_many(permits as u32).await;
    }
}

/// Gathers the next batch: waits for a first event, then up to `timeout` for more, until
/// `max_events` or `max_bytes`. `None` once the buffer is closed and empty.
async fn collect(
    buffer: &Buffer,
    carry: &mut Vec<Event>,
    max_events: usize,
    max_bytes: usize,
    timeout: Duration,
) -> Option<Vec<Event>> {
    let mut batch = std::mem::take(carry);
    if batch.is_empty() {
        batch = buffer.pop(max_events).await?;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut bytes: usize = batch.iter().map(Event::size_hint).sum();
    while batch.len() < max_events && bytes < max_bytes {
        match tokio::time::timeout_at(deadline, buffer.pop(max_events - batch.len())).await {
            Ok(Some(more)) => {
                bytes += more.iter().map(Event::size_hint).sum::<usize>();
                batch.extend(more);
            }
            Ok(None) | Err(_) => break,
        }
    }
    // Respect max_bytes: keep the overflow for the next batch.
    if bytes > max_bytes && batch.len() > 1 {
        let mut acc = 0;
        let mut cut = batch.len();
        for (i, e) in batch.iter().enumerate() {
            acc += e.size_hint();
            if acc > max_bytes {
                cut = i.max(1);
                break;
            }
        }
        *carry = batch.split_off(cut);
    }
    Some(batch)
}

/// Sends a batch until every event is delivered or dead-lettered.
async fn send_until_done(shared: &Shared, batch: Vec<Event>) {
    let mut stack: Vec<Vec<Event>> = vec![batch];
    while let Some(mut pending) = stack.pop() {
        let mut attempt: u32 = 0;
        loop {
            let started = Instant::now();
            let outcome = shared.output.send(&pending).await;
            shared
                .metrics
                .request_seconds
                .record(started.elapsed().as_secs_f64());
            match outcome {
                SendOutcome::Delivered => {
                    shared.stats.success();
                    deliver(shared, pending);
                    break;
                }
                SendOutcome::Retry { reason, after } => {
                    shared.stats.error(&reason);
                    tracing::warn!(output = %shared.id, events = pending.len(), attempt, %reason, "send failed; retrying");
                    backoff(shared, attempt, after).await;
                    attempt = attempt.saturating_add(1);
                }
                SendOutcome::TooLarge { reason } => {
                    if pending.len() == 1 {
                        reject(shared, pending, &reason);
                        shared.stats.success();
                        break;
                    }
                    // Halves, first half first (LIFO stack).
                    let second = pending.split_off(pending.len() / 2);
                    stack.push(second);
                    stack.push(pending);
                    break;
                }
                SendOutcome::Partial(items) => {
                    if items.len() != pending.len() {
                        let reason = format!(
                            "output returned {} results for {} events; resending the batch",
                            items.len(),
                            pending.len()
                        );
                        shared.stats.error(&reason);
                        backoff(shared, attempt, None).await;
                        attempt = attempt.saturating_add(1);
                        continue;
                    }
                    let mut retry = Vec::new();
                    let mut retry_reason = String::new();
                    let mut delivered = Vec::new();
                    let mut rejected: Vec<(Event, String)> = Vec::new();
                    for (e, item) in pending.into_iter().zip(items) {
                        match item {
                            ItemOutcome::Delivered => delivered.push(e),
                            ItemOutcome::Rejected(r) => rejected.push((e, r)),
                            ItemOutcome::Retry(r) => {
                                retry_reason = r;
                                retry.push(e);
                            }
                        }
                    }
                    deliver(shared, delivered);
                    if !rejected.is_empty() {
                        let refs: Vec<(&Event, &str)> =
                            rejected.iter().map(|(e, r)| (e, r.as_str())).collect();
                        shared.dead_letters.write(&refs);
                        for (mut e, _) in rejected {
                            e.finalizer.resolve();
                        }
                    }
                    if retry.is_empty() {
                        shared.stats.success();
                        break;
                    }
                    shared.stats.error(&retry_reason);
                    tracing::warn!(output = %shared.id, events = retry.len(), attempt, reason = %retry_reason, "some events failed; retrying them");
                    pending = retry;
                    backoff(shared, attempt, None).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }
}

fn deliver(shared: &Shared, events: Vec<Event>) {
    shared.metrics.sent.increment(events.len() as u64);
    for mut e in events {
        e.finalizer.resolve();
    }
}

fn reject(shared: &Shared, events: Vec<Event>, reason: &str) {
    let refs: Vec<(&Event, &str)> = events.iter().map(|e| (e, reason)).collect();
    shared.dead_letters.write(&refs);
    for mut e in events {
        e.finalizer.resolve();
    }
}

async fn backoff(shared: &Shared, attempt: u32, after: Option<Duration>) {
    shared.metrics.retries.increment(1);
    let d = backoff_delay(&shared.retry, attempt, after);
    tokio::time::sleep(d).await;
}

/// Full jitter: uniform in `[0, min(max, initial * 2^attempt)]`, but at least `after`.
pub fn backoff_delay(retry: &RetryConfig, attempt: u32, after: Option<Duration>) -> Duration {
    let initial = retry.initial.0.as_secs_f64();
    let cap = retry.max.0.as_secs_f64();
    let ceiling = (initial * 2f64.powi(attempt.min(30) as i32)).min(cap);
    let jittered = rand::rng().random_range(0.0..=ceiling.max(0.0));
    let d = Duration::from_secs_f64(jittered);
    match after {
        Some(a) => d.max(a.min(retry.max.0)),
        None => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::{Finalizer, OrderedAcker};
    use crate::buffer::MemoryBuffer;
    use crate::config::{ByteSize, Dur, WhenFull};
    use futures_util::future::BoxFuture;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An output that fails on demand: the first `fail_first` calls are retryable failures,
    /// events whose message starts with "bad" are rejected, "slow" ones are retried once.
    struct Flaky {
        calls: AtomicUsize,
        fail_first: usize,
        got: Mutex<Vec<String>>,
        retried: Mutex<std::collections::HashSet<String>>,
        max_batch: usize,
    }

    impl Output for Flaky {
        fn send<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, SendOutcome> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst);
                if n < self.fail_first {
                    return SendOutcome::Retry {
                        reason: "503".into(),
                        after: None,
                    };
                }
                if events.len() > self.max_batch {
                    return SendOutcome::TooLarge {
                        reason: "413".into(),
                    };
                }
                if events.iter().any(|e| e.message_str().starts_with("huge")) {
                    return SendOutcome::TooLarge {
                        reason: "document too large".into(),
                    };
                }
                let mut items = Vec::new();
                for e in events {
                    let m = e.message_str().to_owned();
                    if m.starts_with("bad") {
                        items.push(ItemOutcome::Rejected("mapper_parsing_exception".into()));
                    } else if m.starts_with("slow")
                        && self.retried.lock().unwrap().insert(m.clone())
                    {
                        items.push(ItemOutcome::Retry("429".into()));
                    } else {
                        self.got.lock().unwrap().push(m);
                        items.push(ItemOutcome::Delivered);
                    }
                }
                SendOutcome::Partial(items)
            })
        }
    }

    #[tokio::test]
    async fn delivers_retries_splits_and_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = Buffer::Memory(Arc::new(MemoryBuffer::new(
            "t",
            1000,
            1 << 20,
            WhenFull::Block,
        )));
        let out = Arc::new(Flaky {
            calls: AtomicUsize::new(0),
            fail_first: 2,
            got: Mutex::new(Vec::new()),
            retried: Mutex::new(Default::default()),
            max_batch: 8,
        });
        let acker = OrderedAcker::new(0);
        let msgs = [
            "a", "bad1", "slow1", "b", "huge", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l",
            "m", "n", "o", "p", "q",
        ];
        let mut events = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let mut e = Event::synthetic("in", m);
            e.finalizer = Finalizer::new(acker.issue((i as u64 + 1) * 10));
            events.push(e);
        }
        buffer.push(events).unwrap();
        buffer.close();
        let dl = Arc::new(DeadLetters::new(dir.path(), "t", 1 << 20));
        Driver {
            id: "t".into(),
            output: out.clone(),
            buffer,
            batch: BatchConfig {
                max_events: 50,
                max_bytes: ByteSize::mib(1),
                timeout: Dur::millis(10),
            },
            max_in_flight: 2,
            retry: RetryConfig {
                initial: Dur::millis(1),
                max: Dur::millis(5),
            },
            dead_letters: dl.clone(),
            stats: Arc::new(OutputStats::default()),
        }
        .run()
        .await;
        let mut got = out.got.lock().unwrap().clone();
        got.sort();
        let mut want: Vec<String> = msgs
            .iter()
            .filter(|m| !m.starts_with("bad") && **m != "huge")
            .map(|s| s.to_string())
            .collect();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(acker.committed(), 200, "every event resolved");
        let dead = std::fs::read_to_string(dl.path()).unwrap();
        assert_eq!(dead.lines().count(), 2);
        assert!(dead.contains("bad1") && dead.contains("huge"));
    }

    #[test]
    fn backoff_is_bounded() {
        let r = RetryConfig {
            initial: Dur::millis(100),
            max: Dur::secs(2),
        };
        for a in 0..50 {
            assert!(backoff_delay(&r, a, None) <= Duration::from_secs(2));
        }
        assert!(backoff_delay(&r, 0, Some(Duration::from_secs(1))) >= Duration::from_secs(1));
    }
}
