//! Kinds of record a run cannot make, and why: said at start-up and, by the daemon, as
//! `sockerr_capability_enabled`, so that an absence of `listen_overflow` or `socket_drop`
//! records is not read as "nothing overflowed, nothing was dropped" when their hooks are
//! not there.

/// A kind of record that depends on hooks a run may leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// `listen_overflow`: needs the listen() tracepoints, which name each listener's owner.
    ListenOverflow,
    /// `socket_drop`: needs `skb:kfree_skb` with a drop reason.
    SocketDrop,
}

impl Capability {
    pub const ALL: [Capability; 2] = [Capability::ListenOverflow, Capability::SocketDrop];

    /// The record's `event` name, also the metric's label.
    pub fn name(self) -> &'static str {
        match self {
            Capability::ListenOverflow => "listen_overflow",
            Capability::SocketDrop => "socket_drop",
        }
    }
}

/// Why a capability is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Off {
    /// `--no-drop-hooks`.
    Switched,
    /// The kernel has no `skb:kfree_skb` with a reason (before 5.17).
    Kernel,
}

impl Off {
    /// The metric's `off_reason` label.
    pub fn name(self) -> &'static str {
        match self {
            Off::Switched => "no_drop_hooks",
            Off::Kernel => "kernel",
        }
    }
}

/// What this run can report of each [`Capability`] (`None`: on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub listen_overflow: Option<Off>,
    pub socket_drop: Option<Off>,
}

impl Capabilities {
    /// `switched_off`: `--no-drop-hooks`; `kernel_has_drops`: whether this kernel's
    /// `skb:kfree_skb` has a reason (asked only when the hooks are wanted).
    pub fn new(switched_off: bool, kernel_has_drops: bool) -> Self {
        if switched_off {
            return Self { listen_overflow: Some(Off::Switched), socket_drop: Some(Off::Switched) };
        }
        Self { listen_overflow: None, socket_drop: (!kernel_has_drops).then_some(Off::Kernel) }
    }

    pub fn of(&self, capability: Capability) -> Option<Off> {
        match capability {
            Capability::ListenOverflow => self.listen_overflow,
            Capability::SocketDrop => self.socket_drop,
        }
    }

    /// Each capability with its state, in [`Capability::ALL`] order.
    pub fn each(&self) -> impl Iterator<Item = (Capability, Option<Off>)> + '_ {
        Capability::ALL.into_iter().map(|capability| (capability, self.of(capability)))
    }

    /// The start-up line for what `--no-drop-hooks` turned off (the kernel's own gaps are
    /// logged where they are found).
    pub fn switched_off_line(&self) -> Option<String> {
        let off: Vec<&str> =
            self.each().filter(|(_, off)| *off == Some(Off::Switched)).map(|(c, _)| c.name()).collect();
        if off.is_empty() {
            return None;
        }
        Some(format!(
            "--no-drop-hooks: skb:kfree_skb, syscalls:sys_enter_listen and syscalls:sys_exit_listen not \
             attached; off: {} records",
            off.join(" and ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_turns_both_off_and_says_so() {
        let on = Capabilities::new(false, true);
        assert_eq!(on.each().filter(|(_, off)| off.is_some()).count(), 0);
        assert_eq!(on.switched_off_line(), None);
        let switched = Capabilities::new(true, true);
        assert_eq!(switched.of(Capability::ListenOverflow), Some(Off::Switched));
        assert_eq!(switched.of(Capability::SocketDrop), Some(Off::Switched));
        let line = switched.switched_off_line().unwrap();
        assert!(line.contains("skb:kfree_skb") && line.contains("sys_enter_listen"), "{line}");
        assert!(line.ends_with("off: listen_overflow and socket_drop records"), "{line}");
    }

    #[test]
    fn an_old_kernel_turns_socket_drops_off_only() {
        let old = Capabilities::new(false, false);
        assert_eq!(old.of(Capability::ListenOverflow), None);
        assert_eq!(old.of(Capability::SocketDrop), Some(Off::Kernel));
        assert_eq!(old.switched_off_line(), None, "the loader logs the kernel's gap itself");
        // The switch wins: nothing is asked of the kernel then.
        assert_eq!(Capabilities::new(true, false).of(Capability::SocketDrop), Some(Off::Switched));
    }
}
