//! Tracepoint field offsets for the kernel programs, read from this kernel's tracefs.

use std::path::Path;

use tracer_common::TracepointOffsets;

use super::tracefs::{Format, SYSCALL_ARG, TracefsError};

#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(
        "on kernel {kernel}, `ret` of syscalls:{name} is at offset {offset} but at {first} in other \
         sys_exit_* tracepoints; the programs read one offset for all"
    )]
    InconsistentExitRet { name: String, kernel: String, offset: u32, first: u32 },
}

/// The `syscalls:*` tracepoints the programs attach to.
pub const SYSCALL_TRACEPOINTS: [&str; 10] = [
    "sys_enter_connect",
    "sys_exit_connect",
    "sys_enter_bind",
    "sys_exit_bind",
    "sys_enter_setsockopt",
    "sys_exit_setsockopt",
    "sys_enter_close",
    "sys_exit_socket",
    "sys_exit_accept",
    "sys_exit_accept4",
];

/// Reads the format of every tracepoint whose fields the programs read and returns the
/// offsets, checking each field's size against what the programs read.
pub fn discover(tracefs: &Path, kernel: &str) -> Result<TracepointOffsets, OffsetsError> {
    let format = |category: &str, name: &str| Format::read(tracefs, category, name, kernel);
    let [connect_fd, connect_addr, connect_addrlen] =
        format("syscalls", "sys_enter_connect")?.syscall_args(["fd", "uservaddr", "addrlen"])?;
    let [bind_fd, bind_addr, bind_addrlen] =
        format("syscalls", "sys_enter_bind")?.syscall_args(["fd", "umyaddr", "addrlen"])?;
    let [setsockopt_fd, setsockopt_level, setsockopt_optname, setsockopt_optval, setsockopt_optlen] =
        format("syscalls", "sys_enter_setsockopt")?
            .syscall_args(["fd", "level", "optname", "optval", "optlen"])?;
    let [close_fd] = format("syscalls", "sys_enter_close")?.syscall_args(["fd"])?;

    let sys_exit_ret = format("syscalls", "sys_exit_connect")?.offset("ret", SYSCALL_ARG)?;
    for name in SYSCALL_TRACEPOINTS.iter().filter(|n| n.starts_with("sys_exit_")) {
        let offset = format("syscalls", name)?.offset("ret", SYSCALL_ARG)?;
        if offset != sys_exit_ret {
            return Err(OffsetsError::InconsistentExitRet {
                name: (*name).into(),
                kernel: kernel.into(),
                offset,
                first: sys_exit_ret,
            });
        }
    }

    // The BTF-typed hooks on the `sock:*` tracepoints read the socket, none of the records'
    // fields; reading the formats still names a kernel without the tracepoints.
    format("sock", "inet_sock_set_state")?;
    format("sock", "inet_sk_error_report")?;

    Ok(TracepointOffsets {
        connect_fd,
        connect_addr,
        connect_addrlen,
        bind_fd,
        bind_addr,
        bind_addrlen,
        setsockopt_fd,
        setsockopt_level,
        setsockopt_optname,
        setsockopt_optval,
        setsockopt_optlen,
        close_fd,
        sys_exit_ret,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// Builds a fake tracefs from the formats captured on a 6.18 kernel.
    fn fake_tracefs(dir: &Path) {
        let syscall = |name: &str, args: &[&str]| {
            let mut text =
                String::from("format:\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n");
            for (i, arg) in args.iter().enumerate() {
                text += &format!("\tfield:long {arg};\toffset:{};\tsize:8;\tsigned:0;\n", 16 + 8 * i);
            }
            let path = dir.join("events/syscalls").join(name);
            fs::create_dir_all(&path).unwrap();
            fs::write(path.join("format"), text).unwrap();
        };
        syscall("sys_enter_connect", &["fd", "uservaddr", "addrlen"]);
        syscall("sys_enter_bind", &["fd", "umyaddr", "addrlen"]);
        syscall("sys_enter_setsockopt", &["fd", "level", "optname", "optval", "optlen"]);
        syscall("sys_enter_close", &["fd"]);
        for name in SYSCALL_TRACEPOINTS.iter().filter(|n| n.starts_with("sys_exit_")) {
            syscall(name, &["ret"]);
        }
        for (name, text) in [
            ("inet_sock_set_state", include_str!("testdata/inet_sock_set_state.format")),
            ("inet_sk_error_report", include_str!("testdata/inet_sk_error_report.format")),
        ] {
            let path = dir.join("events/sock").join(name);
            fs::create_dir_all(&path).unwrap();
            fs::write(path.join("format"), text).unwrap();
        }
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sockerr-offsets-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn offsets_of_6_18() {
        let dir = temp_dir("ok");
        fake_tracefs(&dir);
        let offsets = discover(&dir, "6.18").unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!((offsets.connect_fd, offsets.connect_addr, offsets.connect_addrlen), (16, 24, 32));
        assert_eq!(offsets.setsockopt_optlen, 48);
        assert_eq!(offsets.sys_exit_ret, 16);
    }

    #[test]
    fn missing_tracepoint_is_named() {
        let dir = temp_dir("missing");
        fake_tracefs(&dir);
        fs::remove_dir_all(dir.join("events/sock/inet_sk_error_report")).unwrap();
        let err = discover(&dir, "5.4.0").unwrap_err().to_string();
        fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("sock:inet_sk_error_report") && err.contains("5.4.0"), "{err}");
    }
}
