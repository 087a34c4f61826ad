//! Prepending an allow block to an attached device program (pure).
//!
//! With `BPF_F_ALLOW_MULTI` every attached program must say yes, so adding
//! a second "allow" program cannot grant anything. Instead each attached
//! program is replaced by a copy that starts with:
//!
//! ```text
//!  0: r2 = *(u32 *)(r1 + 0)        access_type
//!  1: w3 = w2
//!  2: w3 &= 0xffff                 device type
//!  3: if r3 != DEV_CHAR goto out
//!  4: w2 >>= 16                    requested access
//!  5: if r2 & ~(READ|WRITE) goto out
//!  6: r2 = *(u32 *)(r1 + 4)        major
//!  7: if r2 != MAJ goto out
//!  8: r2 = *(u32 *)(r1 + 8)        minor
//!  9: if r2 != MIN goto out
//! 10: r0 = 1
//! 11: exit
//! out: <the original program, unchanged>
//! ```
//!
//! The block writes only R0, R2 and R3 and never R1, so the original code
//! finds the context pointer where it expects it (the verifier already proved
//! the original never reads a register it did not write, other than R1 and
//! R10). All jumps are relative, so the original's jumps stay valid when the
//! whole program is shifted.

use anyhow::{bail, Context, Result};

use super::insn::*;
use super::interp::{self, DevCtx, InterpError};
use super::unblind::unblind;
use super::{ACC_READ, ACC_WRITE, DEV_CHAR};
use crate::DeviceAccess;

/// Number of instructions in [`allow_block`].
pub const ALLOW_BLOCK_LEN: usize = 12;

fn imm(what: &str, v: u32, dev: &DeviceAccess) -> Result<i32> {
    // Context fields are loaded zero-extended; jump immediates are
    // sign-extended. Linux device numbers (12-bit major, 20-bit minor) are
    // far below 2^31, so this only rejects nonsense.
    i32::try_from(v).map_err(|_| anyhow::anyhow!("{dev}: {what} {v} is out of range"))
}

/// The instructions that allow read/write of the char device `dev` and fall
/// through to whatever follows them for every other access.
pub fn allow_block(dev: &DeviceAccess) -> Result<Vec<Insn>> {
    let major = imm("major", dev.major, dev)?;
    let minor = imm("minor", dev.minor, dev)?;
    let mut b = Builder::new();
    let out = b.label();
    b.push(Insn::ldx_w(R2, R1, 0))
        .push(Insn::mov32_reg(R3, R2))
        .push(Insn::alu32_imm(ALU_AND, R3, 0xffff))
        .jump(Insn::jmp_imm(JMP_JNE, R3, DEV_CHAR as i32, 0), out)
        .push(Insn::alu32_imm(ALU_RSH, R2, 16))
        .jump(
            Insn::jmp_imm(JMP_JSET, R2, !(ACC_READ | ACC_WRITE) as i32, 0),
            out,
        )
        .push(Insn::ldx_w(R2, R1, 4))
        .jump(Insn::jmp_imm(JMP_JNE, R2, major, 0), out)
        .push(Insn::ldx_w(R2, R1, 8))
        .jump(Insn::jmp_imm(JMP_JNE, R2, minor, 0), out)
        .push(Insn::mov64_imm(R0, 1))
        .push(Insn::exit())
        .bind(out);
    let block = b.finish()?;
    debug_assert_eq!(block.len(), ALLOW_BLOCK_LEN);
    Ok(block)
}

/// True when `prog` begins with our allow block for `dev` — the cheap,
/// exact idempotency check.
pub fn starts_with_allow_block(prog: &[Insn], dev: &DeviceAccess) -> bool {
    match allow_block(dev) {
        Ok(block) => prog.len() > block.len() && prog[..block.len()] == block[..],
        Err(_) => false,
    }
}

/// Refuses programs whose behaviour we cannot preserve or reason about:
/// helper/function calls and references to maps or other kernel objects
/// (their fds in the dump are not reloadable ids), and legacy packet loads.
pub fn check_patchable(prog: &[Insn]) -> Result<()> {
    if prog.is_empty() {
        bail!("the program has no instructions");
    }
    let mut pc = 0;
    while pc < prog.len() {
        let insn = prog[pc];
        // Registers above R10 only appear in dumps of programs whose
        // constants the JIT blinded (see `unblind`); the verifier would
        // reject such a copy.
        if insn.dst() > R10 || insn.src() > R10 {
            bail!("instruction {pc} ({insn:?}) uses a register above r10 (JIT constant blinding, net.core.bpf_jit_harden)")
        }
        match insn.class() {
            CLASS_JMP | CLASS_JMP32 if insn.code & 0xf0 == JMP_CALL => {
                bail!("instruction {pc} calls a helper or function ({insn:?}); only self-contained programs can be patched")
            }
            CLASS_LD if insn.is_ld_imm64() => {
                if insn.src() != 0 {
                    bail!("instruction {pc} references a map or other kernel object ({insn:?}); only self-contained programs can be patched")
                }
                if pc + 1 >= prog.len() {
                    bail!("instruction {pc} is a truncated 64-bit load");
                }
                pc += 1;
            }
            CLASS_LD => bail!("instruction {pc} is a legacy packet load ({insn:?})"),
            _ => {}
        }
        pc += 1;
    }
    Ok(())
}

