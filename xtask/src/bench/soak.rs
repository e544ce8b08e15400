//! `cargo xtask bench --soak`: a million Cilium-pattern failures under `sockerr daemon`,
//! in chunks. Every failure must be counted exactly once (the flood's own count against
//! /metrics and the NDJSON lines) or accounted as lost; RSS after the first chunk (the
//! warm-up) flat within 10 %; fd count stable; every map within its bound.

use std::{
    collections::BTreeSet,
    fs::File,
    io::{BufRead, BufReader},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{daemon, throughput};
use crate::process::stdout_of;

const CHUNKS: u64 = 10;

/// What the soak measured, for results.json and BENCHMARKS.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Soak {
    pub date: String,
    pub total: u64,
    pub rate: u64,
    pub threads: u32,
    pub secs: f64,
    /// The flood's own count of failures.
    pub failures: u64,
    /// `sockerr_connect_errors_total` of the flood's processes.
    pub counted: u64,
    pub lost: u64,
    pub ndjson_lines: u64,
    /// Daemon RSS after each chunk (the first is the warm-up).
    pub rss_kib: Vec<u64>,
    pub rss_growth_percent: f64,
    pub fds: Vec<usize>,
    /// `name (type): entries/max, verdict` of each hash map of the daemon.
    pub maps: Vec<String>,
    /// Why it failed; empty when it passed.
    pub problems: Vec<String>,
}
/// Failures per second of the soak's 2 threads.
const SOAK_RATE: u64 = 20_000;

/// Runs the soak; its problems are in the result (the caller records it, then fails).
pub fn run(sockerr: &Path, scratch: &Path, total: u64, date: String) -> Result<Soak> {
    let started = Instant::now();
    let ndjson = scratch.join("soak.ndjson");
    let mut daemon = daemon::start(sockerr, &ndjson, &["--comm", super::COMM], None)?;
    let pid = daemon.running.pid();
    let mut failures = 0;
    let mut pids = BTreeSet::new();
    let mut rss = Vec::new();
    let mut fds = Vec::new();
    let chunk = total.div_ceil(CHUNKS);
    let mut done = 0;
    while done < total {
        let count = chunk.min(total - done);
        // Paced below the loss-free rate (BENCHMARKS.md): RSS then measures what the
        // daemon keeps, not a backlog it has yet to drain.
        let report = throughput::flood(sockerr, count, SOAK_RATE)?;
        done += count;
        failures += report["failures"].as_u64().context("flood report without failures")?;
        pids.insert(report["pid"].as_u64().context("flood report without pid")? as u32);
        std::thread::sleep(Duration::from_millis(500));
        rss.push(daemon::rss_kib(pid)?);
        fds.push(daemon::fd_count(pid)?);
        eprintln!(
            "soak: {done}/{total} failures, daemon RSS {} KiB, {} fds ({:.0} s)",
            rss.last().unwrap_or(&0),
            fds.last().unwrap_or(&0),
            started.elapsed().as_secs_f64()
        );
    }
    // Let the daemon drain the ring buffer and flush before reading its counters.
    std::thread::sleep(Duration::from_secs(1));
    let metrics = daemon::metrics(daemon.address)?;
    let checks = map_checks(pid, &pids)?;
    let maps: Vec<String> = checks.iter().map(|check| check.line.clone()).collect();
    daemon.running.stop();
    let counted = throughput::counted(&metrics) as u64;
    let lost = daemon::lost(&metrics)?.total;
    let lines = ndjson_failures(&ndjson, &pids)?;

    let warm = rss.first().copied().unwrap_or(0);
    let max_rss = rss.iter().skip(1).copied().max().unwrap_or(warm);
    let rss_growth = if warm == 0 { 0.0 } else { (max_rss as f64 - warm as f64) / warm as f64 * 100.0 };
    let fds_stable = fds.iter().skip(1).all(|&n| n == fds[0]);
    println!("soak: {total} failing connects at {SOAK_RATE}/s in {:.0} s", started.elapsed().as_secs_f64());
    println!("  flood's own count:       {failures}");
    println!("  /metrics connect errors: {counted}  (events lost: {lost})");
    println!("  NDJSON failure lines:    {lines}");
    println!("  daemon RSS after warm-up {warm} KiB, max later {max_rss} KiB ({rss_growth:+.1} %): {rss:?}");
    println!("  daemon fds per chunk: {fds:?}");
    for map in &maps {
        println!("  map {map}");
    }
    let mut problems = Vec::new();
    // Paced below the loss-free rate: every failure must be counted, exactly once; lost
    // kernel events are another unit (several per failure), never added to failures.
    if counted != failures {
        problems.push(format!(
            "/metrics counted {counted} of {failures} failures ({lost} kernel events lost meanwhile)"
        ));
    }
    if lines != counted {
        problems.push(format!("{lines} NDJSON lines but {counted} counted in /metrics"));
    }
    if rss_growth > 10.0 {
        problems.push(format!("RSS grew {rss_growth:.1} % after warm-up"));
    }
    if !fds_stable {
        problems.push(format!("fd count changed: {fds:?}"));
    }
    if maps.is_empty() {
        problems.push("no hash map of the daemon found to check".into());
    }
    problems.extend(checks.iter().filter_map(|check| check.problem.clone()));
    println!("soak: {}", if problems.is_empty() { "passed".to_owned() } else { problems.join("; ") });
    Ok(Soak {
        date,
        total,
        rate: SOAK_RATE,
        threads: 2,
        secs: started.elapsed().as_secs_f64(),
        failures,
        counted,
        lost,
        ndjson_lines: lines,
        rss_kib: rss,
        rss_growth_percent: rss_growth,
        fds,
        maps,
        problems,
    })
}

