//! What a traced configuration recorded of one process: sockerr's NDJSON, bpftrace's
//! lines and strace's, counted by error name. A configuration that recorded none of a
//! failing loop's failures traced nothing, and its figure would be no measurement: the
//! checks below make that an error of the bench. Pure: unit-tested below.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

use super::results::Slot;

/// The failure each failing loop makes on every iteration: (loop, error name).
pub const LOOP_FAILURES: &[(&str, &str)] =
    &[("refused-connect", "ECONNREFUSED"), ("addr-not-avail", "EADDRNOTAVAIL"), ("bind", "EADDRINUSE")];

/// The error a loop fails with on every iteration, if it fails.
pub fn failure_of(loop_name: &str) -> Option<&'static str> {
    LOOP_FAILURES.iter().find(|(name, _)| *name == loop_name).map(|(_, error)| *error)
}

/// Errno values of the errors above (x86-64 and arm64 share them): bpftrace prints numbers.
fn error_name(errno: i64) -> Option<&'static str> {
    match errno {
        111 => Some("ECONNREFUSED"),
        99 => Some("EADDRNOTAVAIL"),
        98 => Some("EADDRINUSE"),
        _ => None,
    }
}

/// sockerr's NDJSON: connect and bind failures of `pid`, by error name. Matched as text
/// (sockerr's writer prints `"pid":N,` and `"error":"NAME"` without spaces): a loop makes
/// hundreds of thousands of records and xtask is a debug build.
pub fn sockerr_failures(ndjson: &str, pid: u32) -> BTreeMap<String, u64> {
    let marker = format!("\"pid\":{pid},");
    let mut counts = BTreeMap::new();
    for line in ndjson.lines().filter(|line| line.contains(&marker)) {
        if !(line.contains("\"event\":\"connect_error\"") || line.contains("\"event\":\"bind_error\"")) {
            continue;
        }
        if let Some(error) = quoted_after(line, "\"error\":\"") {
            *counts.entry(error.to_owned()).or_default() += 1;
        }
    }
    counts
}

fn quoted_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    Some(&rest[..rest.find('"')?])
}

/// bpftrace's lines (`bench_script`): `connect PID COMM ... errno=N ...`.
pub fn bpftrace_failures(output: &str, pid: u32) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in output.lines() {
        let mut words = line.split_whitespace();
        let (Some("connect" | "bind"), Some(line_pid)) = (words.next(), words.next()) else { continue };
        if line_pid.parse() != Ok(pid) {
            continue;
        }
        let errno = words.find_map(|word| word.strip_prefix("errno=")).and_then(|n| n.parse().ok());
        if let Some(name) = errno.and_then(error_name) {
            *counts.entry(name.to_owned()).or_default() += 1;
        }
    }
    counts
}

/// `strace -o FILE` lines: `connect(3, {...}, 16) = -1 ECONNREFUSED (Connection refused)`.
/// strace follows only the loop process, so every line is its own.
pub fn strace_failures(output: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in output.lines() {
        let call = line.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
        if !(call.starts_with("connect(") || call.starts_with("bind(")) {
            continue;
        }
        if let Some((_, result)) = line.rsplit_once(" = -1 ")
            && let Some(name) = result.split_whitespace().next()
        {
            *counts.entry(name.to_owned()).or_default() += 1;
        }
    }
    counts
}

/// `Lost N events` lines of bpftrace (its perf buffer was full): their sum.
pub fn bpftrace_lost(output: &str) -> u64 {
    output
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Lost ")?.strip_suffix(" events")?.parse::<u64>().ok())
        .sum()
}

/// `N lost in the kernel` from sockerr's `stopped:` line; None if the line is missing or
/// says it otherwise (then the report says "unknown", never 0).
pub fn stopped_lost(lines: &[String]) -> Option<u64> {
    lines.iter().rev().find_map(|line| {
        let (_, rest) = line.split_once("stopped:")?;
        let before = rest.split(" lost in the kernel").next()?;
        if before.len() == rest.len() {
            return None;
        }
        before.rsplit(", ").next()?.trim().parse().ok()
    })
}

