//! Text that leaves the process (log lines, `/status`, metric labels, doctor's report) made
//! from paths and values that may be hostile: never a panic on bytes that are not UTF-8, never a
//! control character that could forge a log line or a terminal escape.
//!
//! Bytes that are not UTF-8 are written `\xNN`; control characters (newline, escape, ...) and
//! backslashes are escaped as Rust does (`\n`, `\u{1b}`, `\\`). Printable text, spaces and
//! non-ASCII letters are kept as they are.

use std::fmt::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A path as shown outside the process.
pub(crate) fn path(p: &Path) -> String {
    bytes(p.as_os_str().as_bytes())
}

/// Any bytes as shown outside the process.
pub(crate) fn bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        push_escaped(&mut out, chunk.valid());
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// A string as shown outside the process.
pub(crate) fn value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped(&mut out, s);
    out
}

fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

/// A time as RFC 3339 with milliseconds, for any time (clamped to 1970..=9999, where the
/// formatter would otherwise panic).
pub(crate) fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(clamp(t)).to_string()
}

/// A time as RFC 3339 with seconds (see [`time`]).
pub(crate) fn time_seconds(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(clamp(t)).to_string()
}

/// A time as RFC 3339 with nanoseconds (see [`time`]).
pub(crate) fn time_nanos(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(clamp(t)).to_string()
}

fn clamp(t: SystemTime) -> SystemTime {
    let last = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    t.clamp(UNIX_EPOCH, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn hostile_paths_are_escaped() {
        let p = Path::new(OsStr::from_bytes(b"/v/bad\xff\xfe/name"));
        assert_eq!(path(p), "/v/bad\\xff\\xfe/name");
        assert_eq!(value("a\nFAKE LOG LINE"), "a\\nFAKE LOG LINE");
        assert_eq!(value("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(value("tls key ü"), "tls key ü");
        assert_eq!(value("a\\b"), "a\\\\b");
    }

    #[test]
    fn any_time_formats() {
        assert_eq!(
            time(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
        assert!(
            time(UNIX_EPOCH + Duration::from_secs(u32::MAX as u64 * 100)).starts_with("9999-12-31")
        );
    }
}
