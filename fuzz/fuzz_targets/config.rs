//! Fuzzes the config file parser and validator: any text must give a configuration or errors
//! that name what is wrong, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = secret_reloader::Config::from_json(text) {
            assert!(!e.0.is_empty(), "an error without a message");
        }
    }
});
