//! Draining the ring buffer.
//!
//! The kernel programs submit records without waking the reader (a wake-up per record
//! roughly doubles the cost of a traced syscall, ../shared/toolchain.md), so the reader
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

pub struct Reader {
    ring: AsyncFd<RingBuf<MapData>>,
    decode_errors: u64,
}

impl Reader {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd and keeps it open until it is dropped,
        // which happens only when the AsyncFd is.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|err| err.into_parts().1)?;
        Ok(Self { ring, decode_errors: 0 })
    }

    /// Waits until records may be pending (wake-up or timer), then appends every
    /// record in the ring to `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<KernelEvent>) -> io::Result<()> {
        tokio::select! {
            guard = self.ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), out, &mut self.decode_errors);
                guard.clear_ready();
            }
            () = tokio::time::sleep(POLL_INTERVAL) => {
                drain(self.ring.get_mut(), out, &mut self.decode_errors);
            }
        }
        Ok(())
    }

    /// Appends what the ring holds now, without waiting (the last drain at shutdown).
    pub fn drain_now(&mut self, out: &mut Vec<KernelEvent>) {
        drain(self.ring.get_mut(), out, &mut self.decode_errors);
    }

    /// Records that did not decode (a daemon and kernel programs out of sync).
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }
}

fn drain(ring: &mut RingBuf<MapData>, out: &mut Vec<KernelEvent>, errors: &mut u64) {
    while let Some(item) = ring.next() {
        match decode(&item) {
            Ok(event) => out.push(event),
            Err(err) => note_decode_error(err, errors),
        }
    }
}

fn note_decode_error(err: DecodeError, errors: &mut u64) {
    *errors += 1;
    // The first one tells what is wrong; the rest would only repeat it.
    if *errors == 1 {
        tracing::error!("dropping undecodable ring-buffer record: {err}");
    }
}
