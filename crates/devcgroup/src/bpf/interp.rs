//! A tiny interpreter for device-cgroup programs.
//!
//! It runs a program on one `struct bpf_cgroup_dev_ctx` and returns R0. It
//! knows the instruction subset that container runtimes (runc, crun, systemd)
//! and our own allow block use: context loads, 32/64-bit ALU, conditional
//! jumps (64- and 32-bit compares) and exit. Anything else — helper calls,
//! map loads, stack use — is reported as [`InterpError::Unsupported`] rather
//! than guessed at.
//!
//! Two users: the unit tests, which check allow/deny decisions of generated
//! and patched programs without loading them; and the v2 patcher, which asks
//! "does this attached program already allow the device?" to stay idempotent
//! even when other allow blocks were prepended after ours. That answer is
//! exact: a program without calls or maps is a pure function of the context.

use std::fmt;

use super::insn::*;

/// The context the kernel passes to a `BPF_PROG_TYPE_CGROUP_DEVICE` program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevCtx {
    /// `(access << 16) | device type`.
    pub access_type: u32,
    pub major: u32,
    pub minor: u32,
}

impl DevCtx {
    /// `dev_type` is [`super::DEV_CHAR`] or [`super::DEV_BLOCK`]; `access` a
    /// mask of [`super::ACC_MKNOD`], [`super::ACC_READ`], [`super::ACC_WRITE`].
    pub fn new(dev_type: u32, access: u32, major: u32, minor: u32) -> DevCtx {
        DevCtx {
            access_type: (access << 16) | dev_type,
            major,
            minor,
        }
    }

    fn bytes(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&self.access_type.to_ne_bytes());
        b[4..8].copy_from_slice(&self.major.to_ne_bytes());
        b[8..12].copy_from_slice(&self.minor.to_ne_bytes());
        b
    }
}

/// Why a program could not be evaluated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterpError {
    Unsupported { pc: usize, insn: Insn },
    UninitRegister { pc: usize, reg: Reg },
    CtxOutOfBounds { pc: usize, off: i64 },
    PcOutOfRange { pc: usize },
    StepLimit,
}

impl fmt::Display for InterpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterpError::Unsupported { pc, insn } => {
                write!(f, "instruction {pc} ({insn:?}) is not supported")
            }
            InterpError::UninitRegister { pc, reg } => {
                write!(f, "instruction {pc} reads r{reg}, which holds no number")
            }
            InterpError::CtxOutOfBounds { pc, off } => {
                write!(f, "instruction {pc} reads the context at offset {off}")
            }
            InterpError::PcOutOfRange { pc } => write!(f, "execution left the program at {pc}"),
            InterpError::StepLimit => write!(f, "step limit reached"),
        }
    }
}

impl std::error::Error for InterpError {}

/// Verified programs terminate; this only bounds damage from bad input.
const STEP_LIMIT: usize = 1 << 20;

#[derive(Clone, Copy, Debug)]
enum Val {
    Uninit,
    Scalar(u64),
    /// Pointer into the context at this byte offset.
    Ctx(i64),
}

