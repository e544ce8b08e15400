/// An IPv4 or IPv6 socket address as the kernel programs copy it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockAddr {
    /// `AF_INET`, `AF_INET6`, or 0 when unknown.
    pub family: u16,
    /// Host byte order.
    pub port: u16,
    /// IPv6 scope id (link-local addresses), 0 otherwise.
    pub scope_id: u32,
    /// Network byte order; IPv4 uses the first 4 bytes.
    pub addr: [u8; 16],
}

impl SockAddr {
    /// Same family, port and address. The scope id is not compared: the `sock:*`
    /// tracepoint records, which the halves of an asynchronous failure come from, do
    /// not carry it.
    #[inline]
    pub fn same_endpoint(&self, other: &Self) -> bool {
        self.family == other.family && self.port == other.port && self.addr == other.addr
    }
}

/// Field offsets of one endpoint pair in a `sock:*` or `tcp:*` tracepoint record, as
/// the daemon finds them in tracefs and the programs read them (part of the load-time
/// globals).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TupleOffsets {
    pub family: u32,
    pub sport: u32,
    pub dport: u32,
    pub saddr: u32,
    pub daddr: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
}

const _: () = assert!(size_of::<TupleOffsets>() == 7 * 4);

pub const AF_UNSPEC: u16 = 0;
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const AF_NETLINK: u16 = 16;

/// Families whose addresses traced programs pass to connect()/bind()/accept() all the
/// time without being IP: a UDP disconnect (AF_UNSPEC), local sockets, and the netlink
/// socket glibc's getaddrinfo() binds. The kernel programs skip them without a word; any
/// other non-IP family (or a truncated IP address) is worth a debug line.
pub const fn is_routine_non_ip(family: u16) -> bool {
    matches!(family, AF_UNSPEC | AF_UNIX | AF_NETLINK)
}

const _: () = assert!(size_of::<SockAddr>() == 24);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unspec_unix_and_netlink_are_routine() {
        for family in 0..=u16::from(u8::MAX) {
            let expected = [AF_UNSPEC, AF_UNIX, AF_NETLINK].contains(&family);
            assert_eq!(is_routine_non_ip(family), expected, "family {family}");
        }
        // The IP families are read, never skipped as routine: a truncated one is unexpected.
        assert!(!is_routine_non_ip(AF_INET) && !is_routine_non_ip(AF_INET6));
    }

    #[test]
    fn an_endpoint_is_family_port_and_address() {
        let a = SockAddr { family: AF_INET6, port: 80, scope_id: 0, addr: [1; 16] };
        assert!(a.same_endpoint(&SockAddr { scope_id: 3, ..a }));
        assert!(!a.same_endpoint(&SockAddr { port: 81, ..a }));
        assert!(!a.same_endpoint(&SockAddr { family: AF_INET, ..a }));
        assert!(!a.same_endpoint(&SockAddr { addr: [2; 16], ..a }));
    }
}
