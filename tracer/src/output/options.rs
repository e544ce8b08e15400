//! Names and values of the socket options sockerr records, in the one order both
//! renderers list them.

use std::fmt;

use tracer_common::SockOpts;
use tracer_common::options::{
    FLAG_IP_BIND_ADDRESS_NO_PORT, FLAG_IP_FREEBIND, FLAG_IP_TRANSPARENT, FLAG_IPV6_FREEBIND,
    FLAG_IPV6_TRANSPARENT, FLAG_SO_MARK, FLAG_SO_REUSEADDR, FLAG_SO_REUSEPORT,
};

use crate::mark::{CiliumMark, decode_cilium_mark};
use crate::record::SockoptCall;

/// Every recorded option, in display order: the mark first since it says whose
/// traffic it is, then address reuse, then transparency.
const OPTIONS: [(u32, &str); 8] = [
    (FLAG_SO_MARK, "SO_MARK"),
    (FLAG_SO_REUSEADDR, "SO_REUSEADDR"),
    (FLAG_SO_REUSEPORT, "SO_REUSEPORT"),
    (FLAG_IP_TRANSPARENT, "IP_TRANSPARENT"),
    (FLAG_IP_FREEBIND, "IP_FREEBIND"),
    (FLAG_IP_BIND_ADDRESS_NO_PORT, "IP_BIND_ADDRESS_NO_PORT"),
    (FLAG_IPV6_TRANSPARENT, "IPV6_TRANSPARENT"),
    (FLAG_IPV6_FREEBIND, "IPV6_FREEBIND"),
];

/// Shown for a flag this build does not know (a newer kernel side).
const UNKNOWN_OPTION: &str = "UNKNOWN_OPTION";

/// The value an option was set to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionValue {
    /// SO_MARK: shown in hex, as `ip rule`/`iptables` and Cilium print marks.
    Mark(u32),
    /// A boolean option's integer (nonzero enables it).
    Int(u32),
}

impl OptionValue {
    /// Cilium's reading of a mark value.
    pub fn cilium_mark(self) -> Option<CiliumMark> {
        match self {
            Self::Mark(mark) => decode_cilium_mark(mark),
            Self::Int(_) => None,
        }
    }
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mark(mark) => write!(f, "{mark:#010x}"),
            Self::Int(value) => write!(f, "{value}"),
        }
    }
}

/// One option with its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamedOption {
    pub name: &'static str,
    pub value: OptionValue,
}

impl NamedOption {
    fn new(flag: u32, value: u32) -> Self {
        let name = OPTIONS.iter().find(|(known, _)| *known == flag).map_or(UNKNOWN_OPTION, |(_, name)| name);
        let value = if flag == FLAG_SO_MARK { OptionValue::Mark(value) } else { OptionValue::Int(value) };
        Self { name, value }
    }

    /// The option a setsockopt() call set.
    pub fn of_call(call: SockoptCall) -> Self {
        Self::new(call.flag, call.value)
    }
}

/// The options enabled on a socket, in display order (booleans as 1).
pub fn enabled_options(opts: SockOpts) -> impl Iterator<Item = NamedOption> {
    OPTIONS
        .into_iter()
        .filter(move |(flag, _)| opts.flags & flag != 0)
        .map(move |(flag, _)| NamedOption::new(flag, if flag == FLAG_SO_MARK { opts.mark } else { 1 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_options_come_in_display_order_with_values() {
        let opts = SockOpts {
            flags: FLAG_IPV6_FREEBIND | FLAG_SO_REUSEADDR | FLAG_SO_MARK | FLAG_IP_TRANSPARENT,
            mark: 0x3203_0b00,
        };
        let listed: Vec<_> = enabled_options(opts).map(|option| (option.name, option.value)).collect();
        assert_eq!(
            listed,
            [
                ("SO_MARK", OptionValue::Mark(0x3203_0b00)),
                ("SO_REUSEADDR", OptionValue::Int(1)),
                ("IP_TRANSPARENT", OptionValue::Int(1)),
                ("IPV6_FREEBIND", OptionValue::Int(1)),
            ]
        );
    }

    #[test]
    fn no_flags_no_options() {
        assert_eq!(enabled_options(SockOpts { flags: 0, mark: 7 }).count(), 0);
    }

    #[test]
    fn every_flag_has_its_name() {
        let all = OPTIONS.iter().fold(0, |flags, (flag, _)| flags | flag);
        let names: Vec<_> =
            enabled_options(SockOpts { flags: all, mark: 0 }).map(|option| option.name).collect();
        assert_eq!(
            names,
            [
                "SO_MARK",
                "SO_REUSEADDR",
                "SO_REUSEPORT",
                "IP_TRANSPARENT",
                "IP_FREEBIND",
                "IP_BIND_ADDRESS_NO_PORT",
                "IPV6_TRANSPARENT",
                "IPV6_FREEBIND",
            ]
        );
    }

    #[test]
    fn call_values_keep_what_was_passed() {
        let cleared = NamedOption::of_call(SockoptCall { flag: FLAG_SO_REUSEPORT, value: 0 });
        assert_eq!((cleared.name, cleared.value.to_string()), ("SO_REUSEPORT", "0".to_owned()));
        let mark = NamedOption::of_call(SockoptCall { flag: FLAG_SO_MARK, value: 0x0b00 });
        assert_eq!(mark.value.to_string(), "0x00000b00");
        assert_eq!(mark.value.cilium_mark().map(|decoded| decoded.magic_name), Some("proxy-egress"));
        let unknown = NamedOption::of_call(SockoptCall { flag: 1 << 20, value: 1 });
        assert_eq!(unknown.name, "UNKNOWN_OPTION");
    }
}
