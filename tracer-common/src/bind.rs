/// Payload of [`crate::kind::BIND`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BindEvent {
    pub fd: i32,
    /// Syscall return value: 0 or a negative errno.
    pub ret: i32,
    /// The address passed to bind().
    pub addr: crate::SockAddr,
    /// Options the socket carried at bind() time.
    pub opts: crate::SockOpts,
    /// Where the kernel refused the call (kprobe backend), zero otherwise.
    pub origin: crate::KernelOrigin,
}

const _: () = assert!(size_of::<BindEvent>() == 40 + 64);
