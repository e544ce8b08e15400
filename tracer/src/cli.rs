//! Command line (clap derive).

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr};

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "sockerr",
    version,
    about = "Trace socket errors of proxies: what failed, on which socket, with which options, \
             and which live socket holds the tuple",
    after_help = "Run as root, or with CAP_SYS_ADMIN (CAP_BPF and CAP_PERFMON load the programs without it), \
                  CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH. Logs go to stderr; set RUST_LOG=debug for more."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace connect/bind/setsockopt of matching processes and the TCP resets of their
    /// sockets, and print each failure and reset.
    Trace(TraceArgs),
    /// Trace like `trace --output json` and serve Prometheus metrics and health over HTTP
    /// (default 127.0.0.1:9966), the live socket table apart (default 127.0.0.1:9967).
    Daemon(DaemonArgs),
    /// Reproduce a known incident in a throwaway network namespace while tracing it.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Run a scenario without tracing and print what it did as JSON (used by the
    /// end-to-end tests, by `demo` and by `cargo xtask bench`).
    #[cfg(feature = "demo")]
    #[command(hide = true)]
    Scenario(sockerr_workloads::ScenarioArgs),
    /// Attach a program that returns at once to the tracepoints `trace` would attach with
    /// these filters, until stopped: the floor of `cargo xtask bench`.
    #[command(hide = true)]
    BenchFloor(FloorArgs),
}

#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// The filters of `trace`: they decide which tracepoints it attaches (--comm adds the
    /// exec/exit ones, --http-peek the read/write family).
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Stop after this long (e.g. 30s); default: until Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One line per failure (every event with --all), repeats folded.
    Text,
    /// One JSON object per event and line (NDJSON), nothing folded.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub filters: FilterArgs,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Text output: identical failures within this window print as one line with a
    /// count (e.g. 500ms, 1s; 0 prints every failure at once).
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    pub fold: std::time::Duration,
    /// Stop after this long (e.g. 30s); default: until Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
}

/// Which processes and failures `trace` and `daemon` report.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    /// Trace only this process id (repeatable). With --comm: either matches.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Trace only processes with this name (repeatable; as in /proc/PID/comm, at most
    /// 15 bytes). Processes started later with this name are traced too.
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Trace only tasks in this cgroup v2 directory or below it: a path under the
    /// cgroup2 mount, or relative to it (e.g. /kubepods.slice/...).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Print only failures with this errno (name like EADDRNOTAVAIL, or number;
    /// repeatable). The daemon's metrics still count every failure.
    #[arg(long = "errno", value_name = "NAME|NUM", value_parser = crate::errno::parse_errno)]
    pub errnos: Vec<i32>,
    /// Report successes too: setsockopt() of the recorded options, bind() and connect().
    /// By default only failures and resets are reported (the options a socket carries
    /// travel with them); text output then prints successes too (by default it prints one
    /// line per failure).
    #[arg(long)]
    pub all: bool,
    /// Copy the first 1 KiB each way of the current exchange on the selected processes'
    /// TCP sockets, and show it with the TCP resets that follow (HTTP/1.x anomalies in
    /// text, the bytes in JSON). Off by default: it copies payload (requires --pid,
    /// --comm or --cgroup).
    #[arg(long)]
    pub http_peek: bool,
    /// Kernel hooks: `kprobe` adds the kernel function that refused a bind/connect
    /// (needs CONFIG_KPROBES and BTF); `auto` takes it when the kernel has it.
    #[arg(long, value_enum, default_value_t = crate::backend::BackendChoice::Auto)]
    pub backend: crate::backend::BackendChoice,
    /// Leave the packet-drop and listen-queue hooks unattached (skb:kfree_skb,
    /// syscalls:sys_enter_listen and sys_exit_listen): no socket_drop and no
    /// listen_overflow records, and none of their cost, e.g. on nodes where the kernel
    /// drops packets very often. Logged at start-up; the daemon's
    /// sockerr_capability_enabled says 0 for both.
    #[arg(long)]
    pub no_drop_hooks: bool,
    #[command(flatten)]
    pub attribution: crate::k8s::AttributionArgs,
    #[command(flatten)]
    pub tables: crate::kernel::tables::TableArgs,
}

