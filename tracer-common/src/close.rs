/// Payload of [`crate::kind::CLOSE`]: the end of an fd's life as a traced socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseEvent {
    pub fd: i32,
    /// One of [`CLOSE_REASON_CLOSE`], [`CLOSE_REASON_FD_REUSED`].
    pub reason: u32,
}

/// close(fd) was called.
pub const CLOSE_REASON_CLOSE: u32 = 1;
/// socket()/accept() returned this fd number while sockerr still tracked it: the
/// earlier socket went away unseen (dup2, close_range, exec), so its record ends.
pub const CLOSE_REASON_FD_REUSED: u32 = 2;

const _: () = assert!(size_of::<CloseEvent>() == 8);
