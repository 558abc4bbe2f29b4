//! Stop signals: the CRI's `Signal` enum (ContainerConfig.stop_signal, Kubernetes' container
//! `lifecycle.stopSignal`), an image's `StopSignal` ("SIGTERM", "TERM", "15", "SIGRTMIN+3"), and
//! the Linux signal numbers they name. A container's signal is resolved once, at creation: its
//! config's, else its image's, else SIGTERM; StopContainer sends it and ContainerStatus reports it.

use berth_proto::cri::Signal;

use crate::error::{Error, Result};

pub const SIGTERM: u32 = 15;

/// Linux (x86_64, arm64, and every architecture Kubernetes nodes run) signal names and numbers.
const NAMES: &[(&str, u32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// glibc's SIGRTMIN and SIGRTMAX (the kernel's first two real-time signals are the C library's).
const RTMIN: u32 = 34;
const RTMAX: u32 = 64;

/// The number a signal name names: with or without `SIG`, any case, `RTMIN+n` / `RTMAX-n`, or a number.
pub fn parse(name: &str) -> Option<u32> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Ok(n) = bare.parse::<u32>() {
        return (1..=RTMAX).contains(&n).then_some(n);
    }
    if let Some(n) = NAMES.iter().find(|(s, _)| *s == bare).map(|(_, n)| *n) {
        return Some(n);
    }
    let rt = |rest: &str, base: u32, up: bool| -> Option<u32> {
        let off = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix(if up { '+' } else { '-' })?.parse().ok()?
        };
        let n = if up {
            base.checked_add(off)?
        } else {
            base.checked_sub(off)?
        };
        (RTMIN..=RTMAX).contains(&n).then_some(n)
    };
    if let Some(rest) = bare.strip_prefix("RTMIN") {
        return rt(rest, RTMIN, true);
    }
    bare.strip_prefix("RTMAX").and_then(|rest| rt(rest, RTMAX, false))
}

/// The number of a CRI signal; None for RUNTIME_DEFAULT. An enum value the CRI does not define is
/// refused.
pub fn from_cri(value: i32) -> Result<Option<u32>> {
    let sig = Signal::try_from(value)
        .map_err(|_| Error::InvalidArgument(format!("stop_signal {value} is not a CRI Signal")))?;
    if sig == Signal::RuntimeDefault {
        return Ok(None);
    }
    // SIGRTMINPLUS3 → RTMIN+3, SIGRTMAXMINUS2 → RTMAX-2.
    let name = sig.as_str_name().replace("PLUS", "+").replace("MINUS", "-");
    parse(&name)
        .map(Some)
        .ok_or_else(|| Error::Internal(format!("CRI signal {name} has no number")))
}

/// The CRI signal of a number (the first name of a number that has two: SIGABRT, SIGCHLD, SIGIO).
pub fn to_cri(n: u32) -> Signal {
    let name = if (RTMIN..=RTMAX).contains(&n) {
        match n {
            RTMIN => "SIGRTMIN".to_string(),
            RTMAX => "SIGRTMAX".to_string(),
            n if n - RTMIN <= 15 => format!("SIGRTMINPLUS{}", n - RTMIN),
            n => format!("SIGRTMAXMINUS{}", RTMAX - n),
        }
    } else {
        match NAMES.iter().find(|(_, v)| *v == n) {
            Some((s, _)) => format!("SIG{s}"),
            None => return Signal::RuntimeDefault,
        }
    };
    Signal::from_str_name(&name).unwrap_or(Signal::RuntimeDefault)
}

/// A container's stop signal: its config's, else its image's `StopSignal`, else SIGTERM.
pub fn resolve(config: i32, image: Option<&str>) -> Result<u32> {
    if let Some(n) = from_cri(config)? {
        return Ok(n);
    }
    Ok(match image.filter(|s| !s.is_empty()) {
        Some(s) => parse(s).unwrap_or_else(|| {
            tracing::warn!(signal = s, "image's StopSignal is not a signal; using SIGTERM");
            SIGTERM
        }),
        None => SIGTERM,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        for (s, n) in [
            ("SIGTERM", 15),
            ("term", 15),
            ("9", 9),
            ("SIGRTMIN", 34),
            ("SIGRTMIN+3", 37),
            ("RTMAX-1", 63),
            ("SIGRTMAX", 64),
            ("SIGWINCH", 28),
        ] {
            assert_eq!(parse(s), Some(n), "{s}");
        }
        for bad in ["", "SIGNOPE", "0", "65", "RTMIN+31", "RTMAX-31", "RTMIN3"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_cri_signal_has_a_number_and_comes_back() {
        for v in 1..=65 {
            let sig = Signal::try_from(v).unwrap();
            let n = from_cri(v).unwrap().unwrap_or_else(|| panic!("{sig:?}"));
            let back = to_cri(n);
            // Aliases come back as the first name of their number.
            let alias = matches!(sig, Signal::Sigiot | Signal::Sigcld | Signal::Sigpoll);
            assert!(back == sig || alias, "{sig:?} → {n} → {back:?}");
        }
        assert_eq!(from_cri(0).unwrap(), None);
        assert!(matches!(from_cri(66), Err(Error::InvalidArgument(_))));
        assert_eq!(to_cri(15), Signal::Sigterm);
        assert_eq!(to_cri(36), Signal::Sigrtminplus2);
        assert_eq!(to_cri(50), Signal::Sigrtmaxminus14);
    }

    #[test]
    fn config_over_image_over_default() {
        assert_eq!(resolve(Signal::Sigusr1 as i32, Some("SIGQUIT")).unwrap(), 10);
        assert_eq!(resolve(0, Some("SIGQUIT")).unwrap(), 3);
        assert_eq!(resolve(0, None).unwrap(), SIGTERM);
        assert_eq!(resolve(0, Some("bogus")).unwrap(), SIGTERM);
    }
}
