//! Draining the ring buffer.
//!
//! The kernel programs submit records without waking the reader (a wake-up per record
//! roughly doubles the cost of a traced syscall, docs/toolchain.md), so the reader
//! drains on a short timer, and also whenever epoll reports data: the programs force a
//! wake-up once a burst fills a quarter of the ring.

use std::{io, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    decode::{DecodeError, decode},
    event::KernelEvent,
};

/// Longest a record waits in the ring before the daemon sees it.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Most records taken from the ring per batch. When the processing falls behind, the
/// records wait in the ring (bounded, and counted as lost by the programs once it is
/// full) rather than in this process's memory: the 1M soak of `cargo xtask bench --soak`
/// saw RSS grow from 14 to 60 MiB with whole-ring batches queued behind a busy processor.
pub const MAX_BATCH: usize = 1024;

pub struct Reader {
    ring: AsyncFd<RingBuf<MapData>>,
    decode_errors: u64,
    /// The last drain stopped at [`MAX_BATCH`]: the ring may hold more right now.
    backlog: bool,
}

impl Reader {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd and keeps it open until it is dropped,
        // which happens only when the AsyncFd is.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|err| err.into_parts().1)?;
        Ok(Self { ring, decode_errors: 0, backlog: false })
    }

    /// Waits until records may be pending (wake-up, timer, or a backlog left by the last
    /// batch), then appends up to [`MAX_BATCH`] records from the ring to `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<KernelEvent>) -> io::Result<()> {
        if self.backlog {
            // Let the processing task run between two full batches.
            tokio::task::yield_now().await;
            self.backlog = drain(self.ring.get_mut(), out, MAX_BATCH, &mut self.decode_errors);
            return Ok(());
        }
        tokio::select! {
            guard = self.ring.readable_mut() => {
                let mut guard = guard?;
                self.backlog = drain(guard.get_inner_mut(), out, MAX_BATCH, &mut self.decode_errors);
                // Epoll reports the ring again only after a new wake-up: keep the
                // readiness while records are left.
                if !self.backlog {
                    guard.clear_ready();
                }
            }
            () = tokio::time::sleep(POLL_INTERVAL) => {
                self.backlog = drain(self.ring.get_mut(), out, MAX_BATCH, &mut self.decode_errors);
            }
        }
        Ok(())
    }

    /// Appends everything the ring holds now, without waiting (the last drain at shutdown).
    pub fn drain_now(&mut self, out: &mut Vec<KernelEvent>) {
        drain(self.ring.get_mut(), out, usize::MAX, &mut self.decode_errors);
    }

    /// Records that did not decode (a daemon and kernel programs out of sync).
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }
}

/// Where raw records come from: a ring, or a list in the tests (the `VecDeque` below,
/// also used by `kernel_log`'s). (`RingBuf::next` lends each item until the next call,
/// which a closure cannot express.)
pub(super) trait RecordSource {
    /// Passes the next record to `consume`; false when there is none.
    fn take_one(&mut self, consume: &mut dyn FnMut(&[u8])) -> bool;
}

impl RecordSource for RingBuf<MapData> {
    fn take_one(&mut self, consume: &mut dyn FnMut(&[u8])) -> bool {
        match self.next() {
            Some(item) => {
                consume(&item);
                true
            }
            None => false,
        }
    }
}

/// Takes up to `limit` records from `source`; true when it stopped at the limit, so
/// more may be waiting.
fn drain(source: &mut impl RecordSource, out: &mut Vec<KernelEvent>, limit: usize, errors: &mut u64) -> bool {
    let mut consume = |bytes: &[u8]| match decode(bytes) {
        Ok(event) => out.push(event),
        Err(err) => note_decode_error(err, errors),
    };
    for _ in 0..limit {
        if !source.take_one(&mut consume) {
            return false;
        }
    }
    true
}

fn note_decode_error(err: DecodeError, errors: &mut u64) {
    *errors += 1;
    // The first one tells what is wrong; the rest would only repeat it.
    if *errors == 1 {
        tracing::error!("dropping undecodable ring-buffer record: {err}");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    impl RecordSource for VecDeque<Vec<u8>> {
        fn take_one(&mut self, consume: &mut dyn FnMut(&[u8])) -> bool {
            self.pop_front().map(|record| consume(&record)).is_some()
        }
    }

    #[test]
    fn a_batch_stops_at_its_limit_and_leaves_the_rest_in_the_ring() {
        // Undecodable records: the limit counts records taken, decodable or not.
        let mut ring: VecDeque<Vec<u8>> = (0..5).map(|i| vec![i; 3]).collect();
        let (mut out, mut errors) = (Vec::new(), 0);
        assert!(drain(&mut ring, &mut out, 2, &mut errors), "stopped at the limit");
        assert_eq!((ring.len(), errors), (3, 2));
        assert!(!drain(&mut ring, &mut out, 4, &mut errors), "emptied the ring");
        assert_eq!((ring.len(), errors), (0, 5));
        assert!(out.is_empty());
    }
}
