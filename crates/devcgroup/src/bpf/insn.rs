//! eBPF instruction encoding and a small builder with forward labels.
//!
//! Only what device-cgroup programs need: loads from the context, 32/64-bit
//! ALU, conditional jumps, exit — plus the encodings of `call` and 64-bit
//! immediate loads so that programs using them can be recognised and refused.

use anyhow::{bail, Result};

// Instruction classes (low 3 bits of `code`).
pub const CLASS_LD: u8 = 0x00;
pub const CLASS_LDX: u8 = 0x01;
pub const CLASS_ST: u8 = 0x02;
pub const CLASS_STX: u8 = 0x03;
pub const CLASS_ALU: u8 = 0x04;
pub const CLASS_JMP: u8 = 0x05;
pub const CLASS_JMP32: u8 = 0x06;
pub const CLASS_ALU64: u8 = 0x07;

// Load/store size (bits 3-4) and mode (bits 5-7).
pub const SIZE_W: u8 = 0x00;
pub const SIZE_H: u8 = 0x08;
pub const SIZE_B: u8 = 0x10;
pub const SIZE_DW: u8 = 0x18;
pub const MODE_IMM: u8 = 0x00;
pub const MODE_MEM: u8 = 0x60;

// Operand source (bit 3) for ALU and JMP classes.
pub const SRC_K: u8 = 0x00;
pub const SRC_X: u8 = 0x08;

// ALU operations (bits 4-7).
pub const ALU_ADD: u8 = 0x00;
pub const ALU_SUB: u8 = 0x10;
pub const ALU_MUL: u8 = 0x20;
pub const ALU_DIV: u8 = 0x30;
pub const ALU_OR: u8 = 0x40;
pub const ALU_AND: u8 = 0x50;
pub const ALU_LSH: u8 = 0x60;
pub const ALU_RSH: u8 = 0x70;
pub const ALU_NEG: u8 = 0x80;
pub const ALU_MOD: u8 = 0x90;
pub const ALU_XOR: u8 = 0xa0;
pub const ALU_MOV: u8 = 0xb0;
pub const ALU_ARSH: u8 = 0xc0;

// Jump operations (bits 4-7).
pub const JMP_JA: u8 = 0x00;
pub const JMP_JEQ: u8 = 0x10;
pub const JMP_JGT: u8 = 0x20;
pub const JMP_JGE: u8 = 0x30;
pub const JMP_JSET: u8 = 0x40;
pub const JMP_JNE: u8 = 0x50;
pub const JMP_JSGT: u8 = 0x60;
pub const JMP_JSGE: u8 = 0x70;
pub const JMP_CALL: u8 = 0x80;
pub const JMP_EXIT: u8 = 0x90;
pub const JMP_JLT: u8 = 0xa0;
pub const JMP_JLE: u8 = 0xb0;
pub const JMP_JSLT: u8 = 0xc0;
pub const JMP_JSLE: u8 = 0xd0;

/// An eBPF register number (0..=10).
pub type Reg = u8;
pub const R0: Reg = 0;
pub const R1: Reg = 1;
pub const R2: Reg = 2;
pub const R3: Reg = 3;
pub const R4: Reg = 4;
pub const R5: Reg = 5;
pub const R6: Reg = 6;
pub const R10: Reg = 10;

/// One instruction, laid out exactly like the kernel's `struct bpf_insn`
/// (8 bytes: code, dst/src nibbles, 16-bit offset, 32-bit immediate), so a
/// `&[Insn]` can be handed to `bpf(2)` as is.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Insn {
    pub code: u8,
    regs: u8,
    pub off: i16,
    pub imm: i32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == 8);

