//! Every program of the embedded object, with the functions it calls, fits the stack the
//! verifier allows as 6.1 and 6.12 count it: 512 bytes for the deepest chain of calls,
//! each frame rounded up to 32 bytes (kernel/bpf/verifier.c, `check_max_stack_depth`).
//! Newer kernels (the 6.18 host) may give a large tracing program a private stack and
//! accept what those reject, so without this check only a VM run would tell. The logging
//! functions of tracer-ebpf/src/diagnostics.rs are frames of their own: adding one under a
//! program that already uses most of its stack is what this catches.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use object::{
        Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SectionIndex, SymbolKind,
    };

    use crate::kernel::loader::PROGRAMS;

    const STACK_LIMIT: u32 = 512;
    const INSN_BYTES: u64 = 8;
    /// BPF_LD | BPF_IMM | BPF_DW: the one instruction that takes two slots.
    const LOAD_IMM64: u8 = 0x18;
    /// BPF_JMP | BPF_CALL; with source register 1 (BPF_PSEUDO_CALL) a call of a function.
    const CALL: u8 = 0x85;
    const FRAME_POINTER: u8 = 10;

    /// The verifier's charge for a frame of `depth` bytes.
    fn frame(depth: u32) -> u32 {
        depth.max(1).next_multiple_of(32)
    }

    #[derive(Default)]
    struct Function {
        /// Deepest stack byte the code touches (`r10 - depth`).
        depth: u32,
        calls: BTreeSet<String>,
        /// In a program section (not `.text`): an entry point.
        program: bool,
    }

    /// The functions of an eBPF ELF object by name, with their stack and callees.
    fn functions(elf: &[u8]) -> BTreeMap<String, Function> {
        let file = object::File::parse(elf).expect("the embedded object is ELF");
        let named =
            |symbol: &object::Symbol<'_, '_>| symbol.name().ok().filter(|n| !n.is_empty()).map(String::from);
        let mut at: HashMap<(SectionIndex, u64), String> = HashMap::new();
        let mut spans = Vec::new();
        for symbol in file.symbols().filter(|s| s.kind() == SymbolKind::Text && s.size() > 0) {
            let (Some(name), Some(section)) = (named(&symbol), symbol.section_index()) else { continue };
            at.insert((section, symbol.address()), name.clone());
            spans.push((name, section, symbol.address(), symbol.size()));
        }
        let mut functions = BTreeMap::new();
        for (name, index, start, size) in spans {
            let section = file.section_by_index(index).expect("a symbol's section exists");
            let code = section.data().expect("section data");
            let relocations: BTreeMap<u64, RelocationTarget> =
                section.relocations().map(|(offset, relocation)| (offset, relocation.target())).collect();
            let mut function = Function { program: section.name() != Ok(".text"), ..Default::default() };
            let mut offset = start;
            while offset < start + size {
                let insn = &code[offset as usize..][..INSN_BYTES as usize];
                let (opcode, dst, src) = (insn[0], insn[1] & 0xf, insn[1] >> 4);
                let off = i16::from_le_bytes([insn[2], insn[3]]);
                let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
                let class = opcode & 0x7;
                // LDX reads through src; ST and STX write through dst.
                let base = if class == 0x1 { src } else { dst };
                if matches!(class, 0x1..=0x3) && base == FRAME_POINTER && off < 0 {
                    function.depth = function.depth.max(u32::from(off.unsigned_abs()));
                }
                if opcode == CALL && src == 1 {
                    let callee = match relocations.get(&offset) {
                        Some(RelocationTarget::Symbol(symbol)) => {
                            let symbol = file.symbol_by_index(*symbol).expect("relocated symbol");
                            if symbol.kind() == SymbolKind::Section {
                                // A call into a section: the immediate counts slots from its start.
                                let target = (i64::from(imm) + 1) as u64 * INSN_BYTES;
                                symbol.section_index().and_then(|s| at.get(&(s, target))).cloned()
                            } else {
                                named(&symbol)
                            }
                        }
                        // Resolved by the linker: relative to the next instruction.
                        _ => {
                            let slot = (offset / INSN_BYTES).wrapping_add_signed(i64::from(imm) + 1);
                            at.get(&(index, slot * INSN_BYTES)).cloned()
                        }
                    };
                    function
                        .calls
                        .insert(callee.unwrap_or_else(|| panic!("{name}: call at {offset} to nowhere")));
                }
                offset += if opcode == LOAD_IMM64 { 2 * INSN_BYTES } else { INSN_BYTES };
            }
            functions.insert(name, function);
        }
        functions
    }

    /// The most stack a call of `name` can take, counting every frame as the verifier does,
    /// and the chain of calls that takes it.
    fn deepest(
        functions: &BTreeMap<String, Function>,
        name: &str,
        path: &mut Vec<String>,
    ) -> (u32, Vec<String>) {
        let function = &functions[name];
        path.push(name.to_owned());
        let mut below = (0, Vec::new());
        for callee in &function.calls {
            assert!(!path.contains(callee), "recursion through {callee}: {path:?}");
            let chain = deepest(functions, callee, path);
            if chain.0 > below.0 {
                below = chain;
            }
        }
        path.pop();
        let mut chain = vec![format!("{name} ({} bytes)", function.depth)];
        chain.extend(below.1);
        (frame(function.depth) + below.0, chain)
    }

    #[test]
    fn every_call_chain_fits_the_verifiers_stack() {
        let functions = functions(PROGRAMS);
        let programs: Vec<&String> = functions.iter().filter(|(_, f)| f.program).map(|(n, _)| n).collect();
        assert!(programs.len() > 30, "{programs:?}");
        let mut deepest_seen = 0;
        for program in programs {
            let (stack, chain) = deepest(&functions, program, &mut Vec::new());
            assert!(stack <= STACK_LIMIT, "{program}: {stack} bytes of stack through {}", chain.join(" -> "));
            deepest_seen = deepest_seen.max(stack);
        }
        // Checks the check: the programs do use their stack, and calls are followed.
        assert!(deepest_seen > STACK_LIMIT / 2, "deepest chain only {deepest_seen} bytes");
        let kfree_skb = &functions["kfree_skb"];
        assert!(kfree_skb.depth > 256 && !kfree_skb.calls.is_empty(), "kfree_skb: {} bytes", kfree_skb.depth);
    }
}
