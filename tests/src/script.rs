//! A python3 script in a network namespace of its own, driven line by line over stdin:
//! the tracers attach to its pid before it starts, and it prints its facts as JSON.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;

use crate::patience;

/// How long a script may take for one step.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// A python3 script in a network namespace of its own, driven line by line over stdin;
/// killed and reaped when dropped (the namespace goes with it).
pub struct Script {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Script {
    /// Starts `python` (a path to python3, or a link to it) on `source` in a new network
    /// namespace with loopback up.
    pub fn start(python: &str, source: &str) -> Self {
        let mut child = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", "ip link set lo up && exec \"$0\" -c \"$1\"", python, source])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unshare starts (util-linux)");
        let stdin = child.stdin.take();
        let stdout: ChildStdout = child.stdout.take().expect("piped");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, stdin, lines }
    }

    /// The script's pid (unshare and sh exec into python3: one process throughout).
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends one line: the script's next step starts.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(b"go\n").and_then(|()| stdin.flush()).expect("the script reads stdin");
    }

    /// The script's next line of stdout, as JSON.
    pub fn facts(&self) -> Value {
        self.facts_within(STEP_TIMEOUT)
    }

    /// As [`Script::facts`], for a step that may take up to `timeout` (scaled).
    pub fn facts_within(&self, timeout: Duration) -> Value {
        let line = self
            .lines
            .recv_timeout(patience(timeout))
            .unwrap_or_else(|e| panic!("the script printed nothing within {:?}: {e}", patience(timeout)));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
