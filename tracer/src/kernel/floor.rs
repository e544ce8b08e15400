//! The benchmark's floor: sockerr's tracepoints, each running a program that returns at
//! once (tracer-ebpf's `floor`), classic or BTF-typed as sockerr's own program there.
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
    loader::{self, HookKind, LoadError, Selection},
    offsets, privileges, resets, tracefs,
};

/// The floor's identical programs: the n-th program attached to one tracepoint is the
/// n-th of these (a program attaches to a tracepoint only once).
pub(super) const PROGRAMS: &[&str] = &["floor_0", "floor_1", "floor_2"];
/// The same for BTF-typed tracepoints; each is bound to one tracepoint when loaded, so
/// there must be one per tracepoint sockerr hooks that way.
pub(super) const BTF_PROGRAMS: &[&str] = &["floor_btf_0", "floor_btf_1", "floor_btf_2", "floor_btf_3"];

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
    let kernel_btf = loader::kernel_btf()?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&kernel_btf))
        .allow_unsupported_maps()
        .map_max_entries(names::PEEKS, 1)
        .map_max_entries(names::FD_SOCKS, 1)
        .map_max_entries(names::TRACKED, 1)
        .load(loader::PROGRAMS)
        .map_err(|err| LoadError::Load(Box::new(err)))?;
    for (program, category, tracepoint) in floor_plan(&plan)? {
        loader::attach(&mut ebpf, &kernel_btf, program, category, tracepoint)?;
    }
    Ok(Floor { _ebpf: ebpf, attached: plan.len() })
}

/// `plan` with each program replaced by the floor program of its kind (`HookKind`) and
/// of its rank on its tracepoint; BTF-typed ones by their rank among the BTF-typed.
fn floor_plan(plan: &[Attachment]) -> Result<Vec<Attachment>, LoadError> {
    let mut floor = Vec::with_capacity(plan.len());
    for (index, &(program, category, tracepoint)) in plan.iter().enumerate() {
        let kind = HookKind::of(program);
        let rank = match kind {
            HookKind::Btf => plan[..index].iter().filter(|(p, ..)| HookKind::of(p) == HookKind::Btf).count(),
            HookKind::Classic => {
                plan[..index].iter().filter(|(_, c, t)| (*c, *t) == (category, tracepoint)).count()
            }
        };
        let copies = match kind {
            HookKind::Classic => PROGRAMS,
            HookKind::Btf => BTF_PROGRAMS,
        };
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
        let floor = floor_plan(&plan).unwrap();
        assert_eq!(floor.len(), plan.len());
        for (ours, theirs) in floor.iter().zip(&plan) {
            assert_eq!((ours.1, ours.2), (theirs.1, theirs.2));
        }
        let on_accept: Vec<&str> =
            floor.iter().filter(|(_, _, tp)| *tp == "sys_exit_accept").map(|(p, _, _)| *p).collect();
        assert_eq!(on_accept, ["floor_0", "floor_1"]);
        let on_state: Vec<&str> =
            floor.iter().filter(|(_, _, tp)| *tp == "inet_sock_set_state").map(|(p, _, _)| *p).collect();
        assert_eq!(on_state, ["floor_btf_0"], "a BTF-typed tracepoint gets a BTF-typed floor program");
        let btf_typed: Vec<&str> =
            floor.iter().filter(|(p, ..)| p.starts_with("floor_btf_")).map(|(p, _, _)| *p).collect();
        assert_eq!(btf_typed, BTF_PROGRAMS, "each BTF-typed tracepoint its own program, bound at load");
        let mut pairs: Vec<_> = floor.clone();
        pairs.sort_unstable();
        pairs.dedup();
        assert_eq!(pairs.len(), floor.len(), "no program twice on one tracepoint");
    }

    #[test]
    fn more_programs_on_one_tracepoint_than_copies_is_an_error() {
        let crowded = vec![("a", "syscalls", "sys_exit_bind"); PROGRAMS.len() + 1];
        assert!(floor_plan(&crowded).is_err());
        let crowded_btf = vec![("tcp_receive_reset", "tcp", "tcp_receive_reset"); BTF_PROGRAMS.len() + 1];
        assert!(floor_plan(&crowded_btf).is_err());
    }
}
