//! `sockerr demo <incident>`: the incident reproduced by `sockerr scenario` in a
//! throwaway network namespace, traced by this process, so a newcomer sees sockerr
//! work in seconds. The scenario code is the one the end-to-end tests run.

use std::{process::Stdio, time::Duration};

use thiserror::Error;
use tokio::{process::Command, sync::oneshot};

use crate::{
    cli::{DemoArgs, DemoIncident},
    kernel::loader::Selection,
    output::{OutputOptions, StdoutSink},
    trace::{TraceError, Tracer},
};

#[derive(Debug, Error)]
pub enum DemoError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("cannot find sockerr's own executable to run the scenario")]
    Exe(#[source] std::io::Error),
    #[error("cannot run the scenario")]
    Spawn(#[source] std::io::Error),
    #[error("the scenario failed ({status}); its output is above")]
    Scenario { status: std::process::ExitStatus },
}

/// Time for records still in flight after the scenario ends (lookups, the ring poll).
const GRACE: Duration = Duration::from_millis(300);

pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let (scenario, comms, http_peek): (_, &[&str], _) = match args.incident {
        DemoIncident::Cilium => ("cilium", &["demo-proxy"], false),
        DemoIncident::Istio => ("proxy-reset", &["demo-proxy", "demo-client", "demo-upstream"], true),
        DemoIncident::ListenOverflow => ("listen-overflow", &["demo-server"], false),
    };
    let exe = std::env::current_exe().map_err(DemoError::Exe)?;
    let comms = comms.iter().map(|c| c.to_string()).collect();
    let selection = Selection { comms, http_peek, ..Default::default() };
    let output = OutputOptions {
        format: args.output,
        fold: Duration::from_millis(500),
        errnos: Vec::new(),
        text_successes: false,
    };
    let tracer = Tracer::start(&selection)?;
    eprintln!("{}", intro(args.incident));

    let child = Command::new(exe)
        .args(["scenario", scenario])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(DemoError::Spawn)?;
    let (ended, scenario_ended) = oneshot::channel();
    let waiter = tokio::spawn(async move {
        let status = child.wait_with_output().await.map(|out| out.status);
        let _ = ended.send(());
        status
    });
    let stop = async {
        let _ = scenario_ended.await;
        tokio::time::sleep(GRACE).await;
    };
    tracer.run_until(stop, &mut StdoutSink::new(&output), None).await?;
    let status = waiter
        .await
        .map_err(|join| DemoError::Spawn(std::io::Error::other(join)))?
        .map_err(DemoError::Spawn)?;
    if !status.success() {
        return Err(DemoError::Scenario { status });
    }
    eprintln!("{}", outro(args.incident));
    Ok(())
}

fn intro(incident: DemoIncident) -> &'static str {
    match incident {
        DemoIncident::Cilium => {
            "demo: Cilium's Envoy incident, replayed in a throwaway network namespace.\n\
             demo-client holds 127.0.0.7:40312 -> 127.0.0.19:443; demo-proxy (like Envoy) sets SO_MARK \
             0x32030b00, SO_REUSEADDR and IP_TRANSPARENT, binds the client's ip:port and connects to \
             the same upstream, 4 times (1 try + 3 retries). sockerr traces demo-proxy:"
        }
        DemoIncident::Istio => {
            "demo: Istio's upstream reset incident, replayed in a throwaway network namespace.\n\
             demo-client sends GET /wrong to demo-proxy (like Envoy) on 127.0.0.1:15001, which forwards it to \
             demo-upstream on 127.0.0.1:8080; the answer carries `Transfer-Encoding: Chunked` and \
             `Transfer-Encoding: chunked`, so the proxy resets both connections. sockerr traces the three \
             with --http-peek:"
        }
        DemoIncident::ListenOverflow => {
            "demo: a server that stopped accepting, replayed in a throwaway network namespace.\n\
             demo-server listens on 127.0.0.1:8080 with a backlog of 2 and never calls accept(); demo-client \
             opens 8 connections and retries its SYNs for 2.5 s. sockerr traces demo-server:"
        }
    }
}

fn outro(incident: DemoIncident) -> &'static str {
    match incident {
        DemoIncident::Cilium => {
            "demo: Envoy only logged \"immediate connect error: 99\" and answered 503. sockerr names the \
             socket, its options, the tuple and the live socket that holds it."
        }
        DemoIncident::Istio => {
            "demo: Envoy only logged \"upstream_reset_before_response_started{protocol_error}\" and answered \
             502. sockerr names who reset which connection, and the response header that made it do so."
        }
        DemoIncident::ListenOverflow => {
            "demo: the server logged nothing and the clients only saw connects time out; netstat shows \
             ListenOverflows for the whole namespace. sockerr names the listener's process, fd, address, \
             queue and backlog, and how many handshakes it dropped."
        }
    }
}
