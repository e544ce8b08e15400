//! Cilium's SO_MARK layout, decoded as a hint beside the raw mark.
//!
//! Cilium's proxy (Envoy with the cilium/proxy filters) and its DNS proxy mark their
//! upstream sockets so that the datapath knows which security identity the traffic
//! belongs to. Seeing `0x32030b00` decoded as "egress proxy, identity 12803" tells the
//! reader which pod a failing upstream connect was made for.
//!
//! Layout (cilium/cilium `bpf/lib/common.h` "Magic ctx->mark", `bpf/lib/identity.h`
//! `get_identity`/`set_identity_mark`, `bpf/lib/clustermesh.h`,
//! `pkg/datapath/linux/linux_defaults/mark.go`):
//!
//! ```text
//!  31                           16 15   12 11    8 7             0
//! +-------------------------------+-------+-------+---------------+
//! |   local identity (16 bits)    |  key  | magic | cluster id    |
//! +-------------------------------+-------+-------+---------------+
//! ```
//!
//! - The magic byte is bits 8..15 (`MARK_MAGIC_KEY_MASK` 0xFF00); the datapath tests
//!   its low nibble (`MARK_MAGIC_HOST_MASK` 0x0F00), the high nibble is the IPsec key
//!   index or a Kubernetes mark bit (0x4000 masquerade, 0x8000 drop).
//! - Identity-carrying magics (proxy ingress 0x0A00, proxy egress 0x0B00, identity
//!   0x0F00): the 24-bit security identity is `cluster << local_bits | local`.
//! - With the agent flag `max-connected-clusters=511` (`pkg/clustermesh/types`: only 255
//!   and 511 are accepted) the cluster id has 9 bits and the local identity 15: bit 31
//!   holds the cluster id's bit 8 (`format_cluster_id_mark`, `get_cluster_id_upper_mask`).
//!   A mark does not say which mode the node runs, so [`MarkLayout::DEFAULT`] (255) is
//!   used unless the caller knows better.
//! - Proxy egress with endpoint ID (0x0900, `MARK_MAGIC_PROXY_EGRESS_EPID`, east/west L7
//!   load balancing with the original source address): the upper 16 bits are the source
//!   endpoint ID, not an identity, and the low 8 bits are zero.
//! - cilium/proxy `cilium/bpf_metadata.cc` builds the upstream mark as
//!   `(ingress ? 0x0A00 : 0x0B00) | (identity >> 16 & 0xFF) | (identity & 0xFFFF) << 16`
//!   (so Envoy itself only knows the 255-cluster layout), and
//!   `cilium/socket_option_cilium_mark.cc` logs "magic mark: {mark & 0xff00}, id:
//!   {mark >> 16}, cluster: {mark & 0xff}": its `id` is the local part, which equals the
//!   identity here whenever the cluster id is 0.
//!
//! Known from those sources: every magic value below and the identity/cluster packing.
//! Assumed: that the magics without a payload are only hinted when the rest of the
//! mark is zero (a socket carrying them would be set exactly so); this keeps arbitrary
//! marks of other software (Istio's 0x539, ...) from getting a bogus Cilium hint. IPsec
//! marks with a key index in the high nibble (0x1E00..0xFE00) are not decoded as such:
//! they live on packets, not sockets, and 0x1E00 is named after WireGuard, which Cilium
//! gives the same value.

use thiserror::Error;

/// Bits of the mark that hold the magic (`MARK_MAGIC_KEY_MASK`).
const MAGIC_MASK: u32 = 0xFF00;
/// Low byte: the cluster id (its low 8 bits).
const CLUSTER_LOWER_MASK: u32 = 0xFF;
/// Bits of a non-node-local security identity (`IDENTITY_BITS`).
const IDENTITY_BITS: u32 = 24;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MarkError {
    #[error("max-connected-clusters {0} is not one Cilium supports: use 255 or 511")]
    UnsupportedMaxConnectedClusters(u32),
}

/// What a Cilium mark says, next to the raw value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CiliumMark {
    /// The magic byte, e.g. 0x0B00.
    pub magic: u32,
    /// Short name of the magic, e.g. `proxy-egress`.
    pub magic_name: &'static str,
    /// Security identity, rebuilt the way the datapath's `get_identity()` does (cluster
    /// id above the local identity); `None` when the magic carries none. 0 is Cilium's
    /// "unknown" identity: a proxy listener's mark has only the magic.
    pub identity: Option<u32>,
    /// Cluster id, with the identity.
    pub cluster: Option<u32>,
    /// Source endpoint ID, for `proxy-egress-epid` marks.
    pub endpoint_id: Option<u32>,
}

