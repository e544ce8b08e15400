//! The contract between the embedded eBPF object and the loader, checked without
//! privileges: every program the attachment tables name exists with the right kind,
//! every map and global the daemon opens or rewrites exists with the size both sides
//! agreed on (tracer-common's `limits`, `names` and record types). A rename or resize
//! on one side fails here, not on a root-run test or in production.

#[cfg(test)]
mod tests {
    use aya_obj::{Object, ProgramSection, generated::bpf_map_type};
    use object::{Object as _, ObjectSymbol as _};
    use tracer_common::{
        Filters, Loss, ResetOffsets, SockOffsets, TaskFdOffsets, TracepointOffsets,
        limits::{MAX_FILTER_COMMS, MAX_FILTER_PIDS, RING_BYTES},
        names,
    };

    use crate::kernel::{
        floor, kprobes,
        loader::{self, PROGRAMS},
    };

    fn object() -> Object {
        Object::parse(PROGRAMS).expect("the embedded eBPF object parses")
    }

    fn program_kind(object: &Object, name: &str) -> &'static str {
        match object.programs.get(name).map(|program| &program.section) {
            None => "missing",
            Some(ProgramSection::TracePoint) => "tracepoint",
            Some(ProgramSection::RawTracePoint) => "raw_tracepoint",
            Some(ProgramSection::BtfTracePoint) => "btf_tracepoint",
            Some(ProgramSection::KProbe) => "kprobe",
            Some(ProgramSection::KRetProbe) => "kretprobe",
            Some(_) => "other",
        }
    }

    #[test]
    fn every_attached_program_is_in_the_object() {
        let object = object();
        let everything = loader::Selection { comms: vec!["x".into()], http_peek: true, ..Default::default() };
        let plan = loader::attachment_plan(&everything, true, true);
        assert!(plan.len() > 30, "the full plan: {plan:?}");
        for (program, _, _) in plan {
            let expected = match loader::HookKind::of(program) {
                loader::HookKind::Classic => "tracepoint",
                loader::HookKind::Btf => "btf_tracepoint",
            };
            assert_eq!(program_kind(&object, program), expected, "{program}");
        }
        for (program, function) in kprobes::ATTACHMENTS {
            let expected = if program.ends_with("_return") { "kretprobe" } else { "kprobe" };
            assert_eq!(program_kind(&object, program), expected, "{program} on {function}");
        }
        for program in floor::PROGRAMS {
            assert_eq!(program_kind(&object, program), "tracepoint", "{program}");
        }
        for program in floor::BTF_PROGRAMS {
            assert_eq!(program_kind(&object, program), "btf_tracepoint", "{program}");
        }
        // Checks the check: a name nothing defines is reported missing.
        assert_eq!(program_kind(&object, "no_such_program"), "missing");
    }

    #[test]
    fn maps_have_the_agreed_types_and_sizes() {
        let object = object();
        let map = |name: &str| object.maps.get(name).unwrap_or_else(|| panic!("no map {name} in the object"));
        for name in names::MAPS {
            map(name);
        }
        let events = map(names::EVENTS);
        assert_eq!(events.map_type(), bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32);
        assert_eq!(events.max_entries(), RING_BYTES);
        let losses = map(names::LOSSES);
        assert_eq!(losses.map_type(), bpf_map_type::BPF_MAP_TYPE_PERCPU_ARRAY as u32);
        assert_eq!(losses.max_entries() as usize, Loss::COUNT, "one counter per loss reason");
        assert_eq!(losses.value_size() as usize, size_of::<u64>());
        assert_eq!(map(names::FILTER_PIDS).max_entries(), MAX_FILTER_PIDS);
        assert_eq!(map(names::FILTER_COMMS).max_entries(), MAX_FILTER_COMMS);
        assert_eq!(map(names::FILTER_COMMS).key_size(), 16);
        // Declared by hand (tracer-ebpf task_state.rs) and named by no userspace code, so
        // only this checks its type.
        assert_eq!(map("TASK_STATE").map_type(), bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE as u32);
        // aya-log-ebpf's ring, which kernel_log.rs opens by its name.
        assert_eq!(
            map(crate::kernel::kernel_log::RING).map_type(),
            bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32
        );
    }

    #[test]
    fn globals_have_the_size_of_their_types() {
        let file = object::File::parse(PROGRAMS).expect("the embedded object is ELF");
        let size_of_global = |name: &str| {
            file.symbols().find(|symbol| symbol.name() == Ok(name)).map(|symbol| symbol.size() as usize)
        };
        for (name, size) in [
            (names::OFFSETS, size_of::<TracepointOffsets>()),
            (names::FILTERS, size_of::<Filters>()),
            (names::RESET_OFFSETS, size_of::<ResetOffsets>()),
            (names::SOCK_OFFSETS, size_of::<SockOffsets>()),
            (names::TASK_FD_OFFSETS, size_of::<TaskFdOffsets>()),
        ] {
            assert_eq!(size_of_global(name), Some(size), "global {name}");
        }
        assert!(names::GLOBALS.iter().all(|name| size_of_global(name).is_some()));
        // The loader rewrites aya-log's level with a u8 (kernel_log::load_time_level).
        assert_eq!(size_of_global(aya_log::LEVEL), Some(size_of::<u8>()), "global {}", aya_log::LEVEL);
    }
}
