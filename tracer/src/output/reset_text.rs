//! The text line of a TCP reset:
//! `RST sent by proxy[812] fd=23 127.0.0.1:15001 -> 127.0.0.1:38120 after response from
//! 127.0.0.1:8080 with duplicate Transfer-Encoding ("Chunked", "chunked") reason=TCP_STATE`.

use std::fmt;

use crate::{
    errno::errno_name,
    record::Record,
    reset::{DataDirection, FoundAnomaly, ResetDetails, ResetDirection, ResetOwner},
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
            let operation = error.operation.as_str();
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jiff::tz::TimeZone;

    use crate::{
        output::TextRenderer,
        record::Record,
        reset::{ResetDirection, ResetOwner},
        table::{LastError, Operation},
        testing::istio_reset,
    };

    fn line(record: &Record) -> String {
        TextRenderer::new(TimeZone::UTC, Duration::from_millis(500)).render(record)
    }

    #[test]
    fn the_issues_example_line() {
        assert_eq!(
            line(&istio_reset()),
            "12:53:25.866 RST sent by proxy[812] fd=23 127.0.0.1:15001 -> 127.0.0.1:38120 after response from \
             127.0.0.1:8080 with duplicate Transfer-Encoding (\"Chunked\", \"chunked\") reason=TCP_STATE"
        );
    }

    #[test]
    fn without_peek_reason_numbers_and_last_error() {
        let mut record = istio_reset();
        let reset = record.reset.as_mut().unwrap();
        reset.anomalies.clear();
        reset.exchanges.clear();
        reset.reason_name = None;
        reset.last_error = Some(LastError { operation: Operation::Connect, errno: 111, ts_ns: 1 });
        assert_eq!(
            line(&record),
            "12:53:25.866 RST sent by proxy[812] fd=23 127.0.0.1:15001 -> 127.0.0.1:38120 reason=14 \
             last-error=ECONNREFUSED(connect)"
        );
    }

    #[test]
    fn kernel_resets_and_received_ones() {
        let mut record = istio_reset();
        let reset = record.reset.as_mut().unwrap();
        reset.owner = ResetOwner::Kernel;
        reset.has_socket = false;
        reset.anomalies.clear();
        reset.reason_name = Some("NO_SOCKET".into());
        assert!(line(&record).contains(" RST sent by kernel (no socket) 127.0.0.1:15001 -> "));
        record.reset.as_mut().unwrap().has_socket = true;
        assert!(line(&record).contains(" RST sent by kernel (socket of no traced process) "));
        let mut received = istio_reset();
        let reset = received.reset.as_mut().unwrap();
        reset.direction = ResetDirection::Received;
        reset.reason = None;
        reset.reason_name = None;
        reset.anomalies.clear();
        assert!(
            line(&received).ends_with(" RST received by proxy[812] fd=23 127.0.0.1:15001 -> 127.0.0.1:38120")
        );
    }

    #[test]
    fn anomalies_of_a_sent_message_and_several_in_one() {
        use crate::http_anomaly::{Anomaly, AnomalyKind};
        use crate::reset::DataDirection;
        let mut record = istio_reset();
        let reset = record.reset.as_mut().unwrap();
        let mut second = reset.anomalies[0].clone();
        second.anomaly = Anomaly {
            kind: AnomalyKind::TransferEncodingWithContentLength,
            values: vec!["chunked".into(), "5".into()],
        };
        reset.anomalies.push(second);
        for found in &mut reset.anomalies {
            found.direction = DataDirection::Sent;
        }
        let text = line(&record);
        assert!(
            text.contains(
                "after response sent to 127.0.0.1:8080 with duplicate Transfer-Encoding (\"Chunked\", \"chunked\") \
                 and Transfer-Encoding with Content-Length (\"chunked\", \"5\")"
            ),
            "{text}"
        );
    }
}