#[derive(Clone, Copy)]
enum Payload {
    Identity,
    EndpointId,
    /// Only the magic; `allowed` are the other bits Cilium may set with it.
    Nothing {
        allowed: u32,
    },
}

/// `MARK_MAGIC_*` of bpf/lib/common.h and `MagicMark*` of linux_defaults/mark.go.
const MAGICS: [(u32, &str, Payload); 12] = [
    // Upper 16 bits: the proxy port (bpf/lib/proxy.h `ctx_redirect_to_proxy*`).
    (0x0200, "to-proxy", Payload::Nothing { allowed: 0xFFFF_0000 }),
    (0x0300, "snat-done", Payload::Nothing { allowed: 0 }),
    (0x0400, "overlay", Payload::Nothing { allowed: 0 }),
    (0x0900, "proxy-egress-epid", Payload::EndpointId),
    (0x0A00, "proxy-ingress", Payload::Identity),
    (0x0B00, "proxy-egress", Payload::Identity),
    (0x0C00, "host", Payload::Nothing { allowed: 0 }),
    // MARK_MAGIC_HEALTH (socket LB health checks) shares the value of MARK_MAGIC_DECRYPT.
    (0x0D00, "health-or-decrypt", Payload::Nothing { allowed: 0 }),
    (0x0E00, "encrypt", Payload::Nothing { allowed: 0 }),
    (0x0F00, "identity", Payload::Identity),
    (0x1D00, "decrypted-overlay", Payload::Nothing { allowed: 0 }),
    (0x1E00, "wireguard-encrypted", Payload::Nothing { allowed: 0 }),
];

/// How many bits of the mark the cluster id takes, per the agent's
/// `max-connected-clusters`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkLayout {
    cluster_id_bits: u32,
}

impl MarkLayout {
    /// `max-connected-clusters=255`, Cilium's default.
    pub const DEFAULT: Self = Self { cluster_id_bits: 8 };

    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "no option selects the 511-cluster layout yet; the tests cover it")
    )]
    pub fn for_max_connected_clusters(max: u32) -> Result<Self, MarkError> {
        match max {
            255 => Ok(Self { cluster_id_bits: 8 }),
            511 => Ok(Self { cluster_id_bits: 9 }),
            other => Err(MarkError::UnsupportedMaxConnectedClusters(other)),
        }
    }

    /// The Cilium reading of `mark`, or `None` when it is not shaped like one.
    pub fn decode(self, mark: u32) -> Option<CiliumMark> {
        let magic = mark & MAGIC_MASK;
        let (_, magic_name, payload) = MAGICS.iter().find(|(value, _, _)| *value == magic)?;
        let mut decoded = CiliumMark { magic, magic_name, identity: None, cluster: None, endpoint_id: None };
        match payload {
            Payload::Identity => {
                let (identity, cluster) = self.identity(mark);
                decoded.identity = Some(identity);
                decoded.cluster = Some(cluster);
            }
            Payload::EndpointId => {
                if mark & CLUSTER_LOWER_MASK != 0 {
                    return None;
                }
                decoded.endpoint_id = Some(mark >> 16);
            }
            Payload::Nothing { allowed } => {
                if mark & !(MAGIC_MASK | allowed) != 0 {
                    return None;
                }
            }
        }
        Some(decoded)
    }

    /// (identity, cluster id) as `get_identity()` and `ctx_get_cluster_id_mark()`.
    fn identity(self, mark: u32) -> (u32, u32) {
        let local_bits = IDENTITY_BITS - self.cluster_id_bits;
        let local_max = (1 << local_bits) - 1;
        let cluster_max = (1 << self.cluster_id_bits) - 1;
        let cluster_upper_mask = (cluster_max & !CLUSTER_LOWER_MASK) << (8 + local_bits);
        let cluster = (mark & CLUSTER_LOWER_MASK) | (mark & cluster_upper_mask) >> (8 + local_bits);
        let identity = cluster << local_bits | (mark >> 16) & local_max;
        (identity, cluster)
    }
}

