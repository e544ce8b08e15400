//! Whether xtask runs as root: sockerr and the end-to-end tests load eBPF programs.

use anyhow::{Context, Result};

pub fn is_root() -> Result<bool> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("cannot read /proc/self/status to tell whether this runs as root: is /proc mounted?")?;
    let uid = effective_uid(&status).context("/proc/self/status has no readable `Uid:` line")?;
    Ok(uid == 0)
}

/// `Uid:` lists real, effective, saved and filesystem uid; privilege checks use the effective one.
fn effective_uid(proc_status: &str) -> Option<u32> {
    let uids = proc_status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_field() {
        let status = "Name:\tsudo\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t1000\t1000\t1000\t1000\n"), Some(1000));
    }

    #[test]
    fn missing_or_garbled_uid_line_is_none() {
        assert_eq!(effective_uid("Name:\tx\n"), None);
        assert_eq!(effective_uid("Uid:\t1000\n"), None);
        assert_eq!(effective_uid("Uid:\t1000\tabc\n"), None);
    }

    #[test]
    fn reading_own_status_works() {
        let expected_root = std::fs::metadata("/proc/self").map(|meta| {
            use std::os::unix::fs::MetadataExt;
            meta.uid() == 0
        });
        assert_eq!(is_root().unwrap(), expected_root.unwrap());
    }
}
