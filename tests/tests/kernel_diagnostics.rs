//! The kernel programs' debug lines (aya-log, tracer-ebpf/src/diagnostics.rs) reach the
//! tracer's log only when asked for: `RUST_LOG=info,sockerr::kernel=debug` shows an
//! address of an unexpected family, the default level does not, and a routine non-IP
//! address (AF_UNIX) is never logged. The warnings are checked with the losses
//! (kernel_losses.rs).
//!
//! The traced program is Debian's python3 in a network namespace of its own; it waits for
//! a line on stdin so that both tracers are attached to its pid first.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use sockerr_e2e::*;

/// An AF_UNIX connect (routine: no line), a connect with a 4-byte AF_INET address (the
/// kernel refuses it with EINVAL; the programs log it at debug), then a refused TCP
/// connect whose record tells the test the script is done.
const SCRIPT: &str = r#"
import ctypes, socket, sys
sys.stdin.readline()
u = socket.socket(socket.AF_UNIX)
try:
    u.connect("/nonexistent-sockerr-diagnostics")
except OSError:
    pass
libc = ctypes.CDLL(None, use_errno=True)
s = socket.socket()
short = ctypes.create_string_buffer(b"\x02\x00\x00\x50", 4)  # AF_INET, port 80, no address
libc.connect(s.fileno(), short, 4)
socket.socket().connect_ex(("127.0.0.1", 9))
sys.stdin.readline()
"#;

const DEBUG_LINE: &str = "socket address of family 2 (4 bytes) not traced";

#[test]
fn kernel_debug_lines_show_only_when_the_filter_asks() {
    require_root();
    let mut script = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", "ip link set lo up && exec python3 -c \"$0\"", SCRIPT])
        .stdin(Stdio::piped())
        .spawn()
        .expect("unshare starts (util-linux)");
    let pid = script.id().to_string();
    let args = ["--pid", &pid, "--output", "json"];
    let verbose = Tracer::start_with_env(&args, &[("RUST_LOG", "info,sockerr::kernel=debug")]);
    let default = Tracer::start(&args);
    let mut stdin = script.stdin.take().expect("piped");
    stdin.write_all(b"go\n").and_then(|()| stdin.flush()).expect("the script reads stdin");
    let refused = |r: &serde_json::Value| r.event() == "connect_error" && r["dst"] == "127.0.0.1:9";
    verbose.wait_for_records(1, RECORD_TIMEOUT, refused);
    default.wait_for_records(1, RECORD_TIMEOUT, refused);
    let line = verbose.wait_for_stderr(Duration::from_secs(5), |l| l.contains(DEBUG_LINE));
    let (verbose, default) = (verbose.stop(), default.stop());
    let _ = stdin.write_all(b"go\n");
    let _ = script.kill();
    let _ = script.wait();

    assert!(line.contains(" DEBUG "), "{line}");
    assert_eq!(verbose.stderr.matches(DEBUG_LINE).count(), 1, "{}", verbose.stderr);
    assert!(!verbose.stderr.contains("family 1 "), "AF_UNIX is routine:\n{}", verbose.stderr);
    assert!(!default.stderr.contains(DEBUG_LINE), "debug at the default level:\n{}", default.stderr);
}
