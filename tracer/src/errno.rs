//! errno numbers and their names (`99` <-> `EADDRNOTAVAIL`).
//!
//! The table comes from `nix::errno::Errno`, which mirrors libc's constants for the
//! target: its `Debug` output is the constant's name. Only the three aliases Linux
//! defines on top of it (EWOULDBLOCK, EDEADLOCK, ENOTSUP) are listed here, and their
//! values still come from nix.

use std::sync::LazyLock;

use nix::errno::Errno;

/// Largest errno the kernel hands out (include/linux/err.h `MAX_ERRNO`).
const MAX_ERRNO: i32 = 4095;

/// Second names of errnos that share a number with another name.
const ALIASES: [(&str, Errno); 3] =
    [("EWOULDBLOCK", Errno::EWOULDBLOCK), ("EDEADLOCK", Errno::EDEADLOCK), ("ENOTSUP", Errno::ENOTSUP)];

/// (number, name) of every errno nix knows, sorted by number. Built once because nix
/// offers the name only through `Debug`, which allocates.
static NAMES: LazyLock<Vec<(i32, String)>> = LazyLock::new(|| {
    (1..=MAX_ERRNO)
        .map(Errno::from_raw)
        .filter(|errno| *errno != Errno::UnknownErrno)
        .map(|errno| (errno as i32, format!("{errno:?}")))
        .collect()
});

/// The name of a positive errno, e.g. 99 -> `EADDRNOTAVAIL`.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    let names: &'static [(i32, String)] = &NAMES;
    let index = names.binary_search_by_key(&errno, |(number, _)| *number).ok()?;
    Some(names[index].1.as_str())
}

/// Parses an errno given as a name (`EADDRNOTAVAIL`, any case) or a number (`99`).
///
/// The error is a sentence for the command line (clap prints it as is).
pub fn parse_errno(text: &str) -> Result<i32, String> {
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        return if (1..=MAX_ERRNO).contains(&number) {
            Ok(number)
        } else {
            Err(format!("errno `{number}` out of range: errnos are 1 to {MAX_ERRNO}"))
        };
    }
    let by_name = NAMES.iter().find(|(_, name)| name.eq_ignore_ascii_case(text)).map(|(number, _)| *number);
    let by_alias =
        || ALIASES.iter().find(|(name, _)| name.eq_ignore_ascii_case(text)).map(|(_, errno)| *errno as i32);
    by_name
        .or_else(by_alias)
        .ok_or_else(|| format!("unknown errno `{text}`: use a name like EADDRNOTAVAIL or a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_socket_errnos() {
        assert_eq!(errno_name(98), Some("EADDRINUSE"));
        assert_eq!(errno_name(99), Some("EADDRNOTAVAIL"));
        assert_eq!(errno_name(111), Some("ECONNREFUSED"));
        assert_eq!(errno_name(110), Some("ETIMEDOUT"));
        assert_eq!(errno_name(1), Some("EPERM"));
    }

    #[test]
    fn numbers_without_a_name_have_none() {
        assert_eq!(errno_name(0), None);
        assert_eq!(errno_name(-99), None);
        assert_eq!(errno_name(4000), None);
    }

    #[test]
    fn names_parse_in_any_case() {
        assert_eq!(parse_errno("EADDRNOTAVAIL"), Ok(99));
        assert_eq!(parse_errno("eaddrnotavail"), Ok(99));
        assert_eq!(parse_errno("EaddrInUse"), Ok(98));
    }

    #[test]
    fn numbers_parse() {
        assert_eq!(parse_errno("99"), Ok(99));
        assert_eq!(parse_errno(" 111 "), Ok(111));
    }

    #[test]
    fn aliases_parse_to_the_shared_number() {
        assert_eq!(parse_errno("EWOULDBLOCK"), parse_errno("EAGAIN"));
        assert_eq!(parse_errno("ENOTSUP"), parse_errno("EOPNOTSUPP"));
        assert_eq!(parse_errno("EDEADLOCK"), parse_errno("EDEADLK"));
    }

    #[test]
    fn every_name_parses_back_to_its_number() {
        for (number, name) in NAMES.iter() {
            assert_eq!(parse_errno(name), Ok(*number), "{name}");
        }
    }

    #[test]
    fn unknown_name_is_named_in_the_error_with_a_hint() {
        let err = parse_errno("ENOTANERRNO").unwrap_err();
        assert_eq!(err, "unknown errno `ENOTANERRNO`: use a name like EADDRNOTAVAIL or a number");
    }

    #[test]
    fn numbers_out_of_range_are_errors() {
        assert!(parse_errno("0").unwrap_err().contains("out of range"));
        assert!(parse_errno("-5").unwrap_err().contains("out of range"));
        assert!(parse_errno("5000").unwrap_err().contains("out of range"));
    }
}