impl Insn {
    /// The C bitfields `dst_reg:4, src_reg:4` are allocated from the low bits
    /// on little-endian targets and from the high bits on big-endian ones.
    pub const fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
        let regs = if cfg!(target_endian = "little") {
            (dst & 0x0f) | ((src & 0x0f) << 4)
        } else {
            ((dst & 0x0f) << 4) | (src & 0x0f)
        };
        Insn {
            code,
            regs,
            off,
            imm,
        }
    }

    pub const fn dst(&self) -> Reg {
        if cfg!(target_endian = "little") {
            self.regs & 0x0f
        } else {
            self.regs >> 4
        }
    }

    pub const fn src(&self) -> Reg {
        if cfg!(target_endian = "little") {
            self.regs >> 4
        } else {
            self.regs & 0x0f
        }
    }

    pub const fn class(&self) -> u8 {
        self.code & 0x07
    }

    /// `dst = *(u32 *)(src + off)`
    pub const fn ldx_w(dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(CLASS_LDX | MODE_MEM | SIZE_W, dst, src, off, 0)
    }

    /// `dst = *(size *)(src + off)` for any size constant.
    pub const fn ldx(size: u8, dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(CLASS_LDX | MODE_MEM | size, dst, src, off, 0)
    }

    /// 32-bit ALU with an immediate; the result is zero-extended to 64 bits.
    pub const fn alu32_imm(op: u8, dst: Reg, imm: i32) -> Insn {
        Insn::new(CLASS_ALU | SRC_K | op, dst, 0, 0, imm)
    }

    /// 32-bit ALU between registers.
    pub const fn alu32_reg(op: u8, dst: Reg, src: Reg) -> Insn {
        Insn::new(CLASS_ALU | SRC_X | op, dst, src, 0, 0)
    }

    /// 64-bit ALU with a (sign-extended) immediate.
    pub const fn alu64_imm(op: u8, dst: Reg, imm: i32) -> Insn {
        Insn::new(CLASS_ALU64 | SRC_K | op, dst, 0, 0, imm)
    }

    /// 64-bit ALU between registers.
    pub const fn alu64_reg(op: u8, dst: Reg, src: Reg) -> Insn {
        Insn::new(CLASS_ALU64 | SRC_X | op, dst, src, 0, 0)
    }

    pub const fn mov32_imm(dst: Reg, imm: i32) -> Insn {
        Insn::alu32_imm(ALU_MOV, dst, imm)
    }

    pub const fn mov32_reg(dst: Reg, src: Reg) -> Insn {
        Insn::alu32_reg(ALU_MOV, dst, src)
    }

    pub const fn mov64_imm(dst: Reg, imm: i32) -> Insn {
        Insn::alu64_imm(ALU_MOV, dst, imm)
    }

    /// `if dst <op> imm goto pc + 1 + off` (64-bit compare, imm sign-extended).
    pub const fn jmp_imm(op: u8, dst: Reg, imm: i32, off: i16) -> Insn {
        Insn::new(CLASS_JMP | SRC_K | op, dst, 0, off, imm)
    }

    /// `if dst <op> src goto pc + 1 + off` (64-bit compare).
    pub const fn jmp_reg(op: u8, dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(CLASS_JMP | SRC_X | op, dst, src, off, 0)
    }

    /// 32-bit compare with an immediate (`BPF_JMP32`, kernel ≥ 5.1).
    pub const fn jmp32_imm(op: u8, dst: Reg, imm: i32, off: i16) -> Insn {
        Insn::new(CLASS_JMP32 | SRC_K | op, dst, 0, off, imm)
    }

    pub const fn ja(off: i16) -> Insn {
        Insn::new(CLASS_JMP | JMP_JA, 0, 0, off, 0)
    }

    /// Call helper `imm` (`src` 0) or a BPF-to-BPF function (`src` 1).
    pub const fn call(src: Reg, imm: i32) -> Insn {
        Insn::new(CLASS_JMP | JMP_CALL, 0, src, 0, imm)
    }

    pub const fn exit() -> Insn {
        Insn::new(CLASS_JMP | JMP_EXIT, 0, 0, 0, 0)
    }

    /// `dst = imm64`; two instruction slots. With a non-zero `src` ("pseudo"
    /// source) the kernel reads `imm` as a map fd, map value, BTF id, …
    pub const fn ld_imm64(dst: Reg, src: Reg, imm: u64) -> [Insn; 2] {
        [
            Insn::new(
                CLASS_LD | MODE_IMM | SIZE_DW,
                dst,
                src,
                0,
                imm as u32 as i32,
            ),
            Insn::new(0, 0, 0, 0, (imm >> 32) as u32 as i32),
        ]
    }

    /// True for the first slot of a two-slot 64-bit immediate load.
    pub const fn is_ld_imm64(&self) -> bool {
        self.code == CLASS_LD | MODE_IMM | SIZE_DW
    }
}

