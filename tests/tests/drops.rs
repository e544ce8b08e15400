//! `socket_drop`: packets the kernel dropped on a traced process's socket, with the
//! kernel's reason, folded, and counted exactly as the socket's own drop counter.
//!
//! The traced program is Debian's python3: it connects to its own listener in a network
//! namespace of its own, attaches a drop-everything classic BPF filter (SO_ATTACH_FILTER)
//! to the client socket and sends to it from the server side. Every data segment and
//! retransmission reaching the client is dropped by tcp_filter() with reason
//! SOCKET_FILTER; after 2 s the filter goes (SO_DETACH_FILTER), the next retransmission
//! gets through, and the script prints the client socket's sk_drops (ss's skmem `d`).
//!
//! `--no-drop-hooks` leaves the hooks of `socket_drop` and `listen_overflow` unattached,
//! checked against the kernel's own view (the programs behind the process's BPF links)
//! and by what it then reports.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::{
    collections::{BTreeMap, BTreeSet},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use sockerr_e2e::*;

const SCRIPT: &str = r#"
import json, re, socket, struct, ctypes, subprocess, time
SO_ATTACH_FILTER, SO_DETACH_FILTER = 26, 27
server = socket.socket(); server.bind(("127.0.0.1", 18090)); server.listen(1)
client = socket.socket(); client.connect(("127.0.0.1", 18090))
peer, _ = server.accept()
drop_all = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF_RET|BPF_K 0
client.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", 1, ctypes.addressof(drop_all)))
peer.send(b"x" * 100)
time.sleep(2.0)
client.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
got = client.recv(100)
port = client.getsockname()[1]
ss = subprocess.run(["ss", "-Htnm", "state", "established", "sport", "= :%d" % port],
                    capture_output=True, text=True, check=True).stdout
drops = int(re.search(r"skmem:\([^)]*,d(\d+)\)", ss).group(1))
print(json.dumps({"fd": client.fileno(), "local": "127.0.0.1:%d" % port, "peer": "127.0.0.1:18090",
                  "received": len(got), "drops": drops}), flush=True)
time.sleep(2.5)
"#;

/// The programs `--no-drop-hooks` leaves out, as the kernel names them (15 bytes).
const DROP_HOOK_PROGRAMS: [&str; 3] = ["kfree_skb", "sys_enter_liste", "sys_exit_listen"];
/// What a tracer started with it logs.
const SWITCHED_OFF_LINE: &str = "--no-drop-hooks: skb:kfree_skb, syscalls:sys_enter_listen and \
                                 syscalls:sys_exit_listen not attached; off: listen_overflow and socket_drop records";

/// The names of the programs `pid` has attached: those its BPF link fds point to
/// (`prog_id:` of an fdinfo with `link_id:`), named by the kernel's program list.
fn attached_programs(pid: u32) -> BTreeSet<String> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        // An fd closed since the listing has no fdinfo any more.
        let Ok(info) = std::fs::read_to_string(entry.expect("fdinfo entry").path()) else { continue };
        let field = |name: &str| info.lines().find_map(|line| line.strip_prefix(name)).map(str::trim);
        if field("link_id:").is_some() {
            ids.insert(field("prog_id:").and_then(|id| id.parse::<u32>().ok()).expect("a link's prog_id"));
        }
    }
    let names: BTreeMap<u32, String> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|program| (program.id(), program.name_as_str().unwrap_or("?").to_owned()))
        .collect();
    ids.iter().map(|id| names.get(id).cloned().unwrap_or_else(|| format!("unlisted id {id}"))).collect()
}

fn kernel_has_drop_reasons() -> bool {
    tracepoint_has_field("skb", "kfree_skb", "reason")
}

