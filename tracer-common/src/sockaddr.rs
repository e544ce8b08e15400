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

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

const _: () = assert!(size_of::<SockAddr>() == 24);
