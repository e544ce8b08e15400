//! The configurations the micro-loops run under, and starting/stopping the tracer of each.
//! Every tracer writes its records to a file under target/bench (like for like: the same
//! kind of sink for sockerr, bpftrace and strace), which the bench then counts.

use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
};

use anyhow::{Context, Result, bail};

use super::{daemon, running::Running};

/// The process an excluding filter selects instead of the loops: a short bench-loop run
/// under this name proves the filtered tracer was working.
pub const CANARY: &str = "sockerr-canary";
/// The switch that leaves the packet-drop and listen-queue hooks unattached.
pub const DROP_HOOKS_OFF: &str = "--no-drop-hooks";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    Untraced,
    /// `sockerr bench-floor`: the tracer's hooks, each with a program that returns at once.
    Floor,
    /// The floor with the excluding filter of `TraceExcluded` (same hooks as it).
    FloorExcluded,
    /// `sockerr daemon`, node-wide (no filter), NDJSON to a file.
    Daemon,
    /// The daemon with `--no-drop-hooks` (DROP_HOOKS_OFF): what the drop and listen
    /// hooks cost is the daemon's figure less this one.
    DaemonNoDropHooks,
    /// The daemon confined to the CPUs the loop does not run on (`taskset`): what its
    /// user space costs the loop by sharing its CPU is the daemon's figure less this one.
    DaemonOtherCpus,
    /// `sockerr trace --comm sockerr-canary`: the loop process is excluded.
    TraceExcluded,
    Bpftrace,
    Strace,
}

impl Config {
    pub const ALL: [Config; 9] = [
        Config::Untraced,
        Config::Floor,
        Config::FloorExcluded,
        Config::Daemon,
        Config::DaemonNoDropHooks,
        Config::DaemonOtherCpus,
        Config::TraceExcluded,
        Config::Bpftrace,
        Config::Strace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::Floor => "floor",
            Config::FloorExcluded => "floor --comm other",
            Config::Daemon => "daemon",
            Config::DaemonNoDropHooks => "daemon --no-drop-hooks",
            Config::DaemonOtherCpus => "daemon on other CPUs",
            Config::TraceExcluded => "trace --comm other",
            Config::Bpftrace => "bpftrace",
            Config::Strace => "strace",
        }
    }

    /// Whether its filter excludes the loop process.
    pub fn excludes_loops(self) -> bool {
        matches!(self, Config::FloorExcluded | Config::TraceExcluded)
    }

    /// Whether it makes records the bench can count (the floors and untraced make none).
    pub fn records(self) -> bool {
        matches!(
            self,
            Config::Daemon
                | Config::DaemonNoDropHooks
                | Config::DaemonOtherCpus
                | Config::TraceExcluded
                | Config::Bpftrace
                | Config::Strace
        )
    }

    /// Where its records go, under `scratch`.
    pub fn output(self, scratch: &Path) -> Option<PathBuf> {
        let file = match self {
            Config::Daemon => "daemon-loops.ndjson",
            Config::DaemonNoDropHooks => "daemon-no-drop-hooks-loops.ndjson",
            Config::DaemonOtherCpus => "daemon-other-cpus-loops.ndjson",
            Config::TraceExcluded => "trace-excluded.ndjson",
            Config::Bpftrace => "bpftrace.out",
            Config::Strace => "strace.out",
            Config::Untraced | Config::Floor | Config::FloorExcluded => return None,
        };
        Some(scratch.join(file))
    }
}

