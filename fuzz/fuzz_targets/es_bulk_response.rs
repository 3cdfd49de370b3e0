//! The Elasticsearch bulk-response parser on arbitrary bytes: it must never panic, and
//! whatever it accepts must classify without panicking. When the bytes are valid JSON of the
//! bulk shape, the statuses it reads must agree with serde_json's reading.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry::outputs::elasticsearch::response::{classify, parse};

fuzz_target!(|data: &[u8]| {
    for stop_early in [true, false] {
        if let Ok(r) = parse(data, stop_early) {
            for item in &r.items {
                let _ = classify(item);
            }
            let _ = r.all_ok();
            if !stop_early
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(data)
                && let Some(items) = v.get("items").and_then(|i| i.as_array())
                && r.items_read
            {
                assert_eq!(items.len(), r.items.len());
            }
        }
    }
});
