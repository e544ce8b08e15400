//! Prometheus metrics of the daemon (prometheus-client, OpenMetrics text).
//!
//! Every record counts: folding is a text-output matter and never reaches these counters.
//! Cardinality is bounded: labels are errno, cause, option and result names (small fixed
//! sets), the process name and the pod namespace (bounded in practice, and capped here
//! per metric: increments that would create one label set too many are counted in
//! `sockerr_metrics_overflow_total` instead), and destination ip and port only with
//! `--metrics-dst-labels`.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};
use tracer_common::Loss;

use crate::{
    capability::{Capabilities, Off},
    drops::SocketDrop,
    errno::errno_name,
    listen::{ListenOverflow, ListenWatch},
    output::NamedOption,
    record::{Cause, EventName, Record},
    reset::ResetOwner,
    sink::{Sink, Totals},
};

/// Label sets a labelled metric may grow to before further ones count as overflow: far
/// more than (errnos x causes x processes x namespaces) on a node in practice, small
/// enough that a runaway label (or --metrics-dst-labels on a busy node) cannot exhaust
/// memory or the scraper.
pub const MAX_LABEL_SETS: usize = 2000;

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;

/// A labelled counter that stops growing label sets at the cap.
struct Capped {
    name: &'static str,
    family: Counters,
    /// prometheus-client counts a family's label sets only in its test builds.
    label_sets: AtomicUsize,
}

impl Capped {
    fn register(registry: &mut Registry, name: &'static str, help: &str) -> Self {
        let family = Counters::default();
        registry.register(name, help, family.clone());
        Self { name, family, label_sets: AtomicUsize::new(0) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsOptions {
    /// Label connect errors (and tuple conflicts of connects) with dst_ip and dst_port.
    pub dst_labels: bool,
    pub max_label_sets: usize,
}

/// What `sockerr_build_info` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: String,
    pub git_sha: String,
    pub kernel: String,
}

impl BuildInfo {
    /// This binary on this kernel.
    pub fn current() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            git_sha: git_sha().to_owned(),
            kernel: crate::kernel::tracefs::kernel_release(),
        }
    }
}

/// The commit this binary was built from: `SOCKERR_GIT_SHA` when the builder set it,
/// else the checkout's HEAD as build.rs found it; "unknown" outside a git checkout.
fn git_sha() -> &'static str {
    option_env!("SOCKERR_GIT_SHA").or(option_env!("SOCKERR_BUILD_GIT_SHA")).unwrap_or("unknown")
}

pub struct Metrics {
    registry: Registry,
    options: MetricsOptions,
    connect_errors: Capped,
    bind_errors: Capped,
    setsockopt_calls: Capped,
    tuple_conflicts: Capped,
    resets: Capped,
    listen_overflows: Capped,
    listen_unwatched: Counters,
    socket_drops: Capped,
    ports_in_use: Gauges,
    ports_available: Gauges,
    port_unsampled: Counters,
    overflow: Counters,
    events: Counter,
    events_lost: Family<Vec<(&'static str, &'static str)>, Counter>,
    records_undecodable: Counter,
    loss_read_errors: Counter,
    kernel_log_unreadable: Counter,
    table_forgotten: Counters,
    capabilities: Gauges,
}

