//! Why a call failed: what to look up for a failure ([`query_for`]) and what the
//! findings mean ([`classify`], a [`Verdict`] that applies itself to the record).
//!
//! The errno alone is ambiguous: connect() returns EADDRNOTAVAIL both when its 4-tuple
//! is taken (__inet_check_established() in net/ipv4/inet_hashtables.c) and when no
//! ephemeral port is left (__inet_hash_connect()); bind() returns EADDRINUSE for a
//! live or a TIME_WAIT holder (inet_csk_get_port() in net/ipv4/inet_connection_sock.c)
//! and EADDRNOTAVAIL for a non-local address unless IP_TRANSPARENT/IP_FREEBIND (or the
//! ip_nonlocal_bind sysctl) allow it (inet_addr_valid_or_nonlocal() in af_inet.c).

use std::net::IpAddr;

use tracer_common::options::{
    FLAG_IP_FREEBIND, FLAG_IP_TRANSPARENT, FLAG_IPV6_FREEBIND, FLAG_IPV6_TRANSPARENT,
};

use crate::{
    enrich::{Findings, Query},
    record::{Cause, EventName, Record},
};

const EADDRINUSE: i32 = libc::EADDRINUSE;
const EADDRNOTAVAIL: i32 = libc::EADDRNOTAVAIL;

const NONLOCAL_BIND_FLAGS: u32 =
    FLAG_IP_TRANSPARENT | FLAG_IP_FREEBIND | FLAG_IPV6_TRANSPARENT | FLAG_IPV6_FREEBIND;

/// What the live system must be asked to explain `record`, if anything.
pub fn query_for(record: &Record) -> Option<Query> {
    let errno = record.errno?;
    match (record.event, errno) {
        (EventName::ConnectError, EADDRNOTAVAIL) => {
            let dst = record.dst?;
            match record.src {
                Some(src) if src.port() != 0 => Some(Query::TupleHolders { src, dst }),
                src => Some(Query::PortUsage { src_ip: src.map_or(unspecified(&dst.ip()), |s| s.ip()), dst }),
            }
        }
        (EventName::ConnectError, EADDRINUSE) => {
            record.src.filter(|s| s.port() != 0).map(|local| Query::PortHolders { local })
        }
        (EventName::BindError, EADDRINUSE) => record.src.map(|local| Query::PortHolders { local }),
        (EventName::BindError, EADDRNOTAVAIL) if record.sockopts.flags & NONLOCAL_BIND_FLAGS == 0 => {
            record.src.map(|addr| Query::AddressIsLocal { addr: addr.ip() })
        }
        _ => None,
    }
}

