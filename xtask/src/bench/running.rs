//! A tracer process the benchmark started: sockerr (trace, daemon, bench-floor) or
//! bpftrace, ready once attached and stopped as a user would stop it.

use std::{
    fs::{self, File},
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// How long a tracer may take to attach (bpftrace compiles its script first).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A tracer attached for one slot of the benchmark; stopped on drop.
pub struct Running {
    child: Child,
    what: String,
    log: Option<thread::JoinHandle<Vec<String>>>,
}

impl Running {
    /// A sockerr command; ready at its `tracing started` log line.
    pub fn sockerr(mut command: Command) -> Result<Running> {
        let what = crate::process::describe(&command);
        command.stdin(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().with_context(|| format!("could not start `{what}`"))?;
        let stream = child.stderr.take().context("stderr not captured")?;
        let (tx, rx) = mpsc::channel();
        let log = thread::spawn(move || {
            let mut lines = Vec::new();
            let mut signalled = false;
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if !signalled && line.contains("tracing started") {
                    signalled = true;
                    let _ = tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        let mut running = Running { child, what, log: Some(log) };
        let started = Instant::now();
        if rx.recv_timeout(READY_TIMEOUT).is_err() {
            let log = running.stop();
            bail!(
                "`{}` did not report `tracing started` within {} s (after {:.1} s): {}",
                running.what,
                READY_TIMEOUT.as_secs(),
                started.elapsed().as_secs_f64(),
                log.join("\n")
            );
        }
        Ok(running)
    }

    /// bpftrace running `script`, with its records (stdout) to `output` and its
    /// diagnostics to `errors`; ready when the script's BEGIN line (`bench: attached`)
    /// reaches the file.
    pub fn bpftrace(script: &str, output: &Path, errors: &Path) -> Result<Running> {
        let out = File::create(output).with_context(|| format!("creating {}", output.display()))?;
        let err = File::create(errors).with_context(|| format!("creating {}", errors.display()))?;
        let mut command = Command::new("bpftrace");
        command.args(["-e", script]).stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command.spawn().context("could not start bpftrace")?;
        let mut running = Running { child, what: "bpftrace -e <script>".into(), log: None };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut text = String::new();
            if let Ok(mut file) = File::open(output) {
                let _ = file.read_to_string(&mut text);
            }
            if text.contains("bench: attached") {
                return Ok(running);
            }
            let exited = matches!(running.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                running.stop();
                let diagnostics = fs::read_to_string(errors).unwrap_or_default();
                bail!(
                    "bpftrace {} before attaching: {}",
                    if exited { "exited" } else { "timed out" },
                    diagnostics.trim()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, as a user's Ctrl-C; SIGKILL if it does not exit within 20 s. Returns the
    /// lines it logged.
    pub fn stop(&mut self) -> Vec<String> {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                eprintln!("bench: `{}` ignored SIGINT for 20 s: killed", self.what);
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
