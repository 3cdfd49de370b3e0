//! An in-repo Lumberjack v2 server (what Logstash's beats input speaks), for tests: no
//! Logstash runs here, so this server implements the protocol exactly — `2W` windows, `2J`
//! frames whose sequence numbers must run 1..=n, `2C` zlib frames holding them, cumulative
//! `2A` acks — and injects what real servers do: partial acks, keepalive acks while a slow
//! window is processed, a connection reset in the middle of a window, a stall (half acked,
//! then silence), and a maximum window size it refuses to go over (it drops the connection).
//!
//! It records every message received and which ones it acknowledged, and flags a protocol
//! error or a message received again *after* it was acknowledged (the one duplicate the
//! client must never produce).

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flate2::read::ZlibDecoder;

/// What the server does; window numbers count every window the server reads, from 1.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Acknowledge after every `ack_every` frames (partial acks); 0: one ack at the end.
    pub ack_every: u32,
    /// Send a keepalive ack (the last sequence again, 0 at first) before each ack.
    pub keepalive: bool,
    /// Wait this long before a window's first ack, sending keepalives every
    /// `keepalive_every` meanwhile.
    pub slow_ack: Duration,
    pub keepalive_every: Duration,
    /// Windows after which, half acknowledged, the connection is reset.
    pub reset_windows: Vec<u64>,
    /// Windows after which, half acknowledged, the server goes silent (the client must time
    /// out).
    pub stall_windows: Vec<u64>,
    /// Windows larger than this are refused: the connection is closed without an ack.
    pub max_window: Option<u32>,
}

#[derive(Debug, Default)]
pub struct State {
    /// Every message received, in order, duplicates included.
    pub received: Vec<String>,
    pub acked: HashSet<String>,
    pub violations: Vec<String>,
    pub windows: u64,
    pub window_sizes: Vec<u32>,
    pub connections: u64,
    pub compressed_frames: u64,
    pub over_max: u64,
    pub resets: u64,
    pub stalls: u64,
    /// Metadata of the first event received.
    pub first_event: Option<serde_json::Value>,
}

impl State {
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for r in &self.received {
            *m.entry(r.clone()).or_default() += 1;
        }
        m
    }
}

pub struct Server {
    pub addr: String,
    pub state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start(behaviour: Behaviour) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let b = Arc::new(behaviour);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                st.lock().unwrap().connections += 1;
                let (st, b) = (st.clone(), b.clone());
                std::thread::spawn(move || serve(conn, &st, &b));
            }
        });
        Server { addr, state }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

fn be32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn ack(w: &mut TcpStream, seq: u32) -> std::io::Result<()> {
    let mut b = vec![b'2', b'A'];
    b.extend_from_slice(&seq.to_be_bytes());
    w.write_all(&b)
}

/// Reads `2J` frames from `r` into `out` until `want` frames are there or `r` ends.
fn read_json_frames(
    r: &mut impl Read,
    out: &mut Vec<(u32, Vec<u8>)>,
    want: usize,
    st: &Mutex<State>,
) -> std::io::Result<()> {
    while out.len() < want {
        let mut hdr = [0u8; 2];
        match r.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        if hdr[0] != b'2' {
            st.lock()
                .unwrap()
                .violations
                .push(format!("bad version byte {:#x}", hdr[0]));
            return Err(std::io::Error::other("bad version"));
        }
        match hdr[1] {
            b'J' => {
                let seq = be32(r)?;
                let len = be32(r)? as usize;
                let mut payload = vec![0u8; len];
                r.read_exact(&mut payload)?;
                out.push((seq, payload));
            }
            b'C' => {
                let len = be32(r)? as usize;
                let mut z = vec![0u8; len];
                r.read_exact(&mut z)?;
                st.lock().unwrap().compressed_frames += 1;
                let mut inner = Vec::new();
                ZlibDecoder::new(&z[..]).read_to_end(&mut inner)?;
                read_json_frames(&mut &inner[..], out, want, st)?;
            }
            other => {
                st.lock().unwrap().violations.push(format!(
                    "unexpected frame type {:?} inside a window",
                    other as char
                ));
                return Err(std::io::Error::other("bad frame"));
            }
        }
    }
    Ok(())
}

