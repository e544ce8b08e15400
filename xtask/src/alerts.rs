//! Stage `prometheus`: the alerting rules (deploy/prometheus) and the Grafana dashboard
//! (deploy/grafana) against a real Prometheus.
//!
//! `promtool check rules` and `promtool test rules` first; then Debian's Prometheus runs as
//! a child process on loopback with a throwaway configuration and data directory, scraping
//! `sockerr daemon` every second while the scenarios fail, until the alerts for those
//! failures go pending. Every query of every dashboard panel must then return series, and
//! stopping the daemon must raise SockerrDown.

use std::{
    fs,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{
    bench::{
        daemon::{METRICS_ONLY, listening_address},
        running::Running,
    },
    paths::{target_dir, workspace_root},
    process::{describe, run_inherited},
    setup_report::Report,
    system_packages::{self, PROMETHEUS_COMMANDS},
};

const RULES: &str = "deploy/prometheus/sockerr-alerts.yaml";
const RULE_TESTS: &str = "deploy/prometheus/tests";
const DASHBOARDS: &str = "deploy/grafana";
/// The job name the rules select on (`job="sockerr"`).
const JOB: &str = "sockerr";
/// Scrapes and rule evaluations this often: the stage waits seconds, not minutes.
const INTERVAL: &str = "1s";
/// What `$__rate_interval` stands for in the dashboard's queries: many scrapes of the stage.
const RATE_INTERVAL: &str = "1m";
const START_LIMIT: Duration = Duration::from_secs(30);
const ALERT_LIMIT: Duration = Duration::from_secs(60);
/// proxy-reset runs at most (each resets 2 connections); the rate rule needs ~16.
const MAX_RESET_RUNS: usize = 60;

/// The scenarios, each with the alert its failures must raise.
const FAILURES: &[(&str, &str)] = &[
    ("cilium", "SockerrTupleInUse"),
    ("bind-in-use", "SockerrPortInUse"),
    ("exhaustion", "SockerrEphemeralPortsExhausted"),
];
const RESETS_ALERT: &str = "SockerrResetsSent";
const DOWN_ALERT: &str = "SockerrDown";

pub fn check(sockerr: &Path) -> Result<()> {
    let mut report = Report::default();
    system_packages::ensure_commands(PROMETHEUS_COMMANDS, &mut report)?;
    let root = workspace_root();
    let rules = root.join(RULES);
    run_inherited(Command::new("promtool").args(["check", "rules"]).arg(&rules))?;
    let tests = files_with_extension(&root.join(RULE_TESTS), &["yaml", "yml"])?;
    run_inherited(Command::new("promtool").args(["test", "rules"]).args(&tests))?;
    let dashboards = files_with_extension(&root.join(DASHBOARDS), &["json"])?;
    let mut queries = Vec::new();
    for path in &dashboards {
        let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let dashboard: Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        queries.extend(
            panel_queries(&dashboard, RATE_INTERVAL).with_context(|| format!("in {}", path.display()))?,
        );
    }

    let scratch = target_dir().join("prometheus-stage");
    if scratch.exists() {
        fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    }
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let result = live_check(sockerr, &rules, &queries, &scratch);
    if result.is_ok() {
        fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    } else {
        eprintln!("prometheus: logs kept in {}", scratch.display());
    }
    result
}

fn live_check(sockerr: &Path, rules: &Path, queries: &[PanelQuery], scratch: &Path) -> Result<()> {
    let started = Instant::now();
    let ndjson = scratch.join("daemon.ndjson");
    let out = fs::File::create(&ndjson).with_context(|| format!("creating {}", ndjson.display()))?;
    let mut command = Command::new(sockerr);
    command.args(METRICS_ONLY).stdout(Stdio::from(out));
    let mut daemon = Running::sockerr(command)?;
    let daemon_address = listening_address(daemon.pid())?;

    let prometheus = Prometheus::start(rules, daemon_address, scratch)?;
    prometheus.wait_until(START_LIMIT, "the daemon scraped (up == 1)", |p| {
        Ok((!p.query(&format!("up{{job=\"{JOB}\"}} == 1"))?.is_empty()).then_some(()))
    })?;

    for (scenario, _) in FAILURES {
        run_scenario(sockerr, scenario)?;
    }
    refused_setsockopt()?;
    let expected: Vec<&str> = FAILURES.iter().map(|(_, alert)| *alert).collect();
    let mut reset_runs = 0;
    while !prometheus.active_alerts()?.contains_key(RESETS_ALERT) {
        if reset_runs == MAX_RESET_RUNS {
            bail!(
                "{RESETS_ALERT} did not go pending after {MAX_RESET_RUNS} runs of proxy-reset; active: {:?}",
                prometheus.active_alerts()?
            );
        }
        run_scenario(sockerr, "proxy-reset")?;
        reset_runs += 1;
    }
    let states = prometheus.wait_until(ALERT_LIMIT, &format!("alerts {expected:?}"), |p| {
        let active = p.active_alerts()?;
        Ok(expected.iter().all(|name| active.contains_key(*name)).then_some(active))
    })?;
    eprintln!(
        "prometheus: {} after {reset_runs} proxy-reset runs, {:.1} s in",
        describe_states(&states),
        started.elapsed().as_secs_f64()
    );

    for query in queries {
        let series = prometheus.query(&query.expr)?;
        if series.is_empty() {
            bail!("dashboard panel {:?} returned no series for {}", query.panel, query.expr);
        }
        eprintln!("prometheus: panel {:?}: {} series", query.panel, series.len());
    }

    daemon.stop();
    let states = prometheus.wait_until(ALERT_LIMIT, DOWN_ALERT, |p| {
        let active = p.active_alerts()?;
        Ok(active.contains_key(DOWN_ALERT).then_some(active))
    })?;
    eprintln!(
        "prometheus: daemon stopped: {DOWN_ALERT} {}; {} dashboard queries returned series; {:.1} s in all",
        states[DOWN_ALERT],
        queries.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_scenario(sockerr: &Path, name: &str) -> Result<()> {
    let mut command = Command::new(sockerr);
    command.args(["scenario", name]).stdout(Stdio::null());
    run_inherited(&mut command).with_context(|| format!("scenario {name} failed"))
}

/// A setsockopt(SO_MARK) the kernel refuses (a 2-byte value: EINVAL), by Debian's
/// python3: without `--all` the daemon counts only failed calls, so this is what gives the
/// dashboard's setsockopt panel a series.
fn refused_setsockopt() -> Result<()> {
    const SCRIPT: &str = r#"
import errno, socket
s = socket.socket()
try:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, b"\x01\x00")
except OSError as e:
    assert e.errno == errno.EINVAL, e
else:
    raise SystemExit("setsockopt(SO_MARK) with a 2-byte value succeeded")
"#;
    run_inherited(Command::new("python3").args(["-c", SCRIPT])).context("the refused setsockopt(SO_MARK)")
}

fn describe_states(states: &std::collections::BTreeMap<String, String>) -> String {
    states.iter().map(|(name, state)| format!("{name} {state}")).collect::<Vec<_>>().join(", ")
}

/// The `.yaml`/`.json` files of a directory, sorted; none is an error (nothing would be checked).
fn files_with_extension(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| extensions.iter().any(|e| ext == *e)))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no {} files in {}", extensions.join("/"), dir.display());
    }
    Ok(files)
}

