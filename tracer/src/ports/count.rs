//! Ephemeral ports in use per destination, counted the way connect() allocates them.
//!
//! connect() on a socket without a port picks one in __inet_hash_connect()
//! (net/ipv4/inet_hashtables.c): a port whose bind bucket came from bind() (`fastreuse`
//! or `fastreuseport` >= 0) is skipped for every destination, while a port that only
//! connect() took is shared and refused only when the whole 4-tuple is in use
//! (__inet_check_established). So one destination, seen from one local address, runs out
//! when every port of `ip_local_port_range` that `ip_local_reserved_ports` leaves is
//! either held by bind() or already connected to that same destination from that address.
//! Sockets bound with IP_BIND_ADDRESS_NO_PORT get their port in connect() the same way,
//! so they count as connect()'s.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use crate::tcp_state::TcpState;

/// A TCP socket of one network namespace, as a dump reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortHolder {
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// The ports connect() may choose from in one network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpace {
    pub low: u16,
    pub high: u16,
    /// `ip_local_reserved_ports`: connect() never picks them.
    pub reserved: BTreeSet<u16>,
}

impl PortSpace {
    /// Whether connect() may pick `port`.
    pub fn offers(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port) && !self.reserved.contains(&port)
    }

    /// How many ports connect() may pick: the range less the reserved ports in it.
    pub fn size(&self) -> u32 {
        let range = u32::from(self.high - self.low) + 1;
        let reserved = self.reserved.range(self.low..=self.high).count() as u32;
        range - reserved
    }
}

/// Where connections go, as connect() sees the 4-tuple: from one local address to one
/// remote address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    pub local_ip: IpAddr,
    pub remote: SocketAddr,
}

/// The ports of one destination's range that a new connect() could not use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub destination: Destination,
    /// Ports connected to this destination from this address, or held by bind().
    pub in_use: u32,
    /// [`PortSpace::size`].
    pub size: u32,
}

impl Usage {
    /// `in_use` as a share of `size` (0 when the range is empty).
    pub fn ratio(&self) -> f64 {
        if self.size == 0 { 0.0 } else { f64::from(self.in_use) / f64::from(self.size) }
    }
}

/// One namespace's TCP sockets reduced, as a dump streams them, to what
/// [`PortTally::usages`] needs: the ports bind() holds, and per destination the ports
/// connected to it. A node-wide daemon samples namespaces of hundreds of thousands of
/// sockets: keeping every socket until the dump ended cost ~70 MiB of heap per round at
/// 400,000 sockets (issue 11's busy node); this keeps at most one port per connection.
#[derive(Debug, Default)]
pub struct PortTally {
    bound: BTreeSet<u16>,
    connected: BTreeMap<Destination, BTreeSet<u16>>,
}

impl PortTally {
    /// Counts one socket. The usages do not depend on the order; sockets that hold a port
    /// by bind() given first (a dump of the listening and bind tables before the
    /// established one) keep accepted connections, which use their listener's port and
    /// are no destination, from being kept at all.
    pub fn add(&mut self, holder: PortHolder) {
        let port = holder.local.port();
        // bind() holds a port for every destination: listeners, and bound sockets that
        // are neither listening nor connected (the dump lists those from Linux 6.7, as
        // TCP_BOUND_INACTIVE; before, they are not seen and not counted).
        if matches!(holder.state, TcpState::Listen | TcpState::Close | TcpState::Other(13)) {
            self.bound.insert(port);
            return;
        }
        if matches!(holder.state, TcpState::Other(_))
            // An accepted connection uses its listener's port, not one connect() chose.
            || self.bound.contains(&port)
        {
            return;
        }
        let destination = Destination { local_ip: holder.local.ip(), remote: holder.remote };
        self.connected.entry(destination).or_default().insert(port);
    }

    /// Every destination some socket is connected to, with its usage, busiest first.
    pub fn usages(self, space: &PortSpace) -> Vec<Usage> {
        let Self { bound, connected } = self;
        let bound_in_range = bound.iter().filter(|&&port| space.offers(port)).count() as u32;
        let size = space.size();
        let mut usages: Vec<Usage> = connected
            .into_iter()
            .map(|(destination, ports)| {
                // A port added before the listener that holds it was seen is its listener's.
                let mine =
                    ports.iter().filter(|&&port| space.offers(port) && !bound.contains(&port)).count() as u32;
                Usage { destination, in_use: mine + bound_in_range, size }
            })
            .filter(|usage| usage.in_use > bound_in_range)
            .collect();
        usages.sort_by(|a, b| b.in_use.cmp(&a.in_use).then(a.destination.cmp(&b.destination)));
        usages
    }
}

