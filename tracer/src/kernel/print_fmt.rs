//! Value names from a tracepoint's `print fmt`: the `__print_symbolic(REC->field,
//! { value, "NAME" }, ...)` table the kernel itself prints the field with, so sockerr
//! names `enum sk_rst_reason` values as this kernel does instead of compiling in a copy
//! that goes stale (the enum grew in 6.10, 6.11 and 6.13).
//!
//! Hand-written: no crate parses ftrace print formats, and only this one construct is
//! needed: the table's entries are `{ <number>, "<name>" }` pairs, closed by `)`.
//! Entries whose value is an unresolved enum name (`{ TCP_CLOSE, "TCP_CLOSE" }`) are
//! skipped: only numbers can be matched with what the programs read.

use std::collections::BTreeMap;

/// The numeric entries of `__print_symbolic(REC-><field>, ...)` in `print_fmt`; empty
/// when the format has no such table.
pub fn symbolic_table(print_fmt: &str, field: &str) -> BTreeMap<u64, String> {
    let mut names = BTreeMap::new();
    let opening = format!("__print_symbolic(REC->{field},");
    let Some(start) = print_fmt.find(&opening) else {
        return names;
    };
    let mut rest = &print_fmt[start + opening.len()..];
    loop {
        rest = rest.trim_start();
        let Some(entry) = rest.strip_prefix('{') else {
            // `)` ends the table; anything else is not a table this parser knows.
            return names;
        };
        let Some(close) = entry.find('}') else {
            return names;
        };
        if let Some((value, name)) = entry[..close].split_once(',')
            && let Some(value) = parse_number(value.trim())
            && let Some(name) = name.trim().strip_prefix('"').and_then(|n| n.strip_suffix('"'))
        {
            names.insert(value, name.to_string());
        }
        rest = entry[close + 1..].trim_start();
        match rest.strip_prefix(',') {
            Some(next) => rest = next,
            None => return names,
        }
    }
}

fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEND_RESET_6_18: &str = include_str!("testdata/tcp_send_reset.format");

    fn print_fmt(format: &str) -> &str {
        format.lines().find_map(|l| l.strip_prefix("print fmt:")).unwrap()
    }

    #[test]
    fn reset_reasons_of_6_18() {
        let names = symbolic_table(print_fmt(SEND_RESET_6_18), "reason");
        assert_eq!(names.get(&0).map(String::as_str), Some("NOT_SPECIFIED"));
        assert_eq!(names.get(&1).map(String::as_str), Some("NO_SOCKET"));
        assert_eq!(names.get(&11).map(String::as_str), Some("TCP_ABORT_ON_CLOSE"));
        assert_eq!(names.get(&12).map(String::as_str), Some("TCP_ABORT_ON_LINGER"));
        assert_eq!(names.get(&14).map(String::as_str), Some("TCP_STATE"));
        assert_eq!(names.len(), 26);
    }

    #[test]
    fn enum_names_are_skipped_and_missing_tables_are_empty() {
        // The state table has enum names, not numbers.
        assert!(symbolic_table(print_fmt(SEND_RESET_6_18), "state").is_empty());
        assert!(symbolic_table(print_fmt(SEND_RESET_6_18), "nosuch").is_empty());
        let family = symbolic_table(
            r#""x", __print_symbolic(REC->family, { 2, "AF_INET" }, { 0xa, "AF_INET6" })"#,
            "family",
        );
        assert_eq!(family.into_iter().collect::<Vec<_>>(), [(2, "AF_INET".into()), (10, "AF_INET6".into())]);
    }

    #[test]
    fn truncated_tables_keep_what_parsed() {
        let names = symbolic_table(r#"__print_symbolic(REC->reason, { 0, "A" }, { 1, "B" "#, "reason");
        assert_eq!(names.len(), 1);
    }
}
