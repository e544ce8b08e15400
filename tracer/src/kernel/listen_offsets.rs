//! Where `syscalls:sys_enter_listen` keeps its arguments on this kernel, for the
//! program that learns who owns a listening socket (tracer-ebpf/src/listen.rs).

use std::path::Path;

use tracer_common::ListenOffsets;

use super::tracefs::{Format, TracefsError};

/// The tracepoints the listener programs attach to, after the syscall exits as the
/// loader's order wants.
pub const LISTEN_ATTACHMENTS: &[super::loader::Attachment] = &[
    ("sys_exit_listen", "syscalls", "sys_exit_listen"),
    ("sys_enter_listen", "syscalls", "sys_enter_listen"),
];

pub fn discover(tracefs: &Path, kernel: &str) -> Result<ListenOffsets, TracefsError> {
    let format = Format::read(tracefs, "syscalls", "sys_enter_listen", kernel)?;
    offsets_of(&format)
}

fn offsets_of(format: &Format) -> Result<ListenOffsets, TracefsError> {
    // Syscall arguments are 8-byte slots whatever their C type (kernel/trace/trace_syscalls.c).
    Ok(ListenOffsets { fd: format.offset("fd", 8)?, backlog: format.offset("backlog", 8)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// /sys/kernel/tracing/events/syscalls/sys_enter_listen/format on Linux 6.18.
    const FORMAT_6_18: &str = "name: sys_enter_listen
ID: 1453
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int backlog;\toffset:24;\tsize:8;\tsigned:0;

print fmt: \"fd: 0x%08lx, backlog: 0x%08lx\", ((unsigned long)(REC->fd)), ((unsigned long)(REC->backlog))
";

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
