//! Kernel timestamps (CLOCK_MONOTONIC, `bpf_ktime_get_ns()`) to wall-clock time.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClockError {
    #[error("clock_gettime failed")]
    Gettime(#[source] std::io::Error),
}

/// The offset between CLOCK_REALTIME and CLOCK_MONOTONIC, taken once at start-up:
/// a wall-clock step (NTP) after that does not reorder events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    realtime_minus_monotonic_ns: i128,
}

impl Clock {
    pub fn now() -> Result<Self, ClockError> {
        let monotonic = read(libc::CLOCK_MONOTONIC)?;
        let realtime = read(libc::CLOCK_REALTIME)?;
        Ok(Self { realtime_minus_monotonic_ns: realtime - monotonic })
    }

    pub fn from_offset_ns(realtime_minus_monotonic_ns: i128) -> Self {
        Self { realtime_minus_monotonic_ns }
    }

    pub fn wall_time(&self, monotonic_ns: u64) -> jiff::Timestamp {
        let ns = i128::from(monotonic_ns) + self.realtime_minus_monotonic_ns;
        jiff::Timestamp::from_nanosecond(ns).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}

fn read(clock: libc::clockid_t) -> Result<i128, ClockError> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid clock id and out pointer.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(ClockError::Gettime(std::io::Error::last_os_error()));
    }
    Ok(i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_with_the_offset() {
        let clock = Clock::from_offset_ns(1_700_000_000_000_000_000);
        assert_eq!(clock.wall_time(5_000_000_000).as_second(), 1_700_000_005);
    }

    #[test]
    fn now_is_close_to_system_time() {
        let clock = Clock::now().unwrap();
        let monotonic = read(libc::CLOCK_MONOTONIC).unwrap() as u64;
        let drift = clock.wall_time(monotonic).as_second() - jiff::Timestamp::now().as_second();
        assert!(drift.abs() <= 1, "drift {drift}s");
    }
}
