//! Subnets and address allocation, pure: the caller holds the addresses in
//! use (in the state database, inside the transaction that records the new
//! one, so that no two processes hand out the same address).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An IP network: address and prefix length (`172.18.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Subnet {
    pub address: IpAddr,
    pub prefix: u8,
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for Subnet {
    type Error = Error;
    fn try_from(s: String) -> Result<Subnet> {
        s.parse()
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = Error;
    fn from_str(text: &str) -> Result<Subnet> {
        let bad = || Error::invalid(format!("invalid subnet {text:?}: expected ADDRESS/PREFIX"));
        let (address, prefix) = text.split_once('/').ok_or_else(bad)?;
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(Subnet {
            address: network_address(address, prefix),
            prefix,
        })
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(value: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(value as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

fn bits(ip: &IpAddr) -> u32 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn mask(prefix: u8, width: u32) -> u128 {
    if prefix == 0 {
        0
    } else {
        let all = if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        all ^ ((1u128 << (width - u32::from(prefix))) - 1)
    }
}

fn network_address(ip: IpAddr, prefix: u8) -> IpAddr {
    from_u128(to_u128(ip) & mask(prefix, bits(&ip)), ip.is_ipv4())
}

impl Subnet {
    pub fn is_ipv4(&self) -> bool {
        self.address.is_ipv4()
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4() && network_address(*ip, self.prefix) == self.address
    }

    /// Whether two subnets share any address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.is_ipv4() == other.is_ipv4()
            && (self.contains(&other.address) || other.contains(&self.address))
    }

    /// The address `n` places into the subnet.
    pub fn nth(&self, n: u128) -> Option<IpAddr> {
        let width = bits(&self.address);
        let size = if u32::from(self.prefix) >= width {
            1
        } else {
            1u128
                .checked_shl(width - u32::from(self.prefix))
                .unwrap_or(u128::MAX)
        };
        (n < size).then(|| from_u128(to_u128(self.address) + n, self.is_ipv4()))
    }

    /// The last address (an IPv4 subnet's broadcast).
    pub fn last(&self) -> IpAddr {
        let width = bits(&self.address);
        from_u128(
            to_u128(self.address) | !mask(self.prefix, width) & mask_width(width),
            self.is_ipv4(),
        )
    }

    /// The gateway docker picks: the first host address.
    pub fn first_host(&self) -> Option<IpAddr> {
        self.nth(1)
    }
}

fn mask_width(width: u32) -> u128 {
    if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    }
}

/// The next free address of `subnet` (within `range` if given), skipping
/// the network address, the IPv4 broadcast, the gateway and `used`.
pub fn allocate(
    subnet: &Subnet,
    range: Option<&Subnet>,
    gateway: Option<IpAddr>,
    used: &[IpAddr],
) -> Option<IpAddr> {
    let pool = range.unwrap_or(subnet);
    let width = bits(&subnet.address);
    let start = to_u128(pool.address);
    let end = to_u128(pool.last());
    let broadcast = subnet.is_ipv4().then(|| to_u128(subnet.last()));
    let network = to_u128(subnet.address);
    let used: std::collections::HashSet<u128> = used.iter().map(|ip| to_u128(*ip)).collect();
    // IPv6 pools are huge: walk from the start; allocations are dense.
    let mut candidate = start;
    loop {
        if candidate > end || candidate > mask_width(width) {
            return None;
        }
        let taken = candidate == network
            || Some(candidate) == broadcast
            || gateway.is_some_and(|g| to_u128(g) == candidate)
            || used.contains(&candidate);
        if !taken {
            return Some(from_u128(candidate, subnet.is_ipv4()));
        }
        candidate += 1;
    }
}

/// The first /16 of docker's default pools (172.17-31.0.0/16, then
/// 192.168.x.0/20) that overlaps none of `taken`.
pub fn free_pool(taken: &[Subnet]) -> Option<Subnet> {
    let candidates = (17..=31u8)
        .map(|b| Subnet {
            address: IpAddr::V4(Ipv4Addr::new(172, b, 0, 0)),
            prefix: 16,
        })
        .chain((0..=240u8).step_by(16).map(|c| Subnet {
            address: IpAddr::V4(Ipv4Addr::new(192, 168, c, 0)),
            prefix: 20,
        }));
    candidates
        .into_iter()
        .find(|c| !taken.iter().any(|t| t.overlaps(c)))
}

/// A MAC in its text form (`02:42:ac:11:00:02`).
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// A MAC from its text form; None unless it is six hex bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in mac.iter_mut() {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// A locally administered MAC derived from an address (as docker does for
/// IPv4: 02:42 and the four octets), stable for the address.
pub fn mac_for(ip: &IpAddr) -> [u8; 6] {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [0x02, 0x42, o[0], o[1], o[2], o[3]]
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [0x02, 0x42, o[12], o[13], o[14], o[15]]
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn macs_print_and_parse() {
        let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x0a];
        assert_eq!(format_mac(mac), "02:42:ac:11:00:0a");
        assert_eq!(parse_mac("02:42:ac:11:00:0a"), Some(mac));
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(parse_mac("02:42:ac:11:00:02:03"), None);
        assert_eq!(parse_mac("zz:42:ac:11:00:02"), None);
    }
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn subnets_parse_and_contain() {
        let s: Subnet = "172.18.5.9/16".parse().unwrap();
        assert_eq!(s.to_string(), "172.18.0.0/16");
        assert!(s.contains(&ip("172.18.255.1")));
        assert!(!s.contains(&ip("172.19.0.1")));
        assert_eq!(s.first_host(), Some(ip("172.18.0.1")));
        assert_eq!(s.last(), ip("172.18.255.255"));
        assert!(s.overlaps(&"172.18.3.0/24".parse().unwrap()));
        assert!(!s.overlaps(&"10.0.0.0/8".parse().unwrap()));
        let v6: Subnet = "fd00:1::/64".parse().unwrap();
        assert!(v6.contains(&ip("fd00:1::5")));
        assert_eq!(v6.first_host(), Some(ip("fd00:1::1")));
        for bad in ["172.18.0.0", "172.18.0.0/33", "nope/8", "fd00::/129"] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn allocates_each_address_once() {
        let s: Subnet = "10.1.0.0/29".parse().unwrap();
        let gateway = s.first_host();
        let mut used = Vec::new();
        let mut got = Vec::new();
        while let Some(next) = allocate(&s, None, gateway, &used) {
            used.push(next);
            got.push(next.to_string());
        }
        // .0 network, .1 gateway, .7 broadcast are never handed out.
        assert_eq!(
            got,
            ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"]
        );
        // A freed address comes back.
        used.retain(|i| i.to_string() != "10.1.0.4");
        assert_eq!(allocate(&s, None, gateway, &used), Some(ip("10.1.0.4")));
        // Within an --ip-range.
        let range: Subnet = "10.1.0.4/30".parse().unwrap();
        assert_eq!(
            allocate(&s, Some(&range), gateway, &[]),
            Some(ip("10.1.0.4"))
        );
        let v6: Subnet = "fd00::/120".parse().unwrap();
        assert_eq!(
            allocate(&v6, None, v6.first_host(), &[]),
            Some(ip("fd00::2"))
        );
    }

    #[test]
    fn picks_free_pools_and_macs() {
        let taken: Vec<Subnet> = vec![
            "172.17.0.0/16".parse().unwrap(),
            "172.18.0.0/16".parse().unwrap(),
        ];
        assert_eq!(free_pool(&taken).unwrap().to_string(), "172.19.0.0/16");
        assert_eq!(mac_for(&ip("172.18.0.2")), [0x02, 0x42, 172, 18, 0, 2]);
    }
}
