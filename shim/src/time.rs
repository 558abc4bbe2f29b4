//! Protobuf `Timestamp`s for the task API (RFC 3339 text for log lines is [`berth_proto::crilog`]'s).

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn protobuf_timestamp() {
        let t = timestamp(UNIX_EPOCH + Duration::new(12, 34));
        assert_eq!((t.seconds, t.nanos), (12, 34));
    }
}