#[test]
fn socket_drops_carry_the_kernels_reason_and_count() {
    require_root();
    let tracer = Tracer::start(&["--comm", "python3", "--output", "json"]);
    let untraced = Tracer::start(&["--comm", "demo-client", "--output", "json"]);
    let without_hooks = Tracer::start(&["--comm", "python3", "--output", "json", "--no-drop-hooks"]);
    let started = Instant::now();
    let mut command = Command::new("unshare");
    command
        .args(["--net", "--", "sh", "-c", "ip link set lo up && exec /usr/bin/python3 -c \"$0\"", SCRIPT])
        .stdin(Stdio::null());
    let out = run_to_end("python3 drop script", &mut command, Duration::from_secs(20));
    assert!(out.status.success(), "script failed: {}", out.stderr);
    let facts: Value =
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    let expected = facts["drops"].as_u64().expect("drops");
    assert!(expected > 0 && facts["received"] == 100, "the filter dropped nothing? {facts}");

    // The script lived 2.5 s after printing: at least two reads of the kernel totals.
    let stopped = tracer.stop();
    let drops: Vec<Value> = stopped
        .records()
        .into_iter()
        .filter(|r| r["event"] == "socket_drop" && r["src"] == facts["local"])
        .collect();
    if !kernel_has_rx_sk() {
        // Before 6.11 kfree_skb names no receiving socket: these drops are not attributed.
        assert!(drops.is_empty(), "{drops:#?}");
        return;
    }
    let total: u64 = drops.iter().map(|r| r["dropped"].as_u64().unwrap()).sum();
    // A drop whose kfree_skb run the kernel skipped is counted as program_skipped instead.
    let skipped = stopped.skipped_runs("kfree_skb");
    assert!(
        (expected.saturating_sub(skipped)..=expected).contains(&total),
        "sum of `dropped` against sk_drops ({skipped} runs skipped) {facts}: {drops:#?}\n{}",
        stopped.stderr
    );
    for record in &drops {
        assert_eq!(record["reason"], "SOCKET_FILTER", "{record}");
        assert_eq!(record["comm"], "python3", "{record}");
        assert_eq!(record["fd"], facts["fd"], "{record}");
        assert_eq!(record["dst"], facts["peer"], "{record}");
        assert_eq!(record["listener"], false, "{record}");
    }
    // Folded: far fewer records than drops would be per packet (one per second at most).
    let seconds = started.elapsed().as_secs() + 1;
    assert!(drops.len() as u64 <= seconds, "{} records in {seconds} s", drops.len());
    let leaked: Vec<Value> =
        untraced.stop().records().into_iter().filter(|r| r["event"] == "socket_drop").collect();
    assert!(leaked.is_empty(), "a tracer of demo-client reported python3's drops: {leaked:#?}");
    let without_hooks = without_hooks.stop();
    let reported: Vec<Value> =
        without_hooks.records().into_iter().filter(|r| r["event"] == "socket_drop").collect();
    assert!(reported.is_empty(), "a tracer started with --no-drop-hooks reported drops: {reported:#?}");
    assert!(without_hooks.stderr.contains(SWITCHED_OFF_LINE), "{}", without_hooks.stderr);
}

/// The daemon with and without `--no-drop-hooks`: the kernel lists the hooks' programs
/// behind the default daemon's links only; the other says so in its log and /metrics.
#[test]
fn no_drop_hooks_leaves_the_drop_and_listen_programs_unattached() {
    require_root();
    let with_hooks = Daemon::start(&["--comm", "python3"]);
    let without_hooks = Daemon::start(&["--comm", "python3", "--no-drop-hooks"]);
    let attached = attached_programs(with_hooks.pid());
    let attached_without = attached_programs(without_hooks.pid());
    // A kernel without drop reasons (before 5.17) has no kfree_skb program to leave out.
    let expected: Vec<&str> = DROP_HOOK_PROGRAMS
        .into_iter()
        .filter(|&name| name != "kfree_skb" || kernel_has_drop_reasons())
        .collect();
    for name in &expected {
        assert!(attached.contains(*name), "the default daemon has no {name} attached: {attached:?}");
        assert!(!attached_without.contains(*name), "--no-drop-hooks attached {name}: {attached_without:?}");
    }
    let left_out: BTreeSet<String> = attached.difference(&attached_without).cloned().collect();
    let expected: BTreeSet<String> = expected.iter().map(|name| (*name).to_owned()).collect();
    assert_eq!(
        left_out, expected,
        "only these are left out: with {attached:?}, without {attached_without:?}"
    );
    assert!(attached_without.is_subset(&attached), "{attached_without:?} against {attached:?}");

    let series = |daemon: &Daemon| -> Vec<(String, f64)> {
        daemon.metrics().into_iter().filter(|(s, _)| s.starts_with("sockerr_capability_enabled")).collect()
    };
    let capabilities = series(&with_hooks);
    assert_eq!(capabilities.len(), 2, "{capabilities:?}");
    for (series, value) in &capabilities {
        let kernel_lacks_it = series.contains("\"socket_drop\"") && !kernel_has_drop_reasons();
        let (reason, expected) = if kernel_lacks_it { ("kernel", 0.0) } else { ("none", 1.0) };
        let reason = format!("off_reason=\"{reason}\"");
        assert!(series.contains(&reason) && *value == expected, "{series} {value}");
    }
    let switched = "off_reason=\"no_drop_hooks\"";
    let capabilities = series(&without_hooks);
    assert_eq!(capabilities.len(), 2, "{capabilities:?}");
    for (series, value) in &capabilities {
        assert!(series.contains(switched) && *value == 0.0, "{series} {value}");
    }
    let stopped = without_hooks.terminate();
    assert!(stopped.stderr.contains(SWITCHED_OFF_LINE), "{}", stopped.stderr);
    let stopped = with_hooks.terminate();
    assert!(!stopped.stderr.contains("--no-drop-hooks"), "{}", stopped.stderr);
}
