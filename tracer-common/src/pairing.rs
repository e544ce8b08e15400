//! How the programs pair the two halves of an asynchronous connect failure, and when a
//! half counts as lost (`Loss::AsyncHalfOverwritten`, `Loss::AsyncHalfTooOld`). Shared
//! with the kernel programs (`tracer-ebpf/src/maps.rs`), so the decisions are unit-tested
//! here: since Linux 6.9 both halves come back to back from one call
//! (`tcp_done_with_error()`), so no user-space test can interleave or delay them at will.
//!
//! The halves: `inet_sock_set_state` SYN_SENT -> CLOSE (carries the socket) and
//! `inet_sk_error_report` (carries the errno). Whichever comes first waits in a per-CPU
//! slot for the other.

use crate::SockAddr;

/// How long the first half waits for the second. Both run back to back in one softirq
/// (one call since 6.9), so the gap between them is time the CPU spent elsewhere: a vCPU
/// the hypervisor descheduled, steal time on a busy node. The halves must also name the
/// same tuple, which is what keeps another socket's half out; the window only bounds how
/// long a half whose partner never comes blocks its slot. Measured under qemu's TCG:
/// 1 ms lost 2 of 10 refused non-blocking connects on 6.12; 20 ms lost 1 of 10 when two
/// guests shared the host's two CPUs (the second half came more than 20 ms after the
/// first); 250 ms leaves room for a descheduled vCPU.
pub const PENDING_MAX_AGE_NS: u64 = 250_000_000;

/// errno values (asm-generic/errno-base.h, errno.h; the same on every architecture we
/// build for).
const EPIPE: i32 = 32;
const ECONNRESET: i32 = 104;

/// Whether an error report with `error` can be a half of a connect failure. tcp_reset()
/// gives a socket in SYN_SENT ECONNREFUSED, one in CLOSE_WAIT EPIPE and any other
/// ECONNRESET: those two come from connections that were established, whose transition
/// to CLOSE is no connect's end, so they never pair. Kept, one would wait in its slot for
/// a partner that cannot come, and every later connect failure on the same tuple (a
/// proxy re-binding a held tuple fails on exactly that tuple, over and over) would find
/// it there.
pub fn may_end_a_connect(error: i32) -> bool {
    error != ECONNRESET && error != EPIPE
}

/// A waiting half, as the slot keeps it.
#[derive(Clone, Copy, Debug)]
pub struct Waiting<'a> {
    /// When it was recorded; 0: the slot is empty (or its half was paired).
    pub ts_ns: u64,
    pub src: &'a SockAddr,
    pub dst: &'a SockAddr,
    /// A second half will come: an error report always is one; a SYN_SENT -> CLOSE
    /// transition only when the socket holds an error (`sk_err`). A socket closed by its
    /// process while connecting, shut down, or refused inside connect() itself
    /// (EADDRNOTAVAIL) leaves SYN_SENT with none, and no report follows: replacing or
    /// outliving such a half loses nothing.
    pub expects_partner: bool,
}

/// What a newly seen half makes of the one waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairing {
    /// The waiting half is this one's partner: report the failure.
    Partner,
    /// Same tuple, but it waited longer than [`PENDING_MAX_AGE_NS`]: its failure is lost
    /// (counted when it expected a partner), and the slot is emptied, so the loss is
    /// counted once, not again at each later half of the tuple.
    TooOld { lost: bool },
    /// Nothing to pair with (empty slot, or another tuple).
    Unrelated,
}

/// Whether `waiting` is the other half of the failure seen `now` on (`src`, `dst`).
pub fn pair(waiting: &Waiting<'_>, now: u64, src: &SockAddr, dst: &SockAddr) -> Pairing {
    if waiting.ts_ns == 0 || !waiting.src.same_endpoint(src) || !waiting.dst.same_endpoint(dst) {
        return Pairing::Unrelated;
    }
    if now.wrapping_sub(waiting.ts_ns) < PENDING_MAX_AGE_NS {
        return Pairing::Partner;
    }
    Pairing::TooOld { lost: waiting.expects_partner }
}

