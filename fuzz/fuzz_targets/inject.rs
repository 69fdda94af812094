//! Fuzzes the injector: any text is YAML or JSON manifests, or an error; every object it reads
//! is injected or refused with a message, never a panic; what it injects, injected again, is the
//! same (idempotent), and its output can be written back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_reloader::inject::{self, InjectFlags, Layout, stream};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((format, docs)) = stream::parse(text) else {
        return;
    };
    let flags = InjectFlags {
        image: "secret-reloader:fuzz".into(),
        layout: Layout::Native,
        all: true,
    };
    for doc in &docs {
        match inject::pod(doc, &flags) {
            Ok(Some(new)) => {
                let again = inject::pod(&new, &flags);
                assert_eq!(again, Ok(Some(new.clone())), "injecting an injected pod changed it");
                let _ = stream::write(format, &[new]);
            }
            Ok(None) => {}
            Err(e) => assert!(!e.0.is_empty(), "an error without a message"),
        }
    }
});
