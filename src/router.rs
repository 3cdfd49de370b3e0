//! Routing: which outputs take an input's events (`inputs` + `when`), and the per-input
//! pipeline that runs the processors, then hands each output its share.
//!
//! An event several outputs want is cloned (its finalizer with it), so it counts as delivered
//! once all of them have it; an event no output wants is acknowledged at once.
//!
//! The routes of an input live in a [`RouteTable`] the agent swaps on reload (SIGHUP): an
//! input keeps running while outputs are added, changed or removed. A push that meets a buffer
//! closed by a reload waits for the new table and hands the events to the output of the same
//! id (or acknowledges them if that output is gone); a closed buffer without a new table means
//! the agent is stopping.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::buffer::Buffer;
use crate::event::Event;
use crate::processors::Chain;
use crate::processors::condition::Condition;

/// One output as seen from one input.
#[derive(Clone)]
pub struct Route {
    pub output: String,
    pub when: Option<Condition>,
    pub buffer: Buffer,
}

/// An input's routes, swappable while the input runs.
#[derive(Default)]
pub struct RouteTable(Mutex<Arc<Vec<Route>>>);

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Arc<RouteTable> {
        Arc::new(RouteTable(Mutex::new(Arc::new(routes))))
    }

    pub fn get(&self) -> Arc<Vec<Route>> {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn set(&self, routes: Vec<Route>) {
        if let Ok(mut r) = self.0.lock() {
            *r = Arc::new(routes);
        }
    }
}

/// Events a closed buffer gave back, by output id.
#[derive(Debug)]
pub struct Leftovers(pub Vec<(String, Vec<Event>)>);

/// The buffers were closed: the agent is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Filters events by time (backfill's `--since` / `--until`), in nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeFilter {
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// What an input hands its events to.
pub struct Pipeline {
    pub input_id: Arc<str>,
    chain: Chain,
    table: Arc<RouteTable>,
    stop: Option<Arc<AtomicBool>>,
    fields: Option<Arc<Map<String, Value>>>,
    filter: Option<TimeFilter>,
    events_in: metrics::Counter,
    bytes_in: metrics::Counter,
    filtered: metrics::Counter,
}

impl Pipeline {
    pub fn new(
        input_id: &str,
        chain: Chain,
        routes: Vec<Route>,
        fields: Map<String, Value>,
    ) -> Pipeline {
        Pipeline {
            input_id: Arc::from(input_id),
            chain,
            table: RouteTable::new(routes),
            stop: None,
            fields: (!fields.is_empty()).then(|| Arc::new(fields)),
            filter: None,
            events_in: metrics::counter!("logferry_input_events_total", "input" => input_id.to_owned()),
            bytes_in: metrics::counter!("logferry_input_bytes_total", "input" => input_id.to_owned()),
            filtered: metrics::counter!("logferry_backfill_filtered_events_total", "input" => input_id.to_owned()),
        }
    }

    /// Routes through `table` (shared with the agent, which swaps it on reload), and gives up
    /// on closed buffers once `stop` is set.
    pub fn with_table(mut self, table: Arc<RouteTable>, stop: Arc<AtomicBool>) -> Pipeline {
        self.table = table;
        self.stop = Some(stop);
        self
    }

    pub fn table(&self) -> Arc<RouteTable> {
        self.table.clone()
    }

    pub fn with_filter(mut self, f: TimeFilter) -> Pipeline {
        self.filter = Some(f);
        self
    }

    /// The input's `fields`, to be shared by every event (see `Source::meta`).
    pub fn fields(&self) -> Option<Arc<Map<String, Value>>> {
        self.fields.clone()
    }

    /// Counts bytes read (`logferry_input_bytes_total`).
    pub fn count_bytes(&self, n: u64) {
        self.bytes_in.increment(n);
    }

