//! The CRI container log line, written by berth-shim (for its own containers) and by berthd (for
//! containerd shims' FIFOs), and read back by berthd's attach: one codec for all three.
//!
//! A record is `<RFC 3339 UTC time, nine fractional digits> <stdout|stderr> <F|P> <content>\n`, as
//! kubelet reads it: `F` ends a line (whose newline is not part of the content), `P` is a part of one.

use std::time::SystemTime;

/// Appends `t` as RFC 3339 with nanoseconds in UTC (`2024-01-01T00:00:00.000000000Z`; Go's
/// `time.RFC3339Nano` parses it, and nine digits keep lines sortable).
pub fn push_timestamp(out: &mut Vec<u8>, t: SystemTime) {
    use std::io::Write as _;
    let _ = write!(out, "{}", humantime::format_rfc3339_nanos(t));
}

/// Appends one record: `stream` is `stdout` or `stderr`, `partial` says the content ends no line.
pub fn push_record(out: &mut Vec<u8>, t: SystemTime, stream: &str, partial: bool, content: &[u8]) {
    push_timestamp(out, t);
    out.push(b' ');
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// One record read back (without its newline): the stream it came from and the output it stands
/// for (an `F` record's content with the newline it ended).
pub fn decode_record(line: &[u8]) -> Option<(&str, Vec<u8>)> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let _time = parts.next()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or_default();
    let mut out = content.to_vec();
    match tag {
        b"F" => out.push(b'\n'),
        b"P" => {}
        _ => return None,
    }
    Some((stream, out))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn ts(secs: u64, nanos: u32) -> String {
        let mut v = Vec::new();
        push_timestamp(&mut v, UNIX_EPOCH + Duration::new(secs, nanos));
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn timestamps_are_rfc3339_with_nine_digits() {
        assert_eq!(ts(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(ts(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(ts(1_704_067_199, 999_999_999), "2023-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn records_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_704_067_200, 42);
        let mut out = Vec::new();
        push_record(&mut out, t, "stdout", false, b"hi there");
        push_record(&mut out, t, "stderr", true, b"part");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "2024-01-01T00:00:00.000000042Z stdout F hi there\n2024-01-01T00:00:00.000000042Z stderr P part\n"
        );
        let lines: Vec<&[u8]> = out.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(decode_record(lines[0]), Some(("stdout", b"hi there\n".to_vec())));
        assert_eq!(decode_record(lines[1]), Some(("stderr", b"part".to_vec())));
        assert_eq!(
            decode_record(b"2024-01-01T00:00:00Z stdout F"),
            Some(("stdout", b"\n".to_vec()))
        );
        assert_eq!(decode_record(b"garbage"), None);
        assert_eq!(decode_record(b"t stdout X what"), None);
    }
}