/// The checks of one slot: every failing loop left records (unless the configuration
/// excludes the loop process, which must then have none, and its canary some).
pub fn check(slot: &Slot) -> Result<()> {
    let name = || format!("`{}` (round {}, output {})", slot.config, slot.round + 1, slot.output);
    if let Some(records) = slot.excluded_records {
        if records > 0 {
            bail!(
                "{}: {records} records of the loop process (pid {}), which its filter excludes",
                name(),
                slot.loop_pid
            );
        }
        match slot.canary_records {
            Some(0) | None => bail!(
                "{}: no record of the canary process its filter selects: this configuration traced nothing, \
                 its figures would measure a tracer that was not working",
                name()
            ),
            Some(_) => {}
        }
        return Ok(());
    }
    for (loop_name, recorded) in &slot.failures {
        if recorded.records == 0 {
            bail!(
                "{}: no record of the {} failures of loop {loop_name} (pid {}, {} iterations): this \
                 configuration traced nothing, its figure would not be a measurement",
                name(),
                failure_of(loop_name).unwrap_or("?"),
                slot.loop_pid,
                recorded.iterations
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::Recorded;

    #[test]
    fn sockerr_failures_of_one_process_by_error() {
        let ndjson = "\
{\"event\":\"connect_error\",\"pid\":42,\"errno\":111,\"error\":\"ECONNREFUSED\"}
{\"event\":\"connect_error\",\"pid\":42,\"errno\":111,\"error\":\"ECONNREFUSED\"}
{\"event\":\"bind_error\",\"pid\":42,\"errno\":98,\"error\":\"EADDRINUSE\"}
{\"event\":\"sockopt\",\"pid\":42,\"errno\":null}
{\"event\":\"connect_error\",\"pid\":421,\"errno\":111,\"error\":\"ECONNREFUSED\"}
";
        let counts = sockerr_failures(ndjson, 42);
        assert_eq!(counts.get("ECONNREFUSED"), Some(&2));
        assert_eq!(counts.get("EADDRINUSE"), Some(&1));
        assert_eq!(counts.len(), 2);
        assert!(sockerr_failures(ndjson, 7).is_empty());
    }

    #[test]
    fn bpftrace_and_strace_lines() {
        let bpftrace = "bench: attached\nconnect 42 sockerr-bench fd=3 errno=111 dst=7f000001\n\
            bind 42 sockerr-bench fd=3 errno=98 addr=x\nconnect 43 other fd=3 errno=111 dst=x\n\
            connect 42 sockerr-bench fd=3 errno=4 dst=x\nLost 12 events\n  Lost 3 events\n";
        let counts = bpftrace_failures(bpftrace, 42);
        assert_eq!(counts.get("ECONNREFUSED"), Some(&1));
        assert_eq!(counts.get("EADDRINUSE"), Some(&1));
        assert_eq!(counts.len(), 2, "EINTR is none of the loops' errors");
        assert_eq!(bpftrace_lost(bpftrace), 15);
        let strace = "connect(3, {sa_family=AF_INET, sin_port=htons(9)}, 16) = -1 ECONNREFUSED (Connection refused)\n\
            bind(3, {sa_family=AF_INET}, 16) = -1 EADDRINUSE (Address already in use)\n\
            setsockopt(3, SOL_SOCKET, SO_MARK, [1], 4) = 0\n\
            4242  connect(3, {...}, 16) = -1 EADDRNOTAVAIL (Cannot assign requested address)\n";
        let counts = strace_failures(strace);
        assert_eq!(counts.get("ECONNREFUSED"), Some(&1));
        assert_eq!(counts.get("EADDRINUSE"), Some(&1));
        assert_eq!(counts.get("EADDRNOTAVAIL"), Some(&1));
    }

    #[test]
    fn lost_comes_from_the_stopped_line_or_is_unknown() {
        let lines =
            |line: &str| vec!["INFO tracing started: 19 programs attached".to_owned(), line.to_owned()];
        let stopped = "INFO stopped: 10 events, 4 failures, 3 lost in the kernel, 0 undecodable";
        assert_eq!(stopped_lost(&lines(stopped)), Some(3));
        assert_eq!(stopped_lost(&lines("INFO stopped: 10 events, 4 failures")), None);
        assert_eq!(stopped_lost(&lines("INFO SIGINT: stopping")), None);
    }

    #[test]
    fn a_configuration_that_traced_nothing_fails_the_bench() {
        let mut slot =
            Slot { config: "daemon".into(), output: "x.ndjson".into(), loop_pid: 42, ..Slot::default() };
        slot.failures.insert("bind".into(), Recorded { records: 10, iterations: 10 });
        check(&slot).unwrap();
        slot.failures.insert("refused-connect".into(), Recorded { records: 0, iterations: 10 });
        let err = check(&slot).unwrap_err().to_string();
        assert!(err.contains("traced nothing") && err.contains("refused-connect"), "{err}");

        let mut excluded = Slot { config: "trace --comm other".into(), ..Slot::default() };
        excluded.excluded_records = Some(0);
        excluded.canary_records = Some(3);
        check(&excluded).unwrap();
        excluded.canary_records = Some(0);
        assert!(check(&excluded).unwrap_err().to_string().contains("canary"));
        excluded.canary_records = Some(3);
        excluded.excluded_records = Some(1);
        assert!(check(&excluded).unwrap_err().to_string().contains("excludes"));
    }
}