/// One query of a dashboard panel, with its variables replaced.
#[derive(Debug, PartialEq, Eq)]
pub struct PanelQuery {
    pub panel: String,
    pub expr: String,
}

/// Every target of every panel (rows' nested panels too), with `$__rate_interval` as
/// `rate_interval` and each template variable as its "All" value. A panel without a query,
/// or a variable with no such value, is an error: the check would pass without asking.
pub fn panel_queries(dashboard: &Value, rate_interval: &str) -> Result<Vec<PanelQuery>> {
    let mut variables: Vec<(String, String)> = Vec::new();
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().context("a template variable without a name")?;
        if variable["type"] == "datasource" {
            continue;
        }
        let all = variable["allValue"]
            .as_str()
            .with_context(|| format!("variable ${name} has no allValue to query all nodes with"))?;
        variables.push((name.to_owned(), all.to_owned()));
    }
    // Longest names first, so `$instance` is not taken for `$inst` + "ance".
    variables.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut panels: Vec<&Value> = Vec::new();
    for panel in dashboard["panels"].as_array().context("the dashboard has no panels")? {
        if panel["type"] == "row" {
            panels.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            panels.push(panel);
        }
    }
    let mut queries = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)").to_owned();
        let targets = panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        if targets.is_empty() {
            bail!("panel {title:?} has no query");
        }
        for target in targets {
            let raw =
                target["expr"].as_str().with_context(|| format!("panel {title:?}: a target without expr"))?;
            let mut expr =
                raw.replace("$__rate_interval", rate_interval).replace("${__rate_interval}", rate_interval);
            for (name, value) in &variables {
                expr = expr.replace(&format!("${{{name}}}"), value).replace(&format!("${name}"), value);
            }
            if expr.contains('$') {
                bail!("panel {title:?}: {raw} uses a variable the dashboard does not define");
            }
            queries.push(PanelQuery { panel: title.clone(), expr });
        }
    }
    Ok(queries)
}