/// Runs `prog` on `ctx` and returns R0 at exit.
pub fn run(prog: &[Insn], ctx: &DevCtx) -> Result<u64, InterpError> {
    let ctx_bytes = ctx.bytes();
    let mut regs = [Val::Uninit; 11];
    regs[R1 as usize] = Val::Ctx(0);
    let mut pc = 0usize;
    for _ in 0..STEP_LIMIT {
        let insn = *prog.get(pc).ok_or(InterpError::PcOutOfRange { pc })?;
        let unsupported = InterpError::Unsupported { pc, insn };
        let dst = insn.dst() as usize;
        let src = insn.src() as usize;
        if dst > 10 || src > 10 {
            return Err(unsupported);
        }
        let scalar = |regs: &[Val; 11], r: usize| match regs[r] {
            Val::Scalar(v) => Ok(v),
            Val::Uninit => Err(InterpError::UninitRegister { pc, reg: r as Reg }),
            Val::Ctx(_) => Err(InterpError::Unsupported { pc, insn }),
        };
        match insn.class() {
            CLASS_LD => {
                // Only plain 64-bit constants; pseudo sources reference maps,
                // BTF or functions, whose values we cannot know.
                if !insn.is_ld_imm64() || insn.src() != 0 || dst == 10 {
                    return Err(unsupported);
                }
                let hi = prog
                    .get(pc + 1)
                    .ok_or(InterpError::PcOutOfRange { pc: pc + 1 })?;
                let v = (insn.imm as u32 as u64) | ((hi.imm as u32 as u64) << 32);
                regs[dst] = Val::Scalar(v);
                pc += 2;
            }
            CLASS_LDX => {
                if insn.code & 0xe0 != MODE_MEM || dst == 10 {
                    return Err(unsupported);
                }
                let Val::Ctx(base) = regs[src] else {
                    return Err(unsupported);
                };
                let len = match insn.code & 0x18 {
                    SIZE_B => 1,
                    SIZE_H => 2,
                    SIZE_W => 4,
                    _ => 8,
                };
                let off = base + insn.off as i64;
                if off < 0 || off + len > ctx_bytes.len() as i64 {
                    return Err(InterpError::CtxOutOfBounds { pc, off });
                }
                let mut buf = [0u8; 8];
                let bytes = &ctx_bytes[off as usize..(off + len) as usize];
                let v = if cfg!(target_endian = "little") {
                    buf[..bytes.len()].copy_from_slice(bytes);
                    u64::from_le_bytes(buf)
                } else {
                    buf[8 - bytes.len()..].copy_from_slice(bytes);
                    u64::from_be_bytes(buf)
                };
                regs[dst] = Val::Scalar(v);
                pc += 1;
            }
            class @ (CLASS_ALU | CLASS_ALU64) => {
                let op = insn.code & 0xf0;
                // A non-zero offset selects newer variants (sign-extending
                // moves, signed division) that device programs do not use.
                if insn.off != 0 || dst == 10 {
                    return Err(unsupported);
                }
                let wide = class == CLASS_ALU64;
                let by_reg = insn.code & SRC_X != 0;
                // Pointer arithmetic: only copying the context pointer and
                // moving it by a constant, as compilers sometimes emit.
                if wide {
                    match (op, by_reg, regs[src], regs[dst]) {
                        (ALU_MOV, true, Val::Ctx(o), _) => {
                            regs[dst] = Val::Ctx(o);
                            pc += 1;
                            continue;
                        }
                        (ALU_ADD | ALU_SUB, false, _, Val::Ctx(o)) => {
                            let k = insn.imm as i64;
                            regs[dst] = Val::Ctx(if op == ALU_ADD { o + k } else { o - k });
                            pc += 1;
                            continue;
                        }
                        _ => {}
                    }
                }
                let b = if by_reg {
                    scalar(&regs, src)?
                } else if wide {
                    insn.imm as i64 as u64
                } else {
                    insn.imm as u32 as u64
                };
                let a = if op == ALU_MOV {
                    0
                } else {
                    scalar(&regs, dst)?
                };
                let v = if wide {
                    alu64(op, a, b).ok_or(unsupported)?
                } else {
                    alu32(op, a as u32, b as u32).ok_or(unsupported)? as u64
                };
                regs[dst] = Val::Scalar(v);
                pc += 1;
            }
            class @ (CLASS_JMP | CLASS_JMP32) => {
                let op = insn.code & 0xf0;
                let wide = class == CLASS_JMP;
                match op {
                    JMP_EXIT if wide => return scalar(&regs, R0 as usize),
                    JMP_JA if wide => {
                        pc = jump_target(pc, insn.off)?;
                        continue;
                    }
                    JMP_JA | JMP_CALL | JMP_EXIT => return Err(unsupported),
                    _ => {}
                }
                let a = scalar(&regs, dst)?;
                let b = if insn.code & SRC_X != 0 {
                    scalar(&regs, src)?
                } else {
                    insn.imm as i64 as u64
                };
                let taken = if wide {
                    compare64(op, a, b)
                } else {
                    compare32(op, a as u32, b as u32)
                }
                .ok_or(unsupported)?;
                pc = if taken {
                    jump_target(pc, insn.off)?
                } else {
                    pc + 1
                };
            }
            _ => return Err(unsupported),
        }
    }
    Err(InterpError::StepLimit)
}