impl Metrics {
    pub fn new(options: MetricsOptions, build: BuildInfo) -> Self {
        let mut registry = Registry::with_prefix("sockerr");
        let connect_errors = Capped::register(
            &mut registry,
            "connect_errors",
            "Failed connect() calls, synchronous or not, by errno, cause, process name and pod namespace",
        );
        let bind_errors = Capped::register(
            &mut registry,
            "bind_errors",
            "Failed bind() calls by errno, cause, process name and pod namespace",
        );
        let setsockopt_calls = Capped::register(
            &mut registry,
            "setsockopt_calls",
            "setsockopt() calls of the recorded options (SO_MARK, SO_REUSEADDR, IP_TRANSPARENT, ...) by option and result (result ok only with --all)",
        );
        let tuple_conflicts = Capped::register(
            &mut registry,
            "tuple_conflicts",
            "Failures because a live socket held the tuple (tuple_in_use) or the local port (port_in_use)",
        );
        let resets = Capped::register(
            &mut registry,
            "resets",
            "TCP resets sent or received, by direction, process name (\"kernel\" when no traced process owns the socket), the kernel's reason and pod namespace",
        );
        let listen_overflows = Capped::register(
            &mut registry,
            "listen_overflows",
            "Handshake segments a traced process's listener discarded (its sk_drops: one per SYN refused at a full accept or SYN queue), by process name, listening port and pod namespace",
        );
        let listen_unwatched = Counters::default();
        registry.register(
            "listen_unwatched",
            "Listeners of traced processes whose drops are not counted, by reason (full, no_inode, no_drop_counter, sample_failed)",
            listen_unwatched.clone(),
        );
        let socket_drops = Capped::register(
            &mut registry,
            "socket_drops",
            "Packets the kernel dropped on sockets of traced processes, by process name, the kernel's drop reason and pod namespace",
        );
        let (ports_in_use, ports_available) = (Gauges::default(), Gauges::default());
        registry.register(
            "ephemeral_ports_in_use",
            "Ports a new connect() to this destination could not use (connected to it from src_ip, or held by bind()), for the busiest destinations of the traced processes' network namespaces; refreshed every 5 s",
            ports_in_use.clone(),
        );
        registry.register(
            "ephemeral_ports_available",
            "Ports connect() may choose from in that namespace (ip_local_port_range less ip_local_reserved_ports), with the same labels as sockerr_ephemeral_ports_in_use",
            ports_available.clone(),
        );
        let port_unsampled = Counters::default();
        for reason in crate::ports::Unsampled::ALL {
            let _ = port_unsampled.get_or_create(&vec![("reason", reason.name().to_owned())]);
        }
        registry.register(
            "port_namespaces_unsampled",
            "Network namespaces of traced processes whose ports were not counted in a round, by reason",
            port_unsampled.clone(),
        );
        let overflow = Counters::default();
        registry.register(
            "metrics_overflow",
            "Increments not counted in a metric because it reached its cap of label sets, by metric",
            overflow.clone(),
        );
        let (events, records_undecodable): (Counter, Counter) = Default::default();
        registry.register("events", "Kernel events read from the ring buffer", Counter::clone(&events));
        let events_lost = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        // Every reason from the start: a scraper sees 0, not an absent series, until one counts.
        for reason in Loss::ALL {
            let _ = events_lost.get_or_create(&vec![("reason", reason.name())]);
        }
        registry.register(
            "events_lost",
            "What the kernel side dropped or degraded, by reason (ring_full: the ring buffer was full; \
             the others are listed in docs/design.md)",
            events_lost.clone(),
        );
        registry.register(
            "records_undecodable",
            "Ring-buffer records that did not decode (daemon and kernel programs out of sync)",
            Counter::clone(&records_undecodable),
        );
        let loss_read_errors = Counter::default();
        registry.register(
            "loss_counter_read_errors",
            "Failed reads of the kernel's loss counter: sockerr_events_lost_total may be short (see the daemon's log)",
            Counter::clone(&loss_read_errors),
        );
        let kernel_log_unreadable = Counter::default();
        registry.register(
            "kernel_log_records_unreadable",
            "Records of the kernel programs' log ring (their aya-log lines) that did not decode: those lines \
             are lost (daemon and programs disagree on the record format; see the daemon's log)",
            Counter::clone(&kernel_log_unreadable),
        );
        let table_forgotten = Counters::default();
        registry.register(
            "table_forgotten",
            "Entries the socket table dropped to stay bounded: live sockets (least recently seen; later records lack their options and last error) and generations of closed sockets (the next socket on that fd restarts at generation 0)",
            table_forgotten.clone(),
        );
        let capabilities = Gauges::default();
        registry.register(
            "capability_enabled",
            "1 when sockerr makes this kind of record (listen_overflow, socket_drop), 0 when it cannot, by \
             off_reason (no_drop_hooks: started with --no-drop-hooks; kernel: this kernel lacks the hook); set \
             once the programs are attached",
            capabilities.clone(),
        );
        let build_labels: Labels =
            vec![("version", build.version), ("git_sha", build.git_sha), ("kernel", build.kernel)];
        registry.register("build", "The sockerr build and the kernel it runs on", Info::new(build_labels));
        Self {
            registry,
            options,
            connect_errors,
            bind_errors,
            setsockopt_calls,
            tuple_conflicts,
            resets,
            listen_overflows,
            listen_unwatched,
            socket_drops,
            ports_in_use,
            ports_available,
            port_unsampled,
            overflow,
            events,
            events_lost,
            records_undecodable,
            loss_read_errors,
            kernel_log_unreadable,
            table_forgotten,
            capabilities,
        }
    }

