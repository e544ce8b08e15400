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
    /// The caller's buffer could not be read: set, to an unknown value (shown `?`).
    Unread,
}

impl OptionValue {
    /// Cilium's reading of a mark value.
    pub fn cilium_mark(self) -> Option<CiliumMark> {
        match self {
            Self::Mark(mark) => decode_cilium_mark(mark),
            Self::Int(_) | Self::Unread => None,
        }
    }
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mark(mark) => write!(f, "{mark:#010x}"),
            Self::Int(value) => write!(f, "{value}"),
            Self::Unread => f.write_str("?"),
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
    fn new(flag: u32, value: Option<u32>) -> Self {
        let name = OPTIONS.iter().find(|(known, _)| *known == flag).map_or(UNKNOWN_OPTION, |(_, name)| name);
        let value = match value {
            None => OptionValue::Unread,
            Some(mark) if flag == FLAG_SO_MARK => OptionValue::Mark(mark),
            Some(value) => OptionValue::Int(value),
        };
        Self { name, value }
    }

    /// The option a setsockopt() call set.
    pub fn of_call(call: SockoptCall) -> Self {
        Self::new(call.flag, call.value)
    }
}

/// The options enabled on a socket, in display order (booleans as 1).
pub fn enabled_options(opts: SockOpts) -> impl Iterator<Item = NamedOption> {
    OPTIONS.into_iter().filter(move |&(flag, _)| opts.enabled(flag)).map(move |(flag, _)| {
        let value = if opts.unread(flag) {
            None
        } else if flag == FLAG_SO_MARK {
            Some(opts.mark)
        } else {
            Some(1)
        };
        NamedOption::new(flag, value)
    })
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

    /// A value the kernel side could not read shows as `?`, never as 0.
    #[test]
    fn unread_values_are_marked() {
        let mut opts = SockOpts::default();
        opts.apply(FLAG_SO_MARK, None);
        opts.apply(FLAG_SO_REUSEADDR, None);
        let listed: Vec<_> =
            enabled_options(opts).map(|option| (option.name, option.value.to_string())).collect();
        assert_eq!(listed, [("SO_MARK", "?".to_owned()), ("SO_REUSEADDR", "?".to_owned())]);
        let call = NamedOption::of_call(SockoptCall { flag: FLAG_SO_MARK, value: None });
        assert_eq!((call.value, call.value.cilium_mark()), (OptionValue::Unread, None));
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
        let cleared = NamedOption::of_call(SockoptCall { flag: FLAG_SO_REUSEPORT, value: Some(0) });
        assert_eq!((cleared.name, cleared.value.to_string()), ("SO_REUSEPORT", "0".to_owned()));
        let mark = NamedOption::of_call(SockoptCall { flag: FLAG_SO_MARK, value: Some(0x0b00) });
        assert_eq!(mark.value.to_string(), "0x00000b00");
        assert_eq!(mark.value.cilium_mark().map(|decoded| decoded.magic_name), Some("proxy-egress"));
        let unknown = NamedOption::of_call(SockoptCall { flag: 1 << 20, value: Some(1) });
        assert_eq!(unknown.name, "UNKNOWN_OPTION");
    }
}
