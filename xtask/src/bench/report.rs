//! BENCHMARKS.md, written whole from results.json: every section from the figures of the
//! run that made them, a section not run says so. Pure: unit-tested below.

use std::fmt::Write;

use super::{
    FAILING_LOOPS, LOOPS, profile,
    records::failure_of,
    results::{MicroLoops, Results, Target},
    stats::{Summary, added_cost_ratio},
    tracers::Config,
};

/// The columns of the micro-loop table, in order.
const COLUMNS: [Config; 9] = Config::ALL;

fn median(loops: &MicroLoops, config: Config, loop_name: &str) -> Option<Summary> {
    Summary::of(&loops.all(config.name(), loop_name))
}

fn ratio_cell(loops: &MicroLoops, loop_name: &str, traced: Config, reference: Config) -> String {
    let value = |config| median(loops, config, loop_name).map(|s| s.median);
    match (value(Config::Untraced), value(traced), value(reference)) {
        (Some(u), Some(t), Some(r)) => added_cost_ratio(t, r, u).map_or("n/a".into(), |x| format!("{x:.2}×")),
        _ => "—".into(),
    }
}

/// A file the bench wrote, as the report names it: relative to the workspace root
/// (the clone's own location means nothing to a reader), as it is when outside it.
fn shown_path(path: &str) -> String {
    relative_to(path, crate::paths::workspace_root())
}

fn relative_to(path: &str, root: &std::path::Path) -> String {
    std::path::Path::new(path)
        .strip_prefix(root)
        .map_or_else(|_| path.to_owned(), |relative| relative.display().to_string())
}

pub fn render(results: &Results) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# sockerr benchmarks\n");
    let quick = results.plan.as_ref().is_some_and(|p| p.quick);
    let _ = writeln!(
        md,
        "Written whole by `cargo xtask bench` from `target/bench/results.json` (every figure below comes \
         from it; nothing here is edited by hand). Last micro-loop run: {}{}; soak: {}.\n",
        results.machine.as_ref().map_or("none", |m| m.date.as_str()),
        if quick { " (`--quick`)" } else { "" },
        results.soak.as_ref().map_or("not run", |s| s.date.as_str()),
    );
    machine(&mut md, results);
    targets(&mut md, &results.targets);
    match &results.micro_loops {
        Some(loops) => micro_loops(&mut md, results, loops),
        None => {
            let _ = writeln!(md, "## Micro-loops\n\nNot run: `sudo -E cargo xtask bench`.\n");
        }
    }
    throughput(&mut md, results);
    busy_node(&mut md, results);
    startup(&mut md, results);
    if !results.program_costs.is_empty() {
        md += &profile::render(&results.program_costs);
    }
    soak(&mut md, results);
    md
}

fn machine(md: &mut String, results: &Results) {
    let Some(machine) = &results.machine else { return };
    let _ = writeln!(md, "## Machine\n\n| | |\n|---|---|");
    let _ = writeln!(md, "| CPU | {} ({} cores) |", machine.cpu, machine.cores);
    let _ = writeln!(md, "| kernel | {} |", machine.kernel);
    let _ = writeln!(md, "| rustc | {} |", machine.rustc);
    let _ = writeln!(md, "| bpftrace | {} |", machine.bpftrace);
    let _ = writeln!(md, "| strace | {} |", machine.strace);
    let _ = writeln!(md, "| date | {} |", machine.date);
    if let Some(secs) = results.duration_secs {
        let _ = writeln!(md, "| bench duration | {secs:.0} s |");
    }
    let _ = writeln!(md);
}

