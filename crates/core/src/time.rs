//! Times as toolgate stores them: Unix milliseconds, shown as RFC 3339.
//!
//! Core reads no clock; callers pass `now` in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `ms` (Unix milliseconds) as RFC 3339 in UTC, to the second:
/// `2026-11-22T20:30:00Z`.
pub fn format_millis(ms: i64) -> String {
    let time = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A system time as Unix milliseconds (0 before 1970).
pub fn to_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(duration_millis)
        .unwrap_or(0)
}

/// A duration in whole milliseconds, as toolgate stores times (at most
/// `i64::MAX`).
pub fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The time `duration` after `now` (Unix milliseconds), at most
/// `i64::MAX`.
pub fn after(now: i64, duration: Duration) -> i64 {
    now.saturating_add(duration_millis(duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_format_as_rfc3339() {
        assert_eq!(format_millis(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_millis(1_795_379_400_123), "2026-11-22T20:30:00Z");
        assert_eq!(to_millis(UNIX_EPOCH + Duration::from_millis(42)), 42);
        assert_eq!(after(1_000, Duration::from_millis(1_500)), 2_500);
        assert_eq!(after(1_000, Duration::MAX), i64::MAX);
        assert_eq!(duration_millis(Duration::MAX), i64::MAX);
    }
}
