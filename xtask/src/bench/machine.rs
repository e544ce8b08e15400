//! The machine a run measured, for the head of BENCHMARKS.md.

use std::{fs, process::Command};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::process::stdout_of;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub rustc: String,
    pub bpftrace: String,
    pub strace: String,
    pub date: String,
}

pub fn describe() -> Result<Machine> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name").and_then(|rest| rest.split_once(':')).map(|(_, v)| v.trim())
        })
        .unwrap_or("unknown")
        .to_owned();
    let first_line = |command: &mut Command| {
        stdout_of(command)
            .map(|out| out.lines().next().unwrap_or("").trim().to_owned())
            .unwrap_or_else(|_| "?".into())
    };
    Ok(Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: first_line(Command::new("uname").arg("-r")),
        rustc: first_line(Command::new("rustc").arg("-V")),
        bpftrace: first_line(Command::new("bpftrace").arg("--version")),
        strace: first_line(Command::new("strace").arg("-V")),
        date: first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
    })
}
