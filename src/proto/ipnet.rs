//! Address ranges (`10.0.0.0/8`, `192.0.2.7`, `2001:db8::/32`): where a stream may take its
//! media from. Pure parsing and matching; a bare address is a one-address range.

use std::fmt;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// The network's address, host bits cleared.
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpNetError {
    Address,
    Prefix,
}

impl fmt::Display for IpNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpNetError::Address => "not an IP address (e.g. 192.0.2.7 or 10.0.0.0/8)",
            IpNetError::Prefix => "prefix length past the address's bits (32 for IPv4, 128 for IPv6)",
        })
    }
}

fn bits(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// The address as a 128-bit number (IPv4 in the low 32 bits) and its width.
fn as_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn mask(prefix: u8, width: u8) -> u128 {
    debug_assert!(prefix <= width && width <= 128);
    if prefix == 0 {
        return 0;
    }
    let ones = u128::MAX << (128 - u32::from(prefix));
    ones >> (128 - u32::from(width))
}

impl IpNet {
    /// One address.
    pub fn host(addr: IpAddr) -> IpNet {
        // An IPv4 address seen through an IPv6 socket is the IPv4 one.
        let addr = canonical(addr);
        IpNet { addr, prefix: bits(addr) }
    }

    pub fn parse(text: &str) -> Result<IpNet, IpNetError> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| IpNetError::Address)?;
        let addr = canonical(addr);
        let width = bits(addr);
        let prefix = match prefix {
            None => width,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => p.parse::<u8>().map_err(|_| IpNetError::Prefix)?,
            Some(_) => return Err(IpNetError::Prefix),
        };
        if prefix > width {
            return Err(IpNetError::Prefix);
        }
        let value = as_u128(addr) & mask(prefix, width);
        let addr = match addr {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(value as u32)),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(value)),
        };
        Ok(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let width = bits(ip);
        as_u128(ip) & mask(self.prefix, width) == as_u128(self.addr)
    }

    /// A single address (not a range): what the single port can learn an SSRC from.
    pub fn single(&self) -> Option<IpAddr> {
        (self.prefix == bits(self.addr)).then_some(self.addr)
    }
}

/// `::ffff:a.b.c.d` is `a.b.c.d`.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.single() {
            Some(a) => write!(f, "{a}"),
            None => write!(f, "{}/{}", self.addr, self.prefix),
        }
    }
}

/// Private, loopback, link-local or unspecified: an address that says nothing about where a
/// device behind NAT sends from.
pub fn is_local(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => {
            a.is_private() || a.is_loopback() || a.is_link_local() || a.is_unspecified() || a.octets()[0] == 100 && (a.octets()[1] & 0xC0) == 64
        }
        IpAddr::V6(a) => a.is_loopback() || a.is_unspecified() || (a.segments()[0] & 0xfe00) == 0xfc00 || (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_hosts_and_ranges() {
        let net = IpNet::parse("10.1.2.3/8").unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains(ip("10.200.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::1")));
        let host = IpNet::parse(" 192.0.2.7 ").unwrap();
        assert_eq!(host.single(), Some(ip("192.0.2.7")));
        assert!(host.contains(ip("::ffff:192.0.2.7")), "an IPv4-mapped address is the IPv4 one");
        assert!(!host.contains(ip("192.0.2.8")));
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains(ip("203.0.113.1")));
        let v6 = IpNet::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8::9")) && !v6.contains(ip("2001:db9::9")));
        assert_eq!(IpNet::parse("::/0").unwrap().single(), None);
    }

    #[test]
    fn refuses_what_is_not_a_range() {
        for bad in ["", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/+8", "10.0.0.0/0008", "::/129", "host", "10.0.0.0/8/8", "1.2.3"] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_addresses() {
        for local in ["10.0.0.8", "192.168.1.64", "172.16.0.1", "127.0.0.1", "169.254.1.1", "100.64.0.1", "0.0.0.0", "fd00::1", "fe80::1", "::1"] {
            assert!(is_local(ip(local)), "{local}");
        }
        for public in ["203.0.113.9", "8.8.8.8", "100.128.0.1", "2001:db8::1"] {
            assert!(!is_local(ip(public)), "{public}");
        }
    }
}
