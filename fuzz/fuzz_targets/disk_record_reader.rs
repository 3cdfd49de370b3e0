//! Fuzzes the disk buffer's record reader: framing (`u32 length | u32 CRC | payload`) over
//! arbitrary bytes, and the event decoder over arbitrary payloads (the CRC would otherwise
//! stop almost every input before the decoder). Neither may panic or read out of bounds; a
//! payload that decodes must re-encode to an event that decodes to the same thing.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use logferry::buffer::disk::codec::{Decoder, Encoder};
use logferry::buffer::disk::record;

fn round_trip(dec: &mut Decoder, payload: &Bytes) {
    let Ok(event) = dec.decode(payload) else {
        return;
    };
    let mut out = Vec::new();
    let at = record::begin(&mut out);
    Encoder::default().encode(&event, &mut out);
    assert!(record::finish(&mut out, at));
    let (records, valid) = record::scan(&out);
    assert_eq!((records.len(), valid), (1, out.len()));
    let buf = Bytes::from(out);
    let again = dec
        .decode(&buf.slice(records[0].clone()))
        .expect("a re-encoded event decodes");
    assert_eq!(event.to_value(), again.to_value());
    assert_eq!(event.source.file_key, again.source.file_key);
    assert_eq!(event.meta_is_live(), again.meta_is_live());
}

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    let (records, valid) = record::scan(data);
    assert!(valid <= data.len());
    let mut dec = Decoder::default();
    for r in records {
        round_trip(&mut dec, &buf.slice(r));
    }
    if !matches!(record::next_frame(data, valid), record::Frame::Incomplete { .. } | record::Frame::Corrupt(_)) {
        panic!("scan stopped before a valid record");
    }
    round_trip(&mut dec, &buf);
});
