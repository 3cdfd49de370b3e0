//! Reading Lumberjack v2 acknowledgements (`2A` + big-endian u32 sequence) from the server, and
//! what one means for the window in flight.
//!
//! The bytes come from the network, so nothing here may panic or trust them: an unknown
//! version or frame type is an error (the connection is then dropped and the unacknowledged
//! rest of the window is sent again), a torn frame waits for more bytes, and an ack beyond the
//! window is a protocol error rather than an acknowledgement of events that were never sent.
//!
//! Acks are cumulative: `2A n` acknowledges frames `1..=n` of the current window. Logstash's
//! beats input also sends *keepalive* acks while a window is still being processed — an ack
//! that does not move forward (sequence 0, or the last sequence again); it acknowledges nothing
//! but proves the peer is alive, so the caller resets its read timeout on it.

use thiserror::Error;

/// Size of one ack frame: `'2'`, `'A'`, u32.
pub const ACK_FRAME_LEN: usize = 6;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AckError {
    #[error(
        "lumberjack: unexpected protocol version byte 0x{0:02x} from the server (expected '2')"
    )]
    Version(u8),
    #[error("lumberjack: unexpected frame type 0x{0:02x} from the server (expected 'A', an ack)")]
    FrameType(u8),
    #[error(
        "lumberjack: the server acknowledged sequence {seq} but the window holds only {window} frames"
    )]
    BeyondWindow { seq: u32, window: u32 },
}

/// Incremental parser of ack frames: feed it whatever the socket returned, get the sequence
/// numbers of the complete frames; a partial frame is kept for the next read.
#[derive(Debug, Default, Clone)]
pub struct AckReader {
    pending: [u8; ACK_FRAME_LEN],
    have: usize,
}

impl AckReader {
    pub fn new() -> AckReader {
        AckReader::default()
    }

    /// Parses `bytes`, calling `on_ack` for every complete ack frame in order. Stops at the
    /// first malformed frame and returns its error (the connection is unusable after it).
    pub fn feed(&mut self, bytes: &[u8], mut on_ack: impl FnMut(u32)) -> Result<(), AckError> {
        let mut rest = bytes;
        while !rest.is_empty() {
            // Validate the header bytes as soon as they arrive, so garbage fails fast
            // instead of waiting for six bytes that may never come.
            let b = rest[0];
            match self.have {
                0 if b != b'2' => return Err(AckError::Version(b)),
                1 if b != b'A' => return Err(AckError::FrameType(b)),
                _ => {}
            }
            self.pending[self.have] = b;
            self.have += 1;
            rest = &rest[1..];
            if self.have == ACK_FRAME_LEN {
                self.have = 0;
                let seq = u32::from_be_bytes([
                    self.pending[2],
                    self.pending[3],
                    self.pending[4],
                    self.pending[5],
                ]);
                on_ack(seq);
            }
        }
        Ok(())
    }

    /// Bytes of an incomplete frame held back.
    pub fn partial_len(&self) -> usize {
        self.have
    }
}

/// What an ack did to the window in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStep {
    /// `n` more frames are acknowledged (a partial or the final ack).
    Progress(u32),
    /// Nothing new acknowledged: a keepalive. Resets the read timeout.
    Keepalive,
}

/// The acknowledgement state of one window of `window` frames numbered `1..=window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowAcks {
    window: u32,
    acked: u32,
}

impl WindowAcks {
    pub fn new(window: u32) -> WindowAcks {
        WindowAcks { window, acked: 0 }
    }

    /// Applies one ack. Acks are cumulative; one at or below what is already acknowledged is a
    /// keepalive; one beyond the window is a protocol error.
    pub fn apply(&mut self, seq: u32) -> Result<AckStep, AckError> {
        if seq > self.window {
            return Err(AckError::BeyondWindow {
                seq,
                window: self.window,
            });
        }
        if seq <= self.acked {
            return Ok(AckStep::Keepalive);
        }
        let n = seq - self.acked;
        self.acked = seq;
        Ok(AckStep::Progress(n))
    }

    /// Frames acknowledged so far (`1..=acked`).
    pub fn acked(&self) -> u32 {
        self.acked
    }

    pub fn window(&self) -> u32 {
        self.window
    }

    pub fn is_complete(&self) -> bool {
        self.acked == self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(seq: u32) -> Vec<u8> {
        let mut v = vec![b'2', b'A'];
        v.extend_from_slice(&seq.to_be_bytes());
        v
    }

    #[test]
    fn parses_acks_split_anywhere() {
        let mut bytes = ack(3);
        bytes.extend(ack(0));
        bytes.extend(ack(7));
        for cut in 0..=bytes.len() {
            let mut r = AckReader::new();
            let mut got = Vec::new();
            r.feed(&bytes[..cut], |s| got.push(s)).unwrap();
            r.feed(&bytes[cut..], |s| got.push(s)).unwrap();
            assert_eq!(got, vec![3, 0, 7], "cut at {cut}");
            assert_eq!(r.partial_len(), 0);
        }
    }

    #[test]
    fn rejects_garbage_at_once() {
        let mut r = AckReader::new();
        assert_eq!(r.feed(b"1A", |_| {}), Err(AckError::Version(b'1')));
        let mut r = AckReader::new();
        assert_eq!(
            r.feed(b"2W\0\0\0\x01", |_| {}),
            Err(AckError::FrameType(b'W'))
        );
    }

    #[test]
    fn window_acks_are_cumulative_with_keepalives() {
        let mut w = WindowAcks::new(10);
        assert_eq!(w.apply(0), Ok(AckStep::Keepalive));
        assert_eq!(w.apply(4), Ok(AckStep::Progress(4)));
        assert_eq!(w.apply(4), Ok(AckStep::Keepalive));
        assert_eq!(w.apply(2), Ok(AckStep::Keepalive));
        assert_eq!(w.apply(10), Ok(AckStep::Progress(6)));
        assert!(w.is_complete());
        assert_eq!(
            w.apply(11),
            Err(AckError::BeyondWindow {
                seq: 11,
                window: 10
            })
        );
    }
}
