//! `port_pressure`: ephemeral ports in use per destination of a traced process, counted
//! the way connect() allocates them, against what the kernel itself shows.
//!
//! The traced program is Debian's python3, in a network namespace of its own with
//! `ip_local_port_range` cut to 20 ports: it holds one port of the range with a listener
//! (bind() takes a port for every destination), opens 17 connections to one local
//! server (one of them bound first with IP_BIND_ADDRESS_NO_PORT, which leaves the port
//! to connect()) and 3 to another, and keeps them for 8 s. The busy destination then uses
//! 18 of 20 ports (90 %: a record and gauges); the quiet one 4 (no record).
#![allow(unused_crate_dependencies, reason = "a test target sees every dependency of its package")]

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use sockerr_e2e::*;

const SCRIPT: &str = r#"
import json, os, socket, subprocess, time
IP_BIND_ADDRESS_NO_PORT = 24
with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
    f.write("40000 40019")
held = socket.socket(); held.bind(("127.0.0.1", 40019)); held.listen(1)
busy = socket.socket(); busy.bind(("127.0.0.1", 18095)); busy.listen(64)
quiet = socket.socket(); quiet.bind(("127.0.0.1", 18096)); quiet.listen(64)
clients = []
late_bound = socket.socket()
late_bound.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
late_bound.bind(("127.0.0.1", 0)); late_bound.connect(("127.0.0.1", 18095)); clients.append(late_bound)
for _ in range(16):
    c = socket.socket(); c.connect(("127.0.0.1", 18095)); clients.append(c)
for _ in range(3):
    c = socket.socket(); c.connect(("127.0.0.1", 18096)); clients.append(c)
def in_range(dport):
    out = subprocess.run(["ss", "-Htn", "state", "established", "dport", "= :%d" % dport],
                         capture_output=True, text=True, check=True).stdout
    ports = [int(line.split()[2].rsplit(":", 1)[1]) for line in out.splitlines()]
    return sum(1 for p in ports if 40000 <= p <= 40019)
netns = int(os.readlink("/proc/self/ns/net")[len("net:["):-1])
print(json.dumps({"busy": in_range(18095), "quiet": in_range(18096), "netns": netns}), flush=True)
time.sleep(8)
"#;

/// The gauge of `dst` in the daemon's /metrics: (in use, available), once present.
fn gauges(daemon: &Daemon, dst: &str) -> Option<(f64, f64)> {
    let samples = daemon.metrics();
    let find = |metric: &str| {
        samples.iter().find(|(series, _)| series.starts_with(metric) && series.contains(dst)).map(|(_, v)| *v)
    };
    Some((find("sockerr_ephemeral_ports_in_use{")?, find("sockerr_ephemeral_ports_available{")?))
}

#[test]
fn port_pressure_counts_each_destination_as_connect_does() {
    require_root();
    let tracer = Tracer::start(&["--comm", "python3", "--output", "json"]);
    let daemon = Daemon::start(&["--comm", "python3"]);
    let mut child = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", "ip link set lo up && exec /usr/bin/python3 -c \"$0\"", SCRIPT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3 in a new network namespace");
    let mut facts_line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut facts_line).expect("read the facts");
    let facts: Value =
        serde_json::from_str(facts_line.trim()).unwrap_or_else(|e| panic!("{e}: {facts_line:?}"));
    // The kernel's own view: connections in the range, plus the port the listener holds.
    let busy = facts["busy"].as_u64().expect("busy") + 1;
    let quiet = facts["quiet"].as_u64().expect("quiet") + 1;
    assert_eq!((busy, quiet), (18, 4), "the script did not set up what it should: {facts}");

    // Sampled every 5 s: within 7 s of the connections (bounded).
    let deadline = Instant::now() + patience(Duration::from_secs(7));
    let (busy_gauge, quiet_gauge) = loop {
        let found = (gauges(&daemon, "dst=\"127.0.0.1:18095\""), gauges(&daemon, "dst=\"127.0.0.1:18096\""));
        if let (Some(b), Some(q)) = found {
            break (b, q);
        }
        assert!(Instant::now() < deadline, "no port gauges in /metrics: {:#?}", daemon.metrics());
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(busy_gauge, (busy as f64, 20.0));
    assert_eq!(quiet_gauge, (quiet as f64, 20.0));
    let status = child.wait().expect("python3 ends");
    assert!(status.success(), "the script failed: {status}");

    let stopped = tracer.stop();
    let pressures: Vec<Value> =
        stopped.records().into_iter().filter(|r| r["event"] == "port_pressure").collect();
    assert_eq!(pressures.len(), 1, "one crossing, one record: {pressures:#?}\n{}", stopped.stderr);
    let record = &pressures[0];
    assert_eq!(record["dst"], "127.0.0.1:18095", "{record}");
    assert_eq!(record["src_ip"], "127.0.0.1", "{record}");
    // The record marks the crossing of 80 % (16 of the 20 ports), in the first sample at
    // or past it: one that fell while the script was still connecting (it takes seconds
    // under TCG) saw fewer than all 18. The gauges above carry the exact count.
    let in_use = record["in_use"].as_u64().expect("in_use");
    assert!((16..=busy).contains(&in_use), "in use at the crossing: 16 to {busy} ports: {record}");
    assert_eq!(record["available"].as_u64(), Some(20), "{record}");
    assert_eq!(record["percent"].as_u64(), Some(in_use * 100 / 20), "{record}");
    assert_eq!((record["range_low"].as_u64(), record["range_high"].as_u64()), (Some(40000), Some(40019)));
    assert_eq!(record["comm"], "python3", "{record}");
    assert_eq!(record["netns"], facts["netns"], "{record}");
}
