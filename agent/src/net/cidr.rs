//! IPv4 networks (`a.b.c.d/n`) for the pod network.

use std::net::Ipv4Addr;

/// An IPv4 network; host bits are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Parse `a.b.c.d/n` (host bits must be zero).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: not a CIDR (a.b.c.d/n)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{s:?}: {a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: prefix must be 0..=32"))?;
        let c = Ipv4Cidr { addr, prefix };
        if u32::from(addr) & !c.mask() != 0 {
            return Err(format!("{s:?}: host bits are set"));
        }
        Ok(c)
    }

    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    pub fn contains_ip(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    pub fn contains(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix && self.contains_ip(other.addr)
    }

    /// Number of addresses.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `n`-th address of the network (0 is the network address).
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| {
            Ipv4Addr::from(u32::from(self.addr).wrapping_add(u32::try_from(n).unwrap_or(0)))
        })
    }

    /// Offset of `ip` in the network.
    pub fn offset(&self, ip: Ipv4Addr) -> Option<u64> {
        self.contains_ip(ip)
            .then(|| u64::from(u32::from(ip) - u32::from(self.addr)))
    }

    /// The gateway: the first host address (the node's bridge).
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.nth(1)
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl serde::Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ipv4Cidr::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_arith() {
        let c = Ipv4Cidr::parse("10.88.3.0/24").unwrap();
        assert_eq!(c.gateway(), Some(Ipv4Addr::new(10, 88, 3, 1)));
        assert_eq!(c.size(), 256);
        assert_eq!(c.nth(255), Some(Ipv4Addr::new(10, 88, 3, 255)));
        assert_eq!(c.nth(256), None);
        assert_eq!(c.offset(Ipv4Addr::new(10, 88, 3, 7)), Some(7));
        assert_eq!(c.offset(Ipv4Addr::new(10, 88, 4, 7)), None);
        let big = Ipv4Cidr::parse("10.88.0.0/16").unwrap();
        assert!(big.contains(&c));
        assert!(!c.contains(&big));
        assert!(Ipv4Cidr::parse("10.88.3.1/24").is_err());
        assert!(Ipv4Cidr::parse("10.88.3.0").is_err());
        assert!(Ipv4Cidr::parse("10.88.3.0/40").is_err());
        assert_eq!(c.to_string(), "10.88.3.0/24");
    }
}
