//! Where `syscalls:sys_enter_listen` keeps its arguments on this kernel, for the
//! program that learns who owns a listening socket (tracer-ebpf/src/listen.rs).

use std::path::Path;

use tracer_common::ListenOffsets;

use super::tracefs::{Format, TracefsError};

/// The tracepoints the listener programs attach to, after the syscall exits as the
/// loader's order wants.
pub const LISTEN_ATTACHMENTS: &[super::Attachment] = &[
    ("sys_exit_listen", "syscalls", "sys_exit_listen"),
    ("sys_enter_listen", "syscalls", "sys_enter_listen"),
];

pub fn discover(tracefs: &Path, kernel: &str) -> Result<ListenOffsets, TracefsError> {
    let format = Format::read(tracefs, "syscalls", "sys_enter_listen", kernel)?;
    offsets_of(&format)
}

fn offsets_of(format: &Format) -> Result<ListenOffsets, TracefsError> {
    let [fd, backlog] = format.syscall_args(["fd", "backlog"])?;
    Ok(ListenOffsets { fd, backlog })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// /sys/kernel/tracing/events/syscalls/sys_enter_listen/format on Linux 6.18.
    const FORMAT_6_18: &str = include_str!("testdata/sys_enter_listen.format");

    #[test]
    fn arguments_are_read_from_the_format() {
        let format = Format::parse(FORMAT_6_18, "syscalls:sys_enter_listen", "6.18").unwrap();
        assert_eq!(offsets_of(&format).unwrap(), ListenOffsets { fd: 16, backlog: 24 });
    }

    #[test]
    fn a_missing_argument_is_named() {
        let text = FORMAT_6_18.replace("field:int backlog;", "field:int other;");
        let format = Format::parse(&text, "syscalls:sys_enter_listen", "6.18").unwrap();
        let err = offsets_of(&format).unwrap_err().to_string();
        assert!(err.contains("backlog"), "{err}");
    }
}
