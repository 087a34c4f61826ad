//! A deny-by-default device program generator, in the shape container
//! runtimes produce: a prologue that unpacks the context into R2–R5, then one
//! block per rule, then "deny". The rule blocks use R1 as scratch, as runc's
//! do, which is exactly why our prepended block must not rely on anything
//! after it preserving registers — and must itself leave R1 alone.
//!
//! Used by the tests (unit and root) as a realistic "runtime's program" to
//! patch; not needed to grant a device.

use anyhow::{bail, Result};

use super::insn::*;
use super::{ACC_MKNOD, ACC_READ, ACC_WRITE, DEV_BLOCK, DEV_CHAR};
use crate::rule::{DevType, DeviceRule};

/// Roughly the rules runc gives a default container: mknod of anything,
/// the usual character devices, the pseudo-terminals.
pub fn runc_default_rules() -> Vec<DeviceRule> {
    let rule = |dev_type, major, minor, access| DeviceRule {
        dev_type,
        major,
        minor,
        access,
        allow: true,
    };
    let rwm = ACC_READ | ACC_WRITE | ACC_MKNOD;
    vec![
        rule(DevType::Char, None, None, ACC_MKNOD),
        rule(DevType::Block, None, None, ACC_MKNOD),
        rule(DevType::Char, Some(1), Some(3), rwm), // null
        rule(DevType::Char, Some(1), Some(8), rwm), // random
        rule(DevType::Char, Some(1), Some(7), rwm), // full
        rule(DevType::Char, Some(5), Some(0), rwm), // tty
        rule(DevType::Char, Some(1), Some(5), rwm), // zero
        rule(DevType::Char, Some(136), None, ACC_READ | ACC_WRITE), // pts
        rule(DevType::Char, Some(10), Some(200), rwm), // tun
    ]
}

fn imm(what: &str, v: u32) -> Result<i32> {
    // Context fields are loaded zero-extended while jump immediates are
    // sign-extended: only values below 2^31 compare correctly.
    match i32::try_from(v) {
        Ok(v) => Ok(v),
        Err(_) => bail!("{what} {v} does not fit a jump immediate"),
    }
}

/// Builds a program that evaluates `rules` in order (first match decides)
/// and denies everything no rule matches.
pub fn deny_by_default(rules: &[DeviceRule]) -> Result<Vec<Insn>> {
    let mut b = Builder::new();
    b.push(Insn::ldx_w(R2, R1, 0))
        .push(Insn::alu32_imm(ALU_AND, R2, 0xffff)) // type
        .push(Insn::ldx_w(R3, R1, 0))
        .push(Insn::alu32_imm(ALU_RSH, R3, 16)) // access
        .push(Insn::ldx_w(R4, R1, 4)) // major
        .push(Insn::ldx_w(R5, R1, 8)); // minor
    for rule in rules {
        let next = b.label();
        match rule.dev_type {
            DevType::Char => {
                b.jump(Insn::jmp_imm(JMP_JNE, R2, DEV_CHAR as i32, 0), next);
            }
            DevType::Block => {
                b.jump(Insn::jmp_imm(JMP_JNE, R2, DEV_BLOCK as i32, 0), next);
            }
            DevType::Any => {}
        }
        let all = ACC_READ | ACC_WRITE | ACC_MKNOD;
        if rule.access & all != all {
            // Matches only when the requested access is a subset of the rule's.
            b.push(Insn::mov32_reg(R1, R3))
                .push(Insn::alu32_imm(ALU_AND, R1, (rule.access & all) as i32))
                .jump(Insn::jmp_reg(JMP_JNE, R1, R3, 0), next);
        }
        if let Some(major) = rule.major {
            b.jump(Insn::jmp_imm(JMP_JNE, R4, imm("major", major)?, 0), next);
        }
        if let Some(minor) = rule.minor {
            b.jump(Insn::jmp_imm(JMP_JNE, R5, imm("minor", minor)?, 0), next);
        }
        b.push(Insn::mov64_imm(R0, rule.allow as i32))
            .push(Insn::exit())
            .bind(next);
    }
    b.push(Insn::mov64_imm(R0, 0)).push(Insn::exit());
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::super::interp::{allows, DevCtx};
    use super::*;

    const RW: u32 = ACC_READ | ACC_WRITE;

    #[test]
    fn decides_like_the_rules_say() {
        let prog = deny_by_default(&[
            DeviceRule {
                dev_type: DevType::Char,
                major: None,
                minor: None,
                access: ACC_MKNOD,
                allow: true,
            },
            DeviceRule::allow_char(1, 3),
            DeviceRule {
                dev_type: DevType::Char,
                major: Some(136),
                minor: None,
                access: RW,
                allow: true,
            },
            DeviceRule {
                dev_type: DevType::Any,
                major: Some(7),
                minor: None,
                access: RW | ACC_MKNOD,
                allow: false,
            },
            DeviceRule {
                dev_type: DevType::Block,
                major: Some(7),
                minor: Some(0),
                access: ACC_READ,
                allow: true,
            },
        ])
        .unwrap();
        let ok = |t, a, ma, mi| allows(&prog, &DevCtx::new(t, a, ma, mi)).unwrap();
        assert!(ok(DEV_CHAR, ACC_MKNOD, 99, 99));
        assert!(!ok(DEV_CHAR, RW, 99, 99));
        assert!(!ok(DEV_BLOCK, ACC_MKNOD, 99, 99));
        assert!(ok(DEV_CHAR, RW | ACC_MKNOD, 1, 3));
        assert!(!ok(DEV_CHAR, ACC_READ, 1, 5));
        assert!(!ok(DEV_BLOCK, ACC_READ, 1, 3));
        assert!(ok(DEV_CHAR, ACC_WRITE, 136, 12));
        assert!(!ok(DEV_CHAR, ACC_MKNOD | ACC_READ, 136, 12)); // no m for ptys
        assert!(!ok(DEV_BLOCK, ACC_READ, 7, 0)); // the earlier deny wins
    }

    #[test]
    fn refuses_unencodable_numbers() {
        assert!(deny_by_default(&[DeviceRule::allow_char(u32::MAX, 0)]).is_err());
    }
}
