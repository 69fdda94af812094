//! RFC 3339 times as other programs write them (`2026-12-07T22:46:04Z`,
//! `2026-12-07T23:46:04.5+01:00`), read with their precision: Prometheus's `lastConfigTime` counts
//! whole seconds, a file's change time nanoseconds, and `--verify-json`'s `>=` compares two times
//! at the precision of the coarser one (a reload in the second the file changed is not before it).
//!
//! humantime reads only `Z` times from 1970 on; apps write offsets, and Go's zero time
//! (`0001-01-01T00:00:00Z`, "never") must read as a time before any change, not as an error.

use std::cmp::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

/// A point in time with the number of fractional digits it was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Time {
    /// Nanoseconds since the Unix epoch (negative before it).
    pub nanos: i128,
    /// Fractional digits of the second, 0 to 9.
    pub digits: u8,
}

impl Time {
    /// A system time, to the nanosecond.
    pub(crate) fn from_system(t: SystemTime) -> Time {
        let nanos = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        Time { nanos, digits: 9 }
    }

    /// The order of two times at the precision of the coarser one.
    pub(crate) fn cmp_coarse(self, other: Time) -> Ordering {
        let unit = 10i128.pow(9 - u32::from(self.digits.min(other.digits)));
        self.nanos
            .div_euclid(unit)
            .cmp(&other.nanos.div_euclid(unit))
    }
}

/// Reads `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (`t`, `z` and a space for `T` accepted, as
/// RFC 3339 allows); digits beyond nanoseconds are dropped.
pub(crate) fn parse(s: &str) -> Option<Time> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let d = b.get(from..from + len)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0i64, |n, c| n * 10 + i64::from(c - b'0')))
    };
    let at = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let (mut fraction, mut digits) = (0i128, 0u8);
    if at(i, b".") {
        i += 1;
        let start = i;
        while at(i, b"0123456789") {
            if digits < 9 {
                fraction = fraction * 10 + i128::from(b[i] - b'0');
                digits += 1;
            }
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && at(i + 3, b":") => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 3600 + m * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let nanos = i128::from(secs) * 1_000_000_000 + fraction * 10i128.pow(9 - u32::from(digits));
    Some(Time { nanos, digits })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_read_with_their_precision() {
        let secs = |s: i128| s * 1_000_000_000;
        let cases: &[(&str, Option<(i128, u8)>)] = &[
            ("1970-01-01T00:00:00Z", Some((0, 0))),
            ("2026-12-07T22:46:04Z", Some((secs(1_796_683_564), 0))),
            ("2026-12-07t22:46:04z", Some((secs(1_796_683_564), 0))),
            ("2026-12-07 23:46:04+01:00", Some((secs(1_796_683_564), 0))),
            ("2026-12-07T21:16:04-01:30", Some((secs(1_796_683_564), 0))),
            (
                "2026-12-07T22:46:04.5Z",
                Some((secs(1_796_683_564) + 500_000_000, 1)),
            ),
            (
                "2026-12-07T22:46:04.123456789123Z",
                Some((secs(1_796_683_564) + 123_456_789, 9)),
            ),
            ("2024-02-29T00:00:00Z", Some((secs(1_709_164_800), 0))),
            ("0001-01-01T00:00:00Z", Some((secs(-62_135_596_800), 0))),
            ("2023-02-29T00:00:00Z", None),
            ("2026-13-01T00:00:00Z", None),
            ("2026-12-07T24:00:00Z", None),
            ("2026-12-07T22:46:04", None),
            ("2026-12-07T22:46:04.Z", None),
            ("2026-12-07T22:46:04+0100", None),
            ("2026-12-07T22:46:04Zx", None),
            ("2026-12-07", None),
            ("yesterday", None),
            ("", None),
            ("2026-12-07T22:46:0ü", None),
        ];
        for (text, want) in cases {
            let got = parse(text).map(|t| (t.nanos, t.digits));
            assert_eq!(got, *want, "{text}");
        }
    }

    #[test]
    fn times_compare_at_the_coarser_precision() {
        let t = |s| parse(s).unwrap();
        let change = Time::from_system(UNIX_EPOCH + Duration::new(1_796_683_564, 700_000_000));
        // Prometheus's whole second of a reload 0.1 s after a change at .7: not before it.
        assert_eq!(
            t("2026-12-07T22:46:04Z").cmp_coarse(change),
            Ordering::Equal
        );
        assert_eq!(
            t("2026-12-07T22:46:04.6Z").cmp_coarse(change),
            Ordering::Less
        );
        assert_eq!(t("2026-12-07T22:46:03Z").cmp_coarse(change), Ordering::Less);
        assert_eq!(
            t("2026-12-07T22:46:05Z").cmp_coarse(change),
            Ordering::Greater
        );
        let before = Time::from_system(UNIX_EPOCH - Duration::from_millis(1500));
        assert_eq!(before.nanos, -1_500_000_000);
        assert_eq!(
            t("1969-12-31T23:59:58Z").cmp_coarse(before),
            Ordering::Equal
        );
    }
}
