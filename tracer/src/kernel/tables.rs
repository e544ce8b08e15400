//! Sizes of the kernel tables an operator may need to change: a node with more sockets
//! (or `--comm` processes, or dropping sockets) than the defaults hold loses the
//! overflow, counted by reason (`sockerr_events_lost_total`); these flags give it room.
//! The owner tables allocate an entry when a socket is tracked (their bound costs the
//! bucket array only, 16 bytes an entry); the others are preallocated hash maps, so
//! every entry of their bound costs kernel memory up front.

use clap::Args;
use tracer_common::limits::{
    DROP_TABLE_ENTRIES, LISTENER_TABLE_ENTRIES, MAX_FILTER_PIDS, OWNER_TABLE_ENTRIES, TRACKED_ENTRIES,
};

/// The largest size any of the flags accepts: 4 Mi entries, several hundred MiB of
/// kernel memory for a full owner table (entries of about 112 bytes, two tables) or
/// up front for the options table.
pub const MAX_TABLE_ENTRIES: u32 = 1 << 22;

/// Entries of the kernel's tables (`--owner-table-entries` and the like).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSizes {
    /// `SK_OWNERS`, `SOCK_OWNERS` and `SOCKET_FDS`: sockets of traced processes at once.
    pub owners: u32,
    /// `LISTENERS`: listening sockets of traced processes at once.
    pub listeners: u32,
    /// `SOCKET_DROPS`: (traced socket, drop reason) pairs with a running total.
    pub drops: u32,
    /// `FILTER_PIDS`: `--pid` values plus the tgids `--comm` learns.
    pub filter_pids: u32,
    /// `TRACKED`: sockets with recorded options at once.
    pub options: u32,
}

impl Default for TableSizes {
    fn default() -> Self {
        Self {
            owners: OWNER_TABLE_ENTRIES,
            listeners: LISTENER_TABLE_ENTRIES,
            drops: DROP_TABLE_ENTRIES,
            filter_pids: MAX_FILTER_PIDS,
            options: TRACKED_ENTRIES,
        }
    }
}

/// The table flags of `trace` and `daemon` (`bench-floor` shares their filter flags and
/// ignores these: its program keeps no tables).
#[derive(Debug, Clone, Default, Args)]
pub struct TableArgs {
    /// Sockets of traced processes the kernel tracks at once (connecting, connected and
    /// accepted; two tables of this size). Beyond it their resets, late connect failures
    /// and drops go unreported, counted as lost (reason owner_table_full). Default 524288
    /// (kernel memory grows with the sockets tracked, not with this bound).
    #[arg(long, value_name = "N", value_parser = parse_table_entries)]
    pub owner_table_entries: Option<u32>,
    /// Listening sockets of traced processes the kernel tracks at once. Beyond it their
    /// drops go unreported, counted as lost (reason owner_table_full). Default 4096.
    #[arg(long, value_name = "N", value_parser = parse_table_entries, conflicts_with = "no_drop_hooks")]
    pub listener_table_entries: Option<u32>,
    /// (traced socket, drop reason) pairs whose dropped packets the kernel adds up at
    /// once. Beyond it drops are counted as lost (reason drop_table_full). Default 4096.
    #[arg(long, value_name = "N", value_parser = parse_table_entries, conflicts_with = "no_drop_hooks")]
    pub drop_table_entries: Option<u32>,
    /// Processes the kernel filter selects by id: --pid values plus the processes --comm
    /// finds. Beyond it a --comm process is still traced by name, but its renamed threads
    /// are not (counted as lost, reason filter_map_full). Default 4096.
    #[arg(long, value_name = "N", value_parser = parse_table_entries)]
    pub filter_table_entries: Option<u32>,
    /// Sockets whose options (SO_MARK, SO_REUSEADDR, ...) the kernel keeps at once, about
    /// 88 bytes of kernel memory each, allocated up front. Beyond it the least recently
    /// used socket's options are evicted, counted as lost (reason options_evicted): its
    /// failures come out without them. Default 262144.
    #[arg(long, value_name = "N", value_parser = parse_table_entries)]
    pub options_table_entries: Option<u32>,
}

impl From<&TableArgs> for TableSizes {
    fn from(args: &TableArgs) -> Self {
        let default = Self::default();
        Self {
            owners: args.owner_table_entries.unwrap_or(default.owners),
            listeners: args.listener_table_entries.unwrap_or(default.listeners),
            drops: args.drop_table_entries.unwrap_or(default.drops),
            filter_pids: args.filter_table_entries.unwrap_or(default.filter_pids),
            options: args.options_table_entries.unwrap_or(default.options),
        }
    }
}

/// A table size: 1 to [`MAX_TABLE_ENTRIES`].
pub fn parse_table_entries(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let entries: u64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of entries (a whole number like 131072)"))?;
    if entries == 0 {
        return Err("a table needs at least 1 entry".into());
    }
    if entries > u64::from(MAX_TABLE_ENTRIES) {
        return Err(format!(
            "{entries} entries is more than {MAX_TABLE_ENTRIES}: the tables are preallocated kernel \
             memory; split the node's processes between several sockerr instances (--pid, --comm or \
             --cgroup) instead"
        ));
    }
    Ok(entries as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_whole_numbers_from_one_to_the_maximum() {
        assert_eq!(parse_table_entries("1"), Ok(1));
        assert_eq!(parse_table_entries(" 131072 "), Ok(131072));
        assert_eq!(parse_table_entries(&MAX_TABLE_ENTRIES.to_string()), Ok(MAX_TABLE_ENTRIES));
        assert!(parse_table_entries("0").unwrap_err().contains("at least 1"));
        let too_many = parse_table_entries(&(u64::from(MAX_TABLE_ENTRIES) + 1).to_string()).unwrap_err();
        assert!(too_many.contains("more than 4194304"), "{too_many}");
        assert!(parse_table_entries("-1").unwrap_err().contains("not a number"));
        assert!(parse_table_entries("64k").unwrap_err().contains("not a number"));
        assert!(parse_table_entries(&u64::MAX.to_string()).unwrap_err().contains("more than"));
    }

    #[test]
    fn unset_flags_keep_the_defaults_both_sides_agree_on() {
        assert_eq!(TableSizes::from(&TableArgs::default()), TableSizes::default());
        let args =
            TableArgs { owner_table_entries: Some(4), drop_table_entries: Some(2), ..Default::default() };
        let sizes = TableSizes::from(&args);
        assert_eq!((sizes.owners, sizes.drops), (4, 2));
        assert_eq!((sizes.listeners, sizes.filter_pids), (LISTENER_TABLE_ENTRIES, MAX_FILTER_PIDS));
        assert_eq!(sizes.options, TRACKED_ENTRIES);
        let sizes = TableSizes::from(&TableArgs { options_table_entries: Some(8), ..Default::default() });
        assert_eq!((sizes.options, sizes.owners), (8, OWNER_TABLE_ENTRIES));
    }
}