/// prometheus.yml of the stage: one job scraping the daemon, the rules under test.
pub fn config_text(rules: &Path, daemon: SocketAddr) -> String {
    format!(
        "global:\n  scrape_interval: {INTERVAL}\n  evaluation_interval: {INTERVAL}\n\
         rule_files:\n  - {rules:?}\n\
         scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [\"{daemon}\"]\n",
        rules = rules.display().to_string(),
    )
}

/// The server, killed when dropped.
struct Prometheus {
    child: Child,
    base: String,
}

impl Prometheus {
    fn start(rules: &Path, daemon: SocketAddr, scratch: &Path) -> Result<Self> {
        let config = scratch.join("prometheus.yml");
        fs::write(&config, config_text(rules, daemon))
            .with_context(|| format!("writing {}", config.display()))?;
        let listen = free_loopback_address()?;
        let log = scratch.join("prometheus.log");
        let log = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", scratch.join("data").display()))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let child = command.spawn().with_context(|| format!("could not start `{}`", describe(&command)))?;
        let prometheus = Self { child, base: format!("http://{listen}") };
        prometheus.wait_until(START_LIMIT, "Prometheus ready (/-/ready)", |p| {
            Ok(ureq::get(format!("{}/-/ready", p.base)).call().is_ok().then_some(()))
        })?;
        Ok(prometheus)
    }

    fn api(&self, path: &str, query: Option<&str>) -> Result<Value> {
        let mut request = ureq::get(format!("{}{path}", self.base));
        if let Some(query) = query {
            request = request.query("query", query);
        }
        let body = request
            .call()
            .with_context(|| format!("GET {path} {}", query.unwrap_or("")))?
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading GET {path}"))?;
        let value: Value = serde_json::from_str(&body).with_context(|| format!("{path} answered {body}"))?;
        if value["status"] != "success" {
            bail!("{path} {}: {body}", query.unwrap_or(""));
        }
        Ok(value["data"].clone())
    }

    /// The series an instant query returns.
    fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let data = self.api("/api/v1/query", Some(expr))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Alert name -> state ("pending" or "firing") of the active alerts.
    fn active_alerts(&self) -> Result<std::collections::BTreeMap<String, String>> {
        Ok(alert_states(&self.api("/api/v1/alerts", None)?))
    }

