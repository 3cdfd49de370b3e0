//! Buffers between the router and an output's driver.
//!
//! Invariant (ARCHITECTURE.md, 2): memory is bounded. A full memory buffer with
//! `when_full: block` makes `push` wait, which pauses the input thread that called it: the
//! files are the buffer. `drop_newest` resolves and counts what it refuses. A disk buffer
//! (`disk.rs`) takes the backlog onto disk up to its `max_bytes`, then blocks the same way.

pub mod disk;
pub mod memory;

use crate::event::Event;

pub use disk::DiskBuffer;
pub use memory::MemoryBuffer;

/// The buffer was closed (shutdown): the events given back were not taken.
#[derive(Debug)]
pub struct Closed(pub Vec<Event>);

/// The buffer of one output.
#[derive(Clone)]
pub enum Buffer {
    Memory(std::sync::Arc<MemoryBuffer>),
    Disk(std::sync::Arc<DiskBuffer>),
}

impl Buffer {
    /// Hands a batch to the buffer, waiting while it is full (from an input thread).
    pub fn push(&self, events: Vec<Event>) -> Result<(), Closed> {
        match self {
            Buffer::Memory(m) => m.push(events),
            Buffer::Disk(d) => d.push(events),
        }
    }

    /// Takes up to `max` events, waiting for some; `None` once closed and empty.
    pub async fn pop(&self, max: usize) -> Option<Vec<Event>> {
        match self {
            Buffer::Memory(m) => m.pop(max).await,
            Buffer::Disk(d) => d.pop(max).await,
        }
    }

    /// No more pushes: blocked producers return `Closed`; `pop` drains what is queued.
    pub fn close(&self) {
        match self {
            Buffer::Memory(m) => m.close(),
            Buffer::Disk(d) => d.close(),
        }
    }

    /// Events queued now (not yet taken by the output; for disk: records not yet popped).
    pub fn len(&self) -> usize {
        match self {
            Buffer::Memory(m) => m.len(),
            Buffer::Disk(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Capacity in events, for fill ratios.
    pub fn capacity(&self) -> usize {
        match self {
            Buffer::Memory(m) => m.capacity(),
            Buffer::Disk(d) => d.capacity(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Buffer::Memory(_) => "memory",
            Buffer::Disk(_) => "disk",
        }
    }
}