fn serve(conn: TcpStream, st: &Mutex<State>, b: &Behaviour) {
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    loop {
        let mut hdr = [0u8; 2];
        if r.read_exact(&mut hdr).is_err() {
            return;
        }
        if hdr != *b"2W" {
            st.lock()
                .unwrap()
                .violations
                .push(format!("expected a 2W window frame, got {hdr:?}"));
            return;
        }
        let Ok(n) = be32(&mut r) else { return };
        let window_no = {
            let mut s = st.lock().unwrap();
            s.windows += 1;
            s.window_sizes.push(n);
            s.windows
        };
        if b.max_window.is_some_and(|m| n > m) {
            st.lock().unwrap().over_max += 1;
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
        let mut frames = Vec::new();
        if read_json_frames(&mut r, &mut frames, n as usize, st).is_err()
            || frames.len() < n as usize
        {
            return;
        }
        let mut messages = Vec::with_capacity(frames.len());
        {
            let mut s = st.lock().unwrap();
            for (i, (seq, payload)) in frames.iter().enumerate() {
                if *seq != i as u32 + 1 {
                    s.violations
                        .push(format!("window {window_no}: frame {i} has sequence {seq}"));
                }
                let v: serde_json::Value = match serde_json::from_slice(payload) {
                    Ok(v) => v,
                    Err(e) => {
                        s.violations.push(format!("invalid JSON in a frame: {e}"));
                        continue;
                    }
                };
                if s.first_event.is_none() {
                    s.first_event = Some(v.clone());
                }
                let m = v["message"].as_str().unwrap_or_default().to_owned();
                if s.acked.contains(&m) {
                    s.violations
                        .push(format!("`{m}` received again after it was acknowledged"));
                }
                s.received.push(m.clone());
                messages.push(m);
            }
        }
        let half = n / 2;
        let (stop_at, reset) = if b.reset_windows.contains(&window_no) {
            (half, true)
        } else if b.stall_windows.contains(&window_no) {
            (half, false)
        } else {
            (n, false)
        };
        let step = if b.ack_every == 0 {
            n.max(1)
        } else {
            b.ack_every
        };
        let mut points: Vec<u32> = (1..=n).filter(|k| k % step == 0).collect();
        if points.last() != Some(&n) {
            points.push(n);
        }
        points.retain(|&p| p <= stop_at);
        if stop_at < n && stop_at > 0 && points.last() != Some(&stop_at) {
            points.push(stop_at);
        }
        let mut last = 0u32;
        for p in points {
            if b.keepalive && ack(&mut w, last).is_err() {
                return;
            }
            if !b.slow_ack.is_zero() && last == 0 {
                let every = if b.keepalive_every.is_zero() {
                    b.slow_ack
                } else {
                    b.keepalive_every
                };
                let mut waited = Duration::ZERO;
                while waited < b.slow_ack {
                    std::thread::sleep(every);
                    waited += every;
                    if b.keepalive && ack(&mut w, last).is_err() {
                        return;
                    }
                }
            }
            {
                let mut s = st.lock().unwrap();
                for m in &messages[last as usize..p as usize] {
                    s.acked.insert(m.clone());
                }
            }
            if ack(&mut w, p).is_err() {
                return;
            }
            last = p;
        }
        if stop_at < n {
            if reset {
                st.lock().unwrap().resets += 1;
                let _ = w.shutdown(Shutdown::Both);
            } else {
                st.lock().unwrap().stalls += 1;
                // Silence: read (and drop) until the client gives up and closes.
                let mut sink = [0u8; 4096];
                while matches!(r.read(&mut sink), Ok(n) if n > 0) {}
            }
            return;
        }
    }
}
