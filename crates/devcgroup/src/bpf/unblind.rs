//! Undoing the JIT's constant blinding in a program dump (pure).
//!
//! With `net.core.bpf_jit_harden=2` (common on hardened hosts) the kernel
//! rewrites every instruction with an immediate into a sequence through a
//! hidden scratch register, AX (r11), e.g.
//!
//! ```text
//! if r4 != 1 goto +3     ⇒   ax = K ^ 1 ; ax ^= K ; if r4 != ax goto +3'
//! ```
//!
//! and the dump we read back ("xlated") is that rewritten program. The
//! verifier rejects r11 in a program we load, so before patching we fold
//! each sequence back into the one instruction it came from and recompute
//! the jump offsets. The sequences are fixed by the kernel (one per kind:
//! 32/64-bit ALU, 64/32-bit conditional jump, store, 64-bit immediate load);
//! anything else that still uses r11 is refused.
//!
//! Blinding also turns `rX = 0` into `rX ^= rX`, which the verifier rejects
//! when rX was never written; that becomes `rX = 0` again.

use anyhow::{bail, Result};

use super::insn::*;

/// The kernel's scratch register for blinding.
pub const AX: Reg = 11;

/// One instruction of the original program (two for a 64-bit immediate)
/// and where it came from in the dump.
struct Unit {
    /// Index of the unit's first instruction in the dump.
    start: usize,
    /// Index in the dump of the instruction a jump's offset is relative to.
    jump_at: Option<usize>,
    insns: Vec<Insn>,
}

fn is_mov_k_ax(i: &Insn, class: u8) -> bool {
    i.code == class | ALU_MOV | SRC_K && i.dst() == AX && i.off == 0
}

fn is_xor_k_ax(i: &Insn, class: u8) -> bool {
    i.code == class | ALU_XOR | SRC_K && i.dst() == AX && i.off == 0
}

/// `ax = a; ax ^= b` at `at` in `class` width: the blinded constant `a ^ b`.
fn constant(prog: &[Insn], at: usize, class: u8) -> Option<i32> {
    let (a, b) = (prog.get(at)?, prog.get(at + 1)?);
    (is_mov_k_ax(a, class) && is_xor_k_ax(b, class)).then_some(a.imm ^ b.imm)
}

fn uses_ax(i: &Insn) -> bool {
    i.dst() == AX || i.src() == AX
}

/// A blinded 64-bit immediate load at `at`:
/// `ax = hi; ax ^= k; ax <<= 32; dst = ax; w_ax = lo; w_ax ^= k'; [zext]; dst |= ax`.
fn ld_imm64_at(prog: &[Insn], at: usize) -> Option<(Reg, i32, i32, usize, usize)> {
    let hi = constant(prog, at, CLASS_ALU64)?;
    let lsh = prog.get(at + 2)?;
    let mov = prog.get(at + 3)?;
    if lsh.code != CLASS_ALU64 | ALU_LSH | SRC_K || lsh.dst() != AX || lsh.imm != 32 {
        return None;
    }
    if mov.code != CLASS_ALU64 | ALU_MOV | SRC_X || mov.src() != AX || mov.dst() == AX {
        return None;
    }
    let dst = mov.dst();
    let lo = constant(prog, at + 4, CLASS_ALU)?;
    let mut end = at + 6;
    // Some architectures add an explicit zero-extension (a 32-bit mov of AX
    // to itself with imm 1).
    let zext = prog.get(end)?;
    if zext.code == CLASS_ALU | ALU_MOV | SRC_X && zext.dst() == AX && zext.src() == AX {
        end += 1;
    }
    let or = prog.get(end)?;
    if or.code != CLASS_ALU64 | ALU_OR | SRC_X || or.dst() != dst || or.src() != AX {
        return None;
    }
    Some((dst, hi, lo, at + 4, end + 1))
}

