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
use serde_json::Value;

use super::{daemon, throughput};
use crate::process::stdout_of;

const CHUNKS: u64 = 10;
/// Failures per second of the soak's 2 threads.
const SOAK_RATE: u64 = 20_000;

pub fn run(sockerr: &Path, scratch: &Path, total: u64) -> Result<()> {
    let started = Instant::now();
    let ndjson = scratch.join("soak.ndjson");
    let mut daemon = daemon::start(sockerr, &ndjson)?;
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
    let maps = map_fill(pid)?;
    daemon.running.stop();
    let counted = throughput::counted(&metrics) as u64;
    let lost = throughput::lost(&metrics) as u64;
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
    if counted + lost < failures || counted > failures {
        problems.push(format!("/metrics counted {counted} (+{lost} lost) of {failures} failures"));
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
    if maps.iter().any(|m| m.contains("OVER")) {
        problems.push("a map is over its bound".into());
    }
    if !problems.is_empty() {
        bail!("soak failed: {}", problems.join("; "));
    }
    println!("soak: passed");
    Ok(())
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

/// Entries against max_entries of each hash-like map the daemon holds. The maps are found
/// through the daemon's fds (`map_id:` in /proc/PID/fdinfo): this bpftool lists no owning
/// pids in `map show`.
fn map_fill(pid: u32) -> Result<Vec<String>> {
    let ids = daemon::bpf_ids_of(pid, "map_id:")?;
    if ids.is_empty() {
        bail!("the daemon (pid {pid}) holds no BPF map fd");
    }
    let mut lines = Vec::new();
    for id in ids {
        let id = id.to_string();
        let map: Value = serde_json::from_str(&stdout_of(
            Command::new("bpftool").args(["map", "show", "id", &id, "-j"]),
        )?)?;
        let kind = map["type"].as_str().unwrap_or("");
        if !kind.contains("hash") {
            continue;
        }
        let max = map["max_entries"].as_u64().unwrap_or(0);
        let dump: Value = serde_json::from_str(&stdout_of(
            Command::new("bpftool").args(["map", "dump", "id", &id, "-j"]),
        )?)?;
        let entries = dump.as_array().map_or(0, Vec::len) as u64;
        let name = map["name"].as_str().unwrap_or("?");
        let verdict = if entries > max { "OVER its bound" } else { "within bound" };
        lines.push(format!("{name} ({kind}): {entries}/{max} entries, {verdict}"));
    }
    Ok(lines)
}
