//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, `cargo xtask fuzz`): one
//! per source of data sockerr does not control, each handing the fuzzer's bytes to the
//! decoders the way the daemon hands them what the kernel or a peer sent.
//!
//! Compiled for the fuzz crate (feature `fuzzing`) and for this crate's tests, which
//! replay the committed seeds (`fuzz/seeds/<target>/`, past crashes among them) on every `cargo test`; the
//! product's API does not change. An entry point panics only where a decoder does: that
//! is the bug a fuzzer reports.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::ffi::OsStrExt,
    path::Path,
};

use crate::{
    daemon::sockets::Selector,
    enrich::{interfaces, port_range, procfs, sock_diag},
    event::Payload,
    http_anomaly,
    k8s::cgroup_path,
    kernel::{btf::Btf, cgroup, print_fmt, reset_offsets, sock_offsets, task_fd_offsets, tracefs::Format},
    reset,
};

/// A fuzz target: its name and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// The targets, by the name of their file in `fuzz/fuzz_targets/` and their corpus.
pub const TARGETS: &[Target] = &[
    ("ring_record", ring_record),
    ("http_peek", http_peek),
    ("btf", btf),
    ("tracefs_format", tracefs_format),
    ("cgroup", cgroup),
    #[cfg(feature = "demo")]
    ("proc_net_tcp", proc_net_tcp),
    ("proc_small", proc_small),
    ("sock_diag", sock_diag),
    ("sockets_query", sockets_query),
];

/// A ring-buffer record as the reader hands it to `decode`; a reset's details with the
/// kernel's reason names, which runs the HTTP checks on the peeked bytes it carries.
pub fn ring_record(data: &[u8]) {
    let Ok(event) = crate::decode::decode(data) else { return };
    if let Payload::Reset(seen) = &event.payload {
        for exchange in &seen.exchanges {
            assert!(
                exchange.sent.len() <= tracer_common::reset::PEEK_BYTES,
                "more bytes than the kernel kept"
            );
            assert!(exchange.received.len() <= tracer_common::reset::PEEK_BYTES);
        }
        let reasons = BTreeMap::from([(seen.reason.unwrap_or(0), "FUZZ".to_string())]);
        let _ = reset::details(seen, event.header.ts_ns, None, &reasons);
    }
}

/// Bytes `--http-peek` kept of a message: the first 8 bytes give the total the kernel
/// counted (little-endian), the rest are the kept bytes.
pub fn http_peek(data: &[u8]) {
    let (total, kept) = match data.split_first_chunk::<8>() {
        Some((total, kept)) => (u64::from_le_bytes(*total), kept),
        None => (data.len() as u64, data),
    };
    if let Some(analysis) = http_anomaly::analyze(kept, total) {
        for anomaly in analysis.anomalies {
            assert!(!anomaly.values.is_empty(), "an anomaly without the values that show it");
        }
    }
}

/// /sys/kernel/btf/vmlinux, then the `struct sock` offsets the kprobe programs read, the
/// fd walk's offsets and a few member paths of other shapes.
pub fn btf(data: &[u8]) {
    let Ok(btf) = Btf::parse(data) else { return };
    let _ = sock_offsets::from_btf(&btf, "fuzz");
    let _ = task_fd_offsets::from_btf(&btf, "fuzz");
    for (strukt, path) in
        [("sock", "__sk_common"), ("sock", "a.b.c"), ("", ""), ("sock_common", "skc_family")]
    {
        let _ = btf.member_offset(strukt, path);
    }
}

/// A tracepoint `format` file (read as text: a file that is not UTF-8 fails before it
/// is parsed), the fields the programs need, the reset layout and the reason names.
pub fn tracefs_format(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(format) = Format::parse(text, "fuzz:format", "fuzz") else { return };
    for (name, size) in [("skaddr", 8), ("sport", 2), ("saddr_v6", 16), ("reason", 4), ("ret", 8)] {
        let _ = format.offset(name, size);
    }
    let _ = reset_offsets::fill_send_tuple(&mut Default::default(), &format);
    for field in ["reason", "state", "family"] {
        let _ = print_fmt::symbolic_table(&format.print_fmt, field);
    }
}

/// /proc/PID/cgroup (pod and container ids) and /proc/self/mountinfo (the cgroup2
/// mount `--cgroup` paths are resolved against).
pub fn cgroup(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = cgroup_path::from_proc_cgroup(text);
    if let Some(mount) = cgroup::cgroup2_mount(text) {
        let path = text.lines().last().unwrap_or_default();
        let _ = cgroup::relative_to_mount(Path::new(path), &mount);
    }
}

