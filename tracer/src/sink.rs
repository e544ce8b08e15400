//! Where the run loop's results go: stdout, metrics, or both.
//!
//! The loop (`trace::Tracer::run_until`) calls a sink on its own task, one record at a
//! time and in event order, so a sink needs no lock for its own state and must not block.

use std::{io, time::Instant};

use crate::{
    drops::SocketDrop,
    kernel::loader::Losses,
    listen::{ListenOverflow, ListenWatch},
    ports::Round,
    record::Record,
};

/// What the run loop has seen so far, as running totals.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Kernel events read from the ring buffer.
    pub events: u64,
    /// What the kernel side dropped or degraded, by reason.
    pub lost: Losses,
    /// Ring-buffer records that did not decode.
    pub undecodable: u64,
    /// Reads of the kernel's loss counter that failed: `lost` may be short by what
    /// happened since the last good read.
    pub loss_read_errors: u64,
    /// What the socket table forgot to stay bounded (see [`crate::table::Forgotten`]).
    pub table_forgotten: crate::table::Forgotten,
    /// Records of the kernel programs' log ring that did not decode: lines lost.
    pub kernel_log_unreadable: u64,
}

pub trait Sink {
    /// A finished record (every record the kernel filters let through).
    fn record(&mut self, record: &Record) -> io::Result<()>;

    /// After each batch of events, and once a second: the totals so far.
    fn progress(&mut self, totals: &Totals) -> io::Result<()>;

    /// Handshakes a watched listener dropped in one sampling interval.
    fn listen_overflow(&mut self, _overflow: &ListenOverflow) -> io::Result<()> {
        Ok(())
    }

    /// Packets the kernel dropped on one traced socket for one reason in one interval.
    fn socket_drop(&mut self, _drop: &SocketDrop) -> io::Result<()> {
        Ok(())
    }

    /// After each sampling of the listeners: what the watch could not watch, by reason.
    fn listen_watch(&mut self, _watch: &ListenWatch) {}

    /// After each round of port sampling: destinations that crossed the threshold, the
    /// busiest ones, and the namespaces not sampled.
    fn port_round(&mut self, _round: &Round) -> io::Result<()> {
        Ok(())
    }

    /// When [`Sink::flush_due`] has something to do (text folding), if ever.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    fn flush_due(&mut self, _now: Instant) -> io::Result<()> {
        Ok(())
    }

    /// The run ended: write out whatever is held back.
    fn finish(&mut self, totals: &Totals) -> io::Result<()>;
}

/// Both sinks, in order: the first sees each record before the second.
impl<A: Sink, B: Sink> Sink for (A, B) {
    fn record(&mut self, record: &Record) -> io::Result<()> {
        self.0.record(record)?;
        self.1.record(record)
    }

    fn progress(&mut self, totals: &Totals) -> io::Result<()> {
        self.0.progress(totals)?;
        self.1.progress(totals)
    }

    fn listen_overflow(&mut self, overflow: &ListenOverflow) -> io::Result<()> {
        self.0.listen_overflow(overflow)?;
        self.1.listen_overflow(overflow)
    }

    fn socket_drop(&mut self, drop: &SocketDrop) -> io::Result<()> {
        self.0.socket_drop(drop)?;
        self.1.socket_drop(drop)
    }

    fn listen_watch(&mut self, watch: &ListenWatch) {
        self.0.listen_watch(watch);
        self.1.listen_watch(watch);
    }

    fn port_round(&mut self, round: &Round) -> io::Result<()> {
        self.0.port_round(round)?;
        self.1.port_round(round)
    }

    fn deadline(&self) -> Option<Instant> {
        match (self.0.deadline(), self.1.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn flush_due(&mut self, now: Instant) -> io::Result<()> {
        self.0.flush_due(now)?;
        self.1.flush_due(now)
    }

    fn finish(&mut self, totals: &Totals) -> io::Result<()> {
        self.0.finish(totals)?;
        self.1.finish(totals)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{record::EventName, testing::record};

    /// Remembers what it was given; `due` is its deadline.
    #[derive(Default)]
    struct Log {
        seen: Vec<String>,
        due: Option<Instant>,
    }

    impl Sink for Log {
        fn record(&mut self, record: &Record) -> io::Result<()> {
            self.seen.push(format!("record {}", record.event.as_str()));
            Ok(())
        }

        fn progress(&mut self, totals: &Totals) -> io::Result<()> {
            self.seen.push(format!("progress {}", totals.events));
            Ok(())
        }

        fn deadline(&self) -> Option<Instant> {
            self.due
        }

        fn finish(&mut self, totals: &Totals) -> io::Result<()> {
            self.seen.push(format!("finish {}", totals.events));
            Ok(())
        }
    }

    #[test]
    fn a_pair_feeds_both_and_keeps_the_earlier_deadline() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let mut pair = (Log { due: Some(later), ..Log::default() }, Log { due: Some(now), ..Log::default() });
        pair.record(&record(EventName::BindError)).unwrap();
        pair.progress(&Totals { events: 3, ..Totals::default() }).unwrap();
        pair.finish(&Totals { events: 4, ..Totals::default() }).unwrap();
        for log in [&pair.0, &pair.1] {
            assert_eq!(log.seen, ["record bind_error", "progress 3", "finish 4"]);
        }
        assert_eq!(pair.deadline(), Some(now));
        pair.0.due = None;
        assert_eq!(pair.deadline(), Some(now));
        pair.1.due = None;
        assert_eq!(pair.deadline(), None);
    }
}