/// bpftrace on the hooks sockerr's tracepoint backend attaches (syscall entries and
/// exits of connect, bind, setsockopt, socket, accept and close; the socket state,
/// error-report, destroy and reset tracepoints), doing the work a tracer of failures must:
/// each failed connect()/bind() printed with pid, comm, fd, errno and the address, with
/// the options recorded for that socket (kept in maps by setsockopt, dropped at close),
/// sockets tracked from creation to close and through their state changes, asynchronous
/// errors and resets printed with their ports. BEGIN runs once every probe is attached:
/// its line is the readiness signal.
pub const BPFTRACE_SCRIPT: &str = r#"
BEGIN { printf("bench: attached\n"); }
tracepoint:syscalls:sys_exit_socket,
tracepoint:syscalls:sys_exit_accept,
tracepoint:syscalls:sys_exit_accept4 { if (args->ret >= 0) { @sock[pid, (int64)args->ret] = 1; } delete(@peer[tid]); }
tracepoint:syscalls:sys_enter_accept,
tracepoint:syscalls:sys_enter_accept4 { @peer[tid] = args->upeer_sockaddr; }
tracepoint:syscalls:sys_enter_close { $fd = (int64)args->fd; delete(@sock[pid, $fd]); delete(@mark[pid, $fd]); delete(@flags[pid, $fd]); delete(@transparent[pid, $fd]); }
tracepoint:syscalls:sys_enter_setsockopt /(args->level == 1 && (args->optname == 2 || args->optname == 15 || args->optname == 36)) || (args->level == 0 && (args->optname == 15 || args->optname == 19 || args->optname == 24)) || (args->level == 41 && args->optname == 75)/ { @sopt[tid] = ((int64)args->fd, args->level * 1000 + args->optname, *(int32 *)uptr(args->optval)); }
tracepoint:syscalls:sys_exit_setsockopt /@sopt[tid].1 != 0/ { $o = @sopt[tid]; if (args->ret == 0) { if ($o.1 == 1036) { @mark[pid, $o.0] = $o.2; } else { if ($o.1 == 19 || $o.1 == 41075) { @transparent[pid, $o.0] = $o.2; } else { @flags[pid, $o.0] = @flags[pid, $o.0] | (1 << ((uint64)$o.1 % 32)); } } } delete(@sopt[tid]); }
tracepoint:syscalls:sys_enter_connect { @fd[tid] = (int64)args->fd; @addr[tid] = buf(args->uservaddr, 16); }
tracepoint:syscalls:sys_exit_connect { $fd = @fd[tid]; if (args->ret < 0) { printf("connect %d %s fd=%d errno=%d dst=%r mark=%x flags=%x transparent=%d\n", pid, comm, $fd, -args->ret, @addr[tid], @mark[pid, $fd], @flags[pid, $fd], @transparent[pid, $fd]); } delete(@fd[tid]); delete(@addr[tid]); }
tracepoint:syscalls:sys_enter_bind { @fd[tid] = (int64)args->fd; @addr[tid] = buf(args->umyaddr, 16); }
tracepoint:syscalls:sys_exit_bind { $fd = @fd[tid]; if (args->ret < 0) { printf("bind %d %s fd=%d errno=%d addr=%r mark=%x flags=%x transparent=%d\n", pid, comm, $fd, -args->ret, @addr[tid], @mark[pid, $fd], @flags[pid, $fd], @transparent[pid, $fd]); } delete(@fd[tid]); delete(@addr[tid]); }
tracepoint:sock:inet_sock_set_state { if (args->newstate == 7) { delete(@state[args->skaddr]); } else { @state[args->skaddr] = args->newstate; } }
tracepoint:sock:inet_sk_error_report { printf("error %d %s errno=%d sport=%d dport=%d\n", pid, comm, args->error, args->sport, args->dport); }
tracepoint:tcp:tcp_destroy_sock { delete(@state[args->skaddr]); }
tracepoint:tcp:tcp_send_reset { printf("rst-sent %d %s state=%d reason=%d src=%r dst=%r\n", pid, comm, args->state, args->reason, buf(args->saddr, 16), buf(args->daddr, 16)); }
tracepoint:tcp:tcp_receive_reset { printf("rst-received %d %s sport=%d dport=%d\n", pid, comm, args->sport, args->dport); }
END { clear(@sock); clear(@mark); clear(@flags); clear(@transparent); clear(@state); clear(@fd); clear(@addr); clear(@sopt); clear(@peer); }
"#;

/// A configuration's tracer and how to ask it about losses (its records go to
/// `Config::output`).
pub struct Traced {
    pub running: Running,
    /// The daemon's HTTP address (its /metrics).
    pub metrics: Option<SocketAddr>,
    /// bpftrace's diagnostics (`Lost N events`).
    pub errors: Option<PathBuf>,
}

