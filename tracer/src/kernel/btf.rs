//! Member offsets of kernel structs from BTF (/sys/kernel/btf/vmlinux).
//!
//! Hand-written, and only this much of BTF: aya-obj 0.3 parses BTF but keeps its type
//! table and struct members crate-private (only `id_by_type_name_kind` is public), the
//! btf-rs crate is LGPL (a licence problem inside this MIT/Apache binary), and libbpf-rs
//! would bring libbpf's C. The format is stable kernel UAPI
//! (include/uapi/linux/btf.h, Documentation/bpf/btf.rst): a header, a type section of
//! variable-length records and a string section. Every read is bounds-checked.

use std::collections::HashMap;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF data (magic {0:#06x}, expected 0xeb9f)")]
    Magic(u16),
    #[error("BTF data truncated at byte {0}")]
    Truncated(usize),
    #[error("BTF type {id} has unknown kind {kind}")]
    UnknownKind { id: u32, kind: u32 },
    #[error("the kernel's BTF has no struct {0}")]
    NoStruct(String),
    #[error("struct {strukt} has no member {member} in the kernel's BTF")]
    NoMember { strukt: String, member: String },
    #[error("{path} is not a struct or union in the kernel's BTF")]
    NotComposite { path: String },
    #[error(
        "the kernel's BTF nests anonymous members of {strukt} more than {MAX_ANONYMOUS_DEPTH} deep (a loop?) \
         looking for {member}; the BTF is malformed"
    )]
    AnonymousTooDeep { strukt: String, member: String },
    #[error("{path} lies beyond bit 2^32 of its struct in the kernel's BTF; the BTF is malformed")]
    OffsetOverflow { path: String },
}

/// Anonymous structs and unions inside each other: C code nests a few; a BTF type that
/// contains itself would recurse without end.
const MAX_ANONYMOUS_DEPTH: usize = 32;

const MAGIC: u16 = 0xeb9f;

// Kinds (include/uapi/linux/btf.h).
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Where a member is: in bits from the start of the outermost struct, and its width
/// when it is a bitfield.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberOffset {
    pub bit_offset: u32,
    /// 0 for a whole (non-bitfield) member.
    pub bitfield_size: u32,
}

impl MemberOffset {
    pub fn byte_offset(self) -> u32 {
        self.bit_offset / 8
    }
}

#[derive(Clone, Debug)]
struct Member {
    name: String,
    type_id: u32,
    offset: MemberOffset,
}

#[derive(Clone, Debug)]
enum Type {
    /// struct or union.
    Composite {
        members: Vec<Member>,
    },
    /// typedef, const, volatile, restrict, type tag: stands for another type.
    Alias(u32),
    /// An integer: bitfields in structs without kind_flag are encoded in it.
    Int {
        bit_offset: u32,
        bits: u32,
    },
    Other,
}

/// The parts of a BTF blob needed to find member offsets.
pub struct Btf {
    /// Index = type id (0 is void).
    types: Vec<Type>,
    structs: HashMap<String, u32>,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn u32(&mut self) -> Result<u32, BtfError> {
        let bytes = self.data.get(self.pos..self.pos + 4).ok_or(BtfError::Truncated(self.pos))?;
        self.pos += 4;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    }

    fn skip(&mut self, bytes: usize) -> Result<(), BtfError> {
        if self.pos + bytes > self.data.len() {
            return Err(BtfError::Truncated(self.data.len()));
        }
        self.pos += bytes;
        Ok(())
    }
}

