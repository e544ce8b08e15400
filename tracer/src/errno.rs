//! errno numbers and names. (stub: filled in by the output work)

/// Parses `EADDRNOTAVAIL` or `99`.
pub fn parse_errno(text: &str) -> Result<i32, String> {
    text.parse::<i32>().map_err(|_| format!("unknown errno `{text}`"))
}
