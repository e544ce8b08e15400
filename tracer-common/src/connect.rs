/// Payload of [`crate::kind::CONNECT`]: what one connect() call returned.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectEvent {
    pub fd: i32,
    /// Syscall return value: 0 or a negative errno.
    pub ret: i32,
    /// The destination passed to connect().
    pub dst: crate::SockAddr,
    /// Source address and port the kernel tried, from `sock:inet_sock_set_state`
    /// during the call; family 0 when the call failed before choosing one.
    pub src: crate::SockAddr,
    /// Options the socket carried at connect() time.
    pub opts: crate::SockOpts,
    /// Kernel address of the `struct sock`, 0 when no TCP state change was seen.
    /// Used only as an identity, never dereferenced.
    pub sk: u64,
    /// Where the kernel refused the call (kprobe backend), zero otherwise.
    pub origin: crate::KernelOrigin,
}

const _: () = assert!(size_of::<ConnectEvent>() == 72 + 64);