/// `ip_local_reserved_ports`: "8080,9000-9002\n", or an empty line when none is
/// reserved (proc_do_large_bitmap in kernel/sysctl.c prints ranges joined by commas).
/// Hand-written: the format is one line of the kernel's own making, too small for a crate.
pub fn parse_reserved(text: &str) -> Option<BTreeSet<u16>> {
    let mut reserved = BTreeSet::new();
    for item in text.trim().split(',').filter(|item| !item.is_empty()) {
        let (low, high) = match item.split_once('-') {
            Some((low, high)) => (low.parse::<u16>().ok()?, high.parse::<u16>().ok()?),
            None => {
                let port = item.parse::<u16>().ok()?;
                (port, port)
            }
        };
        if low > high {
            return None;
        }
        reserved.extend(low..=high);
    }
    Some(reserved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(state: TcpState, local: &str, remote: &str) -> PortHolder {
        PortHolder { state, local: local.parse().unwrap(), remote: remote.parse().unwrap() }
    }

    fn space(low: u16, high: u16) -> PortSpace {
        PortSpace { low, high, reserved: BTreeSet::new() }
    }

    fn usage(holders: &[PortHolder], space: &PortSpace) -> Vec<Usage> {
        let mut tally = PortTally::default();
        holders.iter().for_each(|&holder| tally.add(holder));
        tally.usages(space)
    }

    /// A listener, connections accepted on its port, and connect()ed ones.
    fn server_and_clients() -> Vec<PortHolder> {
        vec![
            holder(TcpState::Established, "10.0.0.1:40005", "10.0.0.9:55555"),
            holder(TcpState::Established, "10.0.0.1:40005", "10.0.0.8:55555"),
            holder(TcpState::Established, "10.0.0.1:40000", "10.0.0.2:80"),
            holder(TcpState::SynSent, "10.0.0.1:40001", "10.0.0.2:80"),
            holder(TcpState::Listen, "0.0.0.0:40005", "0.0.0.0:0"),
            holder(TcpState::Established, "10.0.0.1:40002", "10.0.0.3:80"),
        ]
    }

    #[test]
    fn ports_count_per_destination_under_the_four_tuple_rule() {
        let holders = [
            holder(TcpState::Established, "10.0.0.1:40000", "10.0.0.2:80"),
            holder(TcpState::TimeWait, "10.0.0.1:40001", "10.0.0.2:80"),
            holder(TcpState::SynSent, "10.0.0.1:40002", "10.0.0.2:80"),
            // The same port to another destination: shared, counted there only.
            holder(TcpState::Established, "10.0.0.1:40000", "10.0.0.2:443"),
            // Outside the range: connect() did not pick it.
            holder(TcpState::Established, "10.0.0.1:1000", "10.0.0.2:80"),
        ];
        let usages = usage(&holders, &space(40000, 40009));
        let to = |port: u16| {
            usages.iter().find(|u| u.destination.remote.port() == port).map(|u| (u.in_use, u.size))
        };
        assert_eq!(to(80), Some((3, 10)));
        assert_eq!(to(443), Some((1, 10)));
        assert_eq!(usages[0].destination.remote.port(), 80, "busiest first");
        assert!((usages[0].ratio() - 0.3).abs() < 1e-9);
    }

    #[test]
    fn a_bound_port_is_taken_for_every_destination_and_accepted_connections_are_not_destinations() {
        let holders = [
            holder(TcpState::Listen, "0.0.0.0:40005", "0.0.0.0:0"),
            // Accepted on the listener's port: not a port connect() chose.
            holder(TcpState::Established, "10.0.0.1:40005", "10.0.0.9:55555"),
            holder(TcpState::Other(13), "10.0.0.1:40006", "0.0.0.0:0"),
            holder(TcpState::Established, "10.0.0.1:40000", "10.0.0.2:80"),
        ];
        let usages = usage(&holders, &space(40000, 40009));
        assert_eq!(usages.len(), 1, "{usages:?}");
        assert_eq!((usages[0].in_use, usages[0].destination.remote.port()), (3, 80));
    }

    #[test]
    fn the_order_of_the_sockets_does_not_change_the_usages() {
        let holders = server_and_clients();
        let expected = usage(&holders, &space(40000, 40009));
        // The listener's port counts for both destinations; the accepted connections
        // are none.
        let found: Vec<_> = expected.iter().map(|u| (u.in_use, u.destination.remote.ip())).collect();
        assert_eq!(found, [(3, "10.0.0.2".parse().unwrap()), (2, "10.0.0.3".parse().unwrap())]);
        let mut reversed = holders.clone();
        reversed.reverse();
        assert_eq!(usage(&reversed, &space(40000, 40009)), expected);
        let mut listener_first = holders;
        listener_first.sort_by_key(|holder| holder.state != TcpState::Listen);
        assert_eq!(usage(&listener_first, &space(40000, 40009)), expected);
    }

    #[test]
    fn connections_accepted_after_their_listener_was_seen_are_not_kept() {
        let mut tally = PortTally::default();
        let mut holders = server_and_clients();
        holders.sort_by_key(|holder| holder.state != TcpState::Listen);
        holders.iter().for_each(|&holder| tally.add(holder));
        // Two destinations of connect()ed sockets; the two accepted connections would
        // have been two more, each kept until the end of the dump.
        assert_eq!(tally.connected.len(), 2, "{:?}", tally.connected);
        assert_eq!(tally.bound, BTreeSet::from([40005]));
    }

    #[test]
    fn reserved_ports_shrink_the_space_and_are_not_counted() {
        let reserved = parse_reserved("40000,40008-40009\n").unwrap();
        let space = PortSpace { low: 40000, high: 40009, reserved };
        assert_eq!(space.size(), 7);
        let holders = [
            holder(TcpState::Established, "10.0.0.1:40000", "10.0.0.2:80"),
            holder(TcpState::Established, "10.0.0.1:40001", "10.0.0.2:80"),
        ];
        assert_eq!(usage(&holders, &space)[0].in_use, 1);
    }

    #[test]
    fn reserved_ports_parse_as_the_kernel_prints_them() {
        assert_eq!(parse_reserved("\n"), Some(BTreeSet::new()));
        assert_eq!(parse_reserved("8080\n"), Some(BTreeSet::from([8080])));
        assert_eq!(parse_reserved("1-3,7\n"), Some(BTreeSet::from([1, 2, 3, 7])));
        for bad in ["x", "3-1", "1-", "70000"] {
            assert_eq!(parse_reserved(bad), None, "{bad:?}");
        }
    }
}
