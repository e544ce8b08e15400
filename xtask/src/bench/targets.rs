//! The targets of issue 11, computed from the results: each with what was measured and
//! met or not, or why it could not be measured (never a default). Pure: unit-tested below.

use super::{
    FAILING_LOOPS, LOOPS, SUCCESS_LOOP,
    results::{Comparison, MicroLoops, Results, Target, Unit},
    stats::{Estimate, Summary},
    tracers::Config,
};

/// Minimum rate of the throughput step that stands for "40k failures/s".
const RATE_TARGET: f64 = 40_000.0;
/// A step counts as that rate if the flood reached this share of it.
const RATE_TOLERANCE: f64 = 0.95;
const RSS_LIMIT_MIB: f64 = 40.0;
const BUSY_CONNECTIONS: f64 = 200_000.0;

fn summary(loops: &MicroLoops, config: Config, loop_name: &str) -> Result<Summary, String> {
    Summary::of(&loops.all(config.name(), loop_name))
        .ok_or_else(|| format!("no samples of {loop_name} under {}", config.name()))
}

/// (traced − untraced) / (reference − untraced) of one loop, with its range.
fn ratio(loops: &MicroLoops, loop_name: &str, traced: Config, reference: Config) -> Result<Estimate, String> {
    let untraced = summary(loops, Config::Untraced, loop_name)?;
    Estimate::added_cost_ratio(
        &summary(loops, traced, loop_name)?,
        &summary(loops, reference, loop_name)?,
        &untraced,
    )
    .map_err(|why| format!("{} {why}", reference.name()))
}

pub fn evaluate(results: &Results) -> Vec<Target> {
    let mut targets = Vec::new();
    let not_run = |part: &str| Err::<f64, String>(format!("{part} not run"));
    match &results.micro_loops {
        Some(loops) => micro_loop_targets(loops, &mut targets),
        None => targets.push(Target::new(
            "micro-loops".into(),
            Comparison::AtMost,
            0.0,
            Unit::Times,
            not_run("the micro-loops (`cargo xtask bench`)"),
        )),
    }

    let at_rate = match &results.throughput {
        None => not_run("the throughput search"),
        Some(throughput) => {
            match throughput
                .steps
                .iter()
                .filter(|s| s.target_rate as f64 >= RATE_TARGET)
                .find(|s| s.achieved_rate >= RATE_TARGET * RATE_TOLERANCE)
            {
                Some(step) => Ok(step.lost as f64),
                None => Err(format!(
                    "the flood never reached {:.0} failures/s (fastest: {:.0}/s)",
                    RATE_TARGET * RATE_TOLERANCE,
                    throughput.steps.iter().map(|s| s.achieved_rate).fold(0.0, f64::max)
                )),
            }
        }
    };
    targets.push(Target::new(
        "events lost at 40k failures/s (`sockerr daemon --comm`, 2 threads)".into(),
        Comparison::AtMost,
        0.0,
        Unit::Count,
        at_rate,
    ));

    let rss: Vec<f64> = results
        .throughput
        .iter()
        .flat_map(|t| t.steps.iter().map(|s| s.daemon_rss_kib))
        .chain(results.busy_node.iter().map(|b| b.daemon_rss_kib))
        .map(|kib| kib as f64 / 1024.0)
        .collect();
    targets.push(Target::new(
        "daemon RSS, highest of the throughput steps and the busy node".into(),
        Comparison::Below,
        RSS_LIMIT_MIB,
        Unit::MiB,
        if rss.is_empty() {
            Err("neither the throughput search nor the busy node ran".into())
        } else {
            Ok(rss.iter().copied().fold(0.0, f64::max))
        },
    ));

    let busy = results.busy_node.as_ref();
    let busy_value =
        |f: &dyn Fn(&super::busy::BusyNode) -> Result<f64, String>| match (busy, &results.busy_node_error) {
            (Some(busy), _) => f(busy),
            (None, Some(err)) => Err(format!("the busy-node run failed: {err}")),
            (None, None) => not_run("the busy-node run"),
        };
    targets.push(Target::new(
        "busy node: established connections held".into(),
        Comparison::AtLeast,
        BUSY_CONNECTIONS,
        Unit::Count,
        busy_value(&|b| Ok(b.connections as f64)),
    ));
    targets.push(Target::new(
        "busy node: events lost (set-up and failures)".into(),
        Comparison::AtMost,
        0.0,
        Unit::Count,
        busy_value(&|b| Ok((b.lost_during_setup + b.lost_during_failures) as f64)),
    ));
    targets.push(Target::new(
        "busy node: evictions".into(),
        Comparison::AtMost,
        0.0,
        Unit::Count,
        busy_value(&|b| {
            b.evictions.map(|n| n as f64).ok_or_else(|| {
                let full: Vec<String> = b.maps.iter().filter(|m| m.lru_full()).map(|m| m.name.clone()).collect();
                format!(
                    "this sockerr exports no eviction count (no `reason` label on sockerr_events_lost_total); \
                     LRU maps at 95 % or more of their bound during the run: {}; such a map evicts",
                    if full.is_empty() { "none".to_owned() } else { full.join(", ") }
                )
            })
        }),
    ));
    targets.push(Target::new(
        "busy node: failures without their holder and options (missing records included)".into(),
        Comparison::AtMost,
        0.0,
        Unit::Count,
        busy_value(&|b| Ok(b.not_whole() as f64)),
    ));
    targets
}