    /// What this run can report: one series per capability, set once after loading.
    pub(crate) fn set_capabilities(&self, capabilities: &Capabilities) {
        for (capability, off) in capabilities.each() {
            let labels = vec![
                ("capability", capability.name().to_owned()),
                ("off_reason", off.map_or("none", Off::name).to_owned()),
            ];
            self.capabilities.get_or_create(&labels).set(i64::from(off.is_none()));
        }
    }

    /// The registry, for counters kept elsewhere (the HTTP server's) to join /metrics.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Counts one record.
    pub fn observe(&self, record: &Record) {
        match record.event {
            EventName::ConnectError => {
                self.count(&self.connect_errors, self.failure_labels(record));
            }
            EventName::BindError => {
                self.count(&self.bind_errors, self.failure_labels(record));
            }
            EventName::Sockopt => {
                if let Some(call) = record.sockopt {
                    let option = NamedOption::of_call(call).name.to_owned();
                    let result = record.errno.map_or_else(|| "ok".to_owned(), errno_label);
                    let labels = vec![("option", option), ("result", result)];
                    self.count(&self.setsockopt_calls, labels);
                }
            }
            EventName::RstSent | EventName::RstReceived => {
                self.count(&self.resets, self.reset_labels(record))
            }
            EventName::Connect | EventName::Bind => {}
        }
        if let Some(cause @ (Cause::TupleInUse | Cause::PortInUse)) = record.cause {
            let mut labels = vec![("cause", cause.as_str().to_owned())];
            labels.extend(self.who_and_where(record));
            self.count(&self.tuple_conflicts, labels);
        }
    }

    /// Counts the drops of one listener in one interval.
    pub fn observe_listen_overflow(&self, overflow: &ListenOverflow) {
        let owner = &overflow.owner;
        let namespace = owner.pod.as_ref().and_then(|pod| pod.namespace.clone()).unwrap_or_default();
        let labels = vec![
            ("comm", owner.comm.clone()),
            ("port", overflow.local.port().to_string()),
            ("pod_namespace", namespace),
        ];
        self.count_by(&self.listen_overflows, labels, overflow.dropped);
    }

    /// Counts the drops of one traced socket for one reason in one interval.
    pub fn observe_socket_drop(&self, drop: &SocketDrop) {
        let reason = drop.reason.clone().unwrap_or_else(|| drop.reason_code.to_string());
        let namespace = drop.pod.as_ref().and_then(|pod| pod.namespace.clone()).unwrap_or_default();
        let labels = vec![("comm", drop.comm.clone()), ("reason", reason), ("pod_namespace", namespace)];
        self.count_by(&self.socket_drops, labels, drop.dropped);
    }

    /// Replaces the port gauges with this round's busiest destinations (a destination no
    /// longer among them leaves /metrics), and counts the namespaces not sampled.
    pub fn update_ports(&self, round: &crate::ports::Round) {
        self.ports_in_use.clear();
        self.ports_available.clear();
        for named in &round.busiest {
            let usage = &named.usage;
            let namespace = named.pod.as_ref().and_then(|pod| pod.namespace.clone()).unwrap_or_default();
            let labels = vec![
                ("netns", named.netns.to_string()),
                ("src_ip", usage.destination.local_ip.to_string()),
                ("dst", usage.destination.remote.to_string()),
                ("comm", named.comm.clone().unwrap_or_default()),
                ("pod_namespace", namespace),
            ];
            self.ports_in_use.get_or_create(&labels).set(i64::from(usage.in_use));
            self.ports_available.get_or_create(&labels).set(i64::from(usage.size));
        }
        for reason in &round.unsampled {
            self.port_unsampled.get_or_create(&vec![("reason", reason.name().to_owned())]).inc();
        }
    }

