//! The window size, Filebeat's way (`libbeat/outputs/logstash/window.go`): start small (10
//! events), grow by half after each fully acknowledged window that used the whole size, never
//! beyond the largest size that has worked once it has failed above it, and halve on an error.
//!
//! A server that cannot take a large window (it resets the connection, or stops acking) so
//! settles on a size that works, while a healthy one reaches `window` in a few round trips.

/// First window size, as Filebeat's `defaultStartMaxWindowSize`.
pub const START: usize = 10;

#[derive(Debug, Clone)]
pub struct Window {
    size: usize,
    max: usize,
    max_ok: usize,
}

impl Window {
    pub fn new(max: usize) -> Window {
        let max = max.max(1);
        Window {
            size: START.min(max),
            max,
            max_ok: 0,
        }
    }

    /// Events to send in the next window.
    pub fn get(&self) -> usize {
        self.size
    }

    /// After a fully acknowledged window of `sent` events.
    pub fn grow(&mut self, sent: usize) {
        if self.size > sent {
            // The batch was smaller than the window: it says nothing about larger sizes.
            return;
        }
        let next = self.size.saturating_add(self.size.div_ceil(2));
        if self.max_ok < self.size {
            self.max_ok = self.size;
            self.size = next.min(self.max);
        } else if self.size < self.max_ok {
            self.size = next.min(self.max_ok);
        }
    }

    /// After an error (reset, timeout, protocol error).
    pub fn shrink(&mut self) {
        self.size = (self.size / 2).max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_shrink_and_grow_back() {
        let mut w = Window::new(100);
        assert_eq!(w.get(), 10);
        for _ in 0..20 {
            let n = w.get();
            w.grow(n);
        }
        assert_eq!(w.get(), 100);
        w.shrink();
        assert_eq!(w.get(), 50);
        w.grow(50);
        assert_eq!(w.get(), 75);
        w.grow(75);
        w.grow(100);
        assert_eq!(w.get(), 100, "grows back to the largest size that worked");
        // Smaller batches than the window do not grow it.
        let mut w = Window::new(100);
        w.grow(3);
        assert_eq!(w.get(), 10);
        for _ in 0..10 {
            w.shrink();
        }
        assert_eq!(w.get(), 1);
    }

    #[test]
    fn settles_below_a_server_maximum() {
        // A server that fails every window above 40 events.
        let mut w = Window::new(2048);
        let mut failures = 0;
        for _ in 0..200 {
            let n = w.get();
            if n > 40 {
                failures += 1;
                w.shrink();
            } else {
                w.grow(n);
            }
        }
        assert!(w.get() <= 40 && w.get() >= 20, "settled at {}", w.get());
        assert!(failures <= 2, "{failures} failures");
    }
}
