//! One record of the kernel programs' `AYA_LOGS` ring (aya-log-common 0.2.0's format)
//! into a log line, or an error naming what is wrong with it.
//!
//! aya-log 0.3.0 has its own decoder, but keeps it private behind `EbpfLogger::flush`,
//! which unwraps its result (a malformed record panics the daemon) and reads the tag
//! bytes and the level straight into enums with `ptr::read_unaligned` (a byte outside
//! an enum's range is undefined behaviour, so catching the panic would not make it
//! safe). This decoder reads the same format with every byte checked, using
//! aya-log-common's own enums for the tag values, and formats the arguments as aya-log
//! does (docs/design.md "Kernel-side diagnostics").
//!
//! A record: its size (u16, counting itself), then fields of `[kind: u8][length: u16]
//! [value]`: the six header fields in any order, then `NumArgs` arguments. A literal piece
//! of the format string is a `Str` argument; a `{}` parameter is a `DisplayHint` argument
//! followed by the value. The ring item is padded beyond the size.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya_log_common::{ArgumentKind, DisplayHint, Level, LogValueLength, RecordFieldKind};
use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum LogRecordError {
    #[error("record of {available} bytes ends inside {what}")]
    Truncated { what: &'static str, available: usize },
    #[error("record says it has {declared} bytes, the ring item has {available}")]
    BadSize { declared: usize, available: usize },
    #[error("unknown header field kind {0}")]
    UnknownField(u8),
    #[error("header field {0} given twice")]
    DuplicateField(&'static str),
    #[error("header field {0} missing")]
    MissingField(&'static str),
    #[error("level {0} is none of aya-log's (1 error ... 5 trace)")]
    BadLevel(u8),
    #[error("unknown argument kind {0}")]
    UnknownArgument(u8),
    #[error("unknown display hint {0}")]
    UnknownHint(u8),
    #[error("{what} has {got} bytes, expected {expected}")]
    WrongLength { what: &'static str, expected: usize, got: usize },
    #[error("{what} is not UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("argument {kind:?} cannot be shown with display hint {hint:?}")]
    HintMismatch { kind: ArgumentKind, hint: Option<DisplayHint> },
}

/// A decoded line, ready for the `log` crate.
#[derive(Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: log::Level,
    pub target: String,
    pub module: String,
    pub file: String,
    pub line: u32,
    pub message: String,
}

/// Every variant, to look a tag byte up without transmuting it.
const FIELD_KINDS: [RecordFieldKind; 6] = [
    RecordFieldKind::Target,
    RecordFieldKind::Level,
    RecordFieldKind::Module,
    RecordFieldKind::File,
    RecordFieldKind::Line,
    RecordFieldKind::NumArgs,
];

const ARGUMENT_KINDS: [ArgumentKind; 22] = [
    ArgumentKind::DisplayHint,
    ArgumentKind::I8,
    ArgumentKind::I16,
    ArgumentKind::I32,
    ArgumentKind::I64,
    ArgumentKind::Isize,
    ArgumentKind::U8,
    ArgumentKind::U16,
    ArgumentKind::U32,
    ArgumentKind::U64,
    ArgumentKind::Usize,
    ArgumentKind::F32,
    ArgumentKind::F64,
    ArgumentKind::Ipv4Addr,
    ArgumentKind::Ipv6Addr,
    ArgumentKind::ArrU8Len4,
    ArgumentKind::ArrU8Len6,
    ArgumentKind::ArrU8Len16,
    ArgumentKind::ArrU16Len8,
    ArgumentKind::Bytes,
    ArgumentKind::Str,
    ArgumentKind::Pointer,
];

const HINTS: [DisplayHint; 7] = [
    DisplayHint::Default,
    DisplayHint::LowerHex,
    DisplayHint::UpperHex,
    DisplayHint::Ip,
    DisplayHint::LowerMac,
    DisplayHint::UpperMac,
    DisplayHint::Pointer,
];

const LEVELS: [(Level, log::Level); 5] = [
    (Level::Error, log::Level::Error),
    (Level::Warn, log::Level::Warn),
    (Level::Info, log::Level::Info),
    (Level::Debug, log::Level::Debug),
    (Level::Trace, log::Level::Trace),
];

pub fn decode(item: &[u8]) -> Result<LogLine, LogRecordError> {
    let size_bytes = size_of::<LogValueLength>();
    let declared = item
        .get(..size_bytes)
        .map(|bytes| usize::from(LogValueLength::from_ne_bytes([bytes[0], bytes[1]])))
        .ok_or(LogRecordError::Truncated { what: "the record size", available: item.len() })?;
    let mut rest =
        item.get(size_bytes..declared).ok_or(LogRecordError::BadSize { declared, available: item.len() })?;

    let (mut target, mut level, mut module, mut file, mut line, mut num_args) =
        (None, None, None, None, None, None);
    while [
        target.is_none(),
        level.is_none(),
        module.is_none(),
        file.is_none(),
        line.is_none(),
        num_args.is_none(),
    ]
    .contains(&true)
    {
        let (tag, value, after) = next_field(rest, "a header field")?;
        rest = after;
        let kind = tagged(FIELD_KINDS, tag).ok_or(LogRecordError::UnknownField(tag))?;
        match kind {
            RecordFieldKind::Target => set_once(&mut target, "target", text(value, "the target")?)?,
            RecordFieldKind::Level => set_once(&mut level, "level", log_level(value)?)?,
            RecordFieldKind::Module => set_once(&mut module, "module", text(value, "the module")?)?,
            RecordFieldKind::File => set_once(&mut file, "file", text(value, "the file")?)?,
            RecordFieldKind::Line => {
                set_once(&mut line, "line", u32::from_ne_bytes(fixed(value, "the line")?))?
            }
            RecordFieldKind::NumArgs => {
                set_once(&mut num_args, "num_args", u32::from_ne_bytes(fixed(value, "the argument count")?))?
            }
        }
    }

    let mut message = String::new();
    let mut hint = None;
    // Each argument takes at least its 3-byte prefix: a made-up count ends as Truncated.
    for _ in 0..num_args.ok_or(LogRecordError::MissingField("num_args"))? {
        let (tag, value, after) = next_field(rest, "an argument")?;
        rest = after;
        let kind = tagged(ARGUMENT_KINDS, tag).ok_or(LogRecordError::UnknownArgument(tag))?;
        match kind {
            ArgumentKind::DisplayHint => {
                let [value] = fixed(value, "a display hint")?;
                hint = Some(tagged(HINTS, value).ok_or(LogRecordError::UnknownHint(value))?);
            }
            // aya-log leaves a pending hint in place across a literal piece.
            ArgumentKind::Str => message.push_str(text(value, "a string argument")?),
            _ => message.push_str(&format_value(kind, hint.take(), value)?),
        }
    }

    Ok(LogLine {
        level: level.ok_or(LogRecordError::MissingField("level"))?,
        target: target.ok_or(LogRecordError::MissingField("target"))?.to_owned(),
        module: module.ok_or(LogRecordError::MissingField("module"))?.to_owned(),
        file: file.ok_or(LogRecordError::MissingField("file"))?.to_owned(),
        line: line.ok_or(LogRecordError::MissingField("line"))?,
        message,
    })
}

/// `(tag, value, rest)` of the field at the start of `bytes`.
/// The variant of aya-log-common's enum whose tag byte is `tag`, looked up rather than
/// transmuted (a byte outside the enum's range would be undefined behaviour).
fn tagged<T: Copy, const N: usize>(all: [T; N], tag: u8) -> Option<T>
where
    u8: From<T>,
{
    all.into_iter().find(|&variant| u8::from(variant) == tag)
}

fn next_field<'a>(bytes: &'a [u8], what: &'static str) -> Result<(u8, &'a [u8], &'a [u8]), LogRecordError> {
    let truncated = LogRecordError::Truncated { what, available: bytes.len() };
    let Some((&[tag, len_low, len_high], after_prefix)) = bytes.split_first_chunk::<3>() else {
        return Err(truncated);
    };
    let len = usize::from(LogValueLength::from_ne_bytes([len_low, len_high]));
    if after_prefix.len() < len {
        return Err(truncated);
    }
    let (value, rest) = after_prefix.split_at(len);
    Ok((tag, value, rest))
}

fn set_once<T>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), LogRecordError> {
    match slot.replace(value) {
        Some(_) => Err(LogRecordError::DuplicateField(name)),
        None => Ok(()),
    }
}

fn text<'a>(value: &'a [u8], what: &'static str) -> Result<&'a str, LogRecordError> {
    std::str::from_utf8(value).map_err(|_| LogRecordError::NotUtf8 { what })
}

fn fixed<const N: usize>(value: &[u8], what: &'static str) -> Result<[u8; N], LogRecordError> {
    value.try_into().map_err(|_| LogRecordError::WrongLength { what, expected: N, got: value.len() })
}

fn log_level(value: &[u8]) -> Result<log::Level, LogRecordError> {
    let [byte] = fixed(value, "the level")?;
    LEVELS
        .into_iter()
        .find(|&(level, _)| u8::from(level) == byte)
        .map(|(_, level)| level)
        .ok_or(LogRecordError::BadLevel(byte))
}

/// One value as aya-log 0.3.0 shows it under `hint` (the hint of its `{}`, `None` when
/// the record gave none); a hint aya-log refuses for the kind is an error here too.
fn format_value(
    kind: ArgumentKind,
    hint: Option<DisplayHint>,
    value: &[u8],
) -> Result<String, LogRecordError> {
    use DisplayHint as H;
    let mismatch = LogRecordError::HintMismatch { kind, hint };
    let what = "an argument";
    macro_rules! integer {
        ($type:ty) => {{
            let number = <$type>::from_ne_bytes(fixed(value, what)?);
            match hint {
                None | Some(H::Default) => number.to_string(),
                Some(H::LowerHex) => format!("{number:x}"),
                Some(H::UpperHex) => format!("{number:X}"),
                Some(_) => return Err(mismatch),
            }
        }};
    }
    macro_rules! float {
        ($type:ty) => {{
            let number = <$type>::from_ne_bytes(fixed(value, what)?);
            match hint {
                None | Some(H::Default) => number.to_string(),
                Some(_) => return Err(mismatch),
            }
        }};
    }
    Ok(match kind {
        ArgumentKind::I8 => integer!(i8),
        ArgumentKind::I16 => integer!(i16),
        ArgumentKind::I32 => integer!(i32),
        ArgumentKind::I64 => integer!(i64),
        ArgumentKind::Isize => integer!(isize),
        ArgumentKind::U8 => integer!(u8),
        ArgumentKind::U16 => integer!(u16),
        ArgumentKind::U32 if hint == Some(H::Ip) => {
            Ipv4Addr::from(u32::from_ne_bytes(fixed(value, what)?)).to_string()
        }
        ArgumentKind::U32 => integer!(u32),
        ArgumentKind::U64 => integer!(u64),
        ArgumentKind::Usize => integer!(usize),
        ArgumentKind::F32 => float!(f32),
        ArgumentKind::F64 => float!(f64),
        ArgumentKind::Ipv4Addr | ArgumentKind::ArrU8Len4 => match hint {
            None | Some(H::Default) | Some(H::Ip) => Ipv4Addr::from(fixed::<4>(value, what)?).to_string(),
            Some(_) => return Err(mismatch),
        },
        ArgumentKind::Ipv6Addr => match hint {
            None | Some(H::Default) | Some(H::Ip) => Ipv6Addr::from(fixed::<16>(value, what)?).to_string(),
            Some(_) => return Err(mismatch),
        },
        ArgumentKind::ArrU8Len16 => match hint {
            Some(H::Ip) => Ipv6Addr::from(fixed::<16>(value, what)?).to_string(),
            _ => return Err(mismatch),
        },
        // aya-log reads each u16 of the array from its little-endian bytes.
        ArgumentKind::ArrU16Len8 => match hint {
            Some(H::Ip) => {
                let bytes = fixed::<16>(value, what)?;
                let segments: [u16; 8] =
                    std::array::from_fn(|i| u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]));
                Ipv6Addr::from(segments).to_string()
            }
            _ => return Err(mismatch),
        },
        ArgumentKind::ArrU8Len6 => {
            let [a, b, c, d, e, f] = fixed(value, what)?;
            match hint {
                Some(H::LowerMac) => format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}"),
                Some(H::UpperMac) => format!("{a:02X}:{b:02X}:{c:02X}:{d:02X}:{e:02X}:{f:02X}"),
                _ => return Err(mismatch),
            }
        }
        ArgumentKind::Bytes => match hint {
            Some(H::LowerHex) => value.iter().map(|byte| format!("{byte:02x}")).collect(),
            Some(H::UpperHex) => value.iter().map(|byte| format!("{byte:02X}")).collect(),
            _ => return Err(mismatch),
        },
        ArgumentKind::Pointer => match hint {
            Some(H::Pointer) => format!("{:#x}", usize::from_ne_bytes(fixed(value, what)?)),
            _ => return Err(mismatch),
        },
        // Handled by the caller: they are not values.
        ArgumentKind::DisplayHint | ArgumentKind::Str => return Err(mismatch),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use aya_log_common::{Argument, Field, Header};

    use super::*;

    const TARGET: &str = tracer_common::names::KERNEL_LOG_TARGET;

    /// One argument as the macro encodes it.
    fn arg(value: impl Argument) -> (ArgumentKind, Vec<u8>) {
        let (kind, bytes) = value.as_argument();
        (kind, bytes.as_ref().to_vec())
    }

    /// A record as aya-log-ebpf 0.2.0's macro writes it (aya-log-ebpf-macros' expand.rs),
    /// with aya-log-common's own encoders: size, header, arguments, and the padding of its
    /// power-of-two reservation (64 bytes at least).
    fn record(level: Level, args: &[(ArgumentKind, Vec<u8>)]) -> Vec<u8> {
        let header = Header::new(
            TARGET,
            level,
            "tracer_ebpf::diagnostics",
            "src/diagnostics.rs",
            42,
            args.len() as u32,
        )
        .expect("a header of short strings");
        let mut body = Vec::new();
        let mut op = |slice: &[u8]| {
            body.extend_from_slice(slice);
            Some(())
        };
        header.with_bytes(&mut op).expect("writes into a Vec");
        for (kind, value) in args {
            Field::new(*kind, value).expect("a short value").with_bytes(&mut op).expect("writes into a Vec");
        }
        let size = (size_of::<LogValueLength>() + body.len()) as LogValueLength;
        let mut item = size.to_ne_bytes().to_vec();
        item.extend_from_slice(&body);
        item.resize(item.len().next_power_of_two().max(64), 0);
        item
    }

    /// The first-loss warning of tracer-ebpf/src/diagnostics.rs: literal pieces and a `{}`.
    pub(in crate::kernel) fn first_loss_warning() -> Vec<u8> {
        record(
            Level::Warn,
            &[
                arg("kernel programs lost data: first "),
                arg(DisplayHint::Default),
                arg("owner_table_full"),
                arg(" on this CPU (further ones are only counted)"),
            ],
        )
    }

    /// Where a record's level byte is: after the size, the target's tag and length and
    /// bytes, and the level's tag and length.
    pub(in crate::kernel) fn level_at() -> usize {
        2 + 3 + TARGET.len() + 3
    }

    #[test]
    fn a_line_as_the_programs_write_it_decodes() {
        let line = decode(&first_loss_warning()).expect("decodes");
        assert_eq!(
            line,
            LogLine {
                level: log::Level::Warn,
                target: TARGET.into(),
                module: "tracer_ebpf::diagnostics".into(),
                file: "src/diagnostics.rs".into(),
                line: 42,
                message:
                    "kernel programs lost data: first owner_table_full on this CPU (further ones are only \
                          counted)"
                        .into(),
            }
        );
    }

    #[test]
    fn values_are_shown_as_aya_log_shows_them() {
        let message = |hint: DisplayHint, value: (ArgumentKind, Vec<u8>)| {
            decode(&record(Level::Debug, &[arg(hint), value])).map(|line| line.message)
        };
        use DisplayHint as H;
        assert_eq!(message(H::Default, arg(2u16)).unwrap(), "2");
        assert_eq!(message(H::Default, arg(-7i64)).unwrap(), "-7");
        assert_eq!(message(H::LowerHex, arg(0xbeefu32)).unwrap(), "beef");
        assert_eq!(message(H::UpperHex, arg(0xbeefu64)).unwrap(), "BEEF");
        assert_eq!(message(H::Default, arg(1.5f64)).unwrap(), "1.5");
        assert_eq!(message(H::Ip, arg(u32::from(Ipv4Addr::new(10, 0, 0, 1)))).unwrap(), "10.0.0.1");
        assert_eq!(message(H::Ip, arg(Ipv4Addr::new(10, 0, 0, 2))).unwrap(), "10.0.0.2");
        assert_eq!(message(H::Ip, arg(Ipv6Addr::LOCALHOST)).unwrap(), "::1");
        assert_eq!(message(H::Ip, arg(Ipv6Addr::LOCALHOST.octets())).unwrap(), "::1");
        assert_eq!(message(H::LowerMac, arg([0xaa, 0xbb, 0xcc, 0, 1, 2])).unwrap(), "aa:bb:cc:00:01:02");
        assert_eq!(message(H::UpperHex, arg(&[0xab_u8, 0x01][..])).unwrap(), "AB01");
        assert_eq!(message(H::Pointer, arg(0x1000 as *const u8)).unwrap(), "0x1000");
        // A hint aya-log refuses for the kind is an error, as there.
        assert!(matches!(message(H::Ip, arg(7u16)), Err(LogRecordError::HintMismatch { .. })));
    }

    /// Whether an error is the one a malformed record should give.
    type IsExpected = fn(&LogRecordError) -> bool;

    #[test]
    fn malformed_records_are_errors_that_say_what_is_wrong() {
        let good = first_loss_warning();
        let size = usize::from(u16::from_ne_bytes([good[0], good[1]]));
        let with = |at: usize, byte: u8| {
            let mut bad = good.clone();
            bad[at] = byte;
            bad
        };
        let level_value = level_at();
        let cases: [(Vec<u8>, IsExpected); 8] = [
            (vec![], |e| matches!(e, LogRecordError::Truncated { what: "the record size", .. })),
            (good[..size - 1].to_vec(), |e| matches!(e, LogRecordError::BadSize { .. })),
            (with(2, 200), |e| matches!(e, LogRecordError::UnknownField(200))),
            (with(level_value, 0), |e| matches!(e, LogRecordError::BadLevel(0))),
            (with(level_value, 9), |e| matches!(e, LogRecordError::BadLevel(9))),
            (with(5, 0xff), |e| matches!(e, LogRecordError::NotUtf8 { what: "the target" })),
            (record(Level::Warn, &[(ArgumentKind::U16, vec![1, 2, 3])]), |e| {
                matches!(e, LogRecordError::WrongLength { expected: 2, got: 3, .. })
            }),
            (record(Level::Warn, &[arg(DisplayHint::Ip), arg(1u8)]), |e| {
                matches!(e, LogRecordError::HintMismatch { hint: Some(DisplayHint::Ip), .. })
            }),
        ];
        for (i, (bad, expected)) in cases.iter().enumerate() {
            let err = decode(bad).expect_err(&format!("case {i} decodes"));
            assert!(expected(&err), "case {i}: {err}");
        }
        // Unknown tags: argument kind 22 and display hint 8 are past aya-log-common's last.
        let tag_at = header_end();
        let mut bad = record(Level::Warn, &[arg(1u8)]);
        bad[tag_at] = 22;
        assert!(matches!(decode(&bad), Err(LogRecordError::UnknownArgument(22))));
        let mut bad = record(Level::Warn, &[arg(DisplayHint::Default), arg(1u8)]);
        bad[tag_at + 3] = 8;
        assert!(matches!(decode(&bad), Err(LogRecordError::UnknownHint(8))));
    }

    /// Where the first argument starts: right after the header, whose size does not
    /// depend on the arguments (their count is a fixed 4-byte field).
    fn header_end() -> usize {
        let header_only = record(Level::Warn, &[]);
        usize::from(u16::from_ne_bytes([header_only[0], header_only[1]]))
    }

    #[test]
    fn no_truncation_or_single_byte_change_panics() {
        let good = record(
            Level::Info,
            &[arg("family "), arg(DisplayHint::Default), arg(2u16), arg(DisplayHint::LowerHex), arg(7u64)],
        );
        let size = usize::from(u16::from_ne_bytes([good[0], good[1]]));
        for end in 0..good.len() {
            let _ = decode(&good[..end]);
        }
        let mut undecodable = 0;
        for at in 0..size {
            for byte in [0, 1, 5, 6, 7, 8, 21, 22, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] = byte;
                undecodable += usize::from(decode(&bad).is_err());
            }
        }
        // Most changes break the record; none panicked on the way.
        assert!(undecodable > size, "{undecodable} of {} changes undecodable", size * 11);
    }

    #[test]
    fn the_tag_tables_list_every_value_of_aya_log_common() {
        let values = |tags: &mut dyn Iterator<Item = u8>| tags.collect::<Vec<u8>>();
        assert_eq!(values(&mut FIELD_KINDS.into_iter().map(u8::from)), (0..6).collect::<Vec<_>>());
        assert_eq!(values(&mut ARGUMENT_KINDS.into_iter().map(u8::from)), (0..22).collect::<Vec<_>>());
        assert_eq!(values(&mut HINTS.into_iter().map(u8::from)), (1..8).collect::<Vec<_>>());
        assert_eq!(
            values(&mut LEVELS.into_iter().map(|(level, _)| u8::from(level))),
            (1..6).collect::<Vec<_>>()
        );
    }
}
