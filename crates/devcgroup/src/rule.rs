//! One device-cgroup rule type for every place rules appear: an OCI spec's
//! `linux.resources.devices` entry, a cgroup v1 `devices.list` line, and a
//! rule of a generated eBPF device program (tests). Pure.

use anyhow::{bail, Context, Result};

use super::bpf::{ACC_MKNOD, ACC_READ, ACC_WRITE};
use super::DeviceAccess;

/// Which devices a rule is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevType {
    /// `a`: every device.
    Any,
    /// `c`
    Char,
    /// `b`
    Block,
}

impl DevType {
    /// `a`, `c` or `b`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "a" => Self::Any,
            "c" => Self::Char,
            "b" => Self::Block,
            other => bail!("unknown device type {other:?} (a, b or c)"),
        })
    }
}

/// Read and write, the access a grant is about.
pub const RW: u32 = ACC_READ | ACC_WRITE;
/// Read, write and mknod.
pub const RWM: u32 = ACC_READ | ACC_WRITE | ACC_MKNOD;

/// One rule: allow or deny `access` to the devices it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub dev_type: DevType,
    /// `None` = any major.
    pub major: Option<u32>,
    /// `None` = any minor.
    pub minor: Option<u32>,
    /// Mask of `ACC_*` bits.
    pub access: u32,
}

impl DeviceRule {
    /// Allow `c MAJ:MIN rwm`.
    pub fn allow_char(major: u32, minor: u32) -> Self {
        Self {
            allow: true,
            dev_type: DevType::Char,
            major: Some(major),
            minor: Some(minor),
            access: RWM,
        }
    }

    /// Whether the rule names the char device (type and numbers).
    pub fn names_char(&self, dev: &DeviceAccess) -> bool {
        matches!(self.dev_type, DevType::Any | DevType::Char)
            && self.major.is_none_or(|m| m == dev.major)
            && self.minor.is_none_or(|m| m == dev.minor)
    }

    /// One line of a cgroup v1 `devices.list`, e.g. `c 1:3 rwm` or
    /// `a *:* rwm` (the list holds only what is allowed).
    pub fn parse_list_line(line: &str) -> Result<Self> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [kind, numbers, access] = fields[..] else {
            bail!("devices.list line {line:?} does not have three fields");
        };
        let Some((major, minor)) = numbers.split_once(':') else {
            bail!("devices.list line {line:?} has no MAJ:MIN");
        };
        let number = |s: &str| -> Result<Option<u32>> {
            if s == "*" {
                return Ok(None);
            }
            s.parse()
                .map(Some)
                .with_context(|| format!("bad device number {s:?} in devices.list line {line:?}"))
        };
        Ok(Self {
            allow: true,
            dev_type: DevType::parse(kind)
                .with_context(|| format!("devices.list line {line:?}"))?,
            major: number(major)?,
            minor: number(minor)?,
            access: parse_access(access).with_context(|| format!("devices.list line {line:?}"))?,
        })
    }
}

/// `rwm` letters as `ACC_*` bits.
pub fn parse_access(letters: &str) -> Result<u32> {
    letters.chars().try_fold(0, |bits, c| {
        Ok(bits
            | match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => bail!("unknown access {c:?} (r, w or m)"),
            })
    })
}

/// Whether OCI spec rules let a container read and write the char device:
/// rules apply in order, for each access the last matching rule decides,
/// and the runtime starts from "deny all".
pub fn spec_allows_rw(rules: &[DeviceRule], dev: &DeviceAccess) -> bool {
    let (mut read, mut write) = (false, false);
    for rule in rules.iter().filter(|r| r.names_char(dev)) {
        if rule.access & ACC_READ != 0 {
            read = rule.allow;
        }
        if rule.access & ACC_WRITE != 0 {
            write = rule.allow;
        }
    }
    read && write
}

#[cfg(test)]
mod tests {
    use super::*;

    const TPM: DeviceAccess = DeviceAccess {
        major: 253,
        minor: 65536,
    };

    fn rule(allow: bool, dev_type: DevType, major: Option<u32>, access: &str) -> DeviceRule {
        DeviceRule {
            allow,
            dev_type,
            major,
            minor: None,
            access: parse_access(access).unwrap(),
        }
    }

    #[test]
    fn last_match_wins_per_access() {
        assert!(!spec_allows_rw(&[], &TPM));
        let deny_all = rule(false, DevType::Any, None, "rwm");
        assert!(spec_allows_rw(
            &[deny_all, DeviceRule::allow_char(253, 65536)],
            &TPM
        ));
        // Allowed, then write denied again by a later wildcard.
        assert!(!spec_allows_rw(
            &[
                DeviceRule::allow_char(253, 65536),
                rule(false, DevType::Char, None, "w")
            ],
            &TPM
        ));
        // Read only, another device, a block device: not enough.
        assert!(!spec_allows_rw(
            &[
                rule(true, DevType::Char, Some(253), "r"),
                DeviceRule::allow_char(1, 3),
                rule(true, DevType::Block, Some(253), "rw"),
            ],
            &TPM
        ));
        assert!(spec_allows_rw(
            &[rule(true, DevType::Any, None, "rwm")],
            &TPM
        ));
    }

    #[test]
    fn list_lines() {
        assert_eq!(
            DeviceRule::parse_list_line("c 1:3 rwm").unwrap(),
            DeviceRule::allow_char(1, 3)
        );
        let any = DeviceRule::parse_list_line("a *:* rwm").unwrap();
        assert_eq!(
            (any.dev_type, any.major, any.minor),
            (DevType::Any, None, None)
        );
        let pts = DeviceRule::parse_list_line("c 136:* rw").unwrap();
        assert_eq!((pts.major, pts.minor, pts.access), (Some(136), None, RW));
        for bad in ["c 1:3", "x 1:3 rw", "c 1-3 rw", "c a:3 rw", "c 1:3 rx"] {
            assert!(DeviceRule::parse_list_line(bad).is_err(), "{bad}");
        }
    }
}