fn string_at(strings: &[u8], offset: u32) -> String {
    let Some(rest) = strings.get(offset as usize..) else { return String::new() };
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

impl Btf {
    /// Parses little-endian BTF (what x86-64 and arm64 kernels expose).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let header = data.get(..24).ok_or(BtfError::Truncated(data.len()))?;
        let magic = u16::from_le_bytes([header[0], header[1]]);
        if magic != MAGIC {
            return Err(BtfError::Magic(magic));
        }
        let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes")) as usize;
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (word(4), word(8), word(12), word(16), word(20));
        let section = |off: usize, len: usize| {
            data.get(hdr_len + off..hdr_len + off + len).ok_or(BtfError::Truncated(data.len()))
        };
        let type_section = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;

        let mut types = vec![Type::Other];
        let mut structs = HashMap::new();
        let mut cursor = Cursor { data: type_section, pos: 0 };
        while cursor.pos < type_section.len() {
            let id = types.len() as u32;
            let name = string_at(strings, cursor.u32()?);
            let info = cursor.u32()?;
            let size_or_type = cursor.u32()?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let parsed = match kind {
                KIND_INT => {
                    let encoding = cursor.u32()?;
                    Type::Int { bit_offset: (encoding >> 16) & 0xff, bits: encoding & 0xff }
                }
                KIND_ARRAY => {
                    cursor.skip(12)?;
                    Type::Other
                }
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let name = string_at(strings, cursor.u32()?);
                        let type_id = cursor.u32()?;
                        let raw = cursor.u32()?;
                        let offset = if kind_flag {
                            MemberOffset { bit_offset: raw & 0x00ff_ffff, bitfield_size: raw >> 24 }
                        } else {
                            MemberOffset { bit_offset: raw, bitfield_size: 0 }
                        };
                        members.push(Member { name, type_id, offset });
                    }
                    if kind == KIND_STRUCT && !name.is_empty() {
                        // The first definition wins; later ones are module duplicates.
                        structs.entry(name).or_insert(id);
                    }
                    Type::Composite { members }
                }
                KIND_ENUM => {
                    cursor.skip(8 * vlen)?;
                    Type::Other
                }
                KIND_ENUM64 => {
                    cursor.skip(12 * vlen)?;
                    Type::Other
                }
                KIND_FUNC_PROTO => {
                    cursor.skip(8 * vlen)?;
                    Type::Other
                }
                KIND_VAR | KIND_DECL_TAG => {
                    cursor.skip(4)?;
                    Type::Other
                }
                KIND_DATASEC => {
                    cursor.skip(12 * vlen)?;
                    Type::Other
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias(size_or_type)
                }
                // PTR, FWD, FUNC, FLOAT: nothing follows the common part.
                2 | 7 | 12 | 16 => Type::Other,
                other => return Err(BtfError::UnknownKind { id, kind: other }),
            };
            types.push(parsed);
        }
        Ok(Self { types, structs })
    }

    /// The offset of `path` (members separated by dots, e.g. `__sk_common.skc_daddr`)
    /// inside struct `strukt`. Members of anonymous structs and unions are found as
    /// if they were the parent's own, as C sees them.
    pub fn member_offset(&self, strukt: &str, path: &str) -> Result<MemberOffset, BtfError> {
        let mut type_id = *self.structs.get(strukt).ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
        let mut total = MemberOffset { bit_offset: 0, bitfield_size: 0 };
        let mut walked = strukt.to_string();
        for name in path.split('.') {
            let members =
                self.members(type_id).ok_or_else(|| BtfError::NotComposite { path: walked.clone() })?;
            let (member_type, offset) = self
                .find(members, name, &walked, 0)?
                .ok_or_else(|| BtfError::NoMember { strukt: walked.clone(), member: name.into() })?;
            walked = format!("{walked}.{name}");
            let bit_offset = total
                .bit_offset
                .checked_add(offset.bit_offset)
                .ok_or_else(|| BtfError::OffsetOverflow { path: walked.clone() })?;
            total = MemberOffset { bit_offset, bitfield_size: offset.bitfield_size };
            type_id = member_type;
        }
        // A bitfield in a struct without kind_flag: the width is in the int type.
        if total.bitfield_size == 0
            && let Type::Int { bit_offset, bits } =
                self.types.get(self.resolve(type_id) as usize).unwrap_or(&Type::Other)
            && *bits % 8 != 0
        {
            total.bit_offset =
                total.bit_offset.checked_add(*bit_offset).ok_or(BtfError::OffsetOverflow { path: walked })?;
            total.bitfield_size = *bits;
        }
        Ok(total)
    }

    /// `name` among `members` of `strukt`, descending into anonymous members (`depth`
    /// levels down already).
    fn find(
        &self,
        members: &[Member],
        name: &str,
        strukt: &str,
        depth: usize,
    ) -> Result<Option<(u32, MemberOffset)>, BtfError> {
        if depth > MAX_ANONYMOUS_DEPTH {
            return Err(BtfError::AnonymousTooDeep { strukt: strukt.into(), member: name.into() });
        }
        for member in members {
            if member.name == name {
                return Ok(Some((member.type_id, member.offset)));
            }
            if member.name.is_empty()
                && let Some(inner) = self.members(member.type_id)
                && let Some((type_id, offset)) = self.find(inner, name, strukt, depth + 1)?
            {
                let bit_offset = member
                    .offset
                    .bit_offset
                    .checked_add(offset.bit_offset)
                    .ok_or_else(|| BtfError::OffsetOverflow { path: format!("{strukt}.{name}") })?;
                return Ok(Some((type_id, MemberOffset { bit_offset, bitfield_size: offset.bitfield_size })));
            }
        }
        Ok(None)
    }

    fn members(&self, type_id: u32) -> Option<&[Member]> {
        match self.types.get(self.resolve(type_id) as usize)? {
            Type::Composite { members } => Some(members),
            _ => None,
        }
    }

    /// Follows typedefs and qualifiers (bounded: BTF from a broken file may loop).
    fn resolve(&self, mut type_id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(type_id as usize) {
                Some(Type::Alias(next)) => type_id = *next,
                _ => break,
            }
        }
        type_id
    }
}

