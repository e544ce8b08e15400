//! Whether an address is configured in the calling thread's network namespace (the
//! netlink socket behind getifaddrs(3) answers for the namespace it was opened in).

use std::{
    io,
    net::{IpAddr, Ipv4Addr},
};

use nix::{ifaddrs::getifaddrs, net::if_::InterfaceFlags, sys::socket::SockaddrStorage};

use super::EnrichError;

/// An address of an interface, as far as bind() cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConfiguredAddress {
    pub ip: IpAddr,
    pub prefix_len: u8,
    /// On a loopback interface (IFF_LOOPBACK).
    pub loopback: bool,
}

pub(crate) fn configured_addresses() -> Result<Vec<ConfiguredAddress>, EnrichError> {
    let addresses =
        getifaddrs().map_err(|errno| EnrichError::Interfaces { source: io::Error::from(errno) })?;
    Ok(addresses
        .filter_map(|entry| {
            let ip = ip_of(entry.address.as_ref()?)?;
            let prefix_len = entry.netmask.as_ref().and_then(ip_of).map_or(0, prefix_len);
            let loopback = entry.flags.contains(InterfaceFlags::IFF_LOOPBACK);
            Some(ConfiguredAddress { ip, prefix_len, loopback })
        })
        .collect())
}

fn ip_of(address: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

pub(crate) fn prefix_len(netmask: IpAddr) -> u8 {
    let ones = match netmask {
        IpAddr::V4(mask) => u32::from(mask).count_ones(),
        IpAddr::V6(mask) => u128::from(mask).count_ones(),
    };
    u8::try_from(ones).unwrap_or(u8::MAX)
}

/// Whether bind() may use `addr` without IP_FREEBIND/IP_TRANSPARENT: the wildcard, an
/// address of an interface, or — IPv4 only — any address inside the prefix of a
/// loopback interface's address, because the kernel installs that whole prefix as a
/// local route (fib_add_ifaddr in net/ipv4/fib_frontend.c: RTN_LOCAL for IFF_LOOPBACK),
/// which is why 127.0.0.2 binds with only 127.0.0.1/8 configured.
///
/// Local routes added by hand (`ip route add local 10.0.0.0/24 dev lo`) are not
/// interface addresses and are not seen here.
pub(crate) fn is_local(addr: IpAddr, configured: &[ConfiguredAddress]) -> bool {
    let addr = addr.to_canonical();
    addr.is_unspecified()
        || configured.iter().any(|c| {
            c.ip.to_canonical() == addr
                || (c.loopback && matches!((c.ip, addr), (IpAddr::V4(net), IpAddr::V4(a)) if same_v4_prefix(net, a, c.prefix_len)))
        })
}

fn same_v4_prefix(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured(ip: &str, prefix_len: u8, loopback: bool) -> ConfiguredAddress {
        ConfiguredAddress { ip: ip.parse().unwrap(), prefix_len, loopback }
    }

    fn local(addr: &str, configured: &[ConfiguredAddress]) -> bool {
        is_local(addr.parse().unwrap(), configured)
    }

    #[test]
    fn exact_addresses_and_wildcards_are_local() {
        let addrs = [configured("10.0.1.7", 24, false), configured("fd00::7", 64, false)];
        assert!(local("10.0.1.7", &addrs));
        assert!(local("fd00::7", &addrs));
        assert!(local("0.0.0.0", &addrs));
        assert!(local("::", &addrs));
        assert!(local("::ffff:10.0.1.7", &addrs), "v4-mapped form of a configured address");
    }

    #[test]
    fn other_addresses_of_a_non_loopback_prefix_are_not_local() {
        let addrs = [configured("10.0.1.7", 24, false), configured("fd00::7", 64, false)];
        assert!(!local("10.0.1.8", &addrs));
        assert!(!local("fd00::8", &addrs));
        assert!(!local("192.0.2.1", &addrs));
    }

    #[test]
    fn the_whole_ipv4_loopback_prefix_is_local() {
        let lo = [configured("127.0.0.1", 8, true), configured("::1", 128, true)];
        assert!(local("127.0.0.1", &lo));
        assert!(local("127.0.0.2", &lo));
        assert!(local("127.255.255.254", &lo));
        assert!(local("::1", &lo));
        assert!(!local("128.0.0.1", &lo));
        assert!(!local("::2", &lo));
        assert!(!local("fd00::1", &lo));
    }

    #[test]
    fn prefix_lengths_come_from_netmasks() {
        assert_eq!(prefix_len("255.0.0.0".parse().unwrap()), 8);
        assert_eq!(prefix_len("255.255.255.255".parse().unwrap()), 32);
        assert_eq!(prefix_len("ffff:ffff:ffff:ffff::".parse().unwrap()), 64);
        assert!(same_v4_prefix("127.0.0.1".parse().unwrap(), "127.9.9.9".parse().unwrap(), 8));
        assert!(same_v4_prefix("1.2.3.4".parse().unwrap(), "9.9.9.9".parse().unwrap(), 0));
        assert!(!same_v4_prefix("1.2.3.4".parse().unwrap(), "1.2.3.5".parse().unwrap(), 32));
    }
}
