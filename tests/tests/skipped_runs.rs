//! `program_skipped`: runs of sockerr's programs that the kernel skipped because another
//! BPF program was running on that CPU are counted, named by program, and add up with
//! what was reported to what the kernel itself counted.
//!
//! The other program is another agent's, as on a node where Cilium, Tetragon or a
//! bpftrace one-liner run beside sockerr: a classic tracepoint program that spins, loaded
//! by the script itself through bpf(2) (a five-instruction bounded loop, no toolchain).
//! The kernel runs one kprobe or tracepoint program per CPU at a time
//! (`bpf_prog_active`), so a packet the timer's softirq drops on that CPU while it spins
//! reaches `skb:kfree_skb` without sockerr's program running.
//!
//! Before Linux 6.7 the kernel counts no skipped run of a tracepoint program: sockerr
//! says so at start, and the test checks that it does.
//!
//! A file of its own: cargo runs test binaries one after another, and the spinning
//! program would skip the runs of every tracer on that CPU, those of concurrent tests
//! included.
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::time::Duration;

use sockerr_e2e::*;

/// Pins itself to one CPU, loads and attaches the spinning program, sets a drop-all
/// filter on a listener, then lets a child call getppid() (the spinning program's
/// syscall) for 2.6 s on that CPU while 100 connects, 10 ms apart, send their SYNs. Each
/// SYN is dropped at connect() and again at its retransmission a second later, from the
/// timer's softirq: that one interrupts the spinning program. Prints the listener's
/// `sk_drops` (ss) once the child is done.
const SCRIPT: &str = r#"
import ctypes, fcntl, json, os, re, socket, struct, subprocess, sys, time
NR = {"x86_64": {"bpf": 321, "perf_event_open": 298},
      "aarch64": {"bpf": 280, "perf_event_open": 241}}[os.uname().machine]
BPF_PROG_LOAD, BPF_PROG_TYPE_TRACEPOINT = 5, 5
PERF_TYPE_TRACEPOINT, PERF_SAMPLE_RAW = 2, 1 << 10
PERF_EVENT_IOC_ENABLE, PERF_EVENT_IOC_SET_BPF = 0x2400, 0x40042408
SO_ATTACH_FILTER = 26
libc = ctypes.CDLL(None, use_errno=True)
def syscall(name, *args):
    ret = libc.syscall(NR[name], *args)
    if ret < 0:
        raise OSError(ctypes.get_errno(), name)
    return ret
def insn(code, dst, off, imm):
    return struct.pack("<BBhi", code, dst, off, imm)
spin = b"".join([
    insn(0xb7, 1, 0, 0),         # r1 = 0
    insn(0x07, 1, 0, 1),         # r1 += 1
    insn(0xa5, 1, -2, 20000),    # if r1 < 20000 goto -2
    insn(0xb7, 0, 0, 0),         # r0 = 0
    insn(0x95, 0, 0, 0),         # exit
])
cpu = max(os.sched_getaffinity(0))
os.sched_setaffinity(0, {cpu})
sys.stdin.readline()
code, license = ctypes.create_string_buffer(spin), ctypes.create_string_buffer(b"GPL")
load = ctypes.create_string_buffer(struct.pack("<IIQQ", BPF_PROG_TYPE_TRACEPOINT, len(spin) // 8,
                                               ctypes.addressof(code), ctypes.addressof(license)), 128)
prog = syscall("bpf", BPF_PROG_LOAD, load, 128)
tracefs = next(d for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
               if os.path.exists(d + "/events/syscalls"))
with open(tracefs + "/events/syscalls/sys_enter_getppid/id") as f:
    tracepoint = int(f.read())
