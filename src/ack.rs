//! Acknowledgements: finalizers on events, resolved by the outputs, folded by an ordered acker
//! into the offset a position may advance to.
//!
//! Invariant kept here (ARCHITECTURE.md, 1): *a position never passes an undelivered byte.*
//!
//! - A reader hands out one [`BatchToken`] per batch of events it emits, tagged with a sequence
//!   number and the offset just past the batch's last byte. Every event of the batch holds a
//!   [`Finalizer`], a clone of an `Arc` to that token (a reference-count increment, no
//!   allocation per event). Fanning an event out to several outputs clones the finalizer.
//! - An output (or the drop of a filtered event, or a durable disk-buffer write) resolves a
//!   finalizer with [`Finalizer::resolve`]. A finalizer dropped without being resolved marks
//!   its batch as failed: the event was not delivered (shutdown, crash of a task).
//! - When the last finalizer of a batch is gone the token reports to its [`OrderedAcker`],
//!   which advances the committed offset only over a contiguous run of successful sequence
//!   numbers, however out of order they arrive. A failed batch stops the acker for good (until
//!   restart, which re-reads from the committed offset).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counts batch completions process-wide: a positions flush that sees it unchanged knows no
/// offset moved and skips walking every file.
pub static ACK_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Folds out-of-order batch completions into a contiguous committed offset.
#[derive(Debug)]
pub struct OrderedAcker {
    next_seq: AtomicU64,
    state: Mutex<AckState>,
}

#[derive(Debug)]
struct AckState {
    /// Sequence number of the oldest batch not yet folded in.
    expected: u64,
    committed: u64,
    /// Completed batches waiting for an older one: seq → (end offset, ok).
    done: BTreeMap<u64, (u64, bool)>,
    /// A batch failed: the committed offset stays where it is for this run.
    stuck: bool,
    /// Number of batches issued and not yet completed.
    outstanding: u64,
}

impl OrderedAcker {
    /// An acker whose committed offset starts at `start` (the saved position).
    pub fn new(start: u64) -> Arc<OrderedAcker> {
        Arc::new(OrderedAcker {
            next_seq: AtomicU64::new(0),
            state: Mutex::new(AckState {
                expected: 0,
                committed: start,
                done: BTreeMap::new(),
                stuck: false,
                outstanding: 0,
            }),
        })
    }

    /// Issues the token for the next batch, which ends at `end_offset`.
    pub fn issue(self: &Arc<Self>, end_offset: u64) -> Arc<BatchToken> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut st) = self.state.lock() {
            st.outstanding += 1;
        }
        Arc::new(BatchToken {
            acker: self.clone(),
            seq,
            end_offset,
            failed: AtomicBool::new(false),
        })
    }

    fn complete(&self, seq: u64, end: u64, ok: bool) {
        ACK_EPOCH.fetch_add(1, Ordering::Relaxed);
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        st.outstanding = st.outstanding.saturating_sub(1);
        st.done.insert(seq, (end, ok));
        while !st.stuck {
            let expected = st.expected;
            let Some(&(end, ok)) = st.done.get(&expected) else {
                break;
            };
            if !ok {
                st.stuck = true;
                break;
            }
            st.done.remove(&expected);
            st.committed = end;
            st.expected += 1;
        }
    }

    /// The offset every byte before which is delivered.
    pub fn committed(&self) -> u64 {
        self.state.lock().map(|s| s.committed).unwrap_or(0)
    }

    /// Whether every issued batch has completed.
    pub fn idle(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.outstanding == 0)
            .unwrap_or(true)
    }

    /// Whether a batch failed (was dropped undelivered).
    pub fn stuck(&self) -> bool {
        self.state.lock().map(|s| s.stuck).unwrap_or(true)
    }
}

/// One batch of events from one source; reports to its acker when its last event is done.
#[derive(Debug)]
pub struct BatchToken {
    acker: Arc<OrderedAcker>,
    seq: u64,
    end_offset: u64,
    failed: AtomicBool,
}

impl Drop for BatchToken {
    fn drop(&mut self) {
        let ok = !self.failed.load(Ordering::Acquire);
        self.acker.complete(self.seq, self.end_offset, ok);
    }
}

/// An event's share of its batch token. Must be [`resolve`](Finalizer::resolve)d once the
/// event is delivered; dropping it unresolved marks the batch failed.
#[derive(Debug, Default)]
pub struct Finalizer(Option<Arc<BatchToken>>);

impl Finalizer {
    pub fn none() -> Finalizer {
        Finalizer(None)
    }

    pub fn new(token: Arc<BatchToken>) -> Finalizer {
        Finalizer(Some(token))
    }

    /// The event is delivered (or durable, or dead-lettered, or deliberately dropped).
    pub fn resolve(&mut self) {
        self.0.take();
    }

    pub fn is_pending(&self) -> bool {
        self.0.is_some()
    }
}

impl Clone for Finalizer {
    fn clone(&self) -> Self {
        Finalizer(self.0.clone())
    }
}

impl Drop for Finalizer {
    fn drop(&mut self) {
        if let Some(token) = self.0.take() {
            token.failed.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn contiguous_only() {
        let acker = OrderedAcker::new(0);
        let t0 = acker.issue(10);
        let t1 = acker.issue(20);
        let t2 = acker.issue(30);
        let mut f1 = Finalizer::new(t1);
        let mut f2 = Finalizer::new(t2);
        f2.resolve();
        f1.resolve();
        assert_eq!(acker.committed(), 0);
        let mut f0 = Finalizer::new(t0);
        f0.resolve();
        assert_eq!(acker.committed(), 30);
        assert!(acker.idle());
    }

    #[test]
    fn unresolved_drop_stops_the_acker() {
        let acker = OrderedAcker::new(5);
        let t0 = acker.issue(10);
        let t1 = acker.issue(20);
        drop(Finalizer::new(t0));
        let mut f1 = Finalizer::new(t1);
        f1.resolve();
        assert_eq!(acker.committed(), 5);
        assert!(acker.stuck());
    }

    #[test]
    fn fan_out_waits_for_every_clone() {
        let acker = OrderedAcker::new(0);
        let mut a = Finalizer::new(acker.issue(7));
        let mut b = a.clone();
        a.resolve();
        assert_eq!(acker.committed(), 0);
        b.resolve();
        assert_eq!(acker.committed(), 7);
    }

    proptest! {
        /// For any order of resolution, the committed offset is the end of the longest
        /// resolved prefix of batches.
        #[test]
        fn committed_is_longest_resolved_prefix(
            n in 1usize..40,
            order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..40),
            events_per_batch in 1usize..4,
        ) {
            let acker = OrderedAcker::new(0);
            let mut pending: Vec<(usize, Vec<Finalizer>)> = (0..n)
                .map(|i| {
                    let tok = acker.issue((i as u64 + 1) * 100);
                    (i, (0..events_per_batch).map(|_| Finalizer::new(tok.clone())).collect())
                })
                .collect();
            let mut resolved = vec![false; n];
            for idx in order {
                if pending.is_empty() { break; }
                let k = idx.index(pending.len());
                let (i, mut fins) = pending.swap_remove(k);
                for f in fins.iter_mut() { f.resolve(); }
                drop(fins);
                resolved[i] = true;
                let prefix = resolved.iter().take_while(|r| **r).count();
                prop_assert_eq!(acker.committed(), prefix as u64 * 100);
            }
            for (_, mut fins) in pending { for f in fins.iter_mut() { f.resolve(); } }
            prop_assert_eq!(acker.committed(), n as u64 * 100);
            prop_assert!(acker.idle());
        }
    }
}