/// Our block for `dev` followed by `prog`.
pub fn prepend_allow_block(prog: &[Insn], dev: &DeviceAccess) -> Result<Vec<Insn>> {
    check_patchable(prog)?;
    let mut out = allow_block(dev)?;
    out.extend_from_slice(prog);
    Ok(out)
}

/// Whether `prog` already allows opening `dev` for reading, for writing and
/// for both. Each is checked because `open()` asks for exactly what the
/// flags say, and a program need not be monotonic in the access bits.
pub fn allows_read_write(prog: &[Insn], dev: &DeviceAccess) -> Result<bool, InterpError> {
    for access in [ACC_READ, ACC_WRITE, ACC_READ | ACC_WRITE] {
        let ctx = DevCtx::new(DEV_CHAR, access, dev.major, dev.minor);
        if !interp::allows(prog, &ctx)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What to do with one attached program.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// It already allows `dev`: leave it alone (keeps repeated runs from
    /// stacking blocks).
    AlreadyAllowed,
    /// Replace it with these instructions.
    Patch(Vec<Insn>),
}

/// Decides, for one attached program, whether it needs our block.
pub fn plan(prog: &[Insn], dev: &DeviceAccess) -> Result<Plan> {
    // On hardened hosts the dump is constant-blinded; work on the program
    // as it was loaded.
    let prog = &unblind(prog).context("undoing the JIT's constant blinding")?[..];
    if starts_with_allow_block(prog, dev) {
        return Ok(Plan::AlreadyAllowed);
    }
    // A program that the interpreter cannot finish (say it calls a helper on
    // this path) is simply "not known to allow"; check_patchable below then
    // decides whether it can be patched.
    if let Ok(true) = allows_read_write(prog, dev) {
        return Ok(Plan::AlreadyAllowed);
    }
    Ok(Plan::Patch(prepend_allow_block(prog, dev)?))
}

#[cfg(test)]
mod tests {
    use super::super::filter::{deny_by_default, runc_default_rules};
    use super::super::{ACC_MKNOD, DEV_BLOCK};
    use super::*;
    use crate::rule::{DevType, DeviceRule};

    const TPM: DeviceAccess = DeviceAccess {
        major: 253,
        minor: 65536,
    };
    const RW: u32 = ACC_READ | ACC_WRITE;

    /// Roughly what runc generates for a default container.
    fn runtime_program() -> Vec<Insn> {
        deny_by_default(&runc_default_rules()).unwrap()
    }

    /// A spread of accesses around the interesting numbers.
    fn samples() -> Vec<DevCtx> {
        let mut v = Vec::new();
        for dev_type in [DEV_BLOCK, DEV_CHAR, 3] {
            for access in 0..8 {
                for major in [0, 1, 5, 10, 136, 252, 253, 254, 4095] {
                    for minor in [0, 3, 5, 7, 8, 200, 65535, 65536, 65537] {
                        v.push(DevCtx::new(dev_type, access, major, minor));
                    }
                }
            }
        }
        v
    }

    fn is_ours(c: &DevCtx, dev: &DeviceAccess) -> bool {
        let access = c.access_type >> 16;
        c.access_type & 0xffff == DEV_CHAR
            && c.major == dev.major
            && c.minor == dev.minor
            && access & !RW == 0
    }

    #[test]
    fn block_allows_exactly_our_device() {
        let mut block = allow_block(&TPM).unwrap();
        // Standalone, follow it with "deny" to see what it lets through.
        block.push(Insn::mov64_imm(R0, 0));
        block.push(Insn::exit());
        for c in samples() {
            assert_eq!(
                interp::allows(&block, &c).unwrap(),
                is_ours(&c, &TPM),
                "{c:?}"
            );
        }
    }

    #[test]
    fn block_never_writes_r1() {
        for insn in allow_block(&TPM).unwrap() {
            let writes_dst = matches!(insn.class(), CLASS_ALU | CLASS_ALU64 | CLASS_LDX);
            assert!(!(writes_dst && insn.dst() == R1), "{insn:?}");
        }
    }

    #[test]
    fn patched_program_adds_our_device_and_keeps_every_other_decision() {
        let orig = runtime_program();
        let patched = prepend_allow_block(&orig, &TPM).unwrap();
        assert_eq!(patched.len(), orig.len() + ALLOW_BLOCK_LEN);
        assert!(!allows_read_write(&orig, &TPM).unwrap());
        assert!(allows_read_write(&patched, &TPM).unwrap());
        let mut allowed_before = 0;
        for c in samples() {
            let before = interp::allows(&orig, &c).unwrap();
            let after = interp::allows(&patched, &c).unwrap();
            allowed_before += before as usize;
            if is_ours(&c, &TPM) {
                assert!(after, "{c:?}");
            } else {
                assert_eq!(before, after, "{c:?}");
            }
        }
        assert!(
            allowed_before > 0,
            "the samples exercise the original's rules"
        );
        // mknod of the TPM is still the original's call (allowed by `c *:* m`),
        // and rwm together is not ours to grant.
        let mknod = DevCtx::new(DEV_CHAR, ACC_MKNOD, 253, 65536);
        assert!(interp::allows(&patched, &mknod).unwrap());
        let rwm = DevCtx::new(DEV_CHAR, RW | ACC_MKNOD, 253, 65536);
        assert!(!interp::allows(&patched, &rwm).unwrap());
    }

    #[test]
    fn patching_twice_is_a_no_op() {
        let orig = runtime_program();
        let Plan::Patch(once) = plan(&orig, &TPM).unwrap() else {
            panic!("the runtime program does not allow the TPM yet");
        };
        assert!(starts_with_allow_block(&once, &TPM));
        assert_eq!(plan(&once, &TPM).unwrap(), Plan::AlreadyAllowed);
    }

    #[test]
    fn a_block_buried_under_another_device_still_counts() {
        let other = DeviceAccess {
            major: 10,
            minor: 224,
        };
        let Plan::Patch(ours) = plan(&runtime_program(), &TPM).unwrap() else {
            panic!()
        };
        let Plan::Patch(both) = plan(&ours, &other).unwrap() else {
            panic!()
        };
        assert!(!starts_with_allow_block(&both, &TPM));
        assert_eq!(plan(&both, &TPM).unwrap(), Plan::AlreadyAllowed);
        assert_eq!(plan(&both, &other).unwrap(), Plan::AlreadyAllowed);
    }

    #[test]
    fn a_program_that_already_allows_the_device_is_left_alone() {
        let prog = deny_by_default(&[DeviceRule {
            dev_type: DevType::Char,
            major: Some(253),
            minor: None,
            access: RW | ACC_MKNOD,
            allow: true,
        }])
        .unwrap();
        assert_eq!(plan(&prog, &TPM).unwrap(), Plan::AlreadyAllowed);
        // Read allowed but not write: must be patched.
        let read_only = deny_by_default(&[DeviceRule {
            dev_type: DevType::Char,
            major: Some(253),
            minor: None,
            access: ACC_READ,
            allow: true,
        }])
        .unwrap();
        assert!(matches!(plan(&read_only, &TPM).unwrap(), Plan::Patch(_)));
    }

    #[test]
    fn refuses_calls_and_maps() {
        let mut with_call = vec![Insn::call(0, 14)];
        with_call.extend(runtime_program());
        let err = plan(&with_call, &TPM).unwrap_err().to_string();
        assert!(err.contains("calls a helper"), "{err}");

        let mut with_map = Insn::ld_imm64(R6, 1, 4).to_vec();
        with_map.extend(runtime_program());
        let err = plan(&with_map, &TPM).unwrap_err().to_string();
        assert!(err.contains("references a map"), "{err}");

        // A plain 64-bit constant is fine, and its second slot (which may
        // look like anything) is not mistaken for an instruction.
        let mut with_const = Insn::ld_imm64(R6, 0, 0x85 << 32).to_vec();
        with_const.extend(runtime_program());
        assert!(matches!(plan(&with_const, &TPM).unwrap(), Plan::Patch(_)));

        // r11 outside a blinding sequence.
        let mut odd = runtime_program();
        odd.insert(0, Insn::mov32_imm(11, 0x1234));
        assert!(plan(&odd, &TPM).is_err());
        assert!(check_patchable(&odd)
            .unwrap_err()
            .to_string()
            .contains("bpf_jit_harden"));

        assert!(check_patchable(&[]).is_err());
        assert!(check_patchable(&[Insn::new(0x20, 0, 0, 0, 0)]).is_err()); // ld abs
    }

    #[test]
    fn blinded_dumps_are_patched_and_recognised() {
        use super::super::unblind::blind;
        let Plan::Patch(patched) = plan(&blind(&runtime_program(), 0x5eed), &TPM).unwrap() else {
            panic!("the runtime program does not allow the TPM yet");
        };
        assert_eq!(
            patched,
            prepend_allow_block(&runtime_program(), &TPM).unwrap()
        );
        // Our own copy, blinded in turn by the kernel after loading.
        assert_eq!(
            plan(&blind(&patched, 3), &TPM).unwrap(),
            Plan::AlreadyAllowed
        );
    }

    #[test]
    fn refuses_unencodable_devices() {
        let huge = DeviceAccess {
            major: 1 << 31,
            minor: 0,
        };
        assert!(allow_block(&huge).is_err());
        assert!(!starts_with_allow_block(&runtime_program(), &huge));
    }
}
