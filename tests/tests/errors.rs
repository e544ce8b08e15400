//! Bad input and a hostile environment get a clear error that names the problem and the
//! fix, and a non-zero exit code; warnings for what may appear later keep tracing.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::{process::Command, time::Duration};

use sockerr_e2e::*;

const LIMIT: Duration = Duration::from_secs(30);

fn sockerr(args: &[&str]) -> Finished {
    require_root();
    run_to_end(&format!("sockerr {}", args.join(" ")), Command::new(sockerr_bin()).args(args), LIMIT)
}

/// `script` runs under `sh -c` in a private mount namespace, with $SOCKERR set, so
/// nothing it mounts or unmounts reaches the machine.
fn in_mount_namespace(script: &str) -> Finished {
    require_root();
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--", "sh", "-c", script])
        .env("SOCKERR", sockerr_bin());
    run_to_end(&format!("unshare --mount sh -c '{script}'"), &mut command, LIMIT)
}

#[test]
fn bad_flags_exit_2_and_name_the_flag() {
    for (args, named) in [
        (&["trace", "--bogus"][..], "--bogus"),
        (&["trace", "--errno", "ENOPE"][..], "ENOPE"),
        (&["trace", "--output", "xml"][..], "xml"),
        (&["trace", "--pid", "abc"][..], "abc"),
        (&["trace", "--fold", "fast"][..], "fast"),
        (&["trace", "--backend", "fentry"][..], "fentry"),
    ] {
        let run = sockerr(args);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {run:?}");
        assert!(run.stderr.contains(named), "{args:?} should name {named}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
}

#[test]
fn missing_capabilities_are_named() {
    require_root();
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(sockerr_bin())
        .arg("trace");
    let run = run_to_end("setpriv --reuid=65534 sockerr trace", &mut command, LIMIT);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(run.stderr.contains("missing CAP_BPF and CAP_PERFMON"), "{}", run.stderr);
    assert!(run.stderr.contains("run as root"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn unmounted_tracefs_is_mounted() {
    let run = in_mount_namespace(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug 2>/dev/null; \
         exec \"$SOCKERR\" trace --duration 1s",
    );
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    assert!(run.stderr.contains("mounted tracefs at /sys/kernel/tracing"), "{}", run.stderr);
    assert!(run.stderr.contains(READY_MARKER), "{}", run.stderr);
}

#[test]
fn tracefs_that_cannot_be_mounted_says_how() {
    // A tmpfs over /sys/kernel hides both tracefs mount points and their directories.
    let run = in_mount_namespace("mount -t tmpfs none /sys/kernel && exec \"$SOCKERR\" trace");
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(run.stderr.contains("tracefs is not mounted"), "{}", run.stderr);
    assert!(run.stderr.contains("mount -t tracefs nodev /sys/kernel/tracing"), "{}", run.stderr);
}

#[test]
fn missing_tracepoint_is_named_with_the_kernel() {
    // A tracefs copy that has every format sockerr reads except inet_sk_error_report,
    // as on kernels before 5.15.
    let run = in_mount_namespace(
        "set -e; real=$(mktemp -d); fake=$(mktemp -d); mount -t tracefs nodev \"$real\"; \
         for tp in syscalls/sys_enter_connect syscalls/sys_exit_connect syscalls/sys_enter_bind \
           syscalls/sys_exit_bind syscalls/sys_enter_setsockopt syscalls/sys_exit_setsockopt \
           syscalls/sys_enter_close syscalls/sys_exit_socket syscalls/sys_exit_accept \
           syscalls/sys_exit_accept4 sock/inet_sock_set_state; do \
           mkdir -p \"$fake/events/$tp\"; cp \"$real/events/$tp/format\" \"$fake/events/$tp/\"; done; \
         umount \"$real\"; mount --bind \"$fake\" /sys/kernel/tracing; exec \"$SOCKERR\" trace",
    );
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(run.stderr.contains("tracepoint sock:inet_sk_error_report does not exist"), "{}", run.stderr);
    assert!(run.stderr.contains(release.trim()), "names the kernel: {}", run.stderr);
    assert!(run.stderr.contains("Linux 5.15"), "says which kernel has it: {}", run.stderr);
}

#[test]
fn unknown_pid_and_comm_warn_and_keep_tracing() {
    let run = sockerr(&["trace", "--pid", "4000000", "--comm", "no-such-proc", "--duration", "1s"]);
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    assert!(run.stderr.contains("no process with pid 4000000"), "{}", run.stderr);
    assert!(run.stderr.contains("no process named \"no-such-proc\""), "{}", run.stderr);
    assert!(run.stderr.contains(READY_MARKER), "{}", run.stderr);
}

#[test]
fn bad_filter_values_are_errors() {
    let run = sockerr(&["trace", "--cgroup", "/no-such-cgroup-sockerr"]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr.contains("no-such-cgroup-sockerr") && run.stderr.contains("does not exist"),
        "{}",
        run.stderr
    );
    let run = sockerr(&["trace", "--comm", "a-name-longer-than-15-bytes"]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(run.stderr.contains("1 to 15 bytes"), "{}", run.stderr);
}