fn micro_loop_targets(loops: &MicroLoops, targets: &mut Vec<Target>) {
    let success = summary(loops, Config::Daemon, SUCCESS_LOOP).and_then(|daemon| {
        Ok(Estimate::added_percent(&daemon, &summary(loops, Config::Untraced, SUCCESS_LOOP)?))
    });
    targets.push(Target::estimated(
        format!("{SUCCESS_LOOP}: `sockerr daemon`'s added cost, in % of the untraced cycle"),
        Comparison::AtMost,
        10.0,
        Unit::Percent,
        success,
    ));
    for &loop_name in LOOPS {
        targets.push(Target::estimated(
            format!("{loop_name}: excluded process (`trace --comm other`), added cost × the floor's"),
            Comparison::AtMost,
            1.1,
            Unit::Times,
            ratio(loops, loop_name, Config::TraceExcluded, Config::FloorExcluded),
        ));
    }
    for &loop_name in FAILING_LOOPS {
        targets.push(Target::estimated(
            format!("{loop_name}: `sockerr daemon`'s added cost × the floor's"),
            Comparison::AtMost,
            2.0,
            Unit::Times,
            ratio(loops, loop_name, Config::Daemon, Config::Floor),
        ));
    }
    for &loop_name in FAILING_LOOPS {
        targets.push(Target::estimated(
            format!("{loop_name}: `sockerr daemon`'s added cost × bpftrace's"),
            Comparison::AtMost,
            0.5,
            Unit::Times,
            ratio(loops, loop_name, Config::Daemon, Config::Bpftrace),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{
        busy::BusyNode,
        soak::MapFill,
        throughput::{Step, Throughput},
    };

    fn loops(cells: &[(Config, &str, f64)]) -> MicroLoops {
        let mut loops = MicroLoops::default();
        for &(config, loop_name, value) in cells {
            loops.push(config.name(), loop_name, vec![value]);
        }
        loops
    }

    fn find<'a>(targets: &'a [Target], prefix: &str) -> &'a Target {
        targets.iter().find(|t| t.what.starts_with(prefix)).unwrap_or_else(|| panic!("no target {prefix}"))
    }

    #[test]
    fn micro_loop_targets_compare_added_costs() {
        let loops = loops(&[
            (Config::Untraced, "success-cycle", 40_000.0),
            (Config::Daemon, "success-cycle", 43_000.0),
            (Config::Untraced, "so-mark", 400.0),
            (Config::Floor, "so-mark", 500.0),
            (Config::Daemon, "so-mark", 700.0),
            (Config::Bpftrace, "so-mark", 1400.0),
            (Config::FloorExcluded, "so-mark", 500.0),
            (Config::TraceExcluded, "so-mark", 505.0),
            (Config::Untraced, "bind", 1000.0),
            (Config::Floor, "bind", 1001.0),
            (Config::Daemon, "bind", 1500.0),
        ]);
        let results = Results { micro_loops: Some(loops), ..Results::default() };
        let targets = evaluate(&results);
        let success = find(&targets, "success-cycle: `sockerr daemon`");
        assert!((success.measured.unwrap() - 7.5).abs() < 1e-9);
        assert_eq!(success.met, Some(true));
        let floor = find(&targets, "so-mark: `sockerr daemon`'s added cost × the floor's");
        assert_eq!((floor.measured, floor.met), (Some(3.0), Some(false)));
        assert_eq!(floor.verdict(), "**not met**");
        let bpftrace = find(&targets, "so-mark: `sockerr daemon`'s added cost × bpftrace's");
        assert_eq!((bpftrace.measured, bpftrace.met), (Some(0.3), Some(true)));
        let excluded = find(&targets, "so-mark: excluded");
        assert_eq!((excluded.measured, excluded.met), (Some(1.05), Some(true)));
        let noise = find(&targets, "bind: `sockerr daemon`'s added cost × the floor's");
        assert_eq!(noise.met, None);
        assert!(noise.verdict().contains("noise"), "{}", noise.verdict());
        let missing = find(&targets, "refused-connect: excluded");
        assert!(missing.verdict().contains("no samples"), "{}", missing.verdict());
        assert!(find(&targets, "busy node: evictions").verdict().contains("not run"));
    }

    #[test]
    fn a_target_is_decided_only_when_its_whole_range_is() {
        let mut loops = MicroLoops::default();
        // Three samples: the quartiles are halfway to the outer ones, so the half
        // interquartile range is half of `spread`.
        let mut push = |config: Config, loop_name: &str, median: f64, spread: f64| {
            loops.push(config.name(), loop_name, vec![median - spread, median, median + spread]);
        };
        push(Config::Untraced, "so-mark", 400.0, 20.0);
        push(Config::Floor, "so-mark", 600.0, 20.0);
        // Added 150 ± 20 over the floor's 200 ± 20: 0.75×, anywhere from 130/220 to 170/180.
        push(Config::Daemon, "so-mark", 550.0, 20.0);
        // Added 210 ± 110 over 200 ± 20: 1.05×, but anywhere from 0.45× to 1.78×.
        push(Config::FloorExcluded, "so-mark", 600.0, 20.0);
        push(Config::TraceExcluded, "so-mark", 610.0, 200.0);
        // The floor's 40 ns are inside the ±60 ns of its two medians' spreads.
        push(Config::Untraced, "bind", 1000.0, 60.0);
        push(Config::Floor, "bind", 1040.0, 60.0);
        push(Config::Daemon, "bind", 1500.0, 60.0);
        let targets = evaluate(&Results { micro_loops: Some(loops), ..Results::default() });

        let decided = find(&targets, "so-mark: `sockerr daemon`'s added cost × the floor's");
        assert_eq!((decided.measured, decided.met), (Some(0.75), Some(true)));
        let (low, high) = decided.range.unwrap();
        assert!((low - 130.0 / 220.0).abs() < 1e-9 && (high - 170.0 / 180.0).abs() < 1e-9);

        let noisy = find(&targets, "so-mark: excluded");
        assert_eq!(noisy.met, None, "1.05× is under the 1.1× limit, but its range is not");
        assert!(noisy.verdict().starts_with("within noise"), "{}", noisy.verdict());

        let unmeasured = find(&targets, "bind: `sockerr daemon`'s added cost × the floor's");
        assert_eq!((unmeasured.measured, unmeasured.met), (None, None));
        assert!(unmeasured.verdict().contains("within the ±60 ns"), "{}", unmeasured.verdict());
    }

    fn step(target_rate: u64, achieved_rate: f64, lost: u64, rss_kib: u64) -> Step {
        Step {
            target_rate,
            achieved_rate,
            failures: 1,
            counted: 1,
            lost,
            daemon_cpu_percent: 1.0,
            daemon_rss_kib: rss_kib,
            drain_secs: 0.1,
        }
    }

    #[test]
    fn throughput_rss_and_busy_node_targets() {
        let busy = BusyNode {
            connections: 200_000,
            holder_processes: 21,
            setup_secs: 1.0,
            failures: 10,
            rate: 10,
            failing_secs: 1.0,
            holders: 4,
            records: 10,
            complete: 10,
            incomplete_examples: vec![],
            counted: 10,
            drain_secs: 1.0,
            lost_during_setup: 2,
            lost_during_failures: 0,
            lost_by_reason: None,
            evictions: None,
            maps: vec![
                MapFill {
                    name: "SOCK_OWNERS".into(),
                    kind: "lru_hash".into(),
                    entries: 65_360,
                    max_entries: 65_536,
                },
                MapFill {
                    name: "CLOSING".into(),
                    kind: "lru_hash".into(),
                    entries: 2_460,
                    max_entries: 16_384,
                },
            ],
            daemon_rss_kib: 50 * 1024,
            output: String::new(),
        };
        let throughput = Throughput {
            threads: 2,
            steps: vec![step(20_000, 20_000.0, 0, 1024), step(40_000, 39_000.0, 0, 2048)],
        };
        let results =
            Results { throughput: Some(throughput), busy_node: Some(busy.clone()), ..Results::default() };
        let targets = evaluate(&results);
        assert_eq!(find(&targets, "events lost at 40k").met, Some(true));
        let rss = find(&targets, "daemon RSS");
        assert_eq!((rss.measured, rss.met), (Some(50.0), Some(false)));
        assert_eq!(find(&targets, "busy node: established").met, Some(true));
        assert_eq!(find(&targets, "busy node: events lost").measured, Some(2.0));
        let evictions = find(&targets, "busy node: evictions");
        assert_eq!(evictions.met, None);
        assert!(
            evictions.verdict().contains("bound during the run: SOCK_OWNERS; such"),
            "{}",
            evictions.verdict()
        );
        assert_eq!(find(&targets, "busy node: failures without").met, Some(true));

        let slow = Throughput { threads: 2, steps: vec![step(40_000, 30_000.0, 0, 1024)] };
        let counted = BusyNode { evictions: Some(3), ..busy };
        let targets =
            evaluate(&Results { throughput: Some(slow), busy_node: Some(counted), ..Results::default() });
        assert!(find(&targets, "events lost at 40k").verdict().contains("never reached"));
        assert_eq!(find(&targets, "busy node: evictions").met, Some(false));
    }
}
