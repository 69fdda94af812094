//! Fuzzes the /proc parsers (`stat`, `status`, `mountinfo`): whatever a kernel or a hostile
//! process name puts there, parsing must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(p) = secret_reloader::process::parse_stat(&text) {
        assert!(text.contains(&p.comm));
    }
    if let Some(st) = secret_reloader::process::parse_status(&text) {
        let _ = (st.catches(1), st.ignores(64), st.catches(0), st.ignores(65));
    }
    for m in secret_reloader::watch::mounts::parse_mountinfo(&text) {
        let _ = m.from_kubelet_version();
    }
});
