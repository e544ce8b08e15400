#![allow(unused_crate_dependencies, reason = "a binary sees every dependency of its package")]

use std::{io::IsTerminal, process::ExitCode};

use anyhow::Context;
use clap::Parser;
use tracer::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    tracer::fatal::exit_on_panic();
    let result = match cli.command {
        Command::Trace(args) => {
            runtime().and_then(|rt| Ok(rt.block_on(tracer::trace::run(args)).map(drop)?))
        }
        Command::Daemon(args) => runtime().and_then(|rt| {
            let result = rt.block_on(tracer::daemon::run(args));
            // A lookup still blocking in a namespace must not hold up the exit.
            rt.shutdown_timeout(std::time::Duration::from_millis(300));
            Ok(result.map(drop)?)
        }),
        #[cfg(feature = "demo")]
        Command::Demo(args) => runtime().and_then(|rt| Ok(rt.block_on(tracer::demo::run(args))?)),
        // No async runtime on purpose: the scenario unshares its network namespace and
        // starts actors, which must not race with runtime threads.
        #[cfg(feature = "demo")]
        Command::Scenario(args) => sockerr_workloads::run(args).context("scenario failed"),
        Command::BenchFloor(args) => {
            runtime().and_then(|rt| Ok(rt.block_on(tracer::bench_floor::run(args))?))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sockerr: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Logs to stderr (stdout carries only records); RUST_LOG overrides the level.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = tracer::k8s::quiet_client_logs(filter, std::env::var("RUST_LOG").ok().as_deref());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// `sockerr trace | head` ends with EPIPE on stdout: the reader left, not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