impl std::fmt::Debug for Insn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{{code:{:#04x} dst:r{} src:r{} off:{} imm:{:#x}}}",
            self.code,
            self.dst(),
            self.src(),
            self.off,
            self.imm
        )
    }
}

/// A position in a program under construction, bound later with
/// [`Builder::bind`]. Jumps to it are resolved by [`Builder::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// Builds a program with symbolic forward (or backward) jump targets, so the
/// generators never count instructions by hand.
#[derive(Default)]
pub struct Builder {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    pub fn push(&mut self, insn: Insn) -> &mut Self {
        self.insns.push(insn);
        self
    }

    pub fn extend(&mut self, insns: &[Insn]) -> &mut Self {
        self.insns.extend_from_slice(insns);
        self
    }

    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `label` to the next instruction to be pushed.
    pub fn bind(&mut self, label: Label) -> &mut Self {
        self.labels[label.0] = Some(self.insns.len());
        self
    }

    /// Pushes a jump instruction whose offset is filled in from `target`.
    pub fn jump(&mut self, insn: Insn, target: Label) -> &mut Self {
        self.fixups.push((self.insns.len(), target));
        self.insns.push(insn);
        self
    }

    pub fn len(&self) -> usize {
        self.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// Resolves jump offsets. A label bound at the very end is allowed: it
    /// means "the first instruction after this program" (used when the
    /// built code is prepended to another program).
    pub fn finish(self) -> Result<Vec<Insn>> {
        let mut insns = self.insns;
        for (at, label) in self.fixups {
            let Some(target) = self.labels[label.0] else {
                bail!("jump at instruction {at} to a label that was never bound");
            };
            let off = target as i64 - (at as i64 + 1);
            insns[at].off = i16::try_from(off)
                .map_err(|_| anyhow::anyhow!("jump at instruction {at} is out of range ({off})"))?;
        }
        Ok(insns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_kernel() {
        // r2 = *(u32 *)(r1 + 4) — bytes as the kernel's BPF_LDX_MEM macro
        // produces them on little-endian machines: 61 12 04 00 00 00 00 00.
        let insn = Insn::ldx_w(R2, R1, 4);
        assert_eq!(insn.code, 0x61);
        assert_eq!((insn.dst(), insn.src(), insn.off, insn.imm), (2, 1, 4, 0));
        if cfg!(target_endian = "little") {
            // SAFETY: Insn is repr(C), 8 bytes with no padding (code, regs,
            // off, imm), so every bit pattern of it is a valid [u8; 8].
            let bytes: [u8; 8] = unsafe { std::mem::transmute(insn) };
            assert_eq!(bytes, [0x61, 0x12, 0x04, 0x00, 0, 0, 0, 0]);
        }
        assert_eq!(Insn::exit().code, 0x95);
        assert_eq!(Insn::mov64_imm(R0, 1).code, 0xb7);
        assert_eq!(Insn::mov32_reg(R1, R3).code, 0xbc);
        assert_eq!(Insn::jmp_imm(JMP_JNE, R2, 2, 0).code, 0x55);
        assert_eq!(Insn::call(0, 5).code, 0x85);
        let ld = Insn::ld_imm64(R1, 1, 0x1_0000_0002);
        assert!(ld[0].is_ld_imm64());
        assert_eq!(
            (ld[0].code, ld[0].src(), ld[0].imm, ld[1].imm),
            (0x18, 1, 2, 1)
        );
    }

    #[test]
    fn builder_resolves_labels() {
        let mut b = Builder::new();
        let end = b.label();
        let back = b.label();
        b.bind(back);
        b.jump(Insn::jmp_imm(JMP_JEQ, R2, 1, 0), end); // 0
        b.push(Insn::mov64_imm(R0, 0)); // 1
        b.jump(Insn::ja(0), back); // 2
        b.bind(end);
        let insns = b.finish().unwrap();
        assert_eq!(insns[0].off, 2); // 0 + 1 + 2 = 3 = end of program
        assert_eq!(insns[2].off, -3); // 2 + 1 - 3 = 0
    }

    #[test]
    fn builder_rejects_unbound_label() {
        let mut b = Builder::new();
        let nowhere = b.label();
        b.jump(Insn::ja(0), nowhere);
        assert!(b.finish().is_err());
    }
}