/// The scrape port's default address: loopback, so a node does not expose it unless
/// asked to (`--listen 0.0.0.0:9966` for a Prometheus outside the host).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9966";
/// Where the socket table (/v1/*) is served without authentication by default.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:9967";

/// Where /v1/* is served without authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiListen {
    /// A loopback address: reachable from this network namespace only (in a pod: the pod
    /// itself, `kubectl port-forward`).
    Tcp(SocketAddr),
    /// A unix socket: mode 0600 and served to this process's user only (SO_PEERCRED).
    Unix(PathBuf),
    Off,
}

impl FromStr for ApiListen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "none" {
            return Ok(Self::Off);
        }
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a path, e.g. unix:/run/sockerr/api.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let addr: SocketAddr = text.parse().map_err(|_| {
            format!("`{text}` is neither ADDR:PORT (e.g. 127.0.0.1:9967), unix:PATH nor none")
        })?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr} is not a loopback address: --api-listen serves the socket table without \
                 authentication, so only 127.0.0.1, ::1 or unix:PATH; to serve it on a reachable \
                 address use --expose-api, which serves it on --listen to permitted Kubernetes tokens"
            ));
        }
        Ok(Self::Tcp(addr))
    }
}

impl fmt::Display for ApiListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Off => f.write_str("none"),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub filters: FilterArgs,
    /// The scrape port: /metrics, /healthz, /readyz (and /v1/* with --expose-api). Port 0
    /// picks a free port; the address in use is logged on stderr.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// Where the socket table (/v1/sockets: process names and socket tuples of every
    /// traced process) is served without authentication: a loopback address, a unix socket
    /// (unix:PATH, mode 0600, served to this user only), or `none`.
    #[arg(long, value_name = "ADDR|unix:PATH|none", default_value = DEFAULT_API_LISTEN)]
    pub api_listen: ApiListen,
    /// Also serve /v1/* on --listen, to requests whose bearer token the Kubernetes API
    /// server authenticates (TokenReview) and allows `get` on the path as a non-resource
    /// URL (SubjectAccessReview), as kube-rbac-proxy does. Uses the in-cluster service
    /// account or KUBECONFIG.
    #[arg(long)]
    pub expose_api: bool,
    /// Label connect-error metrics with the destination ip and port (one series per
    /// destination: only where destinations are few).
    #[arg(long)]
    pub metrics_dst_labels: bool,
}