    /// Brings the listener watch's running counts of unwatched listeners in.
    pub fn update_listen_watch(&self, watch: &ListenWatch) {
        for (reason, total) in watch.unwatched() {
            let counter = self.listen_unwatched.get_or_create(&vec![("reason", reason.as_str().to_owned())]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Brings the run loop's totals into the counters (they only ever grow).
    pub fn update(&self, totals: &Totals) {
        for (counter, total) in [
            (&self.events, totals.events),
            (&self.records_undecodable, totals.undecodable),
            (&self.loss_read_errors, totals.loss_read_errors),
            (&self.kernel_log_unreadable, totals.kernel_log_unreadable),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        for (reason, total) in totals.lost.by_reason() {
            let counter = self.events_lost.get_or_create(&vec![("reason", reason.name())]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let forgotten = totals.table_forgotten;
        for (what, total) in [("socket", forgotten.sockets), ("generation", forgotten.generations)] {
            let counter = self.table_forgotten.get_or_create(&vec![("what", what.to_owned())]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail, and every label here is a plain string.
        encode(&mut text, &self.registry).expect("metrics encode into a String");
        text
    }

    fn failure_labels(&self, record: &Record) -> Labels {
        let errno = record.errno.map_or_else(String::new, errno_label);
        let cause = record.cause.map_or("", Cause::as_str).to_owned();
        let mut labels = vec![("errno", errno), ("cause", cause)];
        labels.extend(self.who_and_where(record));
        labels
    }

    fn reset_labels(&self, record: &Record) -> Labels {
        let direction = if record.event == EventName::RstSent { "sent" } else { "received" };
        let details = record.reset.as_deref();
        let by_kernel = details.is_none_or(|d| d.owner == ResetOwner::Kernel);
        let comm = if by_kernel { "kernel".to_owned() } else { record.comm.clone() };
        let reason = details.and_then(|d| d.reason_name.clone()).unwrap_or_default();
        let namespace = record.pod.as_ref().and_then(|pod| pod.namespace.clone()).unwrap_or_default();
        vec![
            ("direction", direction.to_owned()),
            ("comm", comm),
            ("reason", reason),
            ("pod_namespace", namespace),
        ]
    }

    /// Process name, pod namespace ("" outside pods) and, when asked for, destination.
    fn who_and_where(&self, record: &Record) -> Labels {
        let namespace = record.pod.as_ref().and_then(|pod| pod.namespace.clone()).unwrap_or_default();
        let mut labels = vec![("comm", record.comm.clone()), ("pod_namespace", namespace)];
        if self.options.dst_labels
            && let Some(dst) = record.dst
        {
            labels.push(("dst_ip", dst.ip().to_string()));
            labels.push(("dst_port", dst.port().to_string()));
        }
        labels
    }

    fn count(&self, metric: &Capped, labels: Labels) {
        self.count_by(metric, labels, 1);
    }

    fn count_by(&self, metric: &Capped, labels: Labels, by: u64) {
        if let Some(counter) = metric.family.get(&labels) {
            counter.inc_by(by);
            return;
        }
        // Only the run loop writes, so the count cannot change between check and insert.
        if metric.label_sets.load(Ordering::Relaxed) >= self.options.max_label_sets {
            self.overflow.get_or_create(&vec![("metric", format!("sockerr_{}", metric.name))]).inc();
            return;
        }
        metric.label_sets.fetch_add(1, Ordering::Relaxed);
        metric.family.get_or_create(&labels).inc_by(by);
    }
}

fn errno_label(errno: i32) -> String {
    errno_name(errno).map_or_else(|| errno.to_string(), str::to_owned)
}

/// Feeds [`Metrics`] from the run loop.
pub struct MetricsSink(pub Arc<Metrics>);

impl Sink for MetricsSink {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        self.0.observe(record);
        Ok(())
    }

    fn progress(&mut self, totals: &Totals) -> io::Result<()> {
        self.0.update(totals);
        Ok(())
    }

    fn listen_overflow(&mut self, overflow: &ListenOverflow) -> io::Result<()> {
        self.0.observe_listen_overflow(overflow);
        Ok(())
    }

    fn listen_watch(&mut self, watch: &ListenWatch) {
        self.0.update_listen_watch(watch);
    }

    fn port_round(&mut self, round: &crate::ports::Round) -> io::Result<()> {
        self.0.update_ports(round);
        Ok(())
    }

    fn socket_drop(&mut self, drop: &SocketDrop) -> io::Result<()> {
        self.0.observe_socket_drop(drop);
        Ok(())
    }

    fn finish(&mut self, totals: &Totals) -> io::Result<()> {
        self.0.update(totals);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::options::FLAG_SO_MARK;

    use super::*;
    use crate::{
        kernel::loader::Losses,
        record::{PodIdentity, SockoptCall},
        testing::{addr, cilium_incident, istio_reset, record},
    };

    fn metrics(dst_labels: bool, max_label_sets: usize) -> Metrics {
        let build = BuildInfo { version: "0.1.0".into(), git_sha: "abc123".into(), kernel: "6.18.0".into() };
        Metrics::new(MetricsOptions { dst_labels, max_label_sets }, build)
    }

    /// The sample lines of the exposition (no comments), in order.
    fn samples(metrics: &Metrics) -> Vec<String> {
        metrics.encode().lines().filter(|line| !line.starts_with('#')).map(str::to_owned).collect()
    }

    fn in_pod(record: Record, namespace: &str) -> Record {
        Record {
            pod: Some(PodIdentity { namespace: Some(namespace.into()), ..Default::default() }),
            ..record
        }
    }

    /// Built from a git checkout (as every developer and CI build is), the binary names
    /// its commit: it said "unknown" while nothing computed the value.
    #[test]
    fn build_info_names_the_commit_of_the_checkout() {
        let head = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
        match (option_env!("SOCKERR_GIT_SHA"), head) {
            (Some(given), _) => assert_eq!(BuildInfo::current().git_sha, given),
            (None, Some(head)) => assert_eq!(BuildInfo::current().git_sha, head),
            (None, None) => assert_eq!(BuildInfo::current().git_sha, "unknown", "not a git checkout"),
        }
    }

    #[test]
    fn cilium_retries_count_four_times_each() {
        let metrics = metrics(false, MAX_LABEL_SETS);
        for _ in 0..4 {
            metrics.observe(&cilium_incident());
        }
        let samples = samples(&metrics);
        let connect = r#"sockerr_connect_errors_total{errno="EADDRNOTAVAIL",cause="tuple_in_use",comm="envoy",pod_namespace=""} 4"#;
        let conflict =
            r#"sockerr_tuple_conflicts_total{cause="tuple_in_use",comm="envoy",pod_namespace=""} 4"#;
        assert!(samples.contains(&connect.to_owned()), "{samples:#?}");
        assert!(samples.contains(&conflict.to_owned()), "{samples:#?}");
        assert!(!samples.iter().any(|s| s.starts_with("sockerr_bind_errors_total")), "{samples:#?}");
        assert!(!samples.iter().any(|s| s.contains("dst_ip")), "no destination without the flag");
    }

    #[test]
    fn bind_errors_setsockopt_and_pod_namespace() {
        let metrics = metrics(false, MAX_LABEL_SETS);
        let bind = Record {
            errno: Some(98),
            cause: Some(Cause::PortInUse),
            src: Some(addr("10.0.1.7:8080")),
            ..record(EventName::BindError)
        };
        metrics.observe(&in_pod(bind, "payments"));
        let mark = SockoptCall { flag: FLAG_SO_MARK, value: Some(0x0b00) };
        metrics.observe(&Record { sockopt: Some(mark), ..record(EventName::Sockopt) });
        metrics.observe(&Record { sockopt: Some(mark), errno: Some(1), ..record(EventName::Sockopt) });
        metrics.observe(&record(EventName::Connect));
        let samples = samples(&metrics);
        for expected in [
            r#"sockerr_bind_errors_total{errno="EADDRINUSE",cause="port_in_use",comm="envoy",pod_namespace="payments"} 1"#,
            r#"sockerr_tuple_conflicts_total{cause="port_in_use",comm="envoy",pod_namespace="payments"} 1"#,
            r#"sockerr_setsockopt_calls_total{option="SO_MARK",result="ok"} 1"#,
            r#"sockerr_setsockopt_calls_total{option="SO_MARK",result="EPERM"} 1"#,
        ] {
            assert!(samples.contains(&expected.to_owned()), "missing {expected} in {samples:#?}");
        }
        assert!(!samples.iter().any(|s| s.starts_with("sockerr_connect_errors_total")), "{samples:#?}");
    }

    #[test]
    fn resets_by_direction_process_and_reason() {
        let metrics = metrics(false, MAX_LABEL_SETS);
        metrics.observe(&istio_reset());
        metrics.observe(&istio_reset());
        let mut kernel = istio_reset();
        kernel.event = EventName::RstReceived;
        if let Some(details) = kernel.reset.as_deref_mut() {
            details.owner = ResetOwner::Kernel;
            details.reason_name = None;
        }
        metrics.observe(&kernel);
        let samples = samples(&metrics);
        let sent =
            r#"sockerr_resets_total{direction="sent",comm="proxy",reason="TCP_STATE",pod_namespace=""} 2"#;
        let received =
            r#"sockerr_resets_total{direction="received",comm="kernel",reason="",pod_namespace=""} 1"#;
        assert!(samples.contains(&sent.to_owned()), "{samples:#?}");
        assert!(samples.contains(&received.to_owned()), "{samples:#?}");
        assert!(!samples.iter().any(|s| s.starts_with("sockerr_connect_errors_total")), "{samples:#?}");
    }

    #[test]
    fn destination_labels_only_when_asked() {
        let metrics = metrics(true, MAX_LABEL_SETS);
        metrics.observe(&cilium_incident());
        let samples = samples(&metrics);
        let connect = r#"sockerr_connect_errors_total{errno="EADDRNOTAVAIL",cause="tuple_in_use",comm="envoy",pod_namespace="",dst_ip="52.216.8.19",dst_port="443"} 1"#;
        assert!(samples.contains(&connect.to_owned()), "{samples:#?}");
    }

    #[test]
    fn label_sets_are_capped_and_the_rest_counted_as_overflow() {
        let metrics = metrics(false, 2);
        for comm in ["a", "b", "c", "c", "a", "d"] {
            metrics.observe(&Record { comm: comm.into(), ..cilium_incident() });
        }
        let samples = samples(&metrics);
        // The exposition lists label sets in no particular order.
        let mut connect: Vec<&String> =
            samples.iter().filter(|s| s.starts_with("sockerr_connect_errors_total")).collect();
        connect.sort();
        assert_eq!(connect.len(), 2, "{samples:#?}");
        assert!(connect[0].contains(r#"comm="a""#) && connect[0].ends_with(" 2"), "{connect:?}");
        assert!(connect[1].contains(r#"comm="b""#) && connect[1].ends_with(" 1"), "{connect:?}");
        // c twice and d: counted, just not under their own labels. Every failure counts once.
        for metric in ["sockerr_connect_errors", "sockerr_tuple_conflicts"] {
            let overflow = format!(r#"sockerr_metrics_overflow_total{{metric="{metric}"}} 3"#);
            assert!(samples.contains(&overflow), "missing {overflow} in {samples:#?}");
        }
    }

    #[test]
    fn totals_become_counters_and_build_info_is_there() {
        let metrics = metrics(false, MAX_LABEL_SETS);
        let mut lost = Losses::default();
        lost.0[Loss::RingFull.index() as usize] = 2;
        metrics.update(&Totals { events: 10, lost, ..Totals::default() });
        lost.0[Loss::UserReadFault.index() as usize] = 1;
        let forgotten = crate::table::Forgotten { sockets: 3, generations: 7 };
        metrics.update(&Totals {
            events: 25,
            lost,
            undecodable: 1,
            loss_read_errors: 1,
            table_forgotten: forgotten,
            kernel_log_unreadable: 2,
        });
        let samples = samples(&metrics);
        for expected in [
            "sockerr_events_total 25",
            r#"sockerr_events_lost_total{reason="ring_full"} 2"#,
            r#"sockerr_events_lost_total{reason="user_read_fault"} 1"#,
            r#"sockerr_events_lost_total{reason="owner_table_full"} 0"#,
            "sockerr_records_undecodable_total 1",
            "sockerr_loss_counter_read_errors_total 1",
            "sockerr_kernel_log_records_unreadable_total 2",
            r#"sockerr_table_forgotten_total{what="socket"} 3"#,
            r#"sockerr_table_forgotten_total{what="generation"} 7"#,
            r#"sockerr_build_info{version="0.1.0",git_sha="abc123",kernel="6.18.0"} 1"#,
        ] {
            assert!(samples.contains(&expected.to_owned()), "missing {expected} in {samples:#?}");
        }
        assert!(metrics.encode().ends_with("# EOF\n"));
    }

    #[test]
    fn listen_overflows_count_every_drop_by_process_and_port() {
        use crate::listen::{ListenerOwner, Unwatched};
        let metrics = metrics(false, MAX_LABEL_SETS);
        let owner = ListenerOwner {
            pid: 412,
            tid: 412,
            comm: "haproxy".into(),
            fd: 5,
            cgroup_id: 1,
            netns: None,
            pod: None,
        };
        let overflow = |dropped| ListenOverflow {
            time: jiff::Timestamp::UNIX_EPOCH,
            owner: owner.clone(),
            local: "127.0.0.1:8080".parse().unwrap(),
            queued: 3,
            backlog: 2,
            dropped,
            interval: std::time::Duration::from_secs(1),
            inode: 1,
        };
        metrics.observe_listen_overflow(&overflow(26));
        metrics.observe_listen_overflow(&overflow(4));
        let mut watch = ListenWatch::new();
        watch.count_unwatched(Unwatched::NoInode);
        metrics.update_listen_watch(&watch);
        metrics.update_listen_watch(&watch);
        let samples = samples(&metrics);
        for expected in [
            r#"sockerr_listen_overflows_total{comm="haproxy",port="8080",pod_namespace=""} 30"#,
            r#"sockerr_listen_unwatched_total{reason="no_inode"} 1"#,
            r#"sockerr_listen_unwatched_total{reason="full"} 0"#,
        ] {
            assert!(samples.contains(&expected.to_owned()), "missing {expected} in {samples:#?}");
        }
    }

    #[test]
    fn capabilities_say_on_or_off_and_why() {
        let switched = metrics(false, MAX_LABEL_SETS);
        assert!(!samples(&switched).iter().any(|s| s.starts_with("sockerr_capability")), "unset before load");
        switched.set_capabilities(&Capabilities::new(true, true));
        let old_kernel = metrics(false, MAX_LABEL_SETS);
        old_kernel.set_capabilities(&Capabilities::new(false, false));
        for (metrics, expected) in [
            (
                &switched,
                r#"sockerr_capability_enabled{capability="listen_overflow",off_reason="no_drop_hooks"} 0"#,
            ),
            (
                &switched,
                r#"sockerr_capability_enabled{capability="socket_drop",off_reason="no_drop_hooks"} 0"#,
            ),
            (&old_kernel, r#"sockerr_capability_enabled{capability="listen_overflow",off_reason="none"} 1"#),
            (&old_kernel, r#"sockerr_capability_enabled{capability="socket_drop",off_reason="kernel"} 0"#),
        ] {
            let samples = samples(metrics);
            assert!(samples.contains(&expected.to_owned()), "missing {expected} in {samples:#?}");
        }
    }
}
