//! Fixture of tests/tests/daemon.rs (`a_panicking_task_ends_the_process`): sockerr's
//! panic policy (`tracer::fatal`, installed by sockerr's `main`) in a runtime shaped like
//! the daemon's, where a spawned task panics while the main task goes on. With the policy
//! the process exits with 101 at once; without it, tokio would swallow the panic and the
//! process would print "still alive" and exit 0 after 20 s: a half-alive daemon.
#![allow(unused_crate_dependencies, reason = "a binary sees every dependency of its package")]

use std::time::Duration;

fn main() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).init();
    tracer::fatal::exit_on_panic();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let task = tokio::spawn(async { panic!("probe: a task panicked") });
        tokio::time::sleep(Duration::from_secs(20)).await;
        println!("still alive; the task ended with {:?}", task.await.err());
    });
}