/// Builds BTF blobs for tests (here and in sock_offsets).
#[cfg(test)]
pub mod build {
    /// A BTF blob under construction: types are added in id order from 1.
    #[derive(Default)]
    pub struct BtfBuilder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl BtfBuilder {
        pub fn new() -> Self {
            Self { types: Vec::new(), strings: vec![0], next_id: 1 }
        }

        fn string(&mut self, text: &str) -> u32 {
            if text.is_empty() {
                return 0;
            }
            let at = self.strings.len() as u32;
            self.strings.extend_from_slice(text.as_bytes());
            self.strings.push(0);
            at
        }

        fn push(&mut self, words: &[u32]) -> u32 {
            for word in words {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        }

        pub fn int(&mut self, name: &str, bytes: u32) -> u32 {
            let name = self.string(name);
            self.push(&[name, 1 << 24, bytes, bytes * 8])
        }

        pub fn typedef(&mut self, name: &str, target: u32) -> u32 {
            let name = self.string(name);
            self.push(&[name, 8 << 24, target])
        }

        /// Members: (name, type, bit offset, bitfield size). kind_flag is set when any
        /// member is a bitfield, as pahole does.
        pub fn composite(
            &mut self,
            union: bool,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let name = self.string(name);
            let kind_flag = members.iter().any(|m| m.3 != 0);
            let kind = if union { 5 } else { 4 };
            let mut words =
                vec![name, (u32::from(kind_flag) << 31) | (kind << 24) | members.len() as u32, size];
            for &(member, type_id, bit_offset, bits) in members {
                let member = self.string(member);
                words.extend([
                    member,
                    type_id,
                    if kind_flag { (bits << 24) | bit_offset } else { bit_offset },
                ]);
            }
            self.push(&words)
        }

        pub fn finish(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&0xeb9fu16.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            for word in
                [24u32, 0, self.types.len() as u32, self.types.len() as u32, self.strings.len() as u32]
            {
                out.extend_from_slice(&word.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build::BtfBuilder;
    use super::*;

    /// struct inner { u32 a; union { u32 b; struct { u16 c; u16 d; }; }; u8 e:4, f:1; };
    /// struct outer { u64 x; struct inner in; };
    fn sample() -> Vec<u8> {
        let mut b = BtfBuilder::new();
        let u8_ = b.int("u8", 1);
        let u16_ = b.int("u16", 2);
        let u32_ = b.int("u32", 4);
        let u64_ = b.int("u64", 8);
        let be32 = b.typedef("__be32", u32_);
        let cd = b.composite(false, "", 4, &[("c", u16_, 0, 0), ("d", u16_, 16, 0)]);
        let bcd = b.composite(true, "", 4, &[("b", be32, 0, 0), ("", cd, 0, 0)]);
        let inner = b.composite(
            false,
            "inner",
            12,
            &[("a", u32_, 0, 0), ("", bcd, 32, 0), ("e", u8_, 64, 4), ("f", u8_, 68, 1)],
        );
        b.composite(false, "outer", 20, &[("x", u64_, 0, 0), ("in", inner, 64, 0)]);
        b.finish()
    }

    #[test]
    fn offsets_of_plain_anonymous_and_bitfield_members() {
        let btf = Btf::parse(&sample()).unwrap();
        let at = |s: &str, p: &str| btf.member_offset(s, p).unwrap();
        assert_eq!(at("inner", "a"), MemberOffset { bit_offset: 0, bitfield_size: 0 });
        assert_eq!(at("inner", "b").byte_offset(), 4);
        assert_eq!(at("inner", "d").byte_offset(), 6, "through an anonymous union and struct");
        assert_eq!(at("inner", "e"), MemberOffset { bit_offset: 64, bitfield_size: 4 });
        assert_eq!(at("inner", "f"), MemberOffset { bit_offset: 68, bitfield_size: 1 });
        assert_eq!(at("outer", "in.d").byte_offset(), 8 + 6, "a path through a named member");
    }

    #[test]
    fn missing_names_are_errors_that_say_which() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("sock", "x"), Err(BtfError::NoStruct("sock".into())));
        assert_eq!(
            btf.member_offset("outer", "in.zz"),
            Err(BtfError::NoMember { strukt: "outer.in".into(), member: "zz".into() })
        );
        assert_eq!(btf.member_offset("outer", "x.y"), Err(BtfError::NotComposite { path: "outer.x".into() }));
    }

    /// Found writing the `btf` fuzz target (its binary crashed on it): a struct whose
    /// anonymous member is the struct itself made the member search recurse until the
    /// stack overflowed.
    #[test]
    fn an_anonymous_member_containing_its_own_struct_is_an_error() {
        let mut b = BtfBuilder::new();
        // Type 1 is the struct being built: its only member is an anonymous type 1.
        b.composite(false, "sock", 8, &[("", 1, 0, 0)]);
        let btf = Btf::parse(&b.finish()).unwrap();
        let err = btf.member_offset("sock", "__sk_common").unwrap_err();
        assert_eq!(err, BtfError::AnonymousTooDeep { strukt: "sock".into(), member: "__sk_common".into() });
        assert!(err.to_string().contains("malformed"), "{err}");
    }

    /// Offsets near 2^32 bits that add up past it are an error, not a wrapped offset.
    #[test]
    fn offsets_that_overflow_are_an_error() {
        let mut b = BtfBuilder::new();
        let u32_ = b.int("u32", 4);
        let inner = b.composite(false, "inner", 4, &[("x", u32_, u32::MAX - 7, 0)]);
        b.composite(false, "outer", 8, &[("in", inner, 64, 0)]);
        let btf = Btf::parse(&b.finish()).unwrap();
        assert_eq!(
            btf.member_offset("outer", "in.x"),
            Err(BtfError::OffsetOverflow { path: "outer.in.x".into() })
        );
        let mut b = BtfBuilder::new();
        let u32_ = b.int("u32", 4);
        let anonymous = b.composite(false, "", 4, &[("x", u32_, u32::MAX - 7, 0)]);
        b.composite(false, "outer", 8, &[("", anonymous, 64, 0)]);
        let btf = Btf::parse(&b.finish()).unwrap();
        assert_eq!(btf.member_offset("outer", "x"), Err(BtfError::OffsetOverflow { path: "outer.x".into() }));
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        assert_eq!(Btf::parse(b"\x00\x01").err(), Some(BtfError::Truncated(2)));
        assert_eq!(Btf::parse(&[0u8; 24]).err(), Some(BtfError::Magic(0)));
        let mut truncated = sample();
        truncated.truncate(60);
        assert!(matches!(Btf::parse(&truncated), Err(BtfError::Truncated(_))));
    }
}
