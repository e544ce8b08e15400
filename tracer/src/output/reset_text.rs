//! The text line of a TCP reset:
//! `RST sent by proxy[812] fd=23 127.0.0.1:15001 -> 127.0.0.1:38120 after response from
//! 127.0.0.1:8080 with duplicate Transfer-Encoding ("Chunked", "chunked") reason=TCP_STATE`.

use std::fmt;

use crate::{
    errno::errno_name,
    record::Record,
    reset::{DataDirection, FoundAnomaly, ResetDetails, ResetDirection, ResetOwner},
    table::Operation,
};

/// Everything after the time.
pub struct ResetLine<'a> {
    pub record: &'a Record,
    pub reset: &'a ResetDetails,
    pub process: &'a dyn fmt::Display,
}

impl fmt::Display for ResetLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (record, reset) = (self.record, self.reset);
        let verb = match reset.direction {
            ResetDirection::Sent => "sent",
            ResetDirection::Received => "received",
        };
        write!(f, " RST {verb} by ")?;
        match reset.owner {
            ResetOwner::Socket | ResetOwner::Close => write!(f, "{} fd={}", self.process, record.fd)?,
            ResetOwner::Kernel if reset.has_socket => f.write_str("kernel (socket of no traced process)")?,
            ResetOwner::Kernel => f.write_str("kernel (no socket)")?,
        }
        match (record.src, record.dst) {
            (Some(src), Some(dst)) => write!(f, " {src} -> {dst}")?,
            _ => f.write_str(" (tuple unknown)")?,
        }
        if let Some(first) = reset.anomalies.first() {
            write!(f, " {}", After { first, all: &reset.anomalies })?;
        }
        match (&reset.reason_name, reset.reason) {
            (Some(name), _) => write!(f, " reason={name}")?,
            (None, Some(code)) => write!(f, " reason={code}")?,
            (None, None) => {}
        }
        if let Some(error) = reset.last_error {
            let operation = match error.operation {
                Operation::Bind => "bind",
                Operation::Connect => "connect",
                Operation::Setsockopt => "setsockopt",
            };
            match errno_name(error.errno) {
                Some(name) => write!(f, " last-error={name}({operation})")?,
                None => write!(f, " last-error={}({operation})", error.errno)?,
            }
        }
        Ok(())
    }
}

/// `after response from 127.0.0.1:8080 with duplicate Transfer-Encoding ("Chunked",
/// "chunked")`: the first message with anomalies, and all of that message's anomalies.
struct After<'a> {
    first: &'a FoundAnomaly,
    all: &'a [FoundAnomaly],
}

impl fmt::Display for After<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.first;
        let preposition = match first.direction {
            DataDirection::Received => "from",
            DataDirection::Sent => "sent to",
        };
        write!(f, "after {} {preposition} ", first.message.as_str())?;
        match first.peer {
            Some(peer) => write!(f, "{peer}")?,
            None => write!(f, "fd {}", first.fd)?,
        }
        f.write_str(" with ")?;
        let same_message = self
            .all
            .iter()
            .filter(|a| a.fd == first.fd && a.direction == first.direction && a.message == first.message);
        for (i, found) in same_message.enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            write!(f, "{} (", found.anomaly.kind.label())?;
            for (j, value) in found.anomaly.values.iter().enumerate() {
                if j > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{value:?}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}
