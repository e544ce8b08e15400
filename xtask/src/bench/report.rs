//! BENCHMARKS.md from one run.

use std::fmt::Write;

use super::{
    EXCLUDED_LOOP, LOOPS, Plan, Samples,
    machine::Machine,
    stats::{Summary, Target, added_cost_ratio},
    throughput::{Startup, Throughput},
    tracers::Config,
};

/// The table's columns: every configuration but the excluded-process ones, which fill
/// the cells of the excluded row instead (see `cell_source`).
fn columns() -> impl Iterator<Item = Config> {
    Config::ALL.into_iter().filter(|config| !config.excluded())
}

/// The configuration whose samples fill `column` of `row` (the excluded row takes the
/// excluded configurations' and the untraced refused connect).
fn cell_source(row: &str, column: Config) -> Option<(Config, &str)> {
    if row != EXCLUDED_LOOP {
        return Some((column, row));
    }
    match column {
        Config::Untraced => Some((Config::Untraced, "refused-connect")),
        Config::Floor => Some((Config::FloorExcluded, EXCLUDED_LOOP)),
        Config::TraceDevNull => Some((Config::TraceExcluded, EXCLUDED_LOOP)),
        _ => None,
    }
}

fn median(samples: &Samples, row: &str, column: Config) -> Option<Summary> {
    let (config, loop_name) = cell_source(row, column)?;
    Summary::of(&samples.all(config, loop_name))
}

pub fn targets(samples: &Samples) -> Vec<Target> {
    let ratio = |row: &str, reference: Config| {
        let untraced = median(samples, row, Config::Untraced)?.median;
        let traced = median(samples, row, Config::TraceDevNull)?.median;
        added_cost_ratio(traced, median(samples, row, reference)?.median, untraced)
    };
    let mut targets = Vec::new();
    for row in ["so-mark", "so-keepalive", "refused-connect", "addr-not-avail"] {
        targets.push(Target {
            what: format!("{row}: sockerr's added cost ≤ 1.5 × the floor's"),
            limit: 1.5,
            measured: ratio(row, Config::Floor),
        });
    }
    for row in LOOPS {
        targets.push(Target {
            what: format!("{row}: sockerr's added cost ≤ 0.5 × bpftrace's"),
            limit: 0.5,
            measured: ratio(row, Config::Bpftrace),
        });
    }
    targets.push(Target {
        what: "excluded process (--comm other): sockerr's added cost ≤ 1.1 × the floor's".into(),
        limit: 1.1,
        measured: ratio(EXCLUDED_LOOP, Config::Floor),
    });
    targets
}

