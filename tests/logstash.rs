//! The `logstash` output end to end: the real binary tails files and ships them over
//! Lumberjack v2 to the in-repo server of `lumberjack_server.rs` (no Logstash runs here; that
//! server speaks the exact protocol and injects partial acks, keepalives, slow acks, resets,
//! stalls and a window maximum). What must hold: every line arrives, and a line arrives again
//! only if the server had not acknowledged it.

use std::time::Duration;

use crate::lumberjack_server::{Behaviour, Server};
use crate::util::{Sandbox, app_config, wait_until, write_lines};

fn config(sb: &Sandbox, addr: &str, extra: &str) {
    sb.config(&app_config(
        "",
        "",
        &format!(
            r#"  - id: ls
    type: logstash
    hosts: ["{addr}"]
    batch: {{ max_events: 700, timeout: 50ms }}
    retry: {{ initial: 10ms, max: 200ms }}
{extra}"#
        ),
    ));
}

fn write_logs(sb: &Sandbox, n: usize) -> Vec<String> {
    write_lines(sb, "a.log", "ls", n)
}

/// Polls `f` until it holds or `limit` passes; the caller reports what it saw on failure.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

fn all_acked(server: &Server, lines: &[String]) -> bool {
    let s = server.state();
    lines.iter().all(|l| s.acked.contains(l))
}

#[test]
fn partial_keepalive_and_slow_acks_deliver_exactly_once() {
    let server = Server::start(Behaviour {
        ack_every: 7,
        keepalive: true,
        // Longer than the client's 1 s timeout: only the keepalives keep the window alive.
        slow_ack: Duration::from_millis(1500),
        keepalive_every: Duration::from_millis(200),
        ..Behaviour::default()
    });
    let sb = Sandbox::new();
    config(
        &sb,
        &server.addr,
        "    compression_level: 3\n    timeout: 1s\n    window: 64\n    max_in_flight: 2",
    );
    let lines = write_logs(&sb, 300);
    let mut agent = sb.start();
    wait_until(Duration::from_secs(60), "every line acknowledged", || {
        all_acked(&server, &lines)
    });
    assert!(agent.stop().success(), "{}", agent.stderr());
    let s = server.state();
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    let counts = s.counts();
    assert_eq!(counts.len(), lines.len());
    // No failure happened, so nothing may have been sent twice.
    assert!(
        counts.values().all(|&c| c == 1),
        "duplicates without a failure"
    );
    assert!(s.compressed_frames > 0);
    assert!(
        s.connections <= 2,
        "{} connections: a keepalive did not reset the timeout",
        s.connections
    );
    let first = s.first_event.as_ref().unwrap();
    assert_eq!(first["@metadata"]["beat"], "logferry");
    assert_eq!(first["input"]["id"], "app");
}

#[test]
fn reset_stall_and_window_maximum_lose_nothing() {
    let server = Server::start(Behaviour {
        ack_every: 50,
        reset_windows: vec![12, 20],
        stall_windows: vec![16],
        max_window: Some(120),
        ..Behaviour::default()
    });
    let sb = Sandbox::new();
    config(
        &sb,
        &server.addr,
        "    compression_level: 0\n    timeout: 1s\n    window: 2048\n    max_in_flight: 1",
    );
    let lines = write_logs(&sb, 4000);
    let mut agent = sb.start();
    let done = eventually(Duration::from_secs(90), || all_acked(&server, &lines));
    assert!(
        done,
        "not every line acknowledged: {:?}\n{}",
        server.state().window_sizes,
        agent.stderr()
    );
    assert!(agent.stop().success(), "{}", agent.stderr());
    let s = server.state();
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    let counts = s.counts();
    assert_eq!(counts.len(), lines.len(), "a line never arrived");
    let dups = counts.values().filter(|&&c| c > 1).count();
    assert!(
        dups > 0,
        "a reset mid-window must resend the unacknowledged rest"
    );
    assert_eq!(s.resets, 2);
    assert_eq!(s.stalls, 1);
    assert!(
        s.over_max >= 1,
        "the window never went over the server's maximum"
    );
    // After refusals the window settles at or under the maximum: the last windows fit.
    let tail: Vec<u32> = s.window_sizes.iter().rev().take(3).copied().collect();
    assert!(
        tail.iter().all(|&n| n <= 120),
        "window sizes at the end: {tail:?}"
    );
    let stderr = agent.stderr();
    assert!(
        stderr.contains("no ack for"),
        "the stall must end in a timeout:\n{stderr}"
    );
}

#[test]
fn failover_to_the_second_host() {
    let server = Server::start(Behaviour::default());
    let dead = format!("127.0.0.1:{}", crate::util::free_port());
    let sb = Sandbox::new();
    sb.config(&app_config(
        "",
        "",
        &format!(
            r#"  - id: ls
    type: logstash
    hosts: ["{dead}", "{}"]
    timeout: 2s
    batch: {{ timeout: 50ms }}
    retry: {{ initial: 10ms, max: 100ms }}"#,
            server.addr
        ),
    ));
    let lines = write_logs(&sb, 100);
    let mut agent = sb.start();
    wait_until(Duration::from_secs(30), "every line acknowledged", || {
        all_acked(&server, &lines)
    });
    assert!(agent.stop().success());
    assert!(server.state().violations.is_empty());
}