/// NDJSON connect failures of the flood processes. Matched as text, not parsed: a million
/// records through serde_json in xtask's debug build take minutes; sockerr's JSON writer
/// prints `"event":"connect_error"` and `"pid":N` without spaces.
fn ndjson_failures(path: &Path, pids: &BTreeSet<u32>) -> Result<u64> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let markers: Vec<String> = pids.iter().map(|pid| format!("\"pid\":{pid},")).collect();
    let mut count = 0;
    for line in BufReader::new(file).lines() {
        let line = line?;
        if line.contains("\"event\":\"connect_error\"") && markers.iter().any(|m| line.contains(m.as_str())) {
            count += 1;
        }
    }
    Ok(count)
}

/// An LRU map this full (in % of max_entries) is taken as evicting.
const LRU_FULL_PERCENT: u64 = 95;

/// One hash-like map of the daemon: how full it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapFill {
    pub name: String,
    pub kind: String,
    pub entries: u64,
    pub max_entries: u64,
}

impl MapFill {
    /// An LRU map near its bound has evicted (or is about to evict) entries: the kernel's
    /// LRU lists evict before the map is quite full (entries wait in per-CPU free lists).
    pub fn lru_full(&self) -> bool {
        self.kind.contains("lru") && self.entries * 100 >= self.max_entries * LRU_FULL_PERCENT
    }
}

impl std::fmt::Display for MapFill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.entries > self.max_entries {
            "OVER its bound"
        } else if self.lru_full() {
            "full (an LRU map evicts from here on)"
        } else {
            "within bound"
        };
        write!(f, "{} ({}): {}/{} entries, {verdict}", self.name, self.kind, self.entries, self.max_entries)
    }
}

/// Entries against max_entries of each hash-like map the daemon holds.
pub fn map_fill(pid: u32) -> Result<Vec<MapFill>> {
    Ok(hash_maps(pid)?
        .into_iter()
        .map(|map| MapFill {
            entries: map.dump.as_array().map_or(0, Vec::len) as u64,
            name: map.name,
            kind: map.kind,
            max_entries: map.max_entries,
        })
        .collect())
}

/// A hash-like map the daemon holds, as bpftool shows and dumps it.
struct HashMapDump {
    name: String,
    kind: String,
    max_entries: u64,
    dump: Value,
}

/// The daemon's maps are found through its fds (`map_id:` in /proc/PID/fdinfo): this
/// bpftool lists no owning pids in `map show`.
fn hash_maps(pid: u32) -> Result<Vec<HashMapDump>> {
    let ids = daemon::bpf_ids_of(pid, "map_id:")?;
    if ids.is_empty() {
        bail!("the daemon (pid {pid}) holds no BPF map fd");
    }
    let mut maps = Vec::new();
    for id in ids {
        let id = id.to_string();
        let map: Value = serde_json::from_str(&stdout_of(
            Command::new("bpftool").args(["map", "show", "id", &id, "-j"]),
        )?)?;
        let kind = map["type"].as_str().unwrap_or("");
        if !kind.contains("hash") {
            continue;
        }
        let dump: Value = serde_json::from_str(&stdout_of(
            Command::new("bpftool").args(["map", "dump", "id", &id, "-j"]),
        )?)?;
        maps.push(HashMapDump {
            name: map["name"].as_str().unwrap_or("?").to_owned(),
            kind: kind.to_owned(),
            max_entries: map["max_entries"].as_u64().unwrap_or(0),
            dump,
        });
    }
    Ok(maps)
}