pub fn render(
    machine: &Machine,
    plan: &Plan,
    quick: bool,
    samples: &Samples,
    startup: &Startup,
    throughput: &Throughput,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# sockerr benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `cargo xtask bench{}` on {}. Raw samples: `target/bench/results.json`.\n",
        if quick { " --quick" } else { "" },
        machine.date
    );
    let _ = writeln!(md, "## Machine\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| CPU | {} ({} cores) |", machine.cpu, machine.cores);
    let _ = writeln!(md, "| kernel | {} |", machine.kernel);
    let _ = writeln!(md, "| rustc | {} |", machine.rustc);
    let _ = writeln!(md, "| bpftrace | {} |", machine.bpftrace);
    let _ = writeln!(md, "| strace | {} |", machine.strace);
    let _ = writeln!(md, "| date | {} |\n", machine.date);

    let _ = writeln!(md, "## Micro-loops: ns per iteration\n");
    let _ = writeln!(
        md,
        "Median of {} rounds × {} batches of ~{} ms each (± half the interquartile range, in % of the \
         median). Configurations run round-robin, rotated each round; the loop process is pinned to the \
         last CPU, inside its own network namespace, on loopback. An iteration is: refused-connect = \
         socket + blocking connect to a closed port (ECONNREFUSED) + close; addr-not-avail = socket + \
         SO_REUSEADDR + bind to a live connection's tuple + connect to its peer (EADDRNOTAVAIL) + close; \
         bind = socket + bind to a listener's port (EADDRINUSE) + close; so-mark / so-keepalive = one \
         setsockopt on a held socket; excluded-connect = refused-connect with the tracer started with \
         `--comm nobody-matches`. sockerr runs `trace --backend tracepoint --output json`; the floor is \
         `sockerr bench-floor` (the tracepoints `trace` attaches, each with a program that returns 0).\n",
        plan.rounds, plan.batches, plan.batch_ms
    );
    let header: Vec<&str> = columns().map(|c| c.name()).collect();
    let _ = writeln!(md, "| loop | {} | sockerr vs floor | sockerr vs bpftrace |", header.join(" | "));
    let _ = writeln!(md, "|---|{}---|---|", "---:|".repeat(header.len()));
    for row in LOOPS.iter().copied().chain([EXCLUDED_LOOP]) {
        let cells: Vec<String> = columns()
            .map(|column| match median(samples, row, column) {
                Some(s) => format!("{:.0} ±{:.0}%", s.median, s.spread_percent()),
                None => "—".into(),
            })
            .collect();
        let untraced = median(samples, row, Config::Untraced).map(|s| s.median);
        let traced = median(samples, row, Config::TraceDevNull).map(|s| s.median);
        let ratio = |reference: Config| match (untraced, traced, median(samples, row, reference)) {
            (Some(u), Some(t), Some(r)) => match added_cost_ratio(t, r.median, u) {
                Some(ratio) => format!("{ratio:.2}×"),
                None => "n/a".into(),
            },
            _ => "—".into(),
        };
        let _ = writeln!(
            md,
            "| {row} | {} | {} | {} |",
            cells.join(" | "),
            ratio(Config::Floor),
            ratio(Config::Bpftrace)
        );
    }
    let _ = writeln!(
        md,
        "\nRatios are (traced − untraced) / (reference − untraced), with sockerr's output to /dev/null; \
         n/a where the reference adds less than 0.5 % (a ratio over noise means nothing).\n"
    );
    if !samples.lost.is_empty() {
        let lost: Vec<String> = samples.lost.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        let _ = writeln!(md, "Events sockerr lost in the kernel during the loops: {}.\n", lost.join(", "));
    }

    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(md, "| target | measured | verdict |\n|---|---:|---|");
    for target in targets(samples) {
        let measured = target.measured.map_or("—".into(), |m| format!("{m:.2}×"));
        let _ = writeln!(md, "| {} | {} | {} |", target.what, measured, target.verdict());
    }

    let _ =
        writeln!(md, "\n## Throughput (`sockerr daemon`, 2 threads of Cilium-pattern failing connects)\n");
    let _ = writeln!(
        md,
        "| asked /s | done /s | failures | counted in /metrics | missing failures | kernel events lost | drain after the flood | daemon CPU | daemon RSS |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &throughput.steps {
        let asked = if s.target_rate == 0 { "unpaced".to_owned() } else { s.target_rate.to_string() };
        let _ = writeln!(
            md,
            "| {asked} | {:.0} | {} | {} | {} | {} | {:.1} s | {:.0} % | {:.1} MiB |",
            s.achieved_rate,
            s.failures,
            s.counted,
            s.missing(),
            s.lost,
            s.drain_secs,
            s.daemon_cpu_percent,
            s.daemon_rss_kib as f64 / 1024.0
        );
    }
    let _ = writeln!(
        md,
        "\nCPU is the daemon's user + system time over the flood and its drain, in % of one CPU; \
         counted = `sockerr_connect_errors_total{{comm=\"sockerr-bench\"}}`, missing = failures the \
         flood made minus counted, kernel events lost = `sockerr_events_lost_total` (events, several \
         per failure: never added to failures). Without loss = every failure counted and no event \
         lost. A drain above a fraction of a second means the daemon fell \
         behind and caught up from the ring buffer and its own queue (RSS grows with that backlog)."
    );
    match throughput.loss_free() {
        Some(best) => {
            let _ = writeln!(md, "\nHighest rate without loss: **{:.0} failures/s**.", best.achieved_rate);
        }
        None => {
            let _ = writeln!(md, "\nEvery rate lost events or missed failures.");
        }
    }
    if let Some(at) = throughput.at_10k() {
        let _ = writeln!(
            md,
            "At 10k failures/s the daemon used **{:.0} % of one CPU** and **{:.1} MiB RSS**.",
            at.daemon_cpu_percent,
            at.daemon_rss_kib as f64 / 1024.0
        );
    }
    let _ = writeln!(md, "\n## Start-up and size\n");
    let _ = writeln!(
        md,
        "Exec of `sockerr trace` to `tracing started` (programs attached): median **{:.0} ms** of {} tries \
         ({}). `target/release/sockerr`: **{:.1} MiB**.",
        startup.median_ms(),
        startup.millis.len(),
        startup.millis.iter().map(|m| format!("{m:.0}")).collect::<Vec<_>>().join(", "),
        startup.binary_bytes as f64 / (1024.0 * 1024.0)
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_the_configurations_that_run_every_loop() {
        let names: Vec<&str> = columns().map(Config::name).collect();
        assert_eq!(names, ["untraced", "floor", "sockerr>/dev/null", "sockerr>file", "bpftrace", "strace"]);
    }

    fn samples(cells: &[(Config, &str, f64)]) -> Samples {
        let mut samples = Samples::default();
        for &(config, loop_name, value) in cells {
            samples.by_cell.insert((config.name().into(), loop_name.into()), vec![vec![value]]);
        }
        samples
    }

    #[test]
    fn targets_compare_added_costs() {
        let samples = samples(&[
            (Config::Untraced, "so-mark", 400.0),
            (Config::Floor, "so-mark", 500.0),
            (Config::TraceDevNull, "so-mark", 540.0),
            (Config::Bpftrace, "so-mark", 1400.0),
            (Config::Untraced, "refused-connect", 10_000.0),
            (Config::FloorExcluded, EXCLUDED_LOOP, 10_200.0),
            (Config::TraceExcluded, EXCLUDED_LOOP, 10_300.0),
        ]);
        let targets = targets(&samples);
        let find = |prefix: &str| targets.iter().find(|t| t.what.starts_with(prefix)).unwrap();
        assert_eq!(find("so-mark: sockerr's added cost ≤ 1.5").measured, Some(1.4));
        assert_eq!(find("so-mark: sockerr's added cost ≤ 1.5").verdict(), "met");
        assert_eq!(find("so-mark: sockerr's added cost ≤ 0.5").measured, Some(0.14));
        let excluded = find("excluded");
        assert_eq!(excluded.measured, Some(1.5));
        assert_eq!(excluded.verdict(), "not met");
        assert_eq!(find("bind: sockerr's added cost ≤ 0.5").measured, None);
    }
}