fn targets(md: &mut String, targets: &[Target]) {
    let _ = writeln!(md, "## Targets (issue 11)\n");
    let met = targets.iter().filter(|t| t.met == Some(true)).count();
    let not_met = targets.iter().filter(|t| t.met == Some(false)).count();
    let within_noise = targets.iter().filter(|t| t.met.is_none() && t.measured.is_some()).count();
    let _ = writeln!(
        md,
        "{met} met, {not_met} not met, {within_noise} within noise, {} not measured, of {}. Medians of one \
         run; ratios are (traced − untraced) / (reference − untraced). In brackets, what the figure may be \
         when each median it comes from is off by half its interquartile range (the ± of the tables \
         below), the worst case each way: a target is met, or not met, only when all of that range is; \
         else it is within noise. A ratio whose reference adds no more than its medians' spreads is not \
         measured.\n",
        targets.len() - met - not_met - within_noise,
        targets.len()
    );
    let _ = writeln!(md, "| target | limit | measured | verdict |\n|---|---:|---:|---|");
    for target in targets {
        let sign = match target.comparison {
            super::results::Comparison::AtMost => "≤",
            super::results::Comparison::Below => "<",
            super::results::Comparison::AtLeast => "≥",
        };
        let measured = match (target.measured, target.range) {
            (None, _) => "—".into(),
            (Some(m), None) => Target::format_value(target.unit, m),
            (Some(m), Some((low, high))) => format!(
                "{} [{} to {}]",
                Target::format_value(target.unit, m),
                Target::format_value(target.unit, low),
                Target::format_value(target.unit, high)
            ),
        };
        let _ = writeln!(
            md,
            "| {} | {sign} {} | {measured} | {} |",
            target.what,
            Target::format_value(target.unit, target.limit),
            target.verdict()
        );
    }
    let _ = writeln!(md);
}

fn micro_loops(md: &mut String, results: &Results, loops: &MicroLoops) {
    let _ = writeln!(md, "## Micro-loops: ns per iteration\n");
    if let Some(plan) = &results.plan {
        let _ = writeln!(
            md,
            "Median of {} rounds × {} batches of ~{} ms each (± half the interquartile range, in % of the \
             median). Configurations run round-robin, rotated each round and reversed every other round (each runs \
             before and after its neighbours); the loop process is pinned to the \
             last CPU, in its own network namespace, on loopback.",
            plan.rounds, plan.batches, plan.batch_ms
        );
    }
    let _ = writeln!(
        md,
        "\nAn iteration is: success-cycle = socket + SO_REUSEADDR + connect to a listener + accept (with a \
         buffer for the peer's address, as nginx, HAProxy and Envoy pass, which the tracer checks the \
         accepted socket against) + 64-byte write and read + close both ends; refused-connect = socket + \
         blocking connect to a closed port (ECONNREFUSED) + close; addr-not-avail = the Cilium pattern: \
         socket + SO_REUSEADDR + bind to a live connection's tuple + connect to its peer (EADDRNOTAVAIL) + \
         close; bind = socket + bind to a listener's port (EADDRINUSE) + close; so-mark / so-keepalive = one \
         setsockopt on a held socket.\n\n\
         Configurations: floor = `sockerr bench-floor` (the hooks the tracer attaches for the same \
         selection, each with a program that returns at once); daemon = `sockerr daemon` node-wide, no \
         filter, NDJSON to a file; daemon --no-drop-hooks = the same daemon without the packet-drop and \
         listen-queue hooks (see the cost of those hooks below); daemon on other CPUs = the same daemon \
         confined (`taskset`) to the CPUs the loop does not run on: the daemon's user space (reading, \
         decoding and writing each record) otherwise runs wherever the scheduler puts it, which on a \
         machine of few CPUs is often the loop's, so daemon − daemon on other CPUs is what that sharing \
         costs the loop (same hooks and output as daemon; the targets keep the unconfined daemon, as a node \
         runs it); trace --comm other = `sockerr trace --comm {canary}`, which excludes \
         the loop process (a short run under the name `{canary}` proves it was tracing), NDJSON to a file; \
         floor --comm other = the floor with the same filter; bpftrace = the script in \
         `xtask/src/bench/tracers.rs`, lines to a file; strace = `strace -f -e trace=connect,bind,setsockopt \
         -o FILE`. Every sockerr runs on its default backend ({backend}).\n",
        canary = super::tracers::CANARY,
        backend = loops.backend.as_deref().unwrap_or("not reported")
    );
    let header: Vec<&str> = COLUMNS.iter().map(|c| c.name()).collect();
    let _ = writeln!(
        md,
        "| loop | {} | daemon vs floor | daemon on other CPUs vs floor | daemon vs bpftrace | excluded vs its \
         floor |",
        header.join(" | ")
    );
    let _ = writeln!(md, "|---|{}---|---|---|---|", "---:|".repeat(COLUMNS.len()));
    for &row in LOOPS {
        let cells: Vec<String> = COLUMNS
            .iter()
            .map(|&column| match median(loops, column, row) {
                Some(s) => format!("{:.0} ±{:.0}%", s.median, s.spread_percent()),
                None => "—".into(),
            })
            .collect();
        let _ = writeln!(
            md,
            "| {row} | {} | {} | {} | {} | {} |",
            cells.join(" | "),
            ratio_cell(loops, row, Config::Daemon, Config::Floor),
            ratio_cell(loops, row, Config::DaemonOtherCpus, Config::Floor),
            ratio_cell(loops, row, Config::Daemon, Config::Bpftrace),
            ratio_cell(loops, row, Config::TraceExcluded, Config::FloorExcluded)
        );
    }
    let _ = writeln!(
        md,
        "\nn/a: the reference adds less than 0.5 % over untraced (a ratio over noise means nothing).\n"
    );
    recorded(md, loops);
    like_for_like(md, loops);
    hook_cost(md, loops, &results.program_costs);
}