#[cfg(feature = "demo")]
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[arg(value_enum)]
    pub incident: DemoIncident,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[cfg(feature = "demo")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoIncident {
    /// Envoy re-binds a client's ip:port with SO_MARK + SO_REUSEADDR while that
    /// client's connection is live: connect() fails with EADDRNOTAVAIL, 4 times.
    Cilium,
    /// Istio's sidecar resets the upstream and the client when the upstream answers
    /// with two Transfer-Encoding fields ("Chunked", "chunked"); traced with --http-peek.
    Istio,
    /// A server stops accepting: the kernel drops the handshakes its full listen queue
    /// has no room for, and the clients' connects hang.
    ListenOverflow,
}

/// Durations such as `500ms`, `2s`, `1m` or `0`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 500ms or 2s"))?;
    let millis = match unit {
        "ms" => number,
        "s" | "" => number * 1000,
        "m" => number * 60_000,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use ms, s or m)")),
    };
    Ok(std::time::Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn trace_help_names_resets() {
        let mut command = Cli::command();
        let trace = command.find_subcommand_mut("trace").unwrap();
        let help = trace.render_help().to_string();
        assert!(help.contains("TCP resets"), "{help}");
    }

    #[test]
    fn api_listen_parses_loopback_unix_and_none_only() {
        assert_eq!("127.0.0.1:9967".parse(), Ok(ApiListen::Tcp("127.0.0.1:9967".parse().unwrap())));
        assert_eq!("[::1]:0".parse(), Ok(ApiListen::Tcp("[::1]:0".parse().unwrap())));
        assert_eq!("unix:/run/s.sock".parse(), Ok(ApiListen::Unix("/run/s.sock".into())));
        assert_eq!("none".parse(), Ok(ApiListen::Off));
        let exposed = "0.0.0.0:9967".parse::<ApiListen>().unwrap_err();
        assert!(exposed.contains("not a loopback address") && exposed.contains("--expose-api"), "{exposed}");
        assert!("10.1.2.3:9967".parse::<ApiListen>().is_err());
        assert!("unix:".parse::<ApiListen>().unwrap_err().contains("needs a path"));
        assert!("localhost".parse::<ApiListen>().unwrap_err().contains("unix:PATH"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(std::time::Duration::from_secs(2)));
        assert_eq!(parse_duration("0"), Ok(std::time::Duration::ZERO));
        assert!(parse_duration("fast").unwrap_err().contains("not a duration"));
        assert!(parse_duration("3h").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn trace_flags_parse() {
        let cli = Cli::try_parse_from([
            "sockerr",
            "trace",
            "--pid",
            "1",
            "--pid",
            "2",
            "--comm",
            "envoy",
            "--errno",
            "EADDRNOTAVAIL",
            "--errno",
            "98",
            "--output",
            "json",
        ])
        .unwrap();
        let Command::Trace(args) = cli.command else { panic!("not trace") };
        assert_eq!(args.filters.pids, [1, 2]);
        assert_eq!(args.filters.comms, ["envoy"]);
        assert_eq!(args.filters.errnos, [99, 98]);
        assert_eq!(args.output, OutputFormat::Json);
    }

    #[test]
    fn daemon_flags_parse() {
        let cli =
            Cli::try_parse_from(["sockerr", "daemon", "--comm", "envoy", "--errno", "EADDRINUSE"]).unwrap();
        let Command::Daemon(args) = cli.command else { panic!("not daemon") };
        assert_eq!(args.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(args.api_listen, DEFAULT_API_LISTEN.parse().unwrap());
        assert!(!args.expose_api);
        assert_eq!(args.filters.comms, ["envoy"]);
        assert_eq!(args.filters.errnos, [98]);
        assert!(!args.metrics_dst_labels);
        let cli = Cli::try_parse_from(["sockerr", "daemon", "--listen", "[::1]:0", "--metrics-dst-labels"])
            .unwrap();
        let Command::Daemon(args) = cli.command else { panic!("not daemon") };
        assert_eq!(args.listen, "[::1]:0".parse().unwrap());
        assert!(args.metrics_dst_labels);
        let err = Cli::try_parse_from(["sockerr", "daemon", "--listen", "localhost"]).unwrap_err();
        assert!(err.to_string().contains("localhost"), "{err}");
        // Text output is trace's: the daemon prints JSON only.
        assert!(Cli::try_parse_from(["sockerr", "daemon", "--output", "text"]).is_err());
    }

    #[test]
    fn backend_flag_parses_and_defaults_to_auto() {
        use crate::backend::BackendChoice;
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Trace(trace) = cli.command else { panic!("not trace") };
            trace.filters.backend
        };
        assert_eq!(parse(&["sockerr", "trace"]), BackendChoice::Auto);
        assert_eq!(parse(&["sockerr", "trace", "--backend", "kprobe"]), BackendChoice::Kprobe);
        assert_eq!(parse(&["sockerr", "trace", "--backend", "tracepoint"]), BackendChoice::Tracepoint);
        assert!(Cli::try_parse_from(["sockerr", "trace", "--backend", "fentry"]).is_err());
    }

    #[test]
    fn no_drop_hooks_parses_on_trace_daemon_and_the_floor_and_defaults_to_off() {
        let filters = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Trace(trace) => trace.filters,
            Command::Daemon(daemon) => daemon.filters,
            Command::BenchFloor(floor) => floor.filters,
            #[cfg(feature = "demo")]
            _ => panic!("not a tracing command"),
        };
        assert!(!filters(&["sockerr", "trace"]).no_drop_hooks);
        assert!(!filters(&["sockerr", "daemon"]).no_drop_hooks);
        assert!(filters(&["sockerr", "trace", "--no-drop-hooks", "--output", "json"]).no_drop_hooks);
        assert!(filters(&["sockerr", "daemon", "--comm", "envoy", "--no-drop-hooks"]).no_drop_hooks);
        assert!(filters(&["sockerr", "bench-floor", "--no-drop-hooks"]).no_drop_hooks);
        let help = Cli::command().find_subcommand_mut("daemon").unwrap().render_help().to_string();
        assert!(help.contains("--no-drop-hooks") && help.contains("skb:kfree_skb"), "{help}");
    }

    #[test]
    fn no_drop_hooks_takes_no_value_and_is_given_once() {
        let err = Cli::try_parse_from(["sockerr", "trace", "--no-drop-hooks=yes"]).unwrap_err().to_string();
        assert!(err.contains("--no-drop-hooks"), "{err}");
        let err = Cli::try_parse_from(["sockerr", "daemon", "--no-drop-hooks", "--no-drop-hooks"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--no-drop-hooks") && err.contains("cannot be used multiple times"), "{err}");
        // A misspelling is not taken for something else.
        let err = Cli::try_parse_from(["sockerr", "trace", "--no-drops"]).unwrap_err().to_string();
        assert!(err.contains("--no-drops"), "{err}");
    }

    #[test]
    fn bench_floor_takes_the_trace_filters() {
        let cli =
            Cli::try_parse_from(["sockerr", "bench-floor", "--comm", "envoy", "--duration", "2s"]).unwrap();
        let Command::BenchFloor(args) = cli.command else { panic!("not bench-floor") };
        assert_eq!(args.filters.comms, ["envoy"]);
        assert_eq!(args.duration, Some(std::time::Duration::from_secs(2)));
        let help = Cli::command().render_help().to_string();
        assert!(!help.contains("bench-floor"), "hidden from --help: {help}");
    }

    #[test]
    fn bad_flags_are_errors() {
        assert!(Cli::try_parse_from(["sockerr", "trace", "--pid", "abc"]).is_err());
        let err = Cli::try_parse_from(["sockerr", "trace", "--errno", "ENOTANERRNO"]).unwrap_err();
        assert!(err.to_string().contains("ENOTANERRNO"), "{err}");
        assert!(Cli::try_parse_from(["sockerr", "trace", "--output", "xml"]).is_err());
    }

    #[test]
    fn table_sizes_parse_on_trace_and_daemon_and_refuse_zero() {
        for subcommand in ["trace", "daemon"] {
            let cli =
                Cli::try_parse_from(["sockerr", subcommand, "--owner-table-entries", "131072"]).unwrap();
            let filters = match cli.command {
                Command::Trace(args) => args.filters,
                Command::Daemon(args) => args.filters,
                _ => panic!("not {subcommand}"),
            };
            assert_eq!(filters.tables.owner_table_entries, Some(131072));
            let err = Cli::try_parse_from(["sockerr", subcommand, "--drop-table-entries", "0"]).unwrap_err();
            let err = err.to_string();
            assert!(err.contains("--drop-table-entries") && err.contains("at least 1 entry"), "{err}");
        }
    }

    #[test]
    fn sizing_a_table_of_hooks_left_out_is_refused() {
        for flag in ["--drop-table-entries", "--listener-table-entries"] {
            let err =
                Cli::try_parse_from(["sockerr", "daemon", "--no-drop-hooks", flag, "8192"]).unwrap_err();
            let err = err.to_string();
            assert!(err.contains(flag) && err.contains("--no-drop-hooks"), "{err}");
        }
        assert!(
            Cli::try_parse_from(["sockerr", "daemon", "--no-drop-hooks", "--owner-table-entries", "8"])
                .is_ok()
        );
    }
}
