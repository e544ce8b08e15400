//! The namespace's ephemeral port range, net.ipv4.ip_local_port_range (it applies to
//! IPv6 too).
//!
//! Files under /proc/sys/net answer for the network namespace of the task that opens
//! them, whichever procfs mount they are read through (net_ctl_header_lookup in
//! net/sysctl_net.c), so this must run on the thread that entered the namespace.

use std::{fs, path::Path};

use super::EnrichError;

pub(crate) fn read(proc_root: &Path) -> Result<(u16, u16), EnrichError> {
    let path = proc_root.join("sys/net/ipv4/ip_local_port_range");
    let text =
        fs::read_to_string(&path).map_err(|source| EnrichError::Proc { path: path.clone(), source })?;
    parse(&text).ok_or(EnrichError::PortRange { path, text })
}

/// "32768\t60999\n": ipv4_local_port_range (net/ipv4/sysctl_net_ipv4.c) prints its two
/// ints through proc_dointvec, tab-separated.
pub(crate) fn parse(text: &str) -> Option<(u16, u16)> {
    let mut numbers = text.split_ascii_whitespace().map(str::parse::<u16>);
    let (Some(Ok(low)), Some(Ok(high)), None) = (numbers.next(), numbers.next(), numbers.next()) else {
        return None;
    };
    (low <= high).then_some((low, high))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_format() {
        assert_eq!(parse("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse("40000 40009"), Some((40000, 40009)));
        assert_eq!(parse("1024\t1024\n"), Some((1024, 1024)));
    }

    #[test]
    fn rejects_anything_else() {
        for text in ["", "32768\n", "32768 60999 1", "60999 32768", "32768 70000", "a b"] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn reads_from_the_given_proc_root() {
        let root = std::env::temp_dir().join(format!("sockerr-port-range-{}", std::process::id()));
        let dir = root.join("sys/net/ipv4");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("ip_local_port_range"), "50000\t50100\n").unwrap();
        let read_back = read(&root);
        fs::write(dir.join("ip_local_port_range"), "garbage\n").unwrap();
        let garbage = read(&root);
        fs::remove_dir_all(&root).unwrap();

        assert_eq!(read_back.unwrap(), (50000, 50100));
        assert!(matches!(garbage, Err(EnrichError::PortRange { .. })), "{garbage:?}");
        assert!(matches!(read(&root), Err(EnrichError::Proc { .. })));
    }
}
