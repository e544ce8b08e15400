//! `port_pressure` as a text line and a JSON object: a destination of a traced process's
//! network namespace crossed 80 % of the ports connect() may use (see `ports`).

use super::{TextRenderer, json::PodView, text::PodLabel};
use crate::ports::PortPressure;

/// `12:53:25.866 PORT PRESSURE python3[412] 10.0.0.1 -> 10.0.0.2:80 ports=85/100 (85%) range=40000-40099 netns=4026532`
pub fn text(renderer: &TextRenderer, pressure: &PortPressure) -> String {
    let named = &pressure.usage;
    let usage = &named.usage;
    let mut line = format!(
        "{} PORT PRESSURE {}[{}] {} -> {} ports={}/{} ({}%) range={}-{} netns={}",
        renderer.clock(pressure.time),
        named.comm.as_deref().unwrap_or("?"),
        named.pid,
        usage.destination.local_ip,
        usage.destination.remote,
        usage.in_use,
        usage.size,
        percent(usage.ratio()),
        pressure.low,
        pressure.high,
        named.netns,
    );
    if let Some(pod) = &named.pod {
        line.push_str(&PodLabel(pod).to_string());
    }
    line
}

/// Whole percent, rounded down: 79.9 % is not yet 80 %.
fn percent(ratio: f64) -> u32 {
    // A ratio of counts of u16 ports: small, finite, non-negative.
    (ratio * 100.0).floor() as u32
}

#[derive(serde::Serialize)]
struct View<'a> {
    time: String,
    event: &'static str,
    pid: u32,
    comm: Option<&'a str>,
    netns: u64,
    src_ip: String,
    dst: String,
    in_use: u32,
    available: u32,
    percent: u32,
    range_low: u16,
    range_high: u16,
    #[serde(flatten)]
    pod: PodView<'a>,
}

pub fn json(pressure: &PortPressure) -> String {
    let named = &pressure.usage;
    let usage = &named.usage;
    let view = View {
        time: format!("{:.6}", pressure.time),
        event: "port_pressure",
        pid: named.pid,
        comm: named.comm.as_deref(),
        netns: named.netns,
        src_ip: usage.destination.local_ip.to_string(),
        dst: usage.destination.remote.to_string(),
        in_use: usage.in_use,
        available: usage.size,
        percent: percent(usage.ratio()),
        range_low: pressure.low,
        range_high: pressure.high,
        pod: PodView::of(named.pod.as_ref()),
    };
    // Strings, numbers and nulls only: serde_json cannot fail on them.
    serde_json::to_string(&view).expect("port_pressure views always serialize")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jiff::tz::TimeZone;

    use super::*;
    use crate::ports::{Destination, NamespaceUsage, Usage};

    fn pressure() -> PortPressure {
        let destination =
            Destination { local_ip: "10.0.0.1".parse().unwrap(), remote: "10.0.0.2:80".parse().unwrap() };
        PortPressure {
            time: "2026-11-23T12:53:25.866123Z".parse().unwrap(),
            usage: NamespaceUsage {
                netns: 4026532,
                pid: 412,
                comm: Some("python3".into()),
                pod: None,
                usage: Usage { destination, in_use: 85, size: 100 },
            },
            low: 40000,
            high: 40099,
        }
    }

    #[test]
    fn the_line_names_process_tuple_and_usage() {
        let renderer = TextRenderer::new(TimeZone::UTC, Duration::from_millis(500));
        assert_eq!(
            text(&renderer, &pressure()),
            "12:53:25.866 PORT PRESSURE python3[412] 10.0.0.1 -> 10.0.0.2:80 ports=85/100 (85%) range=40000-40099 netns=4026532"
        );
    }

    #[test]
    fn json_carries_the_counts() {
        let value: serde_json::Value = serde_json::from_str(&json(&pressure())).unwrap();
        assert_eq!(value["event"], "port_pressure");
        assert_eq!((value["in_use"].as_u64(), value["available"].as_u64()), (Some(85), Some(100)));
        assert_eq!((value["percent"].as_u64(), value["dst"].as_str()), (Some(85), Some("10.0.0.2:80")));
        assert_eq!(percent(0.799_99), 79);
        assert!(value["pod_uid"].is_null() && value["namespace"].is_null(), "{value}");
    }
}
