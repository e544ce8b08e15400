/// Payload of [`crate::kind::CONNECT_ASYNC_ERROR`] and [`crate::kind::ESTABLISHED`]:
/// the outcome of a TCP connect seen after the connect() call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockEvent {
    /// The fd the owner passed to connect().
    pub fd: i32,
    pub _pad: u32,
    pub src: crate::SockAddr,
    pub dst: crate::SockAddr,
    /// Options the socket carried at connect() time.
    pub opts: crate::SockOpts,
    /// Kernel address of the `struct sock` (identity only).
    pub sk: u64,
}

const _: () = assert!(size_of::<SockEvent>() == 72);
