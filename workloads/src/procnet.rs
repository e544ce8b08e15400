//! The kernel's own view of the namespace's TCP sockets, from /proc/net/tcp{,6}: how the
//! scenarios verify states (ESTABLISHED, LISTEN, TIME_WAIT) without trusting any code
//! sockerr itself uses (sockerr asks sock_diag).
//!
//! Format: tcp4_seq_show()/get_tcp4_sock()/get_timewait4_sock() in net/ipv4/tcp_ipv4.c,
//! https://elixir.bootlin.com/linux/v6.18/source/net/ipv4/tcp_ipv4.c (tcp6 likewise in
//! net/ipv6/tcp_ipv6.c). Addresses are the in-memory (network order) words printed as
//! native-endian hex, ports are host order, the timer is in USER_HZ ticks.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use nix::unistd::{SysconfVar, sysconf};

use super::Error;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpEntry {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// include/net/tcp_states.h numbering.
    pub state: u8,
    /// Time left on the socket's pending timer, if one is armed (TIME_WAIT: until the
    /// socket disappears).
    pub timer_ms: Option<u64>,
    /// 0 for sockets without a file (TIME_WAIT, not yet accepted).
    pub inode: u64,
}

impl TcpEntry {
    pub fn state_name(&self) -> &'static str {
        state_name(self.state)
    }
}

pub const ESTABLISHED: u8 = 1;
pub const SYN_RECV: u8 = 3;
pub const TIME_WAIT: u8 = 6;
pub const LISTEN: u8 = 10;

pub fn state_name(state: u8) -> &'static str {
    const NAMES: [&str; 13] = [
        "UNKNOWN",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
        "NEW_SYN_RECV",
    ];
    NAMES.get(usize::from(state)).copied().unwrap_or("UNKNOWN")
}

/// TCP sockets of the caller's network namespace.
pub fn tcp_sockets(ipv6: bool) -> Result<Vec<TcpEntry>, Error> {
    let path = if ipv6 { "/proc/self/net/tcp6" } else { "/proc/self/net/tcp" };
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.into(), source })?;
    let ticks_per_second =
        sysconf(SysconfVar::CLK_TCK).ok().flatten().filter(|&hz| hz > 0).unwrap_or(100) as u64;
    parse(&text, ticks_per_second).map_err(|line| Error::ProcNet { path: path.into(), line })
}

/// Parses the whole file; the error is the offending line.
pub fn parse(text: &str, ticks_per_second: u64) -> Result<Vec<TcpEntry>, String> {
    text.lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| parse_line(line, ticks_per_second))
        .collect()
}

fn parse_line(line: &str, ticks_per_second: u64) -> Result<TcpEntry, String> {
    let bad = || line.to_owned();
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 10 {
        return Err(bad());
    }
    let local = endpoint(fields[1]).ok_or_else(bad)?;
    let remote = endpoint(fields[2]).ok_or_else(bad)?;
    let state = u8::from_str_radix(fields[3], 16).map_err(|_| bad())?;
    let (timer, when) = fields[5].split_once(':').ok_or_else(bad)?;
    let timer = u8::from_str_radix(timer, 16).map_err(|_| bad())?;
    let when = u64::from_str_radix(when, 16).map_err(|_| bad())?;
    let inode = fields[9].parse().map_err(|_| bad())?;
    // `when` is the kernel's jiffies delta in hex: a garbled one overflows in ms.
    let timer_ms = match timer {
        0 => None,
        _ => Some(when.checked_mul(1000).ok_or_else(bad)? / ticks_per_second.max(1)),
    };
    Ok(TcpEntry { local, remote, state, timer_ms, inode })
}

fn endpoint(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for chunk in addr.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).into(),
        16 => Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    const TCP4: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 1300007F:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41842 1 0000000000000000 100 0 0 10 0
   1: 0700007F:9D89 1300007F:01BB 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:9D88 00000000000000000000000001000000:01BB 01 00000000:00000000 00:00000000 00000000     0        0 51234 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn parses_ipv4_listen_and_time_wait() {
        let entries = parse(TCP4, 100).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].local, "127.0.0.19:443".parse().unwrap());
        assert_eq!(entries[0].state_name(), "LISTEN");
        assert_eq!(entries[0].inode, 41842);
        assert_eq!(entries[0].timer_ms, None);
        assert_eq!(entries[1].local, "127.0.0.7:40329".parse().unwrap());
        assert_eq!(entries[1].remote, "127.0.0.19:443".parse().unwrap());
        assert_eq!(entries[1].state, TIME_WAIT);
        assert_eq!(entries[1].timer_ms, Some(60_000));
    }

    #[test]
    fn parses_ipv6() {
        let entries = parse(TCP6, 100).unwrap();
        assert_eq!(entries[0].local, "[::1]:40328".parse().unwrap());
        assert_eq!(entries[0].remote, "[::1]:443".parse().unwrap());
        assert_eq!(entries[0].state, ESTABLISHED);
    }

    /// A timer of 2^64-1 jiffies does not fit in milliseconds: the line is rejected,
    /// not wrapped (found writing the `proc_net_tcp` fuzz target).
    #[test]
    fn a_timer_beyond_u64_milliseconds_is_rejected() {
        let line = "   0: 0100007F:01BB 00000000:0000 0A 00000000:00000000 01:FFFFFFFFFFFFFFFF 00000000     0        0 41842 1";
        assert_eq!(parse(&format!("header\n{line}\n"), 100), Err(line.to_string()));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("header\n 0: nonsense\n", 100).is_err());
    }
}
