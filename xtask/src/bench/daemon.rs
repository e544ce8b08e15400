//! `sockerr daemon` under load: starting it, reading its /metrics, and what /proc says
//! about its CPU time, memory and fds.

use std::{
    fs::{self, File},
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::running::Running;

pub struct Daemon {
    pub running: Running,
    pub address: SocketAddr,
}

/// `sockerr daemon` serving /metrics only, on a free port: the /v1 API would listen on its
/// default 127.0.0.1:9967 too, and [`listening_address`] could not tell the two apart.
pub const METRICS_ONLY: &[&str] = &["daemon", "--listen", "127.0.0.1:0", "--api-listen", "none"];

/// `sockerr daemon` with `filter` (none: node-wide), NDJSON to `ndjson`, HTTP on a free
/// port, on its default backend; confined to `cpus` (a `taskset -c` list) when given.
pub fn start(sockerr: &Path, ndjson: &Path, filter: &[&str], cpus: Option<&str>) -> Result<Daemon> {
    let out = File::create(ndjson).with_context(|| format!("creating {}", ndjson.display()))?;
    // taskset execs the daemon: the pid stays the daemon's.
    let mut command = match cpus {
        Some(cpus) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", cpus]).arg(sockerr);
            taskset
        }
        None => Command::new(sockerr),
    };
    command.args(METRICS_ONLY).args(filter).stdout(Stdio::from(out));
    let running = Running::sockerr(command)?;
    // The address is logged before `tracing started`: poll /proc for the listening port
    // would be racy, the log line is not.
    let pid = running.pid();
    let address =
        listening_address(pid).with_context(|| format!("daemon {pid}: no listening socket found"))?;
    Ok(Daemon { running, address })
}

/// The daemon's TCP listener, from its fds and /proc/net/tcp: independent of log format.
pub fn listening_address(pid: u32) -> Result<SocketAddr> {
    let mut inodes = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let target = fs::read_link(entry?.path()).unwrap_or_default();
        if let Some(inode) =
            target.to_string_lossy().strip_prefix("socket:[").and_then(|s| s.strip_suffix(']'))
        {
            inodes.push(inode.to_owned());
        }
    }
    let table = fs::read_to_string(format!("/proc/{pid}/net/tcp"))?;
    let mut listening = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // local_address st ... inode: state 0A is LISTEN.
        if fields.len() > 9 && fields[3] == "0A" && inodes.iter().any(|inode| inode == fields[9]) {
            let (ip, port) = fields[1].split_once(':').context("malformed /proc/net/tcp")?;
            let ip = u32::from_str_radix(ip, 16)?;
            let port = u16::from_str_radix(port, 16)?;
            listening.push(SocketAddr::from((std::net::Ipv4Addr::from(u32::from_be(ip)), port)));
        }
    }
    match listening.as_slice() {
        [address] => Ok(*address),
        [] => bail!("no listening TCP socket among its fds"),
        many => bail!("{} listening TCP sockets ({many:?}): start it with {METRICS_ONLY:?}", many.len()),
    }
}