    /// Polls `ready` every 500 ms until it returns a value, at most `limit`.
    fn wait_until<T>(
        &self,
        limit: Duration,
        what: &str,
        mut ready: impl FnMut(&Self) -> Result<Option<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let mut last_error = None;
        loop {
            match ready(self) {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => {}
                Err(error) => last_error = Some(error),
            }
            if started.elapsed() > limit {
                let why = last_error.map(|e| format!(" (last error: {e:#})")).unwrap_or_default();
                let active = self.active_alerts().map(|a| describe_states(&a)).unwrap_or_default();
                bail!("no {what} within {} s{why}; active alerts: [{active}]", limit.as_secs());
            }
            thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// From /api/v1/alerts' data: each alert's name and state; firing wins over pending.
pub fn alert_states(data: &Value) -> std::collections::BTreeMap<String, String> {
    let mut states = std::collections::BTreeMap::new();
    for alert in data["alerts"].as_array().into_iter().flatten() {
        let (Some(name), Some(state)) = (alert["labels"]["alertname"].as_str(), alert["state"].as_str())
        else {
            continue;
        };
        let entry = states.entry(name.to_owned()).or_insert_with(|| state.to_owned());
        if state == "firing" {
            *entry = state.to_owned();
        }
    }
    states
}

/// A loopback port nobody listens on right now (the kernel picks it).
fn free_loopback_address() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
    listener.local_addr().context("the address of a bound socket")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_projects_dashboard_has_a_query_on_every_panel_and_no_unknown_variable() {
        let path = workspace_root().join(DASHBOARDS).join("sockerr.json");
        let dashboard: Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
        let queries = panel_queries(&dashboard, "1m").unwrap();
        assert!(queries.len() >= 10, "{queries:?}");
        assert!(queries.iter().all(|q| !q.expr.contains('$') && q.expr.contains("sockerr")), "{queries:?}");
    }

    #[test]
    fn variables_take_their_all_value_and_the_rate_interval_is_given() {
        let dashboard = json!({
            "templating": {"list": [
                {"name": "datasource", "type": "datasource"},
                {"name": "instance", "type": "query", "allValue": ".*"},
            ]},
            "panels": [
                {"type": "row", "title": "r", "panels": [
                    {"title": "a", "targets": [{"expr": "rate(x{instance=~\"$instance\"}[$__rate_interval])"}]},
                ]},
                {"title": "b", "targets": [{"expr": "y{instance=~\"${instance}\"}"}, {"expr": "z"}]},
            ],
        });
        let queries = panel_queries(&dashboard, "1m").unwrap();
        let exprs: Vec<(&str, &str)> = queries.iter().map(|q| (q.panel.as_str(), q.expr.as_str())).collect();
        assert_eq!(exprs, [("a", "rate(x{instance=~\".*\"}[1m])"), ("b", "y{instance=~\".*\"}"), ("b", "z")]);
    }

    #[test]
    fn a_panel_without_query_or_with_an_unknown_variable_is_an_error() {
        let empty = json!({"panels": [{"title": "nothing", "targets": []}]});
        let err = panel_queries(&empty, "1m").unwrap_err().to_string();
        assert!(err.contains("\"nothing\" has no query"), "{err}");
        let unknown = json!({"panels": [{"title": "p", "targets": [{"expr": "x{node=\"$node\"}"}]}]});
        let err = panel_queries(&unknown, "1m").unwrap_err().to_string();
        assert!(err.contains("does not define"), "{err}");
        let no_all = json!({"templating": {"list": [{"name": "node", "type": "query"}]}, "panels": []});
        assert!(panel_queries(&no_all, "1m").unwrap_err().to_string().contains("allValue"));
    }

    #[test]
    fn alert_states_prefer_firing() {
        let data = json!({"alerts": [
            {"labels": {"alertname": "A"}, "state": "pending"},
            {"labels": {"alertname": "A"}, "state": "firing"},
            {"labels": {"alertname": "B"}, "state": "pending"},
            {"labels": {}, "state": "firing"},
        ]});
        let states = alert_states(&data);
        assert_eq!(states.len(), 2);
        assert_eq!(states["A"], "firing");
        assert_eq!(states["B"], "pending");
    }

    #[test]
    fn config_scrapes_the_daemon_as_the_rules_job() {
        let text = config_text(
            Path::new("/w/deploy/prometheus/sockerr-alerts.yaml"),
            "127.0.0.1:4000".parse().unwrap(),
        );
        assert!(text.contains("job_name: sockerr"), "{text}");
        assert!(text.contains("targets: [\"127.0.0.1:4000\"]"), "{text}");
        assert!(text.contains("- \"/w/deploy/prometheus/sockerr-alerts.yaml\""), "{text}");
        assert!(text.contains("evaluation_interval: 1s"), "{text}");
    }
}