/// Folds blinded sequences back; returns `prog` unchanged when it has none.
pub fn unblind(prog: &[Insn]) -> Result<Vec<Insn>> {
    let xor_self = |i: &Insn| i.code == CLASS_ALU64 | ALU_XOR | SRC_X && i.dst() == i.src();
    if !prog.iter().any(|i| uses_ax(i) || xor_self(i)) {
        return Ok(prog.to_vec());
    }

    let mut units = Vec::new();
    let mut pc = 0;
    while pc < prog.len() {
        let insn = prog[pc];
        if let Some((dst, hi, lo, second, end)) = ld_imm64_at(prog, pc) {
            let [a, b] = Insn::ld_imm64(dst, 0, ((hi as u32 as u64) << 32) | lo as u32 as u64);
            units.push(Unit {
                start: pc,
                jump_at: None,
                insns: vec![a],
            });
            units.push(Unit {
                start: second,
                jump_at: None,
                insns: vec![b],
            });
            pc = end;
            continue;
        }
        let third = prog.get(pc + 2);
        let folded = [CLASS_ALU, CLASS_ALU64].into_iter().find_map(|width| {
            let k = constant(prog, pc, width)?;
            let t = third?;
            if t.src() != AX || t.dst() == AX {
                return None;
            }
            let op = t.code & 0xf0;
            let class = t.class();
            // For ALU and jumps bit 3 says "register operand"; for stores
            // it is part of the size.
            let by_reg = t.code & SRC_X != 0;
            let unit = match (width, class) {
                (CLASS_ALU, CLASS_ALU) | (CLASS_ALU64, CLASS_ALU64) if by_reg => Unit {
                    start: pc,
                    jump_at: None,
                    insns: vec![Insn::new(class | op | SRC_K, t.dst(), 0, t.off, k)],
                },
                (CLASS_ALU64, CLASS_JMP) | (CLASS_ALU, CLASS_JMP32)
                    if by_reg && !matches!(op, JMP_JA | JMP_CALL | JMP_EXIT) =>
                {
                    Unit {
                        start: pc,
                        jump_at: Some(pc + 2),
                        insns: vec![Insn::new(class | op | SRC_K, t.dst(), 0, t.off, k)],
                    }
                }
                (CLASS_ALU64, CLASS_STX) if t.code & 0xe0 == MODE_MEM => Unit {
                    start: pc,
                    jump_at: None,
                    // STX → ST with the same size and mode bits.
                    insns: vec![Insn::new(CLASS_ST | (t.code & 0xf8), t.dst(), 0, t.off, k)],
                },
                _ => return None,
            };
            Some(unit)
        });
        if let Some(unit) = folded {
            units.push(unit);
            pc += 3;
            continue;
        }
        if uses_ax(&insn) {
            bail!("instruction {pc} ({insn:?}) uses the JIT's scratch register in a way that is not a known blinding sequence");
        }
        if insn.class() == CLASS_JMP32 && insn.code & 0xf0 == JMP_JA {
            bail!("instruction {pc} is a long jump, which cannot be re-targeted here");
        }
        let is_jump = matches!(insn.class(), CLASS_JMP | CLASS_JMP32)
            && !matches!(insn.code & 0xf0, JMP_CALL | JMP_EXIT);
        units.push(Unit {
            start: pc,
            jump_at: is_jump.then_some(pc),
            insns: vec![if xor_self(&insn) {
                Insn::mov64_imm(insn.dst(), 0)
            } else {
                insn
            }],
        });
        pc += 1;
    }

    // Where each unit of the dump lands in the folded program.
    let mut new_index = std::collections::HashMap::new();
    let mut n = 0;
    for unit in &units {
        new_index.insert(unit.start, n);
        n += unit.insns.len();
    }
    new_index.insert(prog.len(), n);

    let mut out = Vec::with_capacity(n);
    for unit in units {
        let mut insns = unit.insns;
        if let Some(at) = unit.jump_at {
            let target = at as i64 + 1 + insns[0].off as i64;
            let Some(&new_target) = usize::try_from(target).ok().and_then(|t| new_index.get(&t))
            else {
                bail!("the jump at instruction {at} lands inside a blinded sequence");
            };
            let off = new_target as i64 - (out.len() as i64 + 1);
            insns[0].off = i16::try_from(off).expect("folding only shortens jumps");
        }
        out.extend(insns);
    }
    Ok(out)
}

