//! Arbitrary bytes as agent.yaml: loading never panics; it yields a config or located errors.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let env = |k: &str| if k == "SET" { Some("v".to_owned()) } else { None };
        let _ = logferry::config::load_str_with_env("fuzz.yaml", text, &env);
        let _ = logferry::config::expand_env(text, &env);
        let _ = logferry::config::locate(text, "inputs[0].multiline.pattern");
    }
});
