//! Bounded in-memory buffer: a queue of batches bounded by events and bytes.
//!
//! Producers are input threads (blocking, `Condvar`); the consumer is the output's async
//! driver (`tokio::sync::Notify`). A batch larger than the whole buffer is still taken when
//! the buffer is empty, so that nothing can wait forever.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::Closed;
use crate::config::WhenFull;
use crate::event::Event;

struct State {
    queue: VecDeque<(Vec<Event>, usize)>,
    events: usize,
    bytes: usize,
    closed: bool,
}

pub struct MemoryBuffer {
    state: Mutex<State>,
    not_full: Condvar,
    not_empty: Notify,
    max_events: usize,
    max_bytes: usize,
    when_full: WhenFull,
    dropped: metrics::Counter,
}

impl MemoryBuffer {
    pub fn new(
        output_id: &str,
        max_events: usize,
        max_bytes: usize,
        when_full: WhenFull,
    ) -> MemoryBuffer {
        MemoryBuffer {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                events: 0,
                bytes: 0,
                closed: false,
            }),
            not_full: Condvar::new(),
            not_empty: Notify::new(),
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
            when_full,
            dropped: metrics::counter!("logferry_output_events_total", "output" => output_id.to_owned(), "result" => "dropped"),
        }
    }

    pub fn push(&self, mut events: Vec<Event>) -> Result<(), Closed> {
        if events.is_empty() {
            return Ok(());
        }
        let bytes: usize = events.iter().map(Event::size_hint).sum();
        let Ok(mut st) = self.state.lock() else {
            return Err(Closed(events));
        };
        loop {
            if st.closed {
                return Err(Closed(events));
            }
            let fits = st.events == 0
                || (st.events + events.len() <= self.max_events
                    && st.bytes + bytes <= self.max_bytes);
            if fits {
                break;
            }
            if self.when_full == WhenFull::DropNewest {
                for e in &mut events {
                    e.finalizer.resolve();
                }
                self.dropped.increment(events.len() as u64);
                return Ok(());
            }
            st = match self.not_full.wait_timeout(st, Duration::from_millis(200)) {
                Ok((g, _)) => g,
                Err(_) => return Err(Closed(std::mem::take(&mut events))),
            };
        }
        st.events += events.len();
        st.bytes += bytes;
        st.queue.push_back((events, bytes));
        drop(st);
        self.not_empty.notify_one();
        Ok(())
    }

    pub async fn pop(&self, max: usize) -> Option<Vec<Event>> {
        let max = max.max(1);
        loop {
            let notified = self.not_empty.notified();
            {
                let Ok(mut st) = self.state.lock() else {
                    return None;
                };
                if let Some((mut batch, bytes)) = st.queue.pop_front() {
                    let out = if batch.len() > max {
                        let rest = batch.split_off(max);
                        let rest_bytes: usize = rest.iter().map(Event::size_hint).sum();
                        let taken = bytes.saturating_sub(rest_bytes);
                        st.queue.push_front((rest, rest_bytes));
                        st.bytes -= taken.min(st.bytes);
                        batch
                    } else {
                        st.bytes -= bytes.min(st.bytes);
                        batch
                    };
                    st.events -= out.len().min(st.events);
                    let more = !st.queue.is_empty();
                    drop(st);
                    self.not_full.notify_all();
                    if more {
                        self.not_empty.notify_one();
                    }
                    return Some(out);
                }
                if st.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    pub fn close(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.closed = true;
        }
        self.not_full.notify_all();
        self.not_empty.notify_waiters();
        self.not_empty.notify_one();
    }

    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.events).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.max_events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn evs(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event::synthetic("a", &i.to_string()))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bounded_and_blocking() {
        let b = Arc::new(MemoryBuffer::new("o", 10, 1 << 20, WhenFull::Block));
        b.push(evs(8)).unwrap();
        let b2 = b.clone();
        let producer = std::thread::spawn(move || b2.push(evs(5)).is_ok());
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(b.len(), 8, "second push waits while full");
        let first = b.pop(100).await.unwrap();
        assert_eq!(first.len(), 8);
        assert!(producer.join().unwrap());
        assert_eq!(b.pop(3).await.unwrap().len(), 3);
        assert_eq!(b.pop(3).await.unwrap().len(), 2);
        b.close();
        assert!(b.pop(3).await.is_none());
        assert!(b.push(evs(1)).is_err());
    }

    #[tokio::test]
    async fn drop_newest_resolves() {
        let b = MemoryBuffer::new("o", 2, 1 << 20, WhenFull::DropNewest);
        b.push(evs(2)).unwrap();
        b.push(evs(2)).unwrap();
        assert_eq!(b.len(), 2);
    }
}
