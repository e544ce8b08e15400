//! The configurations the micro-loops run under, and starting/stopping the tracer of each.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// How long a tracer may take to attach (bpftrace compiles its script first).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// A process name no process has: `--comm` with it excludes the loops.
pub const NOBODY: &str = "nobody-matches";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    Untraced,
    Floor,
    TraceDevNull,
    TraceFile,
    Bpftrace,
    Strace,
    /// The floor with `--comm nobody-matches`: the loop process is excluded.
    FloorExcluded,
    /// `sockerr trace --comm nobody-matches`: the loop process is excluded.
    TraceExcluded,
}

impl Config {
    pub const ALL: [Config; 8] = [
        Config::Untraced,
        Config::Floor,
        Config::TraceDevNull,
        Config::TraceFile,
        Config::Bpftrace,
        Config::Strace,
        Config::FloorExcluded,
        Config::TraceExcluded,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::Floor => "floor",
            Config::TraceDevNull => "sockerr>/dev/null",
            Config::TraceFile => "sockerr>file",
            Config::Bpftrace => "bpftrace",
            Config::Strace => "strace",
            Config::FloorExcluded => "floor --comm other",
            Config::TraceExcluded => "sockerr --comm other",
        }
    }

    /// Whether only the excluded-process loop runs under it.
    pub fn excluded(self) -> bool {
        matches!(self, Config::FloorExcluded | Config::TraceExcluded)
    }
}

/// bpftrace capturing what sockerr captures on the same syscall tracepoints: errno and
/// the sockaddr bytes of failed connect()/bind(), and level/optname/optval of
/// setsockopt() (kept per socket, as sockerr keeps recorded options).
/// BEGIN runs once every probe is attached: its line is the readiness signal ("Attaching N
/// probes" is printed before attaching).
pub const BPFTRACE_SCRIPT: &str = r#"
BEGIN { printf("bench: attached\n"); }
tracepoint:syscalls:sys_enter_connect { @addr[tid] = buf(args->uservaddr, 16); }
tracepoint:syscalls:sys_exit_connect { if (args->ret < 0) { printf("connect %d %s errno=%d addr=%r\n", pid, comm, -args->ret, @addr[tid]); } delete(@addr[tid]); }
tracepoint:syscalls:sys_enter_bind { @addr[tid] = buf(args->umyaddr, 16); }
tracepoint:syscalls:sys_exit_bind { if (args->ret < 0) { printf("bind %d %s errno=%d addr=%r\n", pid, comm, -args->ret, @addr[tid]); } delete(@addr[tid]); }
tracepoint:syscalls:sys_enter_setsockopt { @opt[tid] = (args->fd, args->level, args->optname, *(int32 *)uptr(args->optval)); }
tracepoint:syscalls:sys_exit_setsockopt { $o = @opt[tid]; if (args->ret < 0) { printf("setsockopt %d %s errno=%d opt=%d/%d=%d\n", pid, comm, -args->ret, $o.1, $o.2, $o.3); } else { @opts[pid, $o.0, $o.2] = $o.3; } delete(@opt[tid]); }
"#;

/// A tracer attached system-wide for one slot of the benchmark; stopped on drop.
pub struct Running {
    child: Child,
    what: String,
    log: Option<thread::JoinHandle<Vec<String>>>,
}

impl Running {
    /// Starts the tracer of `config` (None for untraced and strace, which wraps the loop
    /// itself) and waits until it has attached.
    pub fn start(config: Config, sockerr: &Path, scratch: &Path) -> Result<Option<Running>> {
        let trace = |extra: &[&str], stdout: Stdio| -> Result<Running> {
            let mut command = Command::new(sockerr);
            command.args(["trace", "--backend", "tracepoint", "--output", "json"]).args(extra);
            command.stdout(stdout);
            Running::sockerr(command)
        };
        let floor = |extra: &[&str]| -> Result<Running> {
            let mut command = Command::new(sockerr);
            command.args(["bench-floor", "--backend", "tracepoint"]).args(extra).stdout(Stdio::null());
            Running::sockerr(command)
        };
        Ok(Some(match config {
            Config::Untraced | Config::Strace => return Ok(None),
            Config::Floor => floor(&[])?,
            Config::FloorExcluded => floor(&["--comm", NOBODY])?,
            Config::TraceDevNull => trace(&[], Stdio::null())?,
            Config::TraceExcluded => trace(&["--comm", NOBODY], Stdio::null())?,
            Config::TraceFile => {
                let path = scratch.join("trace-output.ndjson");
                let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                trace(&[], Stdio::from(file))?
            }
            Config::Bpftrace => Running::bpftrace()?,
        }))
    }