/// One loop's cost of the drop and listen hooks: the daemon against the daemon without them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HookCost {
    pub daemon: Summary,
    pub without: Summary,
    pub untraced: Option<f64>,
}

impl HookCost {
    fn of(loops: &MicroLoops, loop_name: &str) -> Option<HookCost> {
        Some(HookCost {
            daemon: median(loops, Config::Daemon, loop_name)?,
            without: median(loops, Config::DaemonNoDropHooks, loop_name)?,
            untraced: median(loops, Config::Untraced, loop_name).map(|s| s.median),
        })
    }

    /// ns per iteration the hooks add.
    pub fn difference(&self) -> f64 {
        self.daemon.median - self.without.median
    }

    /// The daemon's time over the daemon's without the hooks.
    pub fn ratio(&self) -> f64 {
        self.daemon.median / self.without.median
    }

    /// The difference in % of what the daemon adds over untraced (None when it adds nothing).
    pub fn share_of_added_percent(&self) -> Option<f64> {
        let added = self.daemon.median - self.untraced?;
        (added > 0.0).then(|| self.difference() / added * 100.0)
    }

    /// Whether the difference is within the two medians' spreads (half their IQRs, summed).
    pub fn within_noise(&self) -> bool {
        let noise = (self.daemon.p75 - self.daemon.p25 + self.without.p75 - self.without.p25) / 2.0;
        self.difference().abs() <= noise
    }
}

