//! Pressure stall information (PSI): how long a cgroup's tasks waited for CPU, memory or IO, from
//! the cgroup v2 `cpu.pressure`, `memory.pressure` and `io.pressure` files. cgroup v1 has no such
//! files (the kernel keeps PSI per v2 cgroup only), so on a v1 host every reading is `None`: empty,
//! never a made-up zero.

use std::path::Path;

/// One line of a pressure file (`some ...` or `full ...`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stall {
    /// Percent of wall time stalled, averaged over 10, 60 and 300 seconds.
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Cumulative stall time, nanoseconds (the kernel counts microseconds).
    pub total_ns: u64,
}

/// A pressure file: `some` (at least one task stalled) and `full` (all non-idle tasks stalled).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    pub some: Option<Stall>,
    pub full: Option<Stall>,
}

/// The three pressure files of one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressures {
    pub cpu: Option<Pressure>,
    pub memory: Option<Pressure>,
    pub io: Option<Pressure>,
}

/// Reads the pressure files of the cgroup directory `dir` (an absolute path in the v2 hierarchy).
pub fn read(dir: &Path) -> Pressures {
    let file = |name: &str| std::fs::read_to_string(dir.join(name)).ok().and_then(|t| parse(&t));
    Pressures {
        cpu: file("cpu.pressure"),
        memory: file("memory.pressure"),
        io: file("io.pressure"),
    }
}

/// Parses `some avg10=0.12 avg60=0.05 avg300=0.01 total=12345` (and its `full` line).
pub fn parse(text: &str) -> Option<Pressure> {
    let mut p = Pressure::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let slot = match words.next() {
            Some("some") => &mut p.some,
            Some("full") => &mut p.full,
            _ => continue,
        };
        let mut s = Stall::default();
        for w in words {
            let Some((k, v)) = w.split_once('=') else { continue };
            match k {
                "avg10" => s.avg10 = v.parse().ok()?,
                "avg60" => s.avg60 = v.parse().ok()?,
                "avg300" => s.avg300 = v.parse().ok()?,
                "total" => s.total_ns = v.parse::<u64>().ok()?.saturating_mul(1000),
                _ => {}
            }
        }
        *slot = Some(s);
    }
    (p.some.is_some() || p.full.is_some()).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_some_and_full() {
        let p = parse(
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=2500\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
        )
        .unwrap();
        assert_eq!(
            p.some,
            Some(Stall {
                avg10: 1.5,
                avg60: 0.25,
                avg300: 0.0,
                total_ns: 2_500_000
            })
        );
        assert_eq!(p.full.unwrap().total_ns, 7000);
        // Old kernels' cpu.pressure has no full line.
        let cpu = parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap();
        assert!(cpu.some.is_some() && cpu.full.is_none());
        assert_eq!(parse(""), None);
        assert_eq!(parse("some avg10=x total=1"), None, "garbage is no reading");
    }

    #[test]
    fn reads_a_cgroup_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("memory.pressure"),
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=3\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1\n",
        )
        .unwrap();
        let p = read(d.path());
        assert_eq!(p.memory.unwrap().some.unwrap().total_ns, 3000);
        assert_eq!((p.cpu, p.io), (None, None), "files that are not there read as nothing");
    }
}