    pub fn sockerr(mut command: Command) -> Result<Running> {
        let what = crate::process::describe(&command);
        command.stdin(Stdio::null()).stderr(Stdio::piped());
        let child = command.spawn().with_context(|| format!("could not start `{what}`"))?;
        Running::wait_ready(
            child,
            what,
            |child| child.stderr.take().map(|s| Box::new(s) as _),
            "tracing started",
        )
    }

    fn bpftrace() -> Result<Running> {
        let mut command = Command::new("bpftrace");
        command
            .args(["-e", BPFTRACE_SCRIPT])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let what = "bpftrace -e <script>".to_owned();
        let child = command.spawn().context("could not start bpftrace")?;
        // Its stdout is drained by a thread, as a terminal would: the cost of writing
        // the lines stays in the measurement, like sockerr's writes to /dev/null.
        Running::wait_ready(
            child,
            what,
            |child| child.stdout.take().map(|s| Box::new(s) as _),
            "bench: attached",
        )
    }

    /// Reads `stream` until a line containing `ready`, then keeps draining it in a thread.
    fn wait_ready(
        mut child: Child,
        what: String,
        stream: impl FnOnce(&mut Child) -> Option<Box<dyn Read + Send>>,
        ready: &'static str,
    ) -> Result<Running> {
        let stream = stream(&mut child).context("stream not captured")?;
        let (tx, rx) = mpsc::channel();
        let log = thread::spawn(move || {
            let mut lines = Vec::new();
            let mut signalled = false;
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if !signalled && line.contains(ready) {
                    signalled = true;
                    let _ = tx.send(());
                }
                // Keep the log lines (sockerr's stderr), not bpftrace's records.
                if ready == "tracing started" {
                    lines.push(line);
                }
            }
            lines
        });
        let mut running = Running { child, what, log: Some(log) };
        let started = Instant::now();
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(()) => Ok(running),
            Err(_) => {
                let log = running.stop();
                bail!(
                    "`{}` did not report `{ready}` within {} s (after {:.1} s): {}",
                    running.what,
                    READY_TIMEOUT.as_secs(),
                    started.elapsed().as_secs_f64(),
                    log.join("\n")
                )
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, as a user's Ctrl-C; SIGKILL if it does not exit within 10 s. Returns the
    /// lines it logged.
    pub fn stop(&mut self) -> Vec<String> {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.log.take().and_then(|log| log.join().ok()).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The loop command of one slot: `sockerr scenario bench-loop ...`, under strace for
/// that configuration.
pub fn loop_command(config: Config, sockerr: &Path, loops: &[&str], batches: u32, batch_ms: u32) -> Command {
    let mut command = if config == Config::Strace {
        let mut strace = Command::new("strace");
        strace.args(["-f", "-e", "trace=connect,bind,setsockopt", "-o", "/dev/null"]).arg(sockerr);
        strace
    } else {
        Command::new(sockerr)
    };
    command.args(["scenario", "bench-loop", "--cpu", &loop_cpu().to_string()]);
    command.args(["--batches", &batches.to_string(), "--batch-ms", &batch_ms.to_string()]);
    for name in loops {
        command.args(["--loop", name]);
    }
    command
}

/// The last CPU: the loops run pinned there, the tracers' user space wherever the
/// scheduler puts it.
pub fn loop_cpu() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get()) - 1
}

pub fn scratch_dir(root: &Path) -> PathBuf {
    root.join("bench")
}
