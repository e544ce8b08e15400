//! The benchmark's floor: sockerr's tracepoints, each running a program that returns at
//! once (tracer-ebpf's `floor`), classic or raw as sockerr's own program there.
//!
//! `cargo xtask bench` compares `sockerr trace` with this. The tracepoints are the ones
//! `loader::load` attaches for the same selection (`loader::attachment_plan`, with the reset
//! and drop tracepoints decided by the same tracefs checks), one attachment each, in the same order;
//! so what sockerr costs beyond the floor is what its programs do, and the floor is what the
//! kernel charges for running any program at those places.

use aya::{Ebpf, EbpfLoader};
use tracer_common::names;

use super::{
    Attachment, drop_offsets,
    loader::{self, LoadError, Selection},
    offsets, privileges, resets, tracefs,
};

/// The floor's identical programs: the n-th program attached to one tracepoint is the
/// n-th of these (a program attaches to a tracepoint only once).
pub(super) const PROGRAMS: &[&str] = &["floor_0", "floor_1", "floor_2"];
/// The same for raw tracepoints, where sockerr attaches one program each.
pub(super) const RAW_PROGRAMS: &[&str] = &["floor_raw_0"];

/// The attached floor; dropping it detaches it.
pub struct Floor {
    /// Owns the program and its links.
    _ebpf: Ebpf,
    pub attached: usize,
}

pub fn load(selection: &Selection) -> Result<Floor, LoadError> {
    for degraded in privileges::check()? {
        tracing::warn!("no {}: {}", degraded.capability, degraded.consequence);
    }
    loader::raise_memlock_limit();
    let kernel = tracefs::kernel_release();
    let tracefs = tracefs::find_or_mount()?;
    let offsets = offsets::discover(&tracefs, &kernel)?;
    let has_resets = resets::prepare(&tracefs, &kernel, selection.http_peek, offsets.sys_exit_ret)?.is_some();
    let has_drops = drop_offsets::discover(&tracefs, &kernel, None)?.is_some();
    let plan = loader::attachment_plan(selection, has_resets, has_drops);
    // The maps come with the object; only the floor program is loaded. The preallocated
    // per-socket ones as small as they go: nothing uses them.
    let mut ebpf = EbpfLoader::new()
        .allow_unsupported_maps()
        .map_max_entries(names::PEEKS, 1)
        .map_max_entries(names::FD_SOCKS, 1)
        .map_max_entries(names::TRACKED, 1)
        .load(loader::PROGRAMS)
        .map_err(|err| LoadError::Load(Box::new(err)))?;
    let raw: Vec<bool> =
        plan.iter().map(|&(program, ..)| loader::is_raw_tracepoint(&ebpf, program)).collect();
    for (program, category, tracepoint) in floor_plan(&plan, &raw)? {
        loader::attach(&mut ebpf, program, category, tracepoint)?;
    }
    Ok(Floor { _ebpf: ebpf, attached: plan.len() })
}

/// `plan` with each program replaced by the floor program of its rank on its tracepoint;
/// `raw[i]`: the i-th program of `plan` is a raw tracepoint program.
fn floor_plan(plan: &[Attachment], raw: &[bool]) -> Result<Vec<Attachment>, LoadError> {
    let mut floor = Vec::with_capacity(plan.len());
    for (index, &(_, category, tracepoint)) in plan.iter().enumerate() {
        let rank = plan[..index].iter().filter(|(_, c, t)| (*c, *t) == (category, tracepoint)).count();
        let copies = if raw.get(index).copied().unwrap_or(false) { RAW_PROGRAMS } else { PROGRAMS };
        let program = copies
            .get(rank)
            .ok_or(LoadError::Missing("a floor program for each program on one tracepoint"))?;
        floor.push((*program, category, tracepoint));
    }
    Ok(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tracepoint_gets_as_many_floor_programs_as_sockerr_attaches() {
        let selection = Selection { comms: vec!["envoy".into()], http_peek: true, ..Default::default() };
        let plan = loader::attachment_plan(&selection, true, true);
        let raw: Vec<bool> =
            plan.iter().map(|(program, ..)| loader::RAW_TRACEPOINT_PROGRAMS.contains(program)).collect();
        let floor = floor_plan(&plan, &raw).unwrap();
        assert_eq!(floor.len(), plan.len());
        for (ours, theirs) in floor.iter().zip(&plan) {
            assert_eq!((ours.1, ours.2), (theirs.1, theirs.2));
        }
        let on_accept: Vec<&str> =
            floor.iter().filter(|(_, _, tp)| *tp == "sys_exit_accept").map(|(p, _, _)| *p).collect();
        assert_eq!(on_accept, ["floor_0", "floor_1"]);
        let on_state: Vec<&str> =
            floor.iter().filter(|(_, _, tp)| *tp == "inet_sock_set_state").map(|(p, _, _)| *p).collect();
        assert_eq!(on_state, ["floor_raw_0"], "a raw tracepoint gets a raw floor program");
        let on_error: Vec<&str> =
            floor.iter().filter(|(_, _, tp)| *tp == "inet_sk_error_report").map(|(p, _, _)| *p).collect();
        assert_eq!(on_error, ["floor_raw_0"]);
        let mut pairs: Vec<_> = floor.clone();
        pairs.sort_unstable();
        pairs.dedup();
        assert_eq!(pairs.len(), floor.len(), "no program twice on one tracepoint");
    }

    #[test]
    fn more_programs_on_one_tracepoint_than_copies_is_an_error() {
        let crowded = vec![("a", "syscalls", "sys_exit_bind"); PROGRAMS.len() + 1];
        assert!(floor_plan(&crowded, &[]).is_err());
        let crowded_raw = vec![("a", "sock", "inet_sock_set_state"); RAW_PROGRAMS.len() + 1];
        assert!(floor_plan(&crowded_raw, &[true; RAW_PROGRAMS.len() + 1]).is_err());
    }
}