/// Runs `prog` and reads its verdict: non-zero R0 allows the access.
pub fn allows(prog: &[Insn], ctx: &DevCtx) -> Result<bool, InterpError> {
    run(prog, ctx).map(|r0| r0 != 0)
}

fn jump_target(pc: usize, off: i16) -> Result<usize, InterpError> {
    let t = pc as i64 + 1 + off as i64;
    usize::try_from(t).map_err(|_| InterpError::PcOutOfRange { pc })
}

fn alu64(op: u8, a: u64, b: u64) -> Option<u64> {
    Some(match op {
        ALU_ADD => a.wrapping_add(b),
        ALU_SUB => a.wrapping_sub(b),
        ALU_MUL => a.wrapping_mul(b),
        // eBPF defines division by zero as 0 and modulo by zero as identity.
        ALU_DIV => a.checked_div(b).unwrap_or(0),
        ALU_MOD => a.checked_rem(b).unwrap_or(a),
        ALU_OR => a | b,
        ALU_AND => a & b,
        ALU_XOR => a ^ b,
        ALU_LSH => a << (b & 63),
        ALU_RSH => a >> (b & 63),
        ALU_ARSH => ((a as i64) >> (b & 63)) as u64,
        ALU_NEG => a.wrapping_neg(),
        ALU_MOV => b,
        _ => return None,
    })
}

/// The 32-bit ALU is the 64-bit one on zero-extended operands, truncated,
/// except that shifts take their count modulo 32 and the arithmetic shift
/// extends the 32-bit sign.
fn alu32(op: u8, a: u32, b: u32) -> Option<u32> {
    match op {
        ALU_ARSH => Some(((a as i32) >> (b & 31)) as u32),
        ALU_LSH | ALU_RSH => alu64(op, u64::from(a), u64::from(b & 31)).map(|r| r as u32),
        _ => alu64(op, u64::from(a), u64::from(b)).map(|r| r as u32),
    }
}

fn compare64(op: u8, a: u64, b: u64) -> Option<bool> {
    let (sa, sb) = (a as i64, b as i64);
    Some(match op {
        JMP_JEQ => a == b,
        JMP_JNE => a != b,
        JMP_JGT => a > b,
        JMP_JGE => a >= b,
        JMP_JLT => a < b,
        JMP_JLE => a <= b,
        JMP_JSET => a & b != 0,
        JMP_JSGT => sa > sb,
        JMP_JSGE => sa >= sb,
        JMP_JSLT => sa < sb,
        JMP_JSLE => sa <= sb,
        _ => return None,
    })
}

