//! Offsets for the reset and `--http-peek` programs, and the names of the kernel's
//! reset reasons, read from this kernel's tracefs.
//!
//! `tcp:tcp_send_reset` changed shape in Linux 6.10 (see tracer-ebpf's send_reset.rs):
//! the layout is recognised from the fields present, and fields a kernel may lack
//! (`reason`, `sock_cookie`) are [`OFFSET_ABSENT`] rather than an error.

use std::{collections::BTreeMap, path::Path};

use tracer_common::{
    ResetOffsets,
    reset::{OFFSET_ABSENT, SEND_LAYOUT_FIELDS, SEND_LAYOUT_SOCKADDR},
    sockaddr::TupleOffsets,
};

use super::{
    print_fmt::symbolic_table,
    tracefs::{Format, SYSCALL_ARG, TracefsError},
};

#[derive(Debug, thiserror::Error)]
pub enum ResetOffsetsError {
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(
        "tcp:tcp_send_reset on kernel {kernel} has neither a `family` field (Linux up to 6.9) nor \
         28-byte `saddr`/`daddr` sockaddrs (6.10 and later); sockerr does not know this layout"
    )]
    UnknownSendLayout { kernel: String },
    #[error(
        "on kernel {kernel}, argument `{field}` of syscalls:{tracepoint} is at offset {offset} but at \
         {first} in syscalls:{first_tracepoint}; the programs read one offset for all"
    )]
    InconsistentArgument {
        kernel: String,
        tracepoint: String,
        field: String,
        offset: u32,
        first_tracepoint: String,
        first: u32,
    },
}

/// `enum sk_rst_reason` value -> name, as this kernel prints it.
pub type ResetReasons = BTreeMap<u32, String>;

/// What the reset programs need, or why they cannot run here.
#[derive(Debug)]
pub struct ResetSetup {
    pub offsets: ResetOffsets,
    pub reasons: ResetReasons,
}

/// The syscalls `--http-peek` follows, with the names of their first three arguments
/// (fd, data, length/count/flags) in their formats.
pub const PEEK_SYSCALLS: [(&str, [&str; 3]); 8] = [
    ("read", ["fd", "buf", "count"]),
    ("write", ["fd", "buf", "count"]),
    ("readv", ["fd", "vec", "vlen"]),
    ("writev", ["fd", "vec", "vlen"]),
    ("recvfrom", ["fd", "ubuf", "size"]),
    ("sendto", ["fd", "buff", "len"]),
    ("recvmsg", ["fd", "msg", "flags"]),
    ("sendmsg", ["fd", "msg", "flags"]),
];

/// Reads the formats. Missing tracepoints are errors naming them (the caller decides
/// whether resets are optional); `sys_exit_ret` is the offset the other programs use,
/// checked against the peek syscalls' exits.
pub fn discover(
    tracefs: &Path,
    kernel: &str,
    http_peek: bool,
    sys_exit_ret: u32,
) -> Result<ResetSetup, ResetOffsetsError> {
    let format = |category: &str, name: &str| Format::read(tracefs, category, name, kernel);
    let send = format("tcp", "tcp_send_reset")?;
    // tcp_receive_reset and tcp_destroy_sock are BTF-typed tracepoints (the socket, no
    // record field); reading their formats still names a kernel without them.
    format("tcp", "tcp_receive_reset")?;
    format("tcp", "tcp_destroy_sock")?;

    let mut offsets = ResetOffsets {
        send_skbaddr: send.offset("skbaddr", 8)?,
        send_skaddr: send.offset("skaddr", 8)?,
        send_state: send.offset("state", 4)?,
        send_reason: optional(&send, "reason", 4)?,
        ..Default::default()
    };
    fill_send_tuple(&mut offsets, &send)?;

    let (accept_fd, accept_addr) = same_arguments(
        tracefs,
        kernel,
        &[("accept", ["fd", "upeer_sockaddr"]), ("accept4", ["fd", "upeer_sockaddr"])],
    )?
    .into();
    offsets.accept_fd = accept_fd;
    offsets.accept_addr = accept_addr;

    if http_peek {
        let [fd, buf, len] = same_arguments(tracefs, kernel, &PEEK_SYSCALLS)?;
        (offsets.peek_fd, offsets.peek_buf, offsets.peek_len) = (fd, buf, len);
        for (name, _) in PEEK_SYSCALLS {
            let exit = format!("sys_exit_{name}");
            let ret = format("syscalls", &exit)?.offset("ret", SYSCALL_ARG)?;
            if ret != sys_exit_ret {
                return Err(ResetOffsetsError::InconsistentArgument {
                    kernel: kernel.into(),
                    tracepoint: exit,
                    field: "ret".into(),
                    offset: ret,
                    first_tracepoint: "sys_exit_connect".into(),
                    first: sys_exit_ret,
                });
            }
        }
    }

    let reasons = symbolic_table(&send.print_fmt, "reason")
        .into_iter()
        .filter_map(|(value, name)| Some((u32::try_from(value).ok()?, name)))
        .collect();
    Ok(ResetSetup { offsets, reasons })
}