/// One map of the daemon after the soak.
struct MapCheck {
    line: String,
    problem: Option<String>,
}

/// A map at this share of max_entries is full for an LRU map: the kernel's LRU lists
/// evict before the very last entry, and from here on they evict live entries.
const NEAR_BOUND: f64 = 0.9;

/// Every hash-like map the daemon holds: entries against max_entries, and entries keyed
/// by (pid, fd) (`pid << 32 | fd`, the kernel programs' `fd_key`) of the flood processes,
/// which have all exited by now: such an entry is never removed (its close was missed)
/// and takes the place of a live one.
fn map_checks(pid: u32, exited: &BTreeSet<u32>) -> Result<Vec<MapCheck>> {
    Ok(hash_maps(pid)?
        .iter()
        .map(|map| check_map(&map.name, &map.kind, map.max_entries, &map.dump, exited))
        .collect())
}

fn check_map(name: &str, kind: &str, max: u64, dump: &Value, exited: &BTreeSet<u32>) -> MapCheck {
    let entries = dump.as_array().map_or(&[][..], Vec::as_slice);
    let stale = entries
        .iter()
        .filter_map(|entry| key_u64(&entry["key"]))
        .filter(|key| exited.contains(&((key >> 32) as u32)))
        .count();
    let count = entries.len() as u64;
    let mut problems = Vec::new();
    if max > 0 && count as f64 >= max as f64 * NEAR_BOUND {
        problems
            .push(format!("{name} holds {count} of {max} entries: near its bound, it evicts live entries"));
    }
    if stale > 0 {
        problems.push(format!("{name} keeps {stale} entries of flood processes that exited"));
    }
    MapCheck {
        line: format!("{name} ({kind}): {count}/{max} entries, {stale} of exited flood processes"),
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

/// An 8-byte key as bpftool prints it: hex bytes (maps without BTF, little-endian) or a
/// number (with BTF).
fn key_u64(key: &Value) -> Option<u64> {
    if let Some(number) = key.as_u64() {
        return Some(number);
    }
    let bytes: Vec<u8> = key
        .as_array()?
        .iter()
        .map(|byte| u8::from_str_radix(byte.as_str()?.trim_start_matches("0x"), 16).ok())
        .collect::<Option<_>>()?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn hex_key(value: u64) -> Value {
        json!(value.to_le_bytes().iter().map(|b| format!("0x{b:02x}")).collect::<Vec<_>>())
    }

    /// Issue 12, "a check that cannot fail": the old check compared entries with
    /// max_entries, which a kernel map never exceeds. These fail: a leaked (pid, fd)
    /// entry of an exited process, and a map full enough to evict.
    #[test]
    fn a_check_that_cannot_fail_now_fails_on_leaked_entries_and_a_full_map() {
        let exited = BTreeSet::from([4242]);
        let leaked = json!([{ "key": hex_key((4242u64 << 32) | 7), "value": [] }, { "key": hex_key((17u64 << 32) | 3), "value": [] }]);
        let check = check_map("TRACKED", "lru_hash", 65536, &leaked, &exited);
        assert!(
            check.problem.as_deref().is_some_and(|p| p.contains("1 entries of flood processes")),
            "{}",
            check.line
        );
        let full: Vec<Value> =
            (0..92u64).map(|fd| json!({ "key": hex_key((17u64 << 32) | fd), "value": [] })).collect();
        let check = check_map("FD_SOCKS", "lru_hash", 100, &json!(full), &exited);
        assert!(check.problem.as_deref().is_some_and(|p| p.contains("near its bound")), "{}", check.line);
        let fine =
            check_map("TRACKED", "lru_hash", 65536, &json!([{ "key": 17u64 << 32, "value": 0 }]), &exited);
        assert_eq!(fine.problem, None, "{}", fine.line);
        assert_eq!(key_u64(&json!(["0x01", "0", "0", "0", "0x02", "0", "0", "0"])), Some((2 << 32) | 1));
    }
}