/// The section of issue 13: what the `socket_drop` and `listen_overflow` hooks cost.
fn hook_cost(md: &mut String, loops: &MicroLoops, program_costs: &[profile::ProgramCost]) {
    let _ = writeln!(md, "### Cost of the drop and listen hooks\n");
    let daemon = loops.hooks.get(Config::Daemon.name());
    let without = loops.hooks.get(Config::DaemonNoDropHooks.name());
    let covered: Vec<&String> = match (daemon, without) {
        (Some(daemon), Some(without)) => daemon.programs.difference(&without.programs).collect(),
        _ => Vec::new(),
    };
    // The kernel's own account of those programs in each loop (the profile's runs).
    let run_time = |loop_name: &str| -> String {
        if program_costs.is_empty() || covered.is_empty() {
            return "—".into();
        }
        let ns = program_costs
            .iter()
            .filter(|cost| cost.loop_name == loop_name && covered.contains(&&cost.program))
            .map(profile::ProgramCost::ns_per_iteration)
            // Not sum(): an empty f64 sum is -0, printed "-0".
            .fold(0.0, |total, ns| total + ns);
        format!("{ns:.0}")
    };
    let covered = if covered.is_empty() {
        "not recorded by this run".to_owned()
    } else {
        covered.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")
    };
    let attached = |hooks: Option<&super::results::Hooks>| {
        hooks.and_then(|h| h.attached).map_or("?".to_owned(), |n| n.to_string())
    };
    let _ = writeln!(
        md,
        "What the hooks of the `socket_drop` and `listen_overflow` records add to each loop: `daemon` less \
         `daemon --no-drop-hooks`, both node-wide and measured in the same rotated rounds (the medians of the \
         table above; the samples are results.json's `micro_loops.cells`). The difference covers the programs \
         the daemon had loaded and `daemon --no-drop-hooks` had not (bpftool, results.json's \
         `micro_loops.hooks`): {covered}; that is `skb:kfree_skb` (packets the kernel dropped, looked up \
         against the traced sockets and listeners) and `syscalls:sys_enter_listen` / `sys_exit_listen` (who \
         owns each listener); {} attachments against {}. Not in it: `sock:inet_sock_set_state`, attached \
         either way, still looks for a listen() in progress when a socket enters LISTEN (one map lookup).\n",
        attached(daemon),
        attached(without)
    );
    let _ = writeln!(
        md,
        "| loop | daemon | daemon --no-drop-hooks | hooks' cost (ns) | ratio | share of the daemon's added cost \
         | their BPF run time (ns) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    for &loop_name in LOOPS {
        let Some(cost) = HookCost::of(loops, loop_name) else {
            let _ = writeln!(md, "| {loop_name} | — | — | — | — | — | {} |", run_time(loop_name));
            continue;
        };
        let noise = if cost.within_noise() { " (within noise)" } else { "" };
        let _ = writeln!(
            md,
            "| {loop_name} | {:.0} ±{:.0}% | {:.0} ±{:.0}% | {:+.0}{noise} | {:.3}× | {} | {} |",
            cost.daemon.median,
            cost.daemon.spread_percent(),
            cost.without.median,
            cost.without.spread_percent(),
            cost.difference(),
            cost.ratio(),
            cost.share_of_added_percent().map_or("—".to_owned(), |p| format!("{p:.0} %")),
            run_time(loop_name)
        );
    }
    let _ = writeln!(
        md,
        "\nratio = daemon ÷ daemon --no-drop-hooks; share = the hooks' cost ÷ (daemon − untraced); within \
         noise: the difference is no larger than the two medians' spreads (half their interquartile ranges) \
         added up. Their BPF run time: what the kernel's BPF statistics counted for those programs per \
         iteration of the loop (results.json's `program_costs`, the section \"Where the time in the kernel \
         goes\" below; 0: none of them ran; node-wide, so the machine's other drops count too): their own \
         work, without what attaching them costs around it. `--no-drop-hooks` is the switch for a node where the kernel drops packets very often: there \
         `skb:kfree_skb` runs once per dropped packet of the whole node, a cost these loops show only for \
         their own drops (each refused connect's SYN is one).\n"
    );
}

/// What each traced configuration recorded of the failing loops, over all rounds.
fn recorded(md: &mut String, loops: &MicroLoops) {
    let _ = writeln!(md, "### What each traced configuration recorded\n");
    let _ = writeln!(
        md,
        "Records of the loop process's failures against its iterations (warm-up included), all rounds; the \
         bench stops with an error when a configuration recorded none of a failing loop (it would have \
         measured a tracer that traced nothing). Lost: what the tracer itself counted as lost (sockerr's \
         `stopped:` line, else the daemon's `sockerr_events_lost_total`; bpftrace's `Lost N events`).\n"
    );
    let mut failing: Vec<&str> = FAILING_LOOPS.iter().copied().filter(|l| failure_of(l).is_some()).collect();
    failing.dedup();
    let _ = writeln!(
        md,
        "| configuration | output | {} | excluded process | canary | lost |",
        failing.join(" | ")
    );
    let _ = writeln!(md, "|---|---|{}---:|---:|---:|", "---:|".repeat(failing.len()));
    for config in Config::ALL.into_iter().filter(|c| c.records()) {
        let slots: Vec<_> = loops.slots.iter().filter(|s| s.config == config.name()).collect();
        if slots.is_empty() {
            continue;
        }
        let cells: Vec<String> = failing
            .iter()
            .map(|loop_name| {
                let (records, iterations) = slots
                    .iter()
                    .filter_map(|s| s.failures.get(*loop_name))
                    .fold((0, 0), |(r, i), rec| (r + rec.records, i + rec.iterations));
                if iterations == 0 { "—".into() } else { format!("{records}/{iterations}") }
            })
            .collect();
        let sum = |f: &dyn Fn(&super::results::Slot) -> Option<u64>| -> String {
            let values: Vec<Option<u64>> = slots.iter().map(|s| f(s)).collect();
            if values.iter().all(Option::is_none) {
                "—".into()
            } else if values.iter().any(Option::is_none) {
                format!("≥{} (some rounds unknown)", values.iter().flatten().sum::<u64>())
            } else {
                values.iter().flatten().sum::<u64>().to_string()
            }
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            config.name(),
            shown_path(&slots[0].output),
            cells.join(" | "),
            sum(&|s| s.excluded_records),
            sum(&|s| s.canary_records),
            sum(&|s| s.lost)
        );
    }
    let _ = writeln!(md);
}