pub(crate) fn fill_send_tuple(offsets: &mut ResetOffsets, send: &Format) -> Result<(), ResetOffsetsError> {
    if send.field("family").is_some() {
        offsets.send_layout = SEND_LAYOUT_FIELDS;
        offsets.send_tuple = send.tuple_fields()?;
        return Ok(());
    }
    // sizeof(struct sockaddr_in6)
    const SOCKADDR: u32 = 28;
    if send.field("saddr").is_some_and(|f| f.size == SOCKADDR) {
        offsets.send_layout = SEND_LAYOUT_SOCKADDR;
        offsets.send_tuple = TupleOffsets {
            saddr: send.offset("saddr", SOCKADDR)?,
            daddr: send.offset("daddr", SOCKADDR)?,
            family: OFFSET_ABSENT,
            sport: OFFSET_ABSENT,
            dport: OFFSET_ABSENT,
            saddr_v6: OFFSET_ABSENT,
            daddr_v6: OFFSET_ABSENT,
        };
        return Ok(());
    }
    Err(ResetOffsetsError::UnknownSendLayout { kernel: send.kernel.clone() })
}

/// The offset of a field this kernel may lack; a present field must have the size.
fn optional(format: &Format, name: &str, size: u32) -> Result<u32, TracefsError> {
    match format.field(name) {
        Some(_) => format.offset(name, size),
        None => Ok(OFFSET_ABSENT),
    }
}

