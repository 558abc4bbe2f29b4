//! Address allocation for the built-in bridge. Each address handed out is a file,
//! `<dir>/<range>/<ip>`, holding its owner's pod ID and created with `O_EXCL`, so no address is
//! given twice, even by two processes at once; allocations survive a daemon restart and are freed
//! by their owner. The directory lives in berth's state directory, which a reboot empties together
//! with the network namespaces that used the addresses.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::cidr::Cidr;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
}

impl Ipam {
    pub fn new(dir: impl Into<PathBuf>) -> Ipam {
        Ipam { dir: dir.into() }
    }

    fn range_dir(&self, range: &Cidr) -> PathBuf {
        self.dir.join(range.network().to_string().replace(['/', ':'], "_"))
    }

    /// Allocates a free address of `range` for `owner`, skipping the network address, the
    /// broadcast address (IPv4) and `reserved` (the gateway). Addresses are handed out round-robin,
    /// so a just-freed address is not reused at once.
    pub fn allocate(&self, range: &Cidr, reserved: &[IpAddr], owner: &str) -> Result<IpAddr> {
        let dir = self.range_dir(range);
        std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        let last_file = dir.join("last");
        let size = range.size();
        let top = if range.is_ipv4() { size.saturating_sub(1) } else { size };
        let start = std::fs::read_to_string(&last_file)
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .and_then(|ip| range.offset(ip))
            .unwrap_or(0);
        // Walk at most a bounded number of candidates: an IPv6 /64 is never exhausted.
        let span = top.min(1 << 20);
        for i in 1..=span {
            let off = (start + i) % top.max(1);
            if off == 0 {
                continue;
            }
            let Some(ip) = range.nth(off) else { continue };
            if reserved.contains(&ip) {
                continue;
            }
            let f = dir.join(ip.to_string());
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&f) {
                Ok(mut file) => {
                    file.write_all(owner.as_bytes()).map_err(Error::io("write", &f))?;
                    let _ = std::fs::write(&last_file, ip.to_string());
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("create", &f)(e)),
            }
        }
        Err(Error::Exhausted(range.network().to_string()))
    }

    /// Frees `ip` in `range` if `owner` holds it. Freeing a free address is fine.
    pub fn release(&self, range: &Cidr, ip: IpAddr, owner: &str) -> Result<()> {
        let f = self.range_dir(range).join(ip.to_string());
        match std::fs::read_to_string(&f) {
            Ok(o) if o == owner => std::fs::remove_file(&f).map_err(Error::io("remove", &f)),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("read", &f)(e)),
        }
    }

    /// Every allocation: (address, owner).
    pub fn allocations(&self) -> Vec<(IpAddr, String)> {
        let mut out = Vec::new();
        for range in read_dir(&self.dir) {
            for f in read_dir(&range) {
                let Some(ip) = f
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<IpAddr>().ok())
                else {
                    continue;
                };
                out.push((ip, std::fs::read_to_string(&f).unwrap_or_default()));
            }
        }
        out
    }

    /// Frees every allocation whose owner `keep` does not know (left by a crash between
    /// allocation and the pod record being written). Returns how many were freed.
    pub fn gc(&self, keep: &dyn Fn(&str) -> bool) -> usize {
        let mut n = 0;
        for range in read_dir(&self.dir) {
            for f in read_dir(&range) {
                if f.file_name()
                    .and_then(|n| n.to_str())
                    .is_none_or(|n| n.parse::<IpAddr>().is_err())
                {
                    continue;
                }
                let owner = std::fs::read_to_string(&f).unwrap_or_default();
                if !keep(&owner) && std::fs::remove_file(&f).is_ok() {
                    tracing::info!(ip = %f.display(), owner, "freed an address no pod owns");
                    n += 1;
                }
            }
        }
        n
    }
}

fn read_dir(d: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(d)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_uniquely_frees_and_wraps() {
        let d = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(d.path());
        let range: Cidr = "10.9.0.0/29".parse().unwrap();
        let gw: IpAddr = "10.9.0.1".parse().unwrap();
        let mut got = Vec::new();
        for i in 0..5 {
            got.push(ipam.allocate(&range, &[gw], &format!("pod{i}")).unwrap());
        }
        let want: Vec<IpAddr> = (2..=6).map(|i| format!("10.9.0.{i}").parse().unwrap()).collect();
        assert_eq!(got, want, "network, gateway and broadcast are never handed out");
        assert!(matches!(ipam.allocate(&range, &[gw], "pod5"), Err(Error::Exhausted(_))));
        // Only the owner frees.
        ipam.release(&range, got[1], "someone-else").unwrap();
        assert!(ipam.allocate(&range, &[gw], "pod5").is_err());
        ipam.release(&range, got[1], "pod1").unwrap();
        ipam.release(&range, got[1], "pod1").unwrap();
        assert_eq!(ipam.allocate(&range, &[gw], "pod5").unwrap(), got[1]);
        // A second allocator on the same directory (a restarted daemon) sees the allocations.
        let again = Ipam::new(d.path());
        assert_eq!(again.allocations().len(), 5);
        assert_eq!(again.gc(&|o| o != "pod3"), 1);
        assert_eq!(again.allocate(&range, &[gw], "pod6").unwrap(), got[3]);
    }

    #[test]
    fn ipv6_ranges() {
        let d = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(d.path());
        let range: Cidr = "fd00:b::/64".parse().unwrap();
        let gw: IpAddr = "fd00:b::1".parse().unwrap();
        assert_eq!(ipam.allocate(&range, &[gw], "a").unwrap().to_string(), "fd00:b::2");
        assert_eq!(ipam.allocate(&range, &[gw], "b").unwrap().to_string(), "fd00:b::3");
    }
}