attr = ctypes.create_string_buffer(struct.pack("<IIQQQ", PERF_TYPE_TRACEPOINT, 64, tracepoint, 1, PERF_SAMPLE_RAW), 64)
event = syscall("perf_event_open", attr, -1, 0, -1, 0)
fcntl.ioctl(event, PERF_EVENT_IOC_SET_BPF, prog)
fcntl.ioctl(event, PERF_EVENT_IOC_ENABLE, 0)
listener = socket.socket(); listener.bind(("127.0.0.1", 18095)); listener.listen(512)
drop_all = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF_RET|BPF_K 0
listener.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", 1, ctypes.addressof(drop_all)))
spinner = os.fork()
if spinner == 0:
    deadline = time.monotonic() + 2.6
    while time.monotonic() < deadline:
        for _ in range(100):
            os.getppid()
    os._exit(0)
clients = []
for _ in range(100):
    c = socket.socket(); c.setblocking(False)
    c.connect_ex(("127.0.0.1", 18095)); clients.append(c)
    time.sleep(0.01)
os.waitpid(spinner, 0)
for c in clients:
    c.close()
ss = subprocess.run(["ss", "-Hltnm", "sport", "= :18095"], capture_output=True, text=True, check=True).stdout
print(json.dumps({"local": "127.0.0.1:18095",
                  "drops": int(re.search(r"skmem:\([^)]*,d(\d+)\)", ss).group(1))}), flush=True)
sys.stdin.readline()
"#;

/// Linux 6.7 (commit dd8657894c11) counts the runs `trace_call_bpf()` skips of tracepoint
/// and kprobe programs; before, only BTF-typed tracepoints' skipped runs are counted.
fn kernel_counts_skipped_tracepoint_runs() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let numbers: Vec<u32> =
        release.split(['.', '-']).take(2).map(|n| n.trim().parse().expect("a number")).collect();
    (numbers[0], numbers[1]) >= (6, 7)
}

#[test]
fn runs_the_kernel_skipped_are_counted_and_named_by_program() {
    require_root();
    let mut script = Script::start("python3", SCRIPT);
    let tracer = Tracer::start(&["--pid", &script.pid(), "--output", "json"]);
    script.go();
    let facts = script.facts();
    let drops = facts["drops"].as_u64().expect("drops");
    assert!(drops >= 100, "the filter dropped less than one SYN per connect? {facts}");
    // Totals are read once a second and at exit: the script stays while the tracer stops.
    std::thread::sleep(Duration::from_millis(1200));
    let stopped = tracer.stop();
    drop(script);

    let by_program = stopped.skipped_runs_by_program();
    let skipped = by_program.get("kfree_skb").copied().unwrap_or(0);
    let gap_said = stopped.stderr.contains("program_skipped counts only the BTF-typed tracepoints'");
    if !kernel_counts_skipped_tracepoint_runs() {
        // Before 6.7 the kernel counts nothing of a skipped tracepoint run: said at start.
        assert!(gap_said && skipped == 0, "{skipped} skipped runs of kfree_skb counted:\n{}", stopped.stderr);
        return;
    }
    assert!(!gap_said, "a gap said on a kernel that counts: {}", stopped.stderr);
    assert!(skipped > 0, "no kfree_skb run skipped while another program spun: {facts}\n{}", stopped.stderr);
    assert_eq!(
        by_program.values().sum::<u64>(),
        stopped.lost("program_skipped"),
        "the runs named by program add up to the count: {by_program:?}\n{}",
        stopped.stderr
    );
    let reported: u64 = stopped
        .records()
        .into_iter()
        .filter(|r| r.event() == "socket_drop" && r["src"] == facts["local"])
        .map(|r| r["dropped"].as_u64().expect("dropped"))
        .sum();
    if !kernel_has_rx_sk() {
        // Before 6.11 kfree_skb names no receiving socket: nothing is attributed.
        assert_eq!(reported, 0, "{}", stopped.stderr);
        return;
    }
    // The listener's drops that were not reported are the skipped runs (other packets
    // freed on that CPU may have been skipped too: at most `skipped`, not exactly).
    assert!(reported < drops, "{reported} of the listener's {drops} drops reported, none skipped: {facts}");
    assert!(
        reported + skipped >= drops,
        "{reported} reported + {skipped} skipped runs < the listener's {drops} drops: {facts}\n{}",
        stopped.stderr
    );
}