    /// Runs the processors and routes the events; blocks while a buffer is full.
    pub fn emit(&mut self, mut events: Vec<Event>) -> Result<(), Stopped> {
        if events.is_empty() {
            return Ok(());
        }
        self.events_in.increment(events.len() as u64);
        self.chain.run(&mut events);
        if let Some(f) = self.filter {
            let before = events.len();
            events.retain_mut(|e| {
                let keep = f.since.is_none_or(|s| e.timestamp >= s)
                    && f.until.is_none_or(|u| e.timestamp < u);
                if !keep {
                    e.finalizer.resolve();
                }
                keep
            });
            self.filtered.increment((before - events.len()) as u64);
        }
        let mut routes = self.table.get();
        let Err(mut left) = route(&routes, events) else {
            return Ok(());
        };
        // A buffer was closed: a reload swapped the table (re-route), or the agent stops.
        loop {
            let Some(stop) = &self.stop else {
                drop_unresolved(left);
                return Err(Stopped);
            };
            if stop.load(Ordering::Relaxed) {
                drop_unresolved(left);
                return Err(Stopped);
            }
            let now = self.table.get();
            if Arc::ptr_eq(&now, &routes) {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            routes = now;
            let mut again = Vec::new();
            for (output, events) in left.0 {
                match routes.iter().find(|r| r.output == output) {
                    Some(r) => {
                        let (take, gone): (Vec<Event>, Vec<Event>) = events
                            .into_iter()
                            .partition(|e| r.when.as_ref().is_none_or(|c| c.eval(e)));
                        resolve_all(gone);
                        if let Err(c) = r.buffer.push(take) {
                            again.push((output, c.0));
                        }
                    }
                    // The output was removed: it no longer wants them.
                    None => resolve_all(events),
                }
            }
            if again.is_empty() {
                return Ok(());
            }
            left = Leftovers(again);
        }
    }
}

fn resolve_all(events: Vec<Event>) {
    for mut e in events {
        e.finalizer.resolve();
    }
}

/// Events that could not be handed over stay unresolved: their lines are read again later.
fn drop_unresolved(left: Leftovers) {
    drop(left);
}

/// Hands each route the events it wants; events a closed buffer gave back are returned.
pub fn route(routes: &[Route], events: Vec<Event>) -> Result<(), Leftovers> {
    match routes {
        [] => {
            resolve_all(events);
            Ok(())
        }
        [only] if only.when.is_none() => only
            .buffer
            .push(events)
            .map_err(|c| Leftovers(vec![(only.output.clone(), c.0)])),
        _ => {
            let mut per_route: Vec<Vec<Event>> = routes.iter().map(|_| Vec::new()).collect();
            let mut wants: Vec<usize> = Vec::with_capacity(routes.len());
            for mut e in events {
                wants.clear();
                wants.extend(
                    routes
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.when.as_ref().is_none_or(|c| c.eval(&e)))
                        .map(|(i, _)| i),
                );
                match wants.split_last() {
                    None => e.finalizer.resolve(),
                    Some((&last, rest)) => {
                        for &i in rest {
                            per_route[i].push(e.clone());
                        }
                        per_route[last].push(e);
                    }
                }
            }
            let mut left = Vec::new();
            for (r, batch) in routes.iter().zip(per_route) {
                if !batch.is_empty()
                    && let Err(c) = r.buffer.push(batch)
                {
                    left.push((r.output.clone(), c.0));
                }
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(Leftovers(left))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::{Finalizer, OrderedAcker};
    use crate::buffer::MemoryBuffer;
    use crate::config::{ConditionConfig, WhenFull};

    fn buf() -> Buffer {
        Buffer::Memory(Arc::new(MemoryBuffer::new(
            "o",
            100,
            1 << 20,
            WhenFull::Block,
        )))
    }

    #[tokio::test]
    async fn fan_out_and_when() {
        let all = buf();
        let errors = buf();
        let when: ConditionConfig =
            serde_yaml_ng::from_str("{ field: message, matches: ERROR }").unwrap();
        let routes = vec![
            Route {
                output: "all".into(),
                when: None,
                buffer: all.clone(),
            },
            Route {
                output: "err".into(),
                when: Some(Condition::compile(&when).unwrap()),
                buffer: errors.clone(),
            },
        ];
        let acker = OrderedAcker::new(0);
        let mut a = Event::synthetic("i", "ERROR boom");
        a.finalizer = Finalizer::new(acker.issue(10));
        let b = Event::synthetic("i", "INFO fine");
        route(&routes, vec![a, b]).unwrap();
        let mut got_all = all.pop(10).await.unwrap();
        let mut got_err = errors.pop(10).await.unwrap();
        assert_eq!(got_all.len(), 2);
        assert_eq!(got_err.len(), 1);
        got_all[0].finalizer.resolve();
        assert_eq!(acker.committed(), 0, "waits for the second output");
        got_err[0].finalizer.resolve();
        assert_eq!(acker.committed(), 10);
    }

    #[test]
    fn unwanted_events_are_acknowledged() {
        let acker = OrderedAcker::new(0);
        let mut a = Event::synthetic("i", "x");
        a.finalizer = Finalizer::new(acker.issue(5));
        route(&[], vec![a]).unwrap();
        assert_eq!(acker.committed(), 5);
    }
}
