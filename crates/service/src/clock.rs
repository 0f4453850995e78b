//! The wall clock of the service shells and how they write times: the only
//! place that reads `SystemTime` for Unix timestamps (the sans-IO crates are
//! handed the time).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// What [`rfc3339`] writes for a time it cannot format (a year outside
/// 0..=9999): the Unix epoch.
const EPOCH_RFC3339: &str = "1970-01-01T00:00:00Z";

/// Unix time in seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    unix_millis() / 1000
}

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Formats a time as RFC 3339 (the xs:dateTime of `<lifetime>` on Ub,
/// TS 24.109 Annex A; `lifetime` on Zn, PROFILE.md section 5), with
/// fractional seconds only when there are any.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| String::from(EPOCH_RFC3339))
}

/// Unix seconds as RFC 3339 UTC (`2030-01-01T00:00:00Z`).
pub fn rfc3339_secs(unix_secs: u64) -> String {
    let t = i64::try_from(unix_secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    rfc3339(t)
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds
/// (`2030-01-01T00:00:00.123Z`).
pub fn rfc3339_millis(ms: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    rfc3339(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339_secs(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_secs(1_893_456_000), "2030-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_millis(1_893_456_000_123),
            "2030-01-01T00:00:00.123Z"
        );
        assert_eq!(rfc3339_millis(1_893_456_000_000), "2030-01-01T00:00:00Z");
        // Year 10000 and later cannot be written as RFC 3339.
        assert_eq!(rfc3339_secs(u64::MAX), EPOCH_RFC3339);
        assert_eq!(rfc3339_secs(253_402_300_800), EPOCH_RFC3339);
        assert!(unix_now() > 1_600_000_000);
    }
}
