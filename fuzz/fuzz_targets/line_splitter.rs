//! Arbitrary bytes in arbitrary chunks through the line splitter: never panics, offsets tile
//! the input, and no line exceeds the cap.
#![no_main]
use libfuzzer_sys::fuzz_target;
use logferry::inputs::file::lines::LineSplitter;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = 1 + data[0] as usize;
    let chunk = 1 + data[1] as usize;
    let input = &data[2..];
    let mut s = LineSplitter::new(0, max);
    let mut expect = 0u64;
    for piece in input.chunks(chunk) {
        s.feed(piece);
        while let Some(l) = s.next_line() {
            assert_eq!(l.offset, expect);
            assert!(l.text.len() <= max);
            expect = l.end;
        }
    }
    if let Some(l) = s.finish() {
        assert_eq!(l.offset, expect);
        expect = l.end;
    }
    assert_eq!(expect, input.len() as u64);
});
