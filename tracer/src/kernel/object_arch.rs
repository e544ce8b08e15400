//! The embedded eBPF object was built for the architecture of the binary that carries it.
//!
//! BPF bytecode is the same on every CPU (ELF e_machine EM_BPF), but a kprobe program reads
//! the probed function's arguments and return value out of the CPU's saved registers,
//! `struct pt_regs`, whose layout is the architecture's: aya-ebpf compiles those reads for
//! the `bpf_target_arch` aya-build passes, which follows the cargo target. An object built
//! for another architecture loads without complaint and reads the wrong registers, so the
//! test looks at the offsets the programs read at. It runs on the host for amd64 and, cross
//! built, inside the arm64 guests of `cargo xtask vm-test --arch arm64`.

#[cfg(test)]
mod tests {
    use aya_obj::{Object, generated::bpf_insn};

    use crate::kernel::loader::PROGRAMS;

    /// `struct pt_regs` offsets of the first argument register and the return value
    /// register: x86-64 `di` and `ax` (arch/x86/include/asm/ptrace.h, fifteenth and
    /// eleventh of its 8-byte fields), arm64 `regs[0]` for both (arch/arm64/include/asm/ptrace.h).
    #[cfg(target_arch = "x86_64")]
    const FIRST_ARGUMENT: i16 = 14 * 8;
    #[cfg(target_arch = "x86_64")]
    const RETURN_VALUE: i16 = 10 * 8;
    #[cfg(target_arch = "aarch64")]
    const FIRST_ARGUMENT: i16 = 0;
    #[cfg(target_arch = "aarch64")]
    const RETURN_VALUE: i16 = 0;

    /// BPF_LDX | BPF_MEM, any size: a load `dst = *(size *)(src + off)`.
    fn is_memory_load(insn: &bpf_insn) -> bool {
        insn.code & 0x07 == 0x01 && insn.code & 0xe0 == 0x60
    }

    /// Whether `insn` writes `register` (a load, a move or arithmetic into it, or a call,
    /// which clobbers r1-r5).
    fn writes(insn: &bpf_insn, register: u8) -> bool {
        let class = insn.code & 0x07;
        let is_call = insn.code == 0x85;
        (matches!(class, 0x00 | 0x01 | 0x04 | 0x07) && insn.dst_reg() == register)
            || (is_call && (1..=5).contains(&register))
    }

    /// The offset of the first load from the context (r1 at entry) of program `name`.
    fn first_context_load(object: &Object, name: &str) -> i16 {
        let program = object.programs.get(name).unwrap_or_else(|| panic!("no program {name} in the object"));
        let function = object
            .functions
            .get(&(program.section_index, program.address))
            .unwrap_or_else(|| panic!("no code for program {name}"));
        for insn in &function.instructions {
            if is_memory_load(insn) && insn.src_reg() == 1 {
                return insn.off;
            }
            assert!(!writes(insn, 1), "{name} overwrites its context register before reading it");
        }
        panic!("{name} never reads its context")
    }

    #[test]
    fn embedded_object_reads_this_architectures_registers() {
        let object = Object::parse(PROGRAMS).expect("the embedded object parses");
        // __inet_bind(struct sock *sk, ...): the first argument, and the return value.
        assert_eq!(
            first_context_load(&object, "inet_bind_entry"),
            FIRST_ARGUMENT,
            "inet_bind_entry reads its first argument at another offset: an object of another architecture?"
        );
        assert_eq!(
            first_context_load(&object, "inet_bind_return"),
            RETURN_VALUE,
            "inet_bind_return reads the return value at another offset: an object of another architecture?"
        );
    }
}