/// The offsets of the named arguments, which must be equal in every syscall listed.
fn same_arguments<const N: usize>(
    tracefs: &Path,
    kernel: &str,
    syscalls: &[(&str, [&str; N])],
) -> Result<[u32; N], ResetOffsetsError> {
    let mut first: Option<(&str, [u32; N])> = None;
    for (name, fields) in syscalls {
        let offsets =
            Format::read(tracefs, "syscalls", &format!("sys_enter_{name}"), kernel)?.syscall_args(*fields)?;
        match first {
            None => first = Some((name, offsets)),
            Some((first_name, expected)) => {
                if let Some(i) = (0..N).find(|&i| offsets[i] != expected[i]) {
                    return Err(ResetOffsetsError::InconsistentArgument {
                        kernel: kernel.into(),
                        tracepoint: format!("sys_enter_{name}"),
                        field: fields[i].into(),
                        offset: offsets[i],
                        first_tracepoint: format!("sys_enter_{first_name}"),
                        first: expected[i],
                    });
                }
            }
        }
    }
    Ok(first.map(|(_, offsets)| offsets).unwrap_or([0; N]))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn write(dir: &Path, category: &str, name: &str, text: &str) {
        let path = dir.join("events").join(category).join(name);
        fs::create_dir_all(&path).unwrap();
        fs::write(path.join("format"), text).unwrap();
    }

    fn syscall(dir: &Path, name: &str, args: &[&str]) {
        let mut text = String::from("format:\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n");
        for (i, arg) in args.iter().enumerate() {
            text += &format!("\tfield:long {arg};\toffset:{};\tsize:8;\tsigned:0;\n", 16 + 8 * i);
        }
        write(dir, "syscalls", name, &text);
    }

    /// A fake tracefs with the tcp formats of 6.18 (captured) or 6.1 (send_reset as
    /// include/trace/events/tcp.h of 6.1 lays it out; the others are unchanged since).
    fn fake_tracefs(tag: &str, send_reset: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sockerr-reset-offsets-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        write(&dir, "tcp", "tcp_send_reset", send_reset);
        write(&dir, "tcp", "tcp_receive_reset", include_str!("testdata/tcp_receive_reset.format"));
        write(&dir, "tcp", "tcp_destroy_sock", include_str!("testdata/tcp_destroy_sock.format"));
        syscall(&dir, "sys_enter_accept", &["fd", "upeer_sockaddr", "upeer_addrlen"]);
        syscall(&dir, "sys_enter_accept4", &["fd", "upeer_sockaddr", "upeer_addrlen", "flags"]);
        for (name, args) in PEEK_SYSCALLS {
            syscall(&dir, &format!("sys_enter_{name}"), &args);
            syscall(&dir, &format!("sys_exit_{name}"), &["ret"]);
        }
        dir
    }

    #[test]
    fn kernel_6_18_has_sockaddrs_and_reason() {
        let dir = fake_tracefs("618", include_str!("testdata/tcp_send_reset.format"));
        let setup = discover(&dir, "6.18", true, 16).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let o = setup.offsets;
        assert_eq!((o.send_skbaddr, o.send_skaddr, o.send_state, o.send_reason), (8, 16, 24, 28));
        assert_eq!((o.send_layout, o.send_tuple.saddr, o.send_tuple.daddr), (SEND_LAYOUT_SOCKADDR, 32, 60));
        assert_eq!((o.send_tuple.family, o.send_tuple.sport), (OFFSET_ABSENT, OFFSET_ABSENT));
        assert_eq!((o.accept_fd, o.accept_addr), (16, 24));
        assert_eq!((o.peek_fd, o.peek_buf, o.peek_len), (16, 24, 32));
        assert_eq!(setup.reasons.get(&12).map(String::as_str), Some("TCP_ABORT_ON_LINGER"));
    }

    #[test]
    fn kernel_6_1_has_fields_and_no_reason() {
        let dir = fake_tracefs("61", include_str!("testdata/tcp_send_reset_6.1.format"));
        let setup = discover(&dir, "6.1", false, 16).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let o = setup.offsets;
        assert_eq!(o.send_reason, OFFSET_ABSENT, "6.1 has no reason field: not an error");
        assert_eq!(o.send_layout, SEND_LAYOUT_FIELDS);
        let sent = o.send_tuple;
        assert_eq!((sent.sport, sent.family, sent.saddr, sent.daddr_v6), (28, 32, 34, 58));
        assert_eq!((o.peek_fd, o.peek_buf), (0, 0), "no --http-peek: peek offsets unread");
        assert!(setup.reasons.is_empty());
    }

    #[test]
    fn unknown_layout_and_inconsistent_arguments_are_named() {
        let odd = include_str!("testdata/tcp_send_reset.format")
            .replace("saddr[28]", "saddr[30]")
            .replace("size:28", "size:30");
        let dir = fake_tracefs("odd", &odd);
        let err = discover(&dir, "7.0", false, 16).unwrap_err().to_string();
        assert!(err.contains("tcp:tcp_send_reset") && err.contains("7.0"), "{err}");
        write(&dir, "tcp", "tcp_send_reset", include_str!("testdata/tcp_send_reset.format"));
        syscall(&dir, "sys_enter_sendmsg", &["flags", "fd", "msg"]);
        let err = discover(&dir, "7.0", true, 16).unwrap_err().to_string();
        fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("sys_enter_sendmsg") && err.contains("`fd`"), "{err}");
    }

    #[test]
    fn missing_tracepoint_is_named() {
        let dir = fake_tracefs("missing", include_str!("testdata/tcp_send_reset.format"));
        fs::remove_dir_all(dir.join("events/tcp/tcp_receive_reset")).unwrap();
        let err = discover(&dir, "4.14", false, 16).unwrap_err().to_string();
        fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("tcp:tcp_receive_reset") && err.contains("4.16"), "{err}");
    }
}
