//! When a destination's usage becomes a `port_pressure` record: once as it crosses
//! [`ALERT_AT`], and again only after it fell below [`REARM_BELOW`], so a destination
//! that hovers around the threshold does not repeat itself every sample.

use std::collections::BTreeSet;

use super::count::{Destination, Usage};

/// The share of the port space in use at which a record is made.
pub const ALERT_AT: f64 = 0.8;
/// The share below which a destination may alert again.
pub const REARM_BELOW: f64 = 0.7;

/// The destinations that alerted and have not fallen below [`REARM_BELOW`] since, per
/// network namespace inode. Only those are remembered: memory follows the pressure.
#[derive(Debug, Default)]
pub struct PressureWatch {
    alerted: BTreeSet<(u64, Destination)>,
}

impl PressureWatch {
    /// The usages of namespace `netns` that crossed [`ALERT_AT`] since the last sample.
    /// `usages` is every destination of that namespace now.
    pub fn observe(&mut self, netns: u64, usages: &[Usage]) -> Vec<Usage> {
        let before = std::mem::take(&mut self.alerted);
        let (mine, others): (BTreeSet<_>, BTreeSet<_>) = before.into_iter().partition(|(ns, _)| *ns == netns);
        self.alerted = others;
        let mut crossed = Vec::new();
        for usage in usages {
            let key = (netns, usage.destination);
            let ratio = usage.ratio();
            if mine.contains(&key) {
                if ratio >= REARM_BELOW {
                    self.alerted.insert(key);
                }
            } else if ratio >= ALERT_AT {
                self.alerted.insert(key);
                crossed.push(*usage);
            }
        }
        crossed
    }

    /// Forgets the namespaces no traced process is in any more (or that are gone).
    pub fn retain_namespaces(&mut self, listed: &BTreeSet<u64>) {
        self.alerted.retain(|(netns, _)| listed.contains(netns));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(in_use: u32) -> Usage {
        let destination =
            Destination { local_ip: "10.0.0.1".parse().unwrap(), remote: "10.0.0.2:80".parse().unwrap() };
        Usage { destination, in_use, size: 100 }
    }

    #[test]
    fn alerts_once_per_crossing_and_again_after_falling_below_the_rearm_level() {
        let mut watch = PressureWatch::default();
        let crossings: Vec<usize> =
            [50, 80, 95, 75, 81, 69, 85].iter().map(|&n| watch.observe(1, &[usage(n)]).len()).collect();
        assert_eq!(crossings, [0, 1, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn namespaces_are_watched_apart_and_forgotten_when_gone() {
        let mut watch = PressureWatch::default();
        assert_eq!(watch.observe(1, &[usage(90)]).len(), 1);
        assert_eq!(watch.observe(2, &[usage(90)]).len(), 1, "same destination, other namespace");
        assert_eq!(watch.observe(1, &[usage(90)]).len(), 0);
        watch.retain_namespaces(&BTreeSet::from([2]));
        assert_eq!(watch.observe(1, &[usage(90)]).len(), 1, "namespace 1 was forgotten");
        // A destination absent from a sample (its connections closed) re-arms.
        assert_eq!(watch.observe(2, &[]).len(), 0);
        assert_eq!(watch.observe(2, &[usage(90)]).len(), 1);
    }
}
