//! `struct sock` field offsets for the kprobe programs, from this kernel's BTF.

use std::path::Path;

use thiserror::Error;
use tracer_common::SockOffsets;

use super::btf::{Btf, BtfError, MemberOffset};

/// Where the kernel exposes its own BTF (CONFIG_DEBUG_INFO_BTF).
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Error)]
pub enum SockOffsetsError {
    #[error("cannot read {path} (kernel {kernel}; the kprobe backend needs CONFIG_DEBUG_INFO_BTF)")]
    Read {
        path: String,
        kernel: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel {kernel}: reading its BTF")]
    Btf {
        kernel: String,
        #[source]
        source: BtfError,
    },
    #[error(
        "kernel {kernel}: struct sock.{field} is a {bits}-bit bitfield at bit {bit}, wider than the byte the programs read"
    )]
    Bitfield { kernel: String, field: &'static str, bit: u32, bits: u32 },
}

/// The kernel's BTF, parsed once at load: the offsets of other structs (the accept fd
/// walk's, `sk_buff.sk` for the drop hook) come from it too.
pub fn read_btf(btf_path: &Path, kernel: &str) -> Result<Btf, SockOffsetsError> {
    let data = std::fs::read(btf_path).map_err(|source| SockOffsetsError::Read {
        path: btf_path.display().to_string(),
        kernel: kernel.into(),
        source,
    })?;
    Btf::parse(&data).map_err(|source| SockOffsetsError::Btf { kernel: kernel.into(), source })
}