/// Where the comparisons are not like for like, from what each configuration attached.
fn like_for_like(md: &mut String, loops: &MicroLoops) {
    let _ = writeln!(md, "### Like for like?\n");
    let _ = writeln!(
        md,
        "| configuration | attached (its own count) | BPF programs loaded, by type |\n|---|---:|---|"
    );
    for (config, hooks) in &loops.hooks {
        let types: Vec<String> = hooks.program_types.iter().map(|(t, n)| format!("{t}: {n}")).collect();
        let _ = writeln!(
            md,
            "| {config} | {} | {} |",
            hooks.attached.map_or("?".into(), |n| n.to_string()),
            if types.is_empty() { "—".into() } else { types.join(", ") }
        );
    }
    let _ = writeln!(md);
    for line in like_for_like_notes(loops) {
        let _ = writeln!(md, "- {line}");
    }
    let _ = writeln!(md);
}

/// The differences between compared configurations, stated.
pub fn like_for_like_notes(loops: &MicroLoops) -> Vec<String> {
    let mut notes = Vec::new();
    let hooks = |config: Config| loops.hooks.get(config.name());
    match (hooks(Config::Floor), hooks(Config::Daemon)) {
        (Some(floor), Some(daemon))
            if floor.attached == daemon.attached
                && floor.program_types.keys().eq(daemon.program_types.keys()) =>
        {
            notes.push(
                "daemon vs floor: like for like (same number of attachments, same program types).".into(),
            )
        }
        (Some(floor), Some(daemon)) => notes.push(format!(
            "daemon vs floor: **not like for like**: the floor attached {:?} ({:?}), the daemon {:?} ({:?}).",
            floor.attached, floor.program_types, daemon.attached, daemon.program_types
        )),
        _ => notes.push("daemon vs floor: not compared (a configuration did not report its hooks).".into()),
    }
    match (hooks(Config::FloorExcluded), hooks(Config::TraceExcluded)) {
        (Some(floor), Some(trace)) if floor.attached == trace.attached && floor.program_types.keys().eq(trace.program_types.keys()) => {
            notes.push("trace --comm other vs its floor: like for like (same attachments and program types).".into())
        }
        (Some(floor), Some(trace)) => notes.push(format!(
            "trace --comm other vs its floor: **not like for like**: the floor attached {:?} ({:?}), trace {:?} ({:?}).",
            floor.attached, floor.program_types, trace.attached, trace.program_types
        )),
        _ => notes.push("trace --comm other vs its floor: not compared (a configuration did not report its hooks).".into()),
    }
    if let (Some(bpftrace), Some(daemon)) = (hooks(Config::Bpftrace), hooks(Config::Daemon)) {
        if bpftrace.program_types.keys().eq(daemon.program_types.keys()) {
            notes.push(
                "daemon vs bpftrace: the same kind of hooks on the same tracepoints (the tracepoint backend's); \
                 bpftrace prints each failure with errno, address and the socket's recorded options and keeps \
                 options and sockets in maps, but does no user-space work beyond printing (sockerr also names \
                 processes, looks holders up and writes JSON; that runs outside the loop's CPU when the scheduler \
                 lets it)."
                    .into(),
            );
        } else {
            notes.push(format!(
                "daemon vs bpftrace: **not like for like in hook kind**: sockerr's programs are {:?}, bpftrace's \
                 {:?} (bpftrace's script uses classic tracepoints throughout: this machine's bpftrace, see the \
                 table above, may have no BTF-typed tracepoint probes; a cheaper hook kind is part of what sockerr's \
                 ratio then measures).",
                daemon.program_types, bpftrace.program_types
            ));
        }
    }
    notes.push(
        "strace is not like for like by nature (ptrace stops the process at every traced syscall): a reference \
         for what a user-space tracer costs, in no target."
            .into(),
    );
    notes
}

