//! The socket options sockerr records, and their bits in [`SockOpts::flags`].
//!
//! Values are from include/uapi/asm-generic/socket.h, include/uapi/linux/in.h and
//! include/uapi/linux/in6.h (x86-64 and arm64 share the asm-generic socket numbers).

pub const SOL_SOCKET: i32 = 1;
pub const SOL_IP: i32 = 0;
pub const SOL_IPV6: i32 = 41;

pub const SO_REUSEADDR: i32 = 2;
pub const SO_REUSEPORT: i32 = 15;
pub const SO_MARK: i32 = 36;
pub const IP_TRANSPARENT: i32 = 19;
pub const IP_FREEBIND: i32 = 15;
pub const IP_BIND_ADDRESS_NO_PORT: i32 = 24;
pub const IPV6_TRANSPARENT: i32 = 75;
pub const IPV6_FREEBIND: i32 = 78;

pub const FLAG_SO_MARK: u32 = 1 << 0;
pub const FLAG_SO_REUSEADDR: u32 = 1 << 1;
pub const FLAG_SO_REUSEPORT: u32 = 1 << 2;
pub const FLAG_IP_TRANSPARENT: u32 = 1 << 3;
pub const FLAG_IP_FREEBIND: u32 = 1 << 4;
pub const FLAG_IP_BIND_ADDRESS_NO_PORT: u32 = 1 << 5;
pub const FLAG_IPV6_TRANSPARENT: u32 = 1 << 6;
pub const FLAG_IPV6_FREEBIND: u32 = 1 << 7;

/// `SockOpts::flags` keeps, this many bits above an option's flag, whether the value
/// of its last successful setsockopt() could not be read (bpf_probe_read_user
/// faulted): the option is set, its value unknown.
pub const UNREAD_SHIFT: u32 = 16;
/// The option bits (`FLAG_*`) of `SockOpts::flags`.
pub const OPTION_BITS: u32 = (1 << UNREAD_SHIFT) - 1;

/// The flag bit of `(level, optname)`, or 0 for an option sockerr ignores.
pub const fn option_flag(level: i32, optname: i32) -> u32 {
    match (level, optname) {
        (SOL_SOCKET, SO_MARK) => FLAG_SO_MARK,
        (SOL_SOCKET, SO_REUSEADDR) => FLAG_SO_REUSEADDR,
        (SOL_SOCKET, SO_REUSEPORT) => FLAG_SO_REUSEPORT,
        (SOL_IP, IP_TRANSPARENT) => FLAG_IP_TRANSPARENT,
        (SOL_IP, IP_FREEBIND) => FLAG_IP_FREEBIND,
        (SOL_IP, IP_BIND_ADDRESS_NO_PORT) => FLAG_IP_BIND_ADDRESS_NO_PORT,
        (SOL_IPV6, IPV6_TRANSPARENT) => FLAG_IPV6_TRANSPARENT,
        (SOL_IPV6, IPV6_FREEBIND) => FLAG_IPV6_FREEBIND,
        _ => 0,
    }
}

/// What the programs keep of a socket with options, until its fd is closed (the value of
/// `TRACKED`, which user space also reads to count its evictions).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Tracked {
    pub opts: SockOpts,
    /// 1 once a failure record named this fd: user space then holds a socket-table
    /// entry for it, which the fd's `CLOSE` record retires. Without `--all` the close of
    /// a socket no failure was reported on is no record (user space knows nothing of it).
    pub failure_reported: u32,
    pub _pad: u32,
}

/// The options a socket carries, as far as sockerr has seen them set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOpts {
    /// `FLAG_*` bits of the options currently enabled (low 16 bits), and the same bits
    /// shifted by [`UNREAD_SHIFT`] for options whose value could not be read.
    pub flags: u32,
    /// Last SO_MARK value set (meaningful when `FLAG_SO_MARK` is set).
    pub mark: u32,
}

impl SockOpts {
    /// Records a successful setsockopt(): `value` 0 clears a boolean option.
    /// SO_MARK stays flagged whatever its value, since mark 0 is still a choice.
    /// `value` is `None` when the caller's buffer could not be read: the option is
    /// then flagged with an unknown value, never recorded as 0.
    pub const fn apply(&mut self, flag: u32, value: Option<u32>) {
        let Some(value) = value else {
            self.flags |= flag | (flag << UNREAD_SHIFT);
            return;
        };
        self.flags &= !(flag << UNREAD_SHIFT);
        if flag == FLAG_SO_MARK {
            self.flags |= FLAG_SO_MARK;
            self.mark = value;
        } else if value != 0 {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }
}

impl SockOpts {
    /// Whether the value of `flag` is unknown (its setsockopt() buffer faulted).
    pub const fn unread(&self, flag: u32) -> bool {
        self.flags & (flag << UNREAD_SHIFT) != 0
    }

    /// Whether `flag` is set (with a known or unknown value).
    pub const fn enabled(&self, flag: u32) -> bool {
        self.flags & flag & OPTION_BITS != 0
    }
}

const _: () = assert!(size_of::<SockOpts>() == 8);
const _: () = assert!(FLAG_IPV6_FREEBIND < (1 << UNREAD_SHIFT));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unread_value_is_marked_not_zero() {
        let mut opts = SockOpts::default();
        opts.apply(FLAG_SO_MARK, None);
        assert!(opts.enabled(FLAG_SO_MARK) && opts.unread(FLAG_SO_MARK), "{opts:?}");
        opts.apply(FLAG_SO_MARK, Some(0x0b00));
        assert!(!opts.unread(FLAG_SO_MARK), "a later readable value replaces it: {opts:?}");
        assert_eq!(opts.mark, 0x0b00);
        opts.apply(FLAG_SO_REUSEADDR, None);
        assert!(opts.enabled(FLAG_SO_REUSEADDR) && opts.unread(FLAG_SO_REUSEADDR));
        opts.apply(FLAG_SO_REUSEADDR, Some(0));
        assert!(!opts.enabled(FLAG_SO_REUSEADDR) && !opts.unread(FLAG_SO_REUSEADDR), "{opts:?}");
    }
}