/// The Cilium reading of `mark` with the default layout (255 clusters).
pub fn decode_cilium_mark(mark: u32) -> Option<CiliumMark> {
    MarkLayout::DEFAULT.decode(mark)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_mark(magic: u32, magic_name: &'static str, identity: u32, cluster: u32) -> CiliumMark {
        CiliumMark { magic, magic_name, identity: Some(identity), cluster: Some(cluster), endpoint_id: None }
    }

    #[test]
    fn envoy_egress_mark_of_the_incident() {
        // Envoy logged: "SO_MARK to 32030b00 (magic mark: b00, id: 12803, cluster: 0)".
        assert_eq!(decode_cilium_mark(0x3203_0b00), Some(identity_mark(0x0b00, "proxy-egress", 12803, 0)));
    }

    #[test]
    fn ingress_mark_with_a_cluster_id() {
        // Identity 0x2A3203 = cluster 42, local 12803, packed as bpf_metadata.cc does.
        let mark = 0x0A00 | 42 | (0x3203 << 16);
        assert_eq!(decode_cilium_mark(mark), Some(identity_mark(0x0a00, "proxy-ingress", 0x2A_3203, 42)));
    }

    #[test]
    fn identity_mark_of_the_datapath() {
        assert_eq!(decode_cilium_mark(0x0001_0f00), Some(identity_mark(0x0f00, "identity", 1, 0)));
    }

    #[test]
    fn listener_mark_has_the_unknown_identity() {
        assert_eq!(decode_cilium_mark(0x0b00), Some(identity_mark(0x0b00, "proxy-egress", 0, 0)));
    }

    #[test]
    fn bit_31_is_identity_with_255_clusters_and_cluster_with_511() {
        let mark = 0x8005_0b07;
        assert_eq!(
            decode_cilium_mark(mark),
            Some(identity_mark(0x0b00, "proxy-egress", 7 << 16 | 0x8005, 7))
        );
        let wide = MarkLayout::for_max_connected_clusters(511).unwrap();
        // Cluster 0x107 = 263, local identity 5 in 15 bits.
        assert_eq!(wide.decode(mark), Some(identity_mark(0x0b00, "proxy-egress", 263 << 15 | 5, 263)));
    }

    #[test]
    fn wide_layout_round_trips_what_set_identity_mark_writes() {
        let wide = MarkLayout::for_max_connected_clusters(511).unwrap();
        for (cluster, local) in [(1u32, 1u32), (255, 0x7FFF), (256, 12803), (511, 0x4000)] {
            let identity = cluster << 15 | local;
            // set_identity_mark: format_cluster_id_mark(cluster) | magic | local << 16.
            let mark = (cluster & 0xFF) | (cluster & !0xFF) << 23 | 0x0F00 | local << 16;
            assert_eq!(wide.decode(mark), Some(identity_mark(0x0f00, "identity", identity, cluster)));
        }
    }

    #[test]
    fn endpoint_id_mark_of_l7_load_balancing() {
        let decoded = decode_cilium_mark(0x0ABC_0900).unwrap();
        assert_eq!(
            decoded,
            CiliumMark {
                magic: 0x0900,
                magic_name: "proxy-egress-epid",
                identity: None,
                cluster: None,
                endpoint_id: Some(0x0ABC),
            }
        );
        assert_eq!(decode_cilium_mark(0x0ABC_0901), None, "the low byte is zero in epid marks");
    }

    #[test]
    fn marks_without_payload() {
        let host = decode_cilium_mark(0x0c00).unwrap();
        assert_eq!((host.magic_name, host.identity, host.endpoint_id), ("host", None, None));
        assert_eq!(decode_cilium_mark(0x0d00).unwrap().magic_name, "health-or-decrypt");
        assert_eq!(decode_cilium_mark(0x1e00).unwrap().magic_name, "wireguard-encrypted");
        assert_eq!(decode_cilium_mark(0x1d00).unwrap().magic_name, "decrypted-overlay");
        assert_eq!(decode_cilium_mark(0x3FF2_0200).unwrap().magic_name, "to-proxy");
        assert_eq!(decode_cilium_mark(0x0001_0c00), None, "a host mark carries nothing else");
    }

    #[test]
    fn foreign_marks_get_no_hint() {
        // Istio's outbound mark, small marks of policy routing, a Kubernetes bit,
        // and a random value.
        for mark in [0x539, 0x1, 0x100, 0x222, 0x4000, 0x4b00, 0xdead_beef, 0xffff_ffff] {
            assert_eq!(decode_cilium_mark(mark), None, "{mark:#x}");
        }
    }

    #[test]
    fn only_255_and_511_clusters_are_layouts() {
        assert_eq!(MarkLayout::for_max_connected_clusters(255), Ok(MarkLayout::DEFAULT));
        let err = MarkLayout::for_max_connected_clusters(1023).unwrap_err();
        assert_eq!(err, MarkError::UnsupportedMaxConnectedClusters(1023));
        assert!(err.to_string().contains("use 255 or 511"));
    }
}