impl Traced {
    /// Starts the tracer of `config` (None for untraced and strace, which wraps the loop
    /// itself) and waits until it has attached. Every sockerr runs with its default
    /// backend (`auto`), as a user would start it; the floor mirrors the same choice.
    pub fn start(config: Config, sockerr: &Path, scratch: &Path) -> Result<Option<Traced>> {
        let output = config.output(scratch);
        let floor = |extra: &[&str]| -> Result<Running> {
            let mut command = Command::new(sockerr);
            command.arg("bench-floor").args(extra).stdout(Stdio::null());
            Running::sockerr(command)
        };
        let plain = |running| Traced { running, metrics: None, errors: None };
        Ok(Some(match config {
            Config::Untraced | Config::Strace => return Ok(None),
            Config::Floor => plain(floor(&[])?),
            Config::FloorExcluded => plain(floor(&["--comm", CANARY])?),
            Config::Daemon | Config::DaemonNoDropHooks | Config::DaemonOtherCpus => {
                let path = output.clone().context("the daemon writes a file")?;
                let switch: &[&str] =
                    if config == Config::DaemonNoDropHooks { &[DROP_HOOKS_OFF] } else { &[] };
                let cpus = if config == Config::DaemonOtherCpus { Some(other_cpus()?) } else { None };
                let daemon = daemon::start(sockerr, &path, switch, cpus.as_deref())?;
                Traced { running: daemon.running, metrics: Some(daemon.address), errors: None }
            }
            Config::TraceExcluded => {
                let path = output.clone().context("trace writes a file")?;
                let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                let mut command = Command::new(sockerr);
                command.args(["trace", "--output", "json", "--comm", CANARY]).stdout(Stdio::from(file));
                plain(Running::sockerr(command)?)
            }
            Config::Bpftrace => {
                let path = output.clone().context("bpftrace writes a file")?;
                let errors = scratch.join("bpftrace.err");
                Traced {
                    running: Running::bpftrace(BPFTRACE_SCRIPT, &path, &errors)?,
                    metrics: None,
                    errors: Some(errors),
                }
            }
        }))
    }
}

/// The loop command of one slot: `sockerr scenario bench-loop ...`, under strace for
/// that configuration (its lines to `strace_output`).
pub fn loop_command(
    config: Config,
    sockerr: &Path,
    loops: &[&str],
    batches: u32,
    batch_ms: u32,
    strace_output: Option<&Path>,
) -> Command {
    let mut command = match (config, strace_output) {
        (Config::Strace, Some(output)) => {
            let mut strace = Command::new("strace");
            strace.args(["-f", "-e", "trace=connect,bind,setsockopt", "-o"]).arg(output).arg(sockerr);
            strace
        }
        _ => Command::new(sockerr),
    };
    command.args(["scenario", "bench-loop", "--cpu", &loop_cpu().to_string()]);
    command.args(["--batches", &batches.to_string(), "--batch-ms", &batch_ms.to_string()]);
    for name in loops {
        command.args(["--loop", name]);
    }
    command
}

/// A few refused connects under the canary's name (not pinned, not timed).
pub fn canary_command(sockerr: &Path) -> Command {
    let mut command = Command::new(sockerr);
    command.args(["scenario", "bench-loop", "--loop", "refused-connect", "--comm", CANARY]);
    command.args(["--warmup", "10", "--batches", "1", "--batch-ms", "1"]);
    command
}

/// The last CPU: the loops run pinned there, the tracers' user space wherever the
/// scheduler puts it (but `Config::DaemonOtherCpus`).
pub fn loop_cpu() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get()) - 1
}

/// The CPUs the loops do not run on, as a `taskset -c` list.
fn other_cpus() -> Result<String> {
    match loop_cpu() {
        0 => bail!(
            "the configuration `{}` needs a CPU the loops do not run on, and this machine has one: \
             run the bench on a machine with at least 2 CPUs",
            Config::DaemonOtherCpus.name()
        ),
        last => Ok(format!("0-{}", last - 1)),
    }
}

pub fn scratch_dir(root: &Path) -> PathBuf {
    root.join("bench")
}