/// JMP32 compares the low halves: unsigned as zero-extended, signed as
/// sign-extended 64-bit values.
fn compare32(op: u8, a: u32, b: u32) -> Option<bool> {
    match op {
        JMP_JSGT | JMP_JSGE | JMP_JSLT | JMP_JSLE => {
            compare64(op, i64::from(a as i32) as u64, i64::from(b as i32) as u64)
        }
        _ => compare64(op, u64::from(a), u64::from(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ACC_READ, DEV_CHAR};
    use super::*;

    fn ctx() -> DevCtx {
        DevCtx::new(DEV_CHAR, ACC_READ, 1, 5)
    }

    /// Runs `body` followed by `r0 = r2; exit` and returns R0.
    fn eval(body: &[Insn]) -> u64 {
        let mut p = body.to_vec();
        p.push(Insn::alu64_reg(ALU_MOV, R0, R2));
        p.push(Insn::exit());
        run(&p, &ctx()).unwrap()
    }

    #[test]
    fn reads_the_context() {
        assert_eq!(eval(&[Insn::ldx_w(R2, R1, 0)]), (2 << 16) | 2);
        assert_eq!(eval(&[Insn::ldx_w(R2, R1, 4)]), 1);
        assert_eq!(eval(&[Insn::ldx_w(R2, R1, 8)]), 5);
        // Narrow and wide loads, and a copied context pointer.
        assert_eq!(eval(&[Insn::ldx(SIZE_H, R2, R1, 2)]), 2);
        assert_eq!(eval(&[Insn::ldx(SIZE_B, R2, R1, 0)]), 2);
        assert_eq!(eval(&[Insn::ldx(SIZE_DW, R2, R1, 4)]), (5 << 32) | 1);
        assert_eq!(
            eval(&[
                Insn::alu64_reg(ALU_MOV, R3, R1),
                Insn::alu64_imm(ALU_ADD, R3, 8),
                Insn::ldx_w(R2, R3, 0),
            ]),
            5
        );
    }

    #[test]
    fn alu_semantics() {
        let with = |insns: &[Insn]| {
            let mut p = vec![Insn::mov64_imm(R2, -1)];
            p.extend_from_slice(insns);
            eval(&p)
        };
        assert_eq!(with(&[]), u64::MAX); // mov64 sign-extends
        assert_eq!(eval(&[Insn::mov32_imm(R2, -1)]), 0xffff_ffff); // mov32 zero-extends
        assert_eq!(with(&[Insn::alu32_imm(ALU_AND, R2, 0xffff)]), 0xffff);
        assert_eq!(with(&[Insn::alu32_imm(ALU_RSH, R2, 16)]), 0xffff);
        assert_eq!(with(&[Insn::alu64_imm(ALU_RSH, R2, 60)]), 0xf);
        assert_eq!(with(&[Insn::alu32_imm(ALU_LSH, R2, 4)]), 0xffff_fff0);
        assert_eq!(with(&[Insn::alu64_imm(ALU_ARSH, R2, 4)]), u64::MAX);
        assert_eq!(with(&[Insn::alu32_imm(ALU_ARSH, R2, 4)]), 0xffff_ffff);
        assert_eq!(with(&[Insn::alu64_imm(ALU_ADD, R2, 2)]), 1);
        assert_eq!(with(&[Insn::alu64_imm(ALU_DIV, R2, 0)]), 0);
        assert_eq!(with(&[Insn::alu64_imm(ALU_MOD, R2, 0)]), u64::MAX);
        assert_eq!(with(&[Insn::alu32_imm(ALU_XOR, R2, 0xf)]), 0xffff_fff0);
        assert_eq!(
            eval(&[
                Insn::mov32_imm(R2, 6),
                Insn::mov32_imm(R3, 3),
                Insn::alu32_reg(ALU_OR, R2, R3),
            ]),
            7
        );
        let imm = Insn::ld_imm64(R2, 0, 0x1234_5678_9abc_def0);
        assert_eq!(eval(&imm), 0x1234_5678_9abc_def0);
    }

    /// `if r2 <op> operand` with r2 = `a`: 1 when taken, 0 when not.
    fn taken(jmp: Insn, a: i32) -> u64 {
        let p = [
            Insn::mov64_imm(R2, a),
            Insn::mov64_imm(R3, 3),
            jmp,
            Insn::mov64_imm(R0, 0),
            Insn::exit(),
            Insn::mov64_imm(R0, 1),
            Insn::exit(),
        ];
        run(&p, &ctx()).unwrap()
    }

    #[test]
    fn compare32_looks_at_the_low_halves() {
        assert_eq!(compare32(JMP_JGT, 0xffff_ffff, 1), Some(true));
        assert_eq!(compare32(JMP_JSGT, 0xffff_ffff, 1), Some(false)); // -1 > 1
        assert_eq!(compare32(JMP_JSLT, 0x8000_0000, 0), Some(true));
        assert_eq!(compare32(JMP_JSET, 6, 4), Some(true));
        assert_eq!(compare32(JMP_JEQ, 7, 7), Some(true));
        assert_eq!(compare32(0xf0, 1, 1), None);
    }

    #[test]
    fn alu32_truncates_and_masks_shifts() {
        assert_eq!(alu32(ALU_ADD, u32::MAX, 2), Some(1));
        assert_eq!(alu32(ALU_SUB, 0, 1), Some(u32::MAX));
        assert_eq!(alu32(ALU_MUL, 0x8000_0000, 2), Some(0));
        assert_eq!(alu32(ALU_DIV, 7, 0), Some(0));
        assert_eq!(alu32(ALU_MOD, 7, 0), Some(7));
        assert_eq!(alu32(ALU_LSH, 1, 33), Some(2));
        assert_eq!(alu32(ALU_RSH, 0x8000_0000, 63), Some(1));
        assert_eq!(alu32(ALU_ARSH, 0x8000_0000, 31), Some(u32::MAX));
        assert_eq!(alu32(ALU_NEG, 1, 0), Some(u32::MAX));
        assert_eq!(alu32(0xf0, 1, 1), None);
    }

    #[test]
    fn jumps() {
        let cases: &[(u8, i32, bool)] = &[
            (JMP_JEQ, 3, true),
            (JMP_JEQ, 4, false),
            (JMP_JNE, 4, true),
            (JMP_JGT, 4, true),
            (JMP_JGT, 3, false),
            (JMP_JGE, 3, true),
            (JMP_JLT, 2, true),
            (JMP_JLT, -1, false), // unsigned: -1 is huge
            (JMP_JLE, 3, true),
            (JMP_JSLT, -1, true), // signed: -1 < 3
            (JMP_JSLE, 4, false),
            (JMP_JSGT, 4, true),
            (JMP_JSGE, -4, false),
            (JMP_JSET, 2, true),
            (JMP_JSET, 4, false),
        ];
        for &(op, a, want) in cases {
            let want = want as u64;
            assert_eq!(
                taken(Insn::jmp_imm(op, R2, 3, 2), a),
                want,
                "imm op {op:#x} a {a}"
            );
            assert_eq!(
                taken(Insn::jmp_reg(op, R2, R3, 2), a),
                want,
                "reg op {op:#x} a {a}"
            );
        }
        assert_eq!(taken(Insn::ja(2), 0), 1);
        // JMP32 compares only the low halves: 0x1_0000_0003 == 3.
        let p = [
            Insn::ld_imm64(R2, 0, 0x1_0000_0003)[0],
            Insn::ld_imm64(R2, 0, 0x1_0000_0003)[1],
            Insn::jmp32_imm(JMP_JEQ, R2, 3, 2),
            Insn::mov64_imm(R0, 0),
            Insn::exit(),
            Insn::mov64_imm(R0, 1),
            Insn::exit(),
        ];
        assert_eq!(run(&p, &ctx()).unwrap(), 1);
    }

    #[test]
    fn refuses_what_it_cannot_know() {
        let c = ctx();
        let call = [Insn::call(0, 14), Insn::exit()];
        assert!(matches!(
            run(&call, &c),
            Err(InterpError::Unsupported { pc: 0, .. })
        ));
        let map = Insn::ld_imm64(R1, 1, 3);
        assert!(matches!(
            run(&[map[0], map[1], Insn::exit()], &c),
            Err(InterpError::Unsupported { .. })
        ));
        let uninit = [Insn::exit()];
        assert_eq!(
            run(&uninit, &c),
            Err(InterpError::UninitRegister { pc: 0, reg: 0 })
        );
        let oob = [Insn::ldx_w(R0, R1, 12), Insn::exit()];
        assert!(matches!(
            run(&oob, &c),
            Err(InterpError::CtxOutOfBounds { .. })
        ));
        let stack = [Insn::ldx_w(R0, R10, -4), Insn::exit()];
        assert!(matches!(
            run(&stack, &c),
            Err(InterpError::Unsupported { .. })
        ));
        let off_end = [Insn::mov64_imm(R0, 0)];
        assert_eq!(run(&off_end, &c), Err(InterpError::PcOutOfRange { pc: 1 }));
        let forever = [Insn::ja(-1)];
        assert_eq!(run(&forever, &c), Err(InterpError::StepLimit));
        // Arithmetic on the context pointer other than +/- constant.
        let mul = [Insn::alu64_imm(ALU_MUL, R1, 2), Insn::exit()];
        assert!(matches!(
            run(&mul, &c),
            Err(InterpError::Unsupported { .. })
        ));
    }
}