/// The fields, by their names in include/net/sock.h (`struct sock_common`, embedded in
/// `struct sock` as `__sk_common`; most sit in anonymous unions).
pub fn from_btf(btf: &Btf, kernel: &str) -> Result<SockOffsets, SockOffsetsError> {
    let field_of = |strukt: &str, path: &str| {
        btf.member_offset(strukt, path)
            .map_err(|source| SockOffsetsError::Btf { kernel: kernel.into(), source })
    };
    let field = |path: &str| field_of("sock", path);
    let byte = |path: &str| field(path).map(MemberOffset::byte_offset);
    let bitfield = |path: &str, name: &'static str| -> Result<(u32, u32, u32), SockOffsetsError> {
        let at = field(path)?;
        let bits = at.bitfield_size.max(1);
        let shift = at.bit_offset % 8;
        if shift + bits > 8 {
            return Err(SockOffsetsError::Bitfield {
                kernel: kernel.into(),
                field: name,
                bit: at.bit_offset,
                bits,
            });
        }
        Ok((at.byte_offset(), shift, bits))
    };
    let (reuse_byte, reuse_shift, reuse_bits) = bitfield("__sk_common.skc_reuse", "skc_reuse")?;
    let (reuseport_byte, reuseport_shift, reuseport_bits) =
        bitfield("__sk_common.skc_reuseport", "skc_reuseport")?;
    Ok(SockOffsets {
        family: byte("__sk_common.skc_family")?,
        state: byte("__sk_common.skc_state")?,
        reuse_byte,
        reuse_shift,
        reuse_bits,
        reuseport_byte,
        reuseport_shift,
        reuseport_bits,
        num: byte("__sk_common.skc_num")?,
        dport: byte("__sk_common.skc_dport")?,
        rcv_saddr: byte("__sk_common.skc_rcv_saddr")?,
        daddr: byte("__sk_common.skc_daddr")?,
        v6_rcv_saddr: byte("__sk_common.skc_v6_rcv_saddr")?,
        v6_daddr: byte("__sk_common.skc_v6_daddr")?,
        mark: byte("sk_mark")?,
        err: byte("sk_err")?,
        protocol: byte("sk_protocol")?,
        sport: field_of("inet_sock", "inet_sport")?.byte_offset(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf::build::BtfBuilder;

    /// The shape of Linux 6.x `struct sock` around the fields read (offsets as in 6.12's
    /// x86-64 build: skc_daddr 0, skc_rcv_saddr 4, skc_dport 12, skc_num 14, skc_family 16,
    /// skc_state 18, skc_reuse:4 and skc_reuseport:1 in byte 19, skc_v6_daddr 56,
    /// skc_v6_rcv_saddr 72, sk_mark 440; sk_err at 380, sk_protocol at 516 and
    /// inet_sock's inet_sport at 780 here, only for the test).
    pub fn sock_btf() -> Vec<u8> {
        let mut b = BtfBuilder::new();
        let u8_ = b.int("unsigned char", 1);
        let u16_ = b.int("short unsigned int", 2);
        let u32_ = b.int("unsigned int", 4);
        let be32 = b.typedef("__be32", u32_);
        let be16 = b.typedef("__be16", u16_);
        let addrs = b.composite(false, "", 8, &[("skc_daddr", be32, 0, 0), ("skc_rcv_saddr", be32, 32, 0)]);
        let addrpair = b.composite(true, "", 8, &[("skc_addrpair", u32_, 0, 0), ("", addrs, 0, 0)]);
        let ports = b.composite(false, "", 4, &[("skc_dport", be16, 0, 0), ("skc_num", u16_, 16, 0)]);
        let portpair = b.composite(true, "", 4, &[("skc_portpair", u32_, 0, 0), ("", ports, 0, 0)]);
        let in6 = b.composite(false, "in6_addr", 16, &[]);
        let common = b.composite(
            false,
            "sock_common",
            136,
            &[
                ("", addrpair, 0, 0),
                ("", portpair, 96, 0),
                ("skc_family", u16_, 128, 0),
                ("skc_state", u8_, 144, 0),
                ("skc_reuse", u8_, 152, 4),
                ("skc_reuseport", u8_, 156, 1),
                ("skc_v6_daddr", in6, 448, 0),
                ("skc_v6_rcv_saddr", in6, 576, 0),
            ],
        );
        let int = b.int("int", 4);
        let sock = b.composite(
            false,
            "sock",
            760,
            &[
                ("__sk_common", common, 0, 0),
                ("sk_err", int, 3040, 0),
                ("sk_mark", u32_, 3520, 0),
                ("sk_protocol", u16_, 4128, 0),
            ],
        );
        b.composite(false, "inet_sock", 976, &[("sk", sock, 0, 0), ("inet_sport", be16, 6240, 0)]);
        b.finish()
    }

    #[test]
    fn offsets_of_the_fields_the_programs_read() {
        let btf = Btf::parse(&sock_btf()).unwrap();
        let offsets = from_btf(&btf, "test").unwrap();
        assert_eq!(
            offsets,
            SockOffsets {
                family: 16,
                state: 18,
                reuse_byte: 19,
                reuse_shift: 0,
                reuse_bits: 4,
                reuseport_byte: 19,
                reuseport_shift: 4,
                reuseport_bits: 1,
                num: 14,
                dport: 12,
                rcv_saddr: 4,
                daddr: 0,
                v6_rcv_saddr: 72,
                v6_daddr: 56,
                mark: 440,
                err: 380,
                protocol: 516,
                sport: 780,
            }
        );
    }

    #[test]
    fn this_machines_btf_has_every_field_when_it_has_btf() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            return; // kernels without CONFIG_DEBUG_INFO_BTF: covered by the error test below
        }
        let offsets = from_btf(&read_btf(path, "host").unwrap(), "host").unwrap();
        assert!(offsets.mark > offsets.v6_daddr, "sk_mark lies after sock_common: {offsets:?}");
        assert!(offsets.err > offsets.v6_daddr, "sk_err lies after sock_common: {offsets:?}");
        assert!(offsets.protocol > offsets.v6_daddr, "sk_protocol lies after sock_common: {offsets:?}");
        assert!(offsets.sport > offsets.mark, "inet_sport lies after struct sock: {offsets:?}");
        assert_eq!(offsets.reuse_byte, offsets.reuseport_byte, "{offsets:?}");
    }

    #[test]
    fn missing_btf_names_the_kernel_option() {
        let Err(err) = read_btf(Path::new("/nonexistent/vmlinux"), "6.1.0-test") else {
            panic!("a missing BTF file was read");
        };
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
        assert!(err.to_string().contains("6.1.0-test"), "{err}");
    }
}
