//! Finding tracefs and reading tracepoint `format` files.
//!
//! The format file is a small line-oriented text (kernel/trace/trace_events.c,
//! f_show()): `field:<c declaration>;\toffset:N;\tsize:N;\tsigned:N;`. No maintained
//! crate parses it on its own, so this module does, keeping only name, offset and size.

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;
use tracer_common::sockaddr::TupleOffsets;

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed; mount it with \
         `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    NotMounted {
        #[source]
        source: io::Error,
    },
    #[error("tracepoint {category}:{name} does not exist on this kernel ({kernel}): {hint}")]
    MissingTracepoint { category: String, name: String, kernel: String, hint: &'static str },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("tracepoint {tracepoint} on kernel {kernel} has no field `{field}`; sockerr needs it")]
    MissingField { tracepoint: String, field: String, kernel: String },
    #[error(
        "tracepoint {tracepoint} on kernel {kernel}: field `{field}` is {actual} bytes, sockerr \
         expects {expected}"
    )]
    FieldSize { tracepoint: String, field: String, kernel: String, expected: u32, actual: u32 },
    #[error("malformed line in {path}: {line:?}")]
    Malformed { path: PathBuf, line: String },
}

/// Where tracefs is mounted, mounting it if needed (root on a bare node often has
/// neither /sys/kernel/tracing nor debugfs mounted).
pub fn find_or_mount() -> Result<PathBuf, TracefsError> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    mount_tracefs(Path::new("/sys/kernel/tracing")).map_err(|source| TracefsError::NotMounted { source })?;
    tracing::info!("mounted tracefs at /sys/kernel/tracing");
    Ok(PathBuf::from("/sys/kernel/tracing"))
}

fn mount_tracefs(target: &Path) -> io::Result<()> {
    use std::{ffi::CString, os::unix::ffi::OsStrExt};
    let target = CString::new(target.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: all pointers are NUL-terminated strings that outlive the call.
    let rc =
        unsafe { libc::mount(c"nodev".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// The fields of one tracepoint, by name.
#[derive(Debug)]
pub struct Format {
    pub tracepoint: String,
    pub kernel: String,
    fields: HashMap<String, Field>,
    /// The `print fmt:` line's text (empty when the file has none).
    pub print_fmt: String,
}

/// The size of a syscall tracepoint's argument and return value slots.
pub const SYSCALL_ARG: u32 = 8;

impl Format {
    /// Reads `events/<category>/<name>/format` under `tracefs`.
    pub fn read(tracefs: &Path, category: &str, name: &str, kernel: &str) -> Result<Self, TracefsError> {
        let dir = tracefs.join("events").join(category).join(name);
        if !dir.is_dir() {
            return Err(TracefsError::MissingTracepoint {
                category: category.into(),
                name: name.into(),
                kernel: kernel.into(),
                hint: missing_hint(category),
            });
        }
        let path = dir.join("format");
        let text =
            fs::read_to_string(&path).map_err(|source| TracefsError::Read { path: path.clone(), source })?;
        Self::parse(&text, &format!("{category}:{name}"), kernel)
            .map_err(|line| TracefsError::Malformed { path, line })
    }

    /// Parses a format file; `Err` carries the offending line.
    pub fn parse(text: &str, tracepoint: &str, kernel: &str) -> Result<Self, String> {
        let mut fields = HashMap::new();
        let print_fmt = text
            .lines()
            .find_map(|line| line.strip_prefix("print fmt:"))
            .map(|rest| rest.trim().to_string())
            .unwrap_or_default();
        for line in text.lines().map(str::trim) {
            let Some(rest) = line.strip_prefix("field:") else { continue };
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in rest.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                } else if decl.is_none() {
                    decl = Some(part);
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                return Err(line.to_string());
            };
            let name = field_name(decl).ok_or_else(|| line.to_string())?;
            fields.insert(name.to_string(), Field { offset, size });
        }
        Ok(Self { tracepoint: tracepoint.into(), kernel: kernel.into(), fields, print_fmt })
    }

    /// The offset of `name`, checking that its size is `size` bytes.
    pub fn offset(&self, name: &str, size: u32) -> Result<u32, TracefsError> {
        let field = self.fields.get(name).ok_or_else(|| TracefsError::MissingField {
            tracepoint: self.tracepoint.clone(),
            field: name.into(),
            kernel: self.kernel.clone(),
        })?;
        if field.size != size {
            return Err(TracefsError::FieldSize {
                tracepoint: self.tracepoint.clone(),
                field: name.into(),
                kernel: self.kernel.clone(),
                expected: size,
                actual: field.size,
            });
        }
        Ok(field.offset)
    }

    /// The offsets of a `syscalls:sys_enter_*` record's arguments `names`. Each is an
    /// 8-byte slot whatever its C type (include/trace/syscall.h, kernel/trace/trace_syscalls.c).
    pub fn syscall_args<const N: usize>(&self, names: [&str; N]) -> Result<[u32; N], TracefsError> {
        let mut offsets = [0; N];
        for (offset, name) in offsets.iter_mut().zip(names) {
            *offset = self.offset(name, SYSCALL_ARG)?;
        }
        Ok(offsets)
    }

    /// Where a `sock:*` or `tcp:*` record keeps its endpoints: TP_STORE_ADDRS
    /// (include/trace/events/sock.h and tcp.h) stores the ports in host order and both an
    /// IPv4 and an IPv6 copy of each address.
    pub fn tuple_fields(&self) -> Result<TupleOffsets, TracefsError> {
        Ok(TupleOffsets {
            family: self.offset("family", 2)?,
            sport: self.offset("sport", 2)?,
            dport: self.offset("dport", 2)?,
            saddr: self.offset("saddr", 4)?,
            daddr: self.offset("daddr", 4)?,
            saddr_v6: self.offset("saddr_v6", 16)?,
            daddr_v6: self.offset("daddr_v6", 16)?,
        })
    }

    pub fn field(&self, name: &str) -> Option<Field> {
        self.fields.get(name).copied()
    }
}

/// The identifier in a C declaration such as `const void * skaddr`, `__u8 saddr[4]`
/// or `__data_loc char[] filename`.
fn field_name(decl: &str) -> Option<&str> {
    let last = decl.split_whitespace().last()?;
    let name = last.split('[').next()?.trim_start_matches('*');
    (!name.is_empty()).then_some(name)
}

fn missing_hint(category: &str) -> &'static str {
    match category {
        "syscalls" => "the kernel needs CONFIG_FTRACE_SYSCALLS=y",
        "sock" => "sock:inet_sock_set_state needs Linux 4.16 and sock:inet_sk_error_report Linux 5.15",
        "tcp" => "tcp:tcp_send_reset needs Linux 4.15, tcp:tcp_receive_reset and tcp:tcp_destroy_sock 4.16",
        _ => "the kernel was built without it",
    }
}

/// `uname -r`, for error messages.
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET_STATE: &str = include_str!("testdata/inet_sock_set_state.format");

    #[test]
    fn parses_inet_sock_set_state_of_6_18() {
        let f = Format::parse(SET_STATE, "sock:inet_sock_set_state", "6.18").unwrap();
        assert_eq!(f.field("skaddr"), Some(Field { offset: 8, size: 8 }));
        assert_eq!(f.field("sport"), Some(Field { offset: 24, size: 2 }));
        assert_eq!(f.field("saddr_v6"), Some(Field { offset: 40, size: 16 }));
        assert_eq!(f.field("daddr_v6"), Some(Field { offset: 56, size: 16 }));
        assert_eq!(f.field("common_pid"), Some(Field { offset: 4, size: 4 }));
    }

    #[test]
    fn wrong_size_names_field_and_kernel() {
        let f = Format::parse(SET_STATE, "sock:inet_sock_set_state", "6.18").unwrap();
        let err = f.offset("sport", 4).unwrap_err().to_string();
        assert!(err.contains("sport") && err.contains("6.18") && err.contains("2 bytes"), "{err}");
        let err = f.offset("nosuch", 4).unwrap_err().to_string();
        assert!(err.contains("`nosuch`"), "{err}");
    }

    #[test]
    fn field_names_from_declarations() {
        assert_eq!(field_name("const void * skaddr"), Some("skaddr"));
        assert_eq!(field_name("__u8 saddr[4]"), Some("saddr"));
        assert_eq!(field_name("char * optval"), Some("optval"));
        assert_eq!(field_name("__data_loc char[] filename"), Some("filename"));
        assert_eq!(field_name("int *ptr"), Some("ptr"));
    }

    #[test]
    fn malformed_line_is_reported() {
        assert!(Format::parse("\tfield:int x;\toffset:abc;\tsize:4;", "t", "k").is_err());
    }
}
