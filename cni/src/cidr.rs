//! IP prefixes (`10.88.0.5/16`, `fd00::1/64`): an address with a prefix length, written and read in the
//! usual slash form.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An address and a prefix length. The address may have host bits set (an interface address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, String> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("prefix length {prefix} is too long for {addr}"));
        }
        Ok(Cidr { addr, prefix })
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    fn bits(&self) -> u32 {
        if self.is_ipv4() { 32 } else { 128 }
    }

    fn to_u128(ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        }
    }

    fn addr_of(&self, v: u128) -> IpAddr {
        if self.is_ipv4() {
            IpAddr::V4(Ipv4Addr::from(v as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(v))
        }
    }

    fn mask(&self) -> u128 {
        let host_bits = self.bits() - u32::from(self.prefix);
        let all = if self.is_ipv4() {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        if host_bits >= 128 {
            0
        } else {
            all & !((1u128 << host_bits) - 1)
        }
    }

    /// The network this address is in (host bits cleared).
    pub fn network(&self) -> Cidr {
        Cidr {
            addr: self.addr_of(Self::to_u128(self.addr) & self.mask()),
            prefix: self.prefix,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4() && Self::to_u128(ip) & self.mask() == Self::to_u128(self.addr) & self.mask()
    }

    /// How many addresses the prefix spans (saturating for a /0 in IPv6).
    pub fn size(&self) -> u128 {
        let host_bits = self.bits() - u32::from(self.prefix);
        if host_bits >= 128 {
            u128::MAX
        } else {
            1u128 << host_bits
        }
    }

    /// The `n`th address of the network (0 is the network address itself).
    pub fn nth(&self, n: u128) -> Option<IpAddr> {
        (n < self.size()).then(|| self.addr_of((Self::to_u128(self.addr) & self.mask()) + n))
    }

    /// The offset of `ip` in this network.
    pub fn offset(&self, ip: IpAddr) -> Option<u128> {
        self.contains(ip)
            .then(|| Self::to_u128(ip) - (Self::to_u128(self.addr) & self.mask()))
    }

    /// `ip` with this prefix length.
    pub fn with_addr(&self, ip: IpAddr) -> Cidr {
        Cidr {
            addr: ip,
            prefix: self.prefix,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an address with a prefix length (like 10.88.0.0/16)"))?;
        let addr: IpAddr = a.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = p.parse().map_err(|e| format!("{s:?}: prefix length: {e}"))?;
        Cidr::new(addr, prefix)
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;

    fn try_from(s: String) -> Result<Cidr, String> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_walk() {
        let c: Cidr = "10.88.1.7/16".parse().unwrap();
        assert_eq!(c.network().to_string(), "10.88.0.0/16");
        assert!(c.contains("10.88.255.1".parse().unwrap()));
        assert!(!c.contains("10.89.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert_eq!(c.size(), 65536);
        assert_eq!(c.nth(1).unwrap().to_string(), "10.88.0.1");
        assert_eq!(c.nth(65536), None);
        assert_eq!(c.offset("10.88.1.0".parse().unwrap()), Some(256));
        let v6: Cidr = "fd00:b::5/64".parse().unwrap();
        assert_eq!(v6.network().to_string(), "fd00:b::/64");
        assert_eq!(v6.nth(2).unwrap().to_string(), "fd00:b::2");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        let z: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(z.contains("1.2.3.4".parse().unwrap()));
    }
}