fn throughput(md: &mut String, results: &Results) {
    let _ = writeln!(
        md,
        "## Throughput (`sockerr daemon --comm sockerr-bench`, Cilium-pattern failing connects)\n"
    );
    let Some(throughput) = &results.throughput else {
        let _ = writeln!(md, "Not run.\n");
        return;
    };
    let _ = writeln!(
        md,
        "{} threads of `sockerr scenario flood`; NDJSON to a file. The daemon is filtered on the flood's name here \
         (node-wide in the micro-loops and the busy node).\n",
        throughput.threads
    );
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
        "\nCPU: the daemon's user + system time over the flood and its drain, in % of one CPU; counted = \
         `sockerr_connect_errors_total{{comm=\"sockerr-bench\"}}`; lost = `sockerr_events_lost_total` (kernel \
         events, all reasons, several per failure: never added to failures). Without loss = every failure \
         counted and no event lost."
    );
    match throughput.loss_free() {
        Some(best) => {
            let _ = writeln!(md, "Highest rate without loss: **{:.0} failures/s**.", best.achieved_rate);
        }
        None => {
            let _ = writeln!(md, "Every rate lost events or missed failures.");
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
    let _ = writeln!(md);
}

fn busy_node(md: &mut String, results: &Results) {
    let _ = writeln!(md, "## Busy node\n");
    let Some(busy) = &results.busy_node else {
        match &results.busy_node_error {
            Some(err) => {
                let _ = writeln!(md, "**Failed**: {err}\n");
            }
            None => {
                let _ = writeln!(md, "Not run.\n");
            }
        }
        return;
    };
    let _ = writeln!(
        md,
        "`sockerr daemon` node-wide (no filter, NDJSON to `{}`) while `sockerr scenario busy-node` holds \
         **{}** established loopback connections (both ends open and traced, each accepted with the peer's \
         address, in {} processes; every client socket with SO_MARK and SO_REUSEADDR, as a Cilium-proxied \
         one) in a network namespace of its own, set up in {:.1} s; then **{}** Cilium-pattern failures at \
         {}/s ({:.1} s) from another process re-bind the tuples of {} of the held connections, spread over \
         the set.\n",
        shown_path(&busy.output),
        busy.connections,
        busy.holder_processes,
        busy.setup_secs,
        busy.failures,
        busy.rate,
        busy.failing_secs,
        busy.holders
    );
    let _ = writeln!(md, "| | |\n|---|---:|");
    let _ = writeln!(md, "| failures (the scenario's count) | {} |", busy.failures);
    let _ = writeln!(
        md,
        "| counted in /metrics when the bench stopped waiting ({:.0} s after the last failure) | {} |",
        busy.drain_secs, busy.counted
    );
    let _ = writeln!(md, "| records of them in the daemon's NDJSON | {} |", busy.records);
    let _ = writeln!(md, "| of which with holder (pid, fd) and options | {} |", busy.complete);
    let _ = writeln!(md, "| lost during set-up | {} |", busy.lost_during_setup);
    let _ = writeln!(md, "| lost during the failures | {} |", busy.lost_during_failures);
    let reasons = busy.lost_by_reason.as_ref().map_or("not given by this sockerr".to_owned(), |r| {
        r.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
    });
    let _ = writeln!(md, "| losses by reason | {reasons} |");
    let _ = writeln!(
        md,
        "| evictions | {} |",
        busy.evictions.map_or("not exported by this sockerr".to_owned(), |n| n.to_string())
    );
    let _ = writeln!(
        md,
        "| daemon RSS with the connections held | {:.1} MiB |\n",
        busy.daemon_rss_kib as f64 / 1024.0
    );
    if !busy.incomplete_examples.is_empty() {
        let _ = writeln!(md, "Failures not reported whole (first {}):\n", busy.incomplete_examples.len());
        for example in &busy.incomplete_examples {
            let _ = writeln!(md, "- {example}");
        }
        let _ = writeln!(md);
    }
    if !busy.maps.is_empty() {
        let _ = writeln!(md, "The daemon's hash maps while the connections were held:\n");
        for map in &busy.maps {
            let _ = writeln!(md, "- {map}");
        }
        let _ = writeln!(md);
    }
}

fn startup(md: &mut String, results: &Results) {
    let Some(startup) = &results.startup else { return };
    let _ = writeln!(md, "## Start-up and size\n");
    let _ = writeln!(
        md,
        "Exec of `sockerr trace` to `tracing started` (programs attached): median **{:.0} ms** of {} tries \
         ({}). `target/release/sockerr`: **{:.1} MiB**.",
        startup.median_ms(),
        startup.millis.len(),
        startup.millis.iter().map(|m| format!("{m:.0}")).collect::<Vec<_>>().join(", "),
        startup.binary_bytes as f64 / (1024.0 * 1024.0)
    );
}

fn soak(md: &mut String, results: &Results) {
    let _ = writeln!(md, "\n## Soak (`cargo xtask bench --soak`)\n");
    let Some(soak) = &results.soak else {
        let _ = writeln!(
            md,
            "Not run since results.json was last started afresh: `sudo -E cargo xtask bench --soak`."
        );
        return;
    };
    let warm = soak.rss_kib.first().copied().unwrap_or(0);
    let max_later = soak.rss_kib.iter().skip(1).copied().max().unwrap_or(warm);
    let _ = writeln!(
        md,
        "{} on {}: {} Cilium-pattern failing connects at {}/s ({} threads) under `sockerr daemon --comm \
         sockerr-bench`, {:.0} s. Flood's own count {}; `/metrics` connect errors {}; NDJSON failure lines {}; \
         events lost {}; daemon RSS {:.1} MiB after the first chunk (warm-up), at most {:.1} MiB later \
         ({:+.1} %); daemon fds per chunk {:?}.\n",
        if soak.problems.is_empty() { "**Passed**" } else { "**Failed**" },
        soak.date,
        soak.total,
        soak.rate,
        soak.threads,
        soak.secs,
        soak.failures,
        soak.counted,
        soak.ndjson_lines,
        soak.lost,
        warm as f64 / 1024.0,
        max_later as f64 / 1024.0,
        soak.rss_growth_percent,
        soak.fds
    );
    for map in &soak.maps {
        let _ = writeln!(md, "- map {map}");
    }
    for problem in &soak.problems {
        let _ = writeln!(md, "- problem: {problem}");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::bench::{
        results::{Hooks, Recorded, Slot},
        soak::Soak,
        targets,
    };

    #[test]
    fn paths_under_the_workspace_are_shown_relative_to_it() {
        let root = std::path::Path::new("/work/main");
        assert_eq!(
            relative_to("/work/main/target/bench/busy-node.ndjson", root),
            "target/bench/busy-node.ndjson"
        );
        assert_eq!(relative_to("/tmp/elsewhere/x.out", root), "/tmp/elsewhere/x.out");
        assert_eq!(relative_to("/work/mainline/x", root), "/work/mainline/x");
        assert_eq!(relative_to("-", root), "-");
        let here = crate::paths::workspace_root().join("target/bench/strace.out");
        assert_eq!(shown_path(&here.display().to_string()), "target/bench/strace.out");
    }

    fn loops() -> MicroLoops {
        let mut loops = MicroLoops::default();
        for (config, value) in [
            (Config::Untraced, 1000.0),
            (Config::Floor, 1100.0),
            (Config::Daemon, 1300.0),
            (Config::DaemonOtherCpus, 1200.0),
            (Config::Bpftrace, 1500.0),
        ] {
            loops.push(config.name(), "bind", vec![value]);
        }
        let mut slot = Slot {
            config: "daemon".into(),
            output: "target/bench/daemon-loops.ndjson".into(),
            lost: Some(0),
            ..Slot::default()
        };
        slot.failures.insert("bind".into(), Recorded { records: 90, iterations: 100 });
        loops.slots.push(slot);
        let hooks = |attached, kind: &str| Hooks {
            attached: Some(attached),
            program_types: BTreeMap::from([(kind.to_owned(), attached)]),
            programs: Default::default(),
        };
        loops.hooks.insert("floor".into(), hooks(19, "tracepoint"));
        loops.hooks.insert("daemon".into(), hooks(12, "raw_tracepoint"));
        loops.hooks.insert("bpftrace".into(), hooks(18, "tracepoint"));
        loops
    }

    #[test]
    fn the_report_is_written_whole_from_the_results() {
        let mut results = Results { micro_loops: Some(loops()), ..Results::default() };
        results.targets = targets::evaluate(&results);
        let md = render(&results);
        assert!(
            md.contains(
                "| bind | 1000 ±0% | 1100 ±0% | — | 1300 ±0% | — | 1200 ±0% | — | 1500 ±0% | — | 3.00× | 2.00× | \
                 0.60× | — |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| daemon | target/bench/daemon-loops.ndjson | — | — | 90/100 | — | — | 0 |"),
            "{md}"
        );
        assert!(md.contains("daemon vs floor: **not like for like**"), "{md}");
        assert!(md.contains("**not like for like in hook kind**"), "{md}");
        assert!(
            md.contains(
                "| bind: `sockerr daemon`'s added cost × the floor's | ≤ 2.00× | 3.00× | **not met** |"
            ),
            "{md}"
        );
        assert!(md.contains("## Busy node\n\nNot run."), "{md}");
        assert!(md.contains("`sudo -E cargo xtask bench --soak`"), "{md}");
        assert!(!md.contains("written by hand"), "no hand-written section: {md}");
        assert!(md.contains("| bind | — | — | — | — | — | — |"), "no daemon --no-drop-hooks figures: {md}");
    }

    #[test]
    fn the_hooks_cost_is_the_daemon_less_the_daemon_without_them() {
        let mut loops = loops();
        loops.push(Config::DaemonNoDropHooks.name(), "bind", vec![1200.0]);
        loops.push(Config::Daemon.name(), "so-mark", vec![500.0, 510.0, 520.0]);
        loops.push(Config::DaemonNoDropHooks.name(), "so-mark", vec![505.0, 515.0, 525.0]);
        let programs = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        let daemon = loops.hooks.get_mut("daemon").unwrap();
        daemon.programs = programs(&["kfree_skb", "sys_enter_listen", "sys_exit_listen", "sys_exit_bind"]);
        let without = Hooks { attached: Some(9), programs: programs(&["sys_exit_bind"]), ..Hooks::default() };
        loops.hooks.insert(Config::DaemonNoDropHooks.name().into(), without);
        let cost = |loop_name: &str, program: &str, run_time_ns| profile::ProgramCost {
            loop_name: loop_name.into(),
            program: program.into(),
            runs: 10,
            run_time_ns,
            iterations: 10,
        };
        let program_costs = vec![
            cost("bind", "kfree_skb", 300),
            cost("bind", "sys_enter_listen", 100),
            cost("bind", "sys_exit_bind", 5000),
            cost("so-mark", "sys_exit_bind", 5000),
        ];
        let md = render(&Results { micro_loops: Some(loops), program_costs, ..Results::default() });
        // bind: 1300 - 1200 = 100 ns, 1300 / 1200, 100 / (1300 - 1000); (300 + 100) / 10 ns
        // of the hooks' programs per iteration (sys_exit_bind is not theirs).
        assert!(md.contains("| bind | 1300 ±0% | 1200 ±0% | +100 | 1.083× | 33 % | 40 |"), "{md}");
        // so-mark: -5 ns against spreads of 5 ns each; no untraced figure, so no share;
        // none of the hooks' programs ran.
        assert!(md.contains("| so-mark | 510 ±1% | 515 ±1% | -5 (within noise) | 0.990× | — | 0 |"), "{md}");
        assert!(md.contains("had not (bpftool, results.json's `micro_loops.hooks`): `kfree_skb`, `sys_enter_listen`, `sys_exit_listen`;"), "{md}");
        assert!(md.contains("12 attachments against 9"), "{md}");
        assert!(md.contains("| refused-connect | — | — | — | — | — | 0 |"), "{md}");
    }

    #[test]
    fn the_soak_section_comes_from_the_soak_results() {
        let soak = Soak {
            date: "2026-11-28 23:00 UTC".into(),
            total: 1_000_000,
            rate: 20_000,
            threads: 2,
            secs: 90.0,
            failures: 1_000_000,
            counted: 999_999,
            lost: 1,
            ndjson_lines: 999_999,
            rss_kib: vec![15_000, 15_500],
            rss_growth_percent: 3.3,
            fds: vec![74, 74],
            maps: vec!["CLOSING (hash): 30/16384 entries, within bound".into()],
            problems: vec![],
        };
        let md = render(&Results { soak: Some(soak), ..Results::default() });
        assert!(md.contains("**Passed** on 2026-11-28 23:00 UTC: 1000000 Cilium-pattern"), "{md}");
        assert!(
            md.contains("`/metrics` connect errors 999999; NDJSON failure lines 999999; events lost 1"),
            "{md}"
        );
        assert!(md.contains("- map CLOSING (hash): 30/16384"), "{md}");
        assert!(md.contains("## Micro-loops\n\nNot run"), "{md}");
    }
}