/// /proc/net/tcp and tcp6, as the workloads read them to check socket states (the
/// product asks sock_diag); the first byte is the clock-tick rate (sysconf gives 1 or
/// more).
#[cfg(feature = "demo")]
pub fn proc_net_tcp(data: &[u8]) {
    let Some((&ticks, text)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let _ = sockerr_workloads::procnet::parse(text, u64::from(ticks.max(1)));
}

/// The small /proc texts: ip_local_port_range, an fd's link target, a /proc entry's name,
/// and the addresses and netmasks of getifaddrs (16-byte address, 16-byte netmask,
/// loopback flag, then the address asked about).
pub fn proc_small(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = port_range::parse(text);
    }
    let _ = procfs::socket_inode(OsStr::from_bytes(data));
    let _ = procfs::parse_pid(OsStr::from_bytes(data));
    let mut chunks = data.chunks_exact(33);
    let configured: Vec<_> = chunks
        .by_ref()
        .map(|chunk| {
            let address = ip(&chunk[..16], chunk[32]);
            let netmask = ip(&chunk[16..32], chunk[32]);
            interfaces::ConfiguredAddress {
                ip: address,
                prefix_len: interfaces::prefix_len(netmask),
                loopback: chunk[32] & 2 != 0,
            }
        })
        .collect();
    let asked = ip(chunks.remainder(), chunks.remainder().len() as u8);
    let _ = interfaces::is_local(asked, &configured);
}

/// An IPv4 address when `selector` is even, IPv6 when odd, from the bytes there are.
fn ip(bytes: &[u8], selector: u8) -> IpAddr {
    let mut octets = [0u8; 16];
    let len = bytes.len().min(16);
    octets[..len].copy_from_slice(&bytes[..len]);
    if selector.is_multiple_of(2) {
        IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(octets))
    }
}

/// One datagram of a NETLINK_SOCK_DIAG dump. The request's sequence number is taken
/// from the first message, so the fuzzer need not guess it to reach the decoding.
pub fn sock_diag(data: &[u8]) {
    let sequence = data.get(8..12).map_or(0, |seq| u32::from_ne_bytes(seq.try_into().expect("4 bytes")));
    let mut visited = 0usize;
    let _ = sock_diag::read_datagram(data, sequence, sock_diag::Transport::Tcp, &mut |_| visited += 1);
}

/// The query string of `/v1/sockets?...`, decoded as the daemon's handler decodes it.
pub fn sockets_query(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else { return };
    let Ok(uri) = format!("/v1/sockets?{query}").parse::<axum::http::Uri>() else { return };
    let Ok(axum::extract::Query(pairs)) = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
    else {
        return;
    };
    match Selector::from_query(&pairs) {
        Ok(Selector::Comm(comm)) => assert!(!comm.is_empty(), "an empty comm selects nothing"),
        Ok(Selector::Pid(_)) => {}
        Err(why) => assert!(why.contains("/v1/sockets?"), "the error shows the usage: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, path::PathBuf};

    use super::*;

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tracer sits in the workspace").join("fuzz")
    }

    /// Every committed seed (past crashes among them) through its entry point: what the
    /// fuzzer once found stays fixed even where nobody runs the fuzzer.
    #[test]
    fn committed_seeds_decode_without_panicking() {
        let mut replayed = 0;
        for (name, target) in TARGETS {
            let dir = fuzz_dir().join("seeds").join(name);
            let entries = fs::read_dir(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
            let mut seeds = 0;
            for entry in entries {
                let path = entry.unwrap().path();
                target(&fs::read(&path).unwrap());
                seeds += 1;
            }
            assert!(seeds > 0, "no seed for target {name} in {}", dir.display());
            replayed += seeds;
        }
        assert!(replayed >= TARGETS.len());
    }

    /// The list here, the target files and fuzz/Cargo.toml name the same targets.
    #[cfg(feature = "demo")]
    #[test]
    fn every_target_has_a_file_and_a_manifest_entry() {
        let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        let mut files: Vec<String> = fs::read_dir(fuzz_dir().join("fuzz_targets"))
            .unwrap()
            .map(|entry| entry.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut names: Vec<String> = TARGETS.iter().map(|(name, _)| name.to_string()).collect();
        names.sort();
        assert_eq!(files, names);
        for name in names {
            let source =
                fs::read_to_string(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"))).unwrap();
            assert!(
                source.contains(&format!("tracer::fuzzing::{name}(")),
                "{name}.rs calls another entry point"
            );
            assert!(manifest.contains(&format!("name = \"{name}\"")), "fuzz/Cargo.toml lacks [[bin]] {name}");
        }
    }
}
