//! Fuzzes the Lumberjack v2 ack reader with arbitrary server bytes, cut into arbitrary reads:
//! it must never panic, must parse the same acks however the bytes are split, and the window
//! state must never acknowledge more than the window holds or go backwards.

#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry::outputs::logstash::ack::{AckReader, AckStep, WindowAcks};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let window = u32::from(u16::from_be_bytes([data[0], data[1]]));
    let cut = usize::from(data[2]);
    let bytes = &data[3..];

    // Whole, and in two pieces at `cut`: the same acks, the same error.
    let mut whole = Vec::new();
    let r1 = AckReader::new().feed(bytes, |s| whole.push(s));
    let mut split = Vec::new();
    let mut reader = AckReader::new();
    let at = cut.min(bytes.len());
    let r2 = reader
        .feed(&bytes[..at], |s| split.push(s))
        .and_then(|()| reader.feed(&bytes[at..], |s| split.push(s)));
    assert_eq!(whole, split);
    assert_eq!(r1.is_ok(), r2.is_ok());
    if r1.is_ok() {
        assert_eq!(reader.partial_len(), bytes.len() % 6);
    }

    let mut acks = WindowAcks::new(window);
    let mut total = 0u32;
    for seq in whole {
        let before = acks.acked();
        match acks.apply(seq) {
            Ok(AckStep::Progress(n)) => {
                total += n;
                assert!(acks.acked() > before);
            }
            Ok(AckStep::Keepalive) => assert_eq!(acks.acked(), before),
            Err(_) => {
                assert!(seq > window);
                assert_eq!(acks.acked(), before);
            }
        }
        assert!(acks.acked() <= window);
        assert_eq!(total, acks.acked());
    }
});
