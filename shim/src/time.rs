//! Wall-clock formatting: RFC 3339 timestamps for CRI log lines and protobuf `Timestamp`s for the
//! task API. UTC only, so the shim needs no time-zone database.

use std::time::{SystemTime, UNIX_EPOCH};

use berth_proto::shim::protobuf::well_known_types::timestamp::Timestamp;

/// A protobuf timestamp for `t`.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// Appends `t` as RFC 3339 with nanoseconds in UTC, e.g. `2024-01-01T00:00:00.000000000Z`: the format
/// of the first field of a CRI log line (Go's `time.RFC3339Nano` parses it; nine digits keep lines
/// sortable).
pub fn push_rfc3339_nano(out: &mut Vec<u8>, t: SystemTime) {
    use std::io::Write;
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    );
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fmt(secs: u64, nanos: u32) -> String {
        let mut v = Vec::new();
        push_rfc3339_nano(&mut v, UNIX_EPOCH + Duration::new(secs, nanos));
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn rfc3339() {
        assert_eq!(fmt(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(fmt(1_704_067_200, 5), "2024-01-01T00:00:00.000000005Z");
        // 2024-02-29 (leap day) 23:59:59.999999999
        assert_eq!(fmt(1_709_251_199, 999_999_999), "2024-02-29T23:59:59.999999999Z");
        assert_eq!(fmt(951_782_400, 0), "2000-02-29T00:00:00.000000000Z");
        assert_eq!(fmt(4_102_444_800, 120_000_000), "2100-01-01T00:00:00.120000000Z");
    }

    #[test]
    fn protobuf_timestamp() {
        let t = timestamp(UNIX_EPOCH + Duration::new(12, 34));
        assert_eq!((t.seconds, t.nanos), (12, 34));
    }
}
