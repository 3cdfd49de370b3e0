//! Live state of an output for `/status`, `logferry status` and `/metrics`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use serde::Serialize;

use crate::event::{format_rfc3339_nanos, now_nanos};

#[derive(Debug, Default)]
pub struct OutputStats {
    pub in_flight: AtomicUsize,
    failing: AtomicBool,
    last_success: AtomicI64,
    last_error: Mutex<Option<(i64, String)>>,
}

/// A snapshot for `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct OutputStatus {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub buffer_type: String,
    pub buffer_events: usize,
    pub buffer_capacity: usize,
    pub in_flight: usize,
    pub failing: bool,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_success_at: Option<String>,
}

impl OutputStats {
    pub fn success(&self) {
        self.failing.store(false, Ordering::Relaxed);
        self.last_success.store(now_nanos(), Ordering::Relaxed);
    }

    pub fn error(&self, reason: &str) {
        self.failing.store(true, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some((now_nanos(), reason.to_owned()));
        }
    }

    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self, id: &str, kind: &str, buffer: &crate::buffer::Buffer) -> OutputStatus {
        let (last_error_at, last_error) = match self.last_error.lock().ok().and_then(|e| e.clone())
        {
            Some((t, e)) => (Some(format_rfc3339_nanos(t)), Some(e)),
            None => (None, None),
        };
        let ls = self.last_success.load(Ordering::Relaxed);
        OutputStatus {
            id: id.to_owned(),
            kind: kind.to_owned(),
            buffer_type: buffer.kind().to_owned(),
            buffer_events: buffer.len(),
            buffer_capacity: buffer.capacity(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            failing: self.failing(),
            last_error,
            last_error_at,
            last_success_at: (ls != 0).then(|| format_rfc3339_nanos(ls)),
        }
    }
}