/// Whether putting another socket's half in the slot now loses the waiting one: it is
/// still within its window, it is not this socket's, and a partner was to come.
pub fn replacing_loses(waiting: &Waiting<'_>, waiting_sk: u64, now: u64, sk: u64) -> bool {
    waiting.expects_partner
        && waiting.ts_ns != 0
        && now.wrapping_sub(waiting.ts_ns) < PENDING_MAX_AGE_NS
        && waiting_sk != sk
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SockAddr {
        SockAddr {
            family: 2,
            port,
            addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..SockAddr::default()
        }
    }

    const T0: u64 = 1_000_000_000;

    #[test]
    fn halves_of_one_tuple_within_the_window_pair() {
        let (src, dst) = (addr(40000), addr(80));
        let waiting = Waiting { ts_ns: T0, src: &src, dst: &dst, expects_partner: true };
        assert_eq!(pair(&waiting, T0, &src, &dst), Pairing::Partner);
        assert_eq!(pair(&waiting, T0 + PENDING_MAX_AGE_NS - 1, &src, &dst), Pairing::Partner);
    }

    #[test]
    fn a_half_older_than_the_window_is_lost_only_if_a_partner_was_due() {
        let (src, dst) = (addr(40000), addr(80));
        let mut waiting = Waiting { ts_ns: T0, src: &src, dst: &dst, expects_partner: true };
        assert_eq!(pair(&waiting, T0 + PENDING_MAX_AGE_NS, &src, &dst), Pairing::TooOld { lost: true });
        waiting.expects_partner = false;
        assert_eq!(pair(&waiting, T0 + PENDING_MAX_AGE_NS, &src, &dst), Pairing::TooOld { lost: false });
    }

    #[test]
    fn another_tuple_or_an_empty_slot_is_unrelated() {
        let (src, dst) = (addr(40000), addr(80));
        let waiting = Waiting { ts_ns: T0, src: &src, dst: &dst, expects_partner: true };
        assert_eq!(pair(&waiting, T0, &addr(40001), &dst), Pairing::Unrelated);
        assert_eq!(pair(&waiting, T0, &src, &addr(81)), Pairing::Unrelated);
        let empty = Waiting { ts_ns: 0, ..waiting };
        assert_eq!(pair(&empty, T0, &src, &dst), Pairing::Unrelated);
    }

    #[test]
    fn resets_of_established_connections_are_no_connect_half() {
        assert!(!may_end_a_connect(ECONNRESET));
        assert!(!may_end_a_connect(EPIPE));
        for connect_error in
            [111 /* ECONNREFUSED */, 110 /* ETIMEDOUT */, 113 /* EHOSTUNREACH */]
        {
            assert!(may_end_a_connect(connect_error), "{connect_error}");
        }
    }

    #[test]
    fn replacing_a_half_still_due_a_partner_loses_it() {
        let (src, dst) = (addr(40000), addr(80));
        let waiting = Waiting { ts_ns: T0, src: &src, dst: &dst, expects_partner: true };
        assert!(replacing_loses(&waiting, 0xA, T0 + 1, 0xB), "another socket's half within the window");
        assert!(!replacing_loses(&waiting, 0xA, T0 + 1, 0xA), "the same socket again");
        assert!(!replacing_loses(&waiting, 0xA, T0 + PENDING_MAX_AGE_NS, 0xB), "past its window");
        assert!(!replacing_loses(&Waiting { ts_ns: 0, ..waiting }, 0xA, T0, 0xB), "empty slot");
        let no_partner = Waiting { expects_partner: false, ..waiting };
        assert!(!replacing_loses(&no_partner, 0xA, T0 + 1, 0xB), "a close without an error");
    }
}
