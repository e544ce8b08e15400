/// The fixed part of every ring-buffer record.
///
/// For events raised in softirq context (asynchronous connect errors, ESTABLISHED)
/// `tgid`, `tid`, `comm` and `cgroup_id` are those of the process that called
/// connect(), recorded when the socket entered SYN_SENT, not of whatever task the
/// softirq interrupted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of [`crate::kind`].
    pub kind: u32,
    /// Positive errno of the failure, 0 for success.
    pub errno: i32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    /// cgroup v2 id of the task (`bpf_get_current_cgroup_id()`).
    pub cgroup_id: u64,
    /// Thread name, NUL padded.
    pub comm: [u8; 16],
}

const _: () = assert!(size_of::<EventHeader>() == 48);
