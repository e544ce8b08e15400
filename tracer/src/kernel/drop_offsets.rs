//! What the `skb:kfree_skb` program needs from this kernel: the tracepoint's fields
//! (`rx_sk` only from Linux 6.11), `struct sk_buff.sk` from BTF, and the names of
//! `enum skb_drop_reason`, whose values differ between kernels, from the format's
//! `__print_symbolic` table.

use std::{collections::BTreeMap, path::Path};

use tracer_common::{DropOffsets, reset::OFFSET_ABSENT};

use super::{
    btf::Btf,
    print_fmt::symbolic_table,
    tracefs::{Format, TracefsError},
};

pub const DROP_ATTACHMENT: super::Attachment = ("kfree_skb", "skb", "kfree_skb");

/// The program's offsets and this kernel's reason names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropSetup {
    pub offsets: DropOffsets,
    pub reasons: BTreeMap<u64, String>,
}

/// `Ok(None)` when the kernel has no `skb:kfree_skb` with a reason (before 5.17): the
/// caller says so and attaches nothing.
pub fn discover(tracefs: &Path, kernel: &str, btf: Option<&Btf>) -> Result<Option<DropSetup>, TracefsError> {
    let format = match Format::read(tracefs, "skb", "kfree_skb", kernel) {
        Ok(format) => format,
        Err(TracefsError::MissingTracepoint { .. }) => return Ok(None),
        Err(other) => return Err(other),
    };
    if format.field("reason").is_none() {
        return Ok(None);
    }
    let skb_sk = btf
        .and_then(|btf| btf.member_offset("sk_buff", "sk").ok())
        .map_or(OFFSET_ABSENT, |at| at.byte_offset());
    setup_of(&format, skb_sk).map(Some)
}

fn setup_of(format: &Format, skb_sk: u32) -> Result<DropSetup, TracefsError> {
    let rx_sk = match format.field("rx_sk") {
        Some(_) => format.offset("rx_sk", 8)?,
        None => OFFSET_ABSENT,
    };
    let offsets = DropOffsets {
        skbaddr: format.offset("skbaddr", 8)?,
        rx_sk,
        reason: format.offset("reason", 4)?,
        skb_sk,
    };
    Ok(DropSetup { offsets, reasons: symbolic_table(&format.print_fmt, "reason") })
}

/// What this kernel cannot show, for the start-up log.
pub fn gaps(offsets: &DropOffsets) -> Vec<&'static str> {
    let mut gaps = Vec::new();
    if offsets.rx_sk == OFFSET_ABSENT {
        gaps.push("skb:kfree_skb has no rx_sk (Linux 6.11+): received packets dropped before they reached a socket are not attributed");
    }
    if offsets.skb_sk == OFFSET_ABSENT {
        gaps.push("no BTF for struct sk_buff: dropped packets being sent are not attributed");
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    /// skb:kfree_skb on Linux 6.18 (reason table shortened).
    const FORMAT_6_18: &str = include_str!("testdata/kfree_skb.format");

    /// skb:kfree_skb on Linux 6.1: no rx_sk; reason at 28.
    const FORMAT_6_1: &str = include_str!("testdata/kfree_skb_6.1.format");

    #[test]
    fn kernel_6_18_has_rx_sk_and_its_own_reason_values() {
        let format = Format::parse(FORMAT_6_18, "skb:kfree_skb", "6.18").unwrap();
        let setup = setup_of(&format, 24).unwrap();
        assert_eq!(setup.offsets, DropOffsets { skbaddr: 8, rx_sk: 24, reason: 36, skb_sk: 24 });
        assert_eq!(setup.reasons.get(&40).map(String::as_str), Some("TCP_LISTEN_OVERFLOW"));
        assert_eq!(setup.reasons.get(&5).map(String::as_str), Some("SOCKET_FILTER"));
        assert!(gaps(&setup.offsets).is_empty());
    }

    #[test]
    fn kernel_6_1_has_no_rx_sk_and_other_values() {
        let format = Format::parse(FORMAT_6_1, "skb:kfree_skb", "6.1").unwrap();
        let setup = setup_of(&format, OFFSET_ABSENT).unwrap();
        assert_eq!(setup.offsets.rx_sk, OFFSET_ABSENT);
        assert_eq!(setup.offsets.reason, 28);
        assert_eq!(setup.reasons.get(&6).map(String::as_str), Some("SOCKET_FILTER"), "6 here, 5 on 6.18");
        assert_eq!(gaps(&setup.offsets).len(), 2);
    }
}
