/// Payload of [`crate::kind::SOCKOPT`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockoptEvent {
    pub fd: i32,
    pub level: i32,
    pub optname: i32,
    /// `optlen` as passed by the caller.
    pub optlen: i32,
    /// The first 4 bytes of `optval` (native endian), or its first byte if shorter.
    pub value: u32,
    /// Syscall return value: 0 or a negative errno.
    pub ret: i32,
    /// Options of the socket after this call.
    pub opts: crate::SockOpts,
    /// 1 when `optval` could not be read (bpf_probe_read_user faulted): `value` is
    /// then unknown, not 0.
    pub value_unread: u32,
    pub _pad: u32,
}

const _: () = assert!(size_of::<SockoptEvent>() == 40);