fn unspecified(like: &IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// What a lookup produced: findings, or why there are none.
pub enum Lookup {
    /// Nothing needed looking up.
    NotNeeded,
    Found(Findings),
    Failed(String),
}

impl From<Option<Result<Findings, String>>> for Lookup {
    fn from(outcome: Option<Result<Findings, String>>) -> Self {
        match outcome {
            None => Self::NotNeeded,
            Some(Ok(findings)) => Self::Found(findings),
            Some(Err(why)) => Self::Failed(why),
        }
    }
}

/// What classification decided about a record: its cause (with a note when the cause
/// is unknown or partial) and the lookup's findings.
#[derive(Debug, PartialEq)]
pub struct Verdict {
    /// `None` for records that are not failures.
    pub cause: Option<(Cause, Option<String>)>,
    pub findings: Option<Findings>,
}

impl Verdict {
    /// Fills in the record's cause, holders, ports and note (the cause's note first,
    /// then the lookup's).
    pub fn apply(self, record: &mut Record) {
        if let Some((cause, note)) = self.cause {
            record.cause = Some(cause);
            record.note = note;
        }
        if let Some(findings) = self.findings {
            record.holders = findings.holders;
            record.ports = findings.ports;
            record.note = match (record.note.take(), findings.note) {
                (Some(cause), Some(lookup)) => Some(format!("{cause}; {lookup}")),
                (cause, lookup) => cause.or(lookup),
            };
        }
    }
}

/// The verdict on `record` given what the lookup for [`query_for`]'s query produced.
pub fn classify(record: &Record, lookup: Lookup) -> Verdict {
    let cause = cause_of(record, &lookup);
    let findings = match lookup {
        Lookup::Found(findings) => Some(findings),
        Lookup::NotNeeded | Lookup::Failed(_) => None,
    };
    Verdict { cause, findings }
}

/// The cause of a failure and, when the cause is unknown or partial, a note saying
/// what was seen. `None` for records that are not failures.
fn cause_of(record: &Record, lookup: &Lookup) -> Option<(Cause, Option<String>)> {
    if !record.event.is_failure() {
        return None;
    }
    let errno = record.errno?;
    let findings = match lookup {
        Lookup::Found(findings) => Some(findings),
        Lookup::Failed(why) => return Some((by_errno(errno), Some(format!("lookup failed: {why}")))),
        Lookup::NotNeeded => None,
    };
    let Some(findings) = findings else {
        return Some((by_errno(errno), None));
    };
    Some(match (record.event, errno) {
        (EventName::ConnectError, EADDRNOTAVAIL) if !findings.holders.is_empty() => (Cause::TupleInUse, None),
        (EventName::ConnectError, EADDRNOTAVAIL) => match findings.ports {
            Some(ports) if ports.in_use >= ports.range_size() => (Cause::EphemeralPortsExhausted, None),
            Some(ports) => (
                Cause::Unknown,
                Some(format!(
                    "no source port was free, yet only {} of {} ports in ip_local_port_range {}-{} lead to \
                     this destination (bound or reserved ports count too)",
                    ports.in_use,
                    ports.range_size(),
                    ports.range.0,
                    ports.range.1
                )),
            ),
            None => (Cause::Unknown, Some("no socket holds this tuple any more".into())),
        },
        (_, EADDRINUSE) if !findings.holders.is_empty() => (Cause::PortInUse, None),
        (_, EADDRINUSE) => (Cause::Unknown, Some("no socket holds this port any more".into())),
        (EventName::BindError, EADDRNOTAVAIL) => match findings.address_is_local {
            Some(false) => (Cause::AddressNotLocal, None),
            Some(true) => (Cause::Unknown, Some("the address is configured in the namespace now".into())),
            None => (Cause::Unknown, None),
        },
        _ => (by_errno(errno), None),
    })
}

/// Causes the errno alone establishes.
fn by_errno(errno: i32) -> Cause {
    match errno {
        libc::ECONNREFUSED => Cause::ConnectionRefused,
        libc::ETIMEDOUT => Cause::TimedOut,
        libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN => Cause::Unreachable,
        _ => Cause::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::{
        record::{Holder, PortUsage, TcpState},
        testing,
    };

    fn failure(event: EventName, errno: i32, src: Option<&str>, dst: Option<&str>) -> Record {
        Record {
            errno: Some(errno),
            src: src.map(testing::addr),
            dst: dst.map(testing::addr),
            ..testing::record(event)
        }
    }

    fn holder(state: TcpState) -> Holder {
        Holder {
            state,
            src: "10.0.1.7:40312".parse().unwrap(),
            dst: None,
            inode: 1,
            owner: None,
            timer_ms: None,
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tuple_in_use() {
        let r = failure(EventName::ConnectError, 99, Some("10.0.1.7:40312"), Some("52.216.8.19:443"));
        assert_eq!(
            query_for(&r),
            Some(Query::TupleHolders { src: sa("10.0.1.7:40312"), dst: sa("52.216.8.19:443") })
        );
        let found = Findings { holders: vec![holder(TcpState::Established)], ..Default::default() };
        assert_eq!(cause_of(&r, &Lookup::Found(found)), Some((Cause::TupleInUse, None)));
        let (cause, note) = cause_of(&r, &Lookup::Found(Findings::default())).unwrap();
        assert_eq!(cause, Cause::Unknown);
        assert!(note.unwrap().contains("no socket holds this tuple"));
    }

    #[test]
    fn ephemeral_ports_exhausted_only_when_counted() {
        let r = failure(EventName::ConnectError, 99, Some("127.0.0.1:0"), Some("127.0.0.19:443"));
        assert_eq!(
            query_for(&r),
            Some(Query::PortUsage { src_ip: "127.0.0.1".parse().unwrap(), dst: sa("127.0.0.19:443") })
        );
        let full =
            Findings { ports: Some(PortUsage { range: (40000, 40007), in_use: 8 }), ..Default::default() };
        assert_eq!(cause_of(&r, &Lookup::Found(full)), Some((Cause::EphemeralPortsExhausted, None)));
        let partial =
            Findings { ports: Some(PortUsage { range: (40000, 40007), in_use: 3 }), ..Default::default() };
        let (cause, note) = cause_of(&r, &Lookup::Found(partial)).unwrap();
        assert_eq!(cause, Cause::Unknown);
        assert!(note.unwrap().contains("only 3 of 8 ports"));
    }

    #[test]
    fn unknown_source_asks_about_any_local_address() {
        let r = failure(EventName::ConnectError, 99, None, Some("[::1]:443"));
        assert_eq!(
            query_for(&r),
            Some(Query::PortUsage { src_ip: "::".parse().unwrap(), dst: sa("[::1]:443") })
        );
    }

    #[test]
    fn bind_port_in_use_live_or_time_wait() {
        let r = failure(EventName::BindError, 98, Some("127.0.0.19:443"), None);
        assert_eq!(query_for(&r), Some(Query::PortHolders { local: sa("127.0.0.19:443") }));
        for state in [TcpState::Listen, TcpState::TimeWait] {
            let found = Findings { holders: vec![holder(state)], ..Default::default() };
            assert_eq!(cause_of(&r, &Lookup::Found(found)), Some((Cause::PortInUse, None)));
        }
    }

    #[test]
    fn address_not_local_unless_transparent() {
        let mut r = failure(EventName::BindError, 99, Some("10.9.9.9:80"), None);
        assert_eq!(query_for(&r), Some(Query::AddressIsLocal { addr: "10.9.9.9".parse().unwrap() }));
        let absent = Findings { address_is_local: Some(false), ..Default::default() };
        assert_eq!(cause_of(&r, &Lookup::Found(absent)), Some((Cause::AddressNotLocal, None)));
        r.sockopts.flags = FLAG_IP_TRANSPARENT;
        assert_eq!(query_for(&r), None, "IP_TRANSPARENT allows non-local binds: something else failed");
        assert_eq!(cause_of(&r, &Lookup::NotNeeded), Some((Cause::Unknown, None)));
    }

    #[test]
    fn errno_alone() {
        for (errno, cause) in [
            (111, Cause::ConnectionRefused),
            (110, Cause::TimedOut),
            (113, Cause::Unreachable),
            (101, Cause::Unreachable),
            (13, Cause::Unknown),
        ] {
            let r = failure(EventName::ConnectError, errno, Some("1.1.1.1:1"), Some("2.2.2.2:2"));
            assert_eq!(query_for(&r), None);
            assert_eq!(cause_of(&r, &Lookup::NotNeeded), Some((cause, None)), "errno {errno}");
        }
    }

    #[test]
    fn failed_lookup_keeps_a_note() {
        let r = failure(EventName::ConnectError, 99, Some("10.0.1.7:40312"), Some("52.216.8.19:443"));
        let (cause, note) = cause_of(&r, &Lookup::Failed("process 1 exited".into())).unwrap();
        assert_eq!(cause, Cause::Unknown);
        assert_eq!(note.as_deref(), Some("lookup failed: process 1 exited"));
    }

    #[test]
    fn a_verdict_fills_in_holders_and_puts_the_causes_note_before_the_lookups() {
        let mut r = failure(EventName::ConnectError, 99, Some("10.0.1.7:40312"), Some("52.216.8.19:443"));
        let found = Findings {
            holders: vec![holder(TcpState::Established)],
            note: Some("owner not found".into()),
            ..Default::default()
        };
        classify(&r, Lookup::Found(found)).apply(&mut r);
        assert_eq!((r.cause, r.holders.len()), (Some(Cause::TupleInUse), 1));
        assert_eq!(r.note.as_deref(), Some("owner not found"));

        let mut r = failure(EventName::ConnectError, 99, Some("10.0.1.7:40312"), Some("52.216.8.19:443"));
        let none = Findings { note: Some("namespace gone".into()), ..Default::default() };
        classify(&r, Lookup::Found(none)).apply(&mut r);
        assert_eq!(r.cause, Some(Cause::Unknown));
        assert_eq!(r.note.as_deref(), Some("no socket holds this tuple any more; namespace gone"));

        let mut r = failure(EventName::BindError, 98, Some("127.0.0.1:80"), None);
        classify(&r, Lookup::from(Some(Err("not in this fake".to_string())))).apply(&mut r);
        assert_eq!(
            (r.cause, r.note.as_deref()),
            (Some(Cause::Unknown), Some("lookup failed: not in this fake"))
        );
        assert!(r.holders.is_empty());
    }

    #[test]
    fn successes_have_no_cause() {
        let mut r = failure(EventName::Connect, 0, None, None);
        r.errno = None;
        assert_eq!(cause_of(&r, &Lookup::NotNeeded), None);
        assert_eq!(query_for(&r), None);
    }
}