/// GET /metrics. Hand-written HTTP/1.0 on a std socket rather than an HTTP client crate:
/// one local request to sockerr's own server, whose answer is read to the end.
pub fn metrics(address: SocketAddr) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1).is_none_or(|code| code != "200") {
        bail!("GET /metrics: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

/// Sum of the samples of `metric` whose labels contain every `label="value"` of `labels`.
pub fn sum_metric(body: &str, metric: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            (name == metric && labels.iter().all(|label| series.contains(label)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The daemon's kernel-side losses: the labelled `sockerr_events_lost_total{reason=...}`
/// when it exports one (summed over reasons), else the unlabelled total; an error when
/// it exports neither (never a silent 0).
pub fn lost(body: &str) -> Result<Losses> {
    let mut by_reason = std::collections::BTreeMap::new();
    let mut unlabelled = None;
    for line in body.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        match series.split_once('{') {
            Some((LOST_METRIC, labels)) => {
                let reason = label(labels, "reason").unwrap_or("unlabelled").to_owned();
                *by_reason.entry(reason).or_insert(0) += value as u64;
            }
            None if series == LOST_METRIC => unlabelled = Some(value as u64),
            _ => {}
        }
    }
    if !by_reason.is_empty() {
        return Ok(Losses { total: by_reason.values().sum(), by_reason: Some(by_reason) });
    }
    match unlabelled {
        Some(total) => Ok(Losses { total, by_reason: None }),
        None => bail!("the daemon's /metrics has no {LOST_METRIC}: cannot tell whether it lost events"),
    }
}

const LOST_METRIC: &str = "sockerr_events_lost_total";

/// Losses the daemon counted; by reason where it says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Losses {
    pub total: u64,
    pub by_reason: Option<std::collections::BTreeMap<String, u64>>,
}

impl Losses {
    /// `self - before`, per reason where both have reasons.
    pub fn since(&self, before: &Losses) -> Losses {
        let by_reason = self.by_reason.as_ref().map(|now| {
            now.iter()
                .map(|(reason, n)| {
                    let was = before.by_reason.as_ref().and_then(|b| b.get(reason)).copied().unwrap_or(0);
                    (reason.clone(), n.saturating_sub(was))
                })
                .collect()
        });
        Losses { total: self.total.saturating_sub(before.total), by_reason }
    }

    /// Evictions among the reasons (a reason naming an eviction); None when the daemon
    /// gives no reasons, so cannot say.
    pub fn evictions(&self) -> Option<u64> {
        let reasons = self.by_reason.as_ref()?;
        Some(reasons.iter().filter(|(reason, _)| reason.contains("evict")).map(|(_, n)| n).sum())
    }
}

/// The value of `key="..."` in a Prometheus label set (`a="x",b="y"}`).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

/// CPU time (user + system) in clock ticks, from /proc/PID/stat.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).context("malformed /proc/PID/stat")
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The comm field may hold spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc(5); fields[0] here is field 3.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

pub fn ticks_per_second() -> f64 {
    crate::process::stdout_of(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|out| out.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident set size in KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// The daemon's fds at rest: the fewest of 10 counts 100 ms apart. The port sampler holds
/// a netlink socket and a namespace fd for the few milliseconds of each round (every 5 s);
/// one count can catch them, ten in a row cannot, and a leaked fd is in all ten.
pub fn fd_count(pid: u32) -> Result<usize> {
    let mut fewest = usize::MAX;
    for _ in 0..10 {
        fewest = fewest.min(fs::read_dir(format!("/proc/{pid}/fd"))?.count());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(fewest)
}

/// Ids of the BPF objects `pid` holds an fd of, from the `field` line of each
/// /proc/PID/fdinfo entry (`map_id:` for maps, `prog_id:` for programs).
pub fn bpf_ids_of(pid: u32, field: &str) -> Result<std::collections::BTreeSet<u64>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = std::collections::BTreeSet::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        // An fd closed since the listing has no fdinfo any more: not an error.
        let Ok(info) = fs::read_to_string(entry?.path()) else { continue };
        ids.extend(info.lines().find_map(|line| line.strip_prefix(field)?.trim().parse::<u64>().ok()));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_select_by_name_and_labels() {
        let body = "# HELP sockerr_connect_errors Failed\n\
            sockerr_connect_errors_total{errno=\"EADDRNOTAVAIL\",comm=\"sockerr-bench\"} 7\n\
            sockerr_connect_errors_total{errno=\"ECONNREFUSED\",comm=\"sockerr-bench\"} 2\n\
            sockerr_connect_errors_total{errno=\"EADDRNOTAVAIL\",comm=\"curl\"} 100\n\
            sockerr_events_lost_total 3\n";
        let bench = ["comm=\"sockerr-bench\""];
        assert_eq!(sum_metric(body, "sockerr_connect_errors_total", &bench), 9.0);
        assert_eq!(
            sum_metric(body, "sockerr_connect_errors_total", &["errno=\"EADDRNOTAVAIL\"", bench[0]]),
            7.0
        );
        assert_eq!(sum_metric(body, "sockerr_events_lost_total", &[]), 3.0);
    }

    #[test]
    fn losses_prefer_the_labelled_counter() {
        let today = "# TYPE sockerr_events_lost counter\nsockerr_events_lost_total 3\n";
        assert_eq!(lost(today).unwrap(), Losses { total: 3, by_reason: None });
        assert_eq!(lost(today).unwrap().evictions(), None, "no reasons: evictions unknown");
        let labelled = "sockerr_events_lost_total{reason=\"ring_full\"} 5\n\
            sockerr_events_lost_total{reason=\"owner_evicted\"} 2\n\
            sockerr_events_lost_total{reason=\"user_read_fault\"} 0\n";
        let losses = lost(labelled).unwrap();
        assert_eq!(losses.total, 7);
        assert_eq!(losses.evictions(), Some(2));
        let before = lost("sockerr_events_lost_total{reason=\"ring_full\"} 1\n").unwrap();
        let delta = losses.since(&before);
        assert_eq!(delta.total, 6);
        assert_eq!(delta.by_reason.unwrap()["ring_full"], 4);
        let err = lost("sockerr_connect_errors_total 1\n").unwrap_err().to_string();
        assert!(err.contains("cannot tell"), "{err}");
    }

    #[test]
    fn cpu_ticks_skip_a_comm_with_spaces() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 1 1";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }
}