/// Test helper: blinds `prog` the way the kernel's JIT does, with `seed` as
/// the "random" mask (varied per instruction).
#[cfg(test)]
pub fn blind(prog: &[Insn], seed: u32) -> Vec<Insn> {
    let mut seqs: Vec<(usize, Vec<Insn>, Option<usize>)> = Vec::new(); // (old pc, seq, jump index in seq)
    let mut pc = 0;
    while pc < prog.len() {
        let i = prog[pc];
        let r = seed.wrapping_mul(pc as u32 + 7).rotate_left(pc as u32) as i32;
        let op = i.code & 0xf0;
        let k = i.code & SRC_X == 0;
        let is_cond_jump = matches!(i.class(), CLASS_JMP | CLASS_JMP32)
            && !matches!(op, JMP_JA | JMP_CALL | JMP_EXIT);
        if i.is_ld_imm64() {
            let hi = prog[pc + 1].imm;
            let d = i.dst();
            seqs.push((
                pc,
                vec![
                    Insn::alu64_imm(ALU_MOV, AX, r ^ hi),
                    Insn::alu64_imm(ALU_XOR, AX, r),
                    Insn::alu64_imm(ALU_LSH, AX, 32),
                    Insn::alu64_reg(ALU_MOV, d, AX),
                ],
                None,
            ));
            seqs.push((
                pc + 1,
                vec![
                    Insn::alu32_imm(ALU_MOV, AX, r ^ i.imm),
                    Insn::alu32_imm(ALU_XOR, AX, r),
                    Insn::alu64_reg(ALU_OR, d, AX),
                ],
                None,
            ));
            pc += 2;
            continue;
        }
        let seq =
            if k && op == ALU_MOV && i.imm == 0 && matches!(i.class(), CLASS_ALU | CLASS_ALU64) {
                (vec![Insn::alu64_reg(ALU_XOR, i.dst(), i.dst())], None)
            } else if k
                && matches!(i.class(), CLASS_ALU | CLASS_ALU64)
                && !matches!(op, ALU_NEG | ALU_LSH | ALU_RSH | ALU_ARSH)
            {
                let c = i.class();
                (
                    vec![
                        Insn::new(c | ALU_MOV, AX, 0, 0, r ^ i.imm),
                        Insn::new(c | ALU_XOR, AX, 0, 0, r),
                        Insn::new(c | op | SRC_X, i.dst(), AX, i.off, 0),
                    ],
                    None,
                )
            } else if i.class() == CLASS_ST && i.code & 0xe0 == MODE_MEM {
                (
                    vec![
                        Insn::alu64_imm(ALU_MOV, AX, r ^ i.imm),
                        Insn::alu64_imm(ALU_XOR, AX, r),
                        Insn::new(CLASS_STX | (i.code & 0xf8), i.dst(), AX, i.off, 0),
                    ],
                    None,
                )
            } else if k && is_cond_jump {
                let c = if i.class() == CLASS_JMP {
                    CLASS_ALU64
                } else {
                    CLASS_ALU
                };
                (
                    vec![
                        Insn::new(c | ALU_MOV, AX, 0, 0, r ^ i.imm),
                        Insn::new(c | ALU_XOR, AX, 0, 0, r),
                        Insn::new(i.class() | op | SRC_X, i.dst(), AX, i.off, 0),
                    ],
                    Some(2),
                )
            } else {
                let is_jump = matches!(i.class(), CLASS_JMP | CLASS_JMP32)
                    && !matches!(op, JMP_CALL | JMP_EXIT);
                (vec![i], is_jump.then_some(0))
            };
        seqs.push((pc, seq.0, seq.1));
        pc += 1;
    }
    let mut start = std::collections::HashMap::new();
    let mut n = 0;
    for (old, seq, _) in &seqs {
        start.insert(*old, n);
        n += seq.len();
    }
    let mut out = Vec::new();
    for (old, mut seq, jump) in seqs {
        if let Some(j) = jump {
            let target = (old as i64 + 1 + seq[j].off as i64) as usize;
            seq[j].off = (start[&target] as i64 - (out.len() + j) as i64 - 1) as i16;
        }
        out.extend(seq);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::filter::{deny_by_default, runc_default_rules};
    use super::super::interp::{run, DevCtx};
    use super::super::patch::prepend_allow_block;
    use super::*;
    use crate::DeviceAccess;

    fn programs() -> Vec<Vec<Insn>> {
        let runtime = deny_by_default(&runc_default_rules()).unwrap();
        let patched = prepend_allow_block(&runtime, &DeviceAccess::new(253, 65536)).unwrap();
        // Backward jump, JMP32, a 64-bit constant and a 32-bit ALU immediate.
        let mut misc = Insn::ld_imm64(R3, 0, 0xdead_beef_0000_0007).to_vec();
        misc.extend([
            Insn::mov64_imm(R2, 0),
            Insn::alu64_imm(ALU_ADD, R2, 1),     // loop:
            Insn::jmp32_imm(JMP_JLT, R2, 5, -2), // if w2 < 5 goto loop
            Insn::alu32_imm(ALU_AND, R3, 0xff),
            Insn::alu64_reg(ALU_ADD, R3, R2),
            Insn::alu64_reg(ALU_MOV, R0, R3),
            Insn::exit(),
        ]);
        vec![runtime, patched, misc]
    }

    fn samples() -> Vec<DevCtx> {
        let mut v = Vec::new();
        for t in [1, 2] {
            for a in 0..8 {
                for (ma, mi) in [(1, 3), (1, 5), (136, 4), (253, 65536), (253, 1)] {
                    v.push(DevCtx::new(t, a, ma, mi));
                }
            }
        }
        v
    }

    #[test]
    fn blinding_round_trips() {
        for (n, prog) in programs().into_iter().enumerate() {
            for seed in [1, 0x9e37_79b9, 0xffff_ffff] {
                let blinded = blind(&prog, seed);
                assert!(blinded.len() > prog.len());
                assert!(blinded.iter().any(uses_ax), "program {n} got blinded");
                assert_eq!(
                    unblind(&blinded).unwrap(),
                    prog,
                    "program {n} seed {seed:#x}"
                );
            }
        }
    }

    #[test]
    fn a_plain_program_is_returned_as_is() {
        for prog in programs() {
            assert_eq!(unblind(&prog).unwrap(), prog);
        }
    }

    #[test]
    fn stores_round_trip() {
        for size in [SIZE_W, SIZE_H, SIZE_B, SIZE_DW] {
            let prog = [
                Insn::new(CLASS_ST | MODE_MEM | size, R10, 0, -8, 7),
                Insn::mov64_imm(R0, 1),
                Insn::exit(),
            ];
            let blinded = blind(&prog, 5);
            assert_eq!(blinded[2].code, CLASS_STX | MODE_MEM | size);
            assert_eq!(unblind(&blinded).unwrap(), prog);
        }
    }

    #[test]
    fn folded_programs_still_decide_the_same() {
        for prog in programs() {
            let back = unblind(&blind(&prog, 77)).unwrap();
            for c in samples() {
                assert_eq!(run(&prog, &c), run(&back, &c), "{c:?}");
            }
        }
    }

    #[test]
    fn xor_zero_becomes_a_move() {
        let prog = [Insn::alu64_reg(ALU_XOR, R0, R0), Insn::exit()];
        assert_eq!(
            unblind(&prog).unwrap(),
            [Insn::mov64_imm(R0, 0), Insn::exit()]
        );
    }

    #[test]
    fn refuses_unknown_uses_of_ax() {
        let prog = [Insn::alu64_reg(ALU_MOV, R0, AX), Insn::exit()];
        assert!(unblind(&prog).is_err());
        let half = [
            Insn::alu64_imm(ALU_MOV, AX, 1),
            Insn::mov64_imm(R0, 0),
            Insn::exit(),
        ];
        assert!(unblind(&half).is_err());
    }
}
