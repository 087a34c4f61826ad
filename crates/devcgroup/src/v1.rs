//! cgroup v1: the `devices` controller's allow list.
//!
//! `devices.list` is parsed and checked purely; only reading the list and
//! writing one line to `devices.allow` touch the filesystem.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use super::rule::{DevType, DeviceRule, RW};
use super::{AllowOutcome, DeviceAccess};

/// Parses the whole of `devices.list`.
pub fn parse_devices_list(text: &str) -> Result<Vec<DeviceRule>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(DeviceRule::parse_list_line)
        .collect()
}

/// What the current list means for `c MAJ:MIN rw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// The cgroup allows every device by default (`a *:* rwm`).
    Unrestricted,
    /// One entry already grants read and write.
    Covered,
    NotCovered,
}

/// Decides whether `entries` already grant read+write of the char device.
///
/// The kernel checks an access against each entry on its own (all requested
/// bits must be in one entry), so coverage by two partial entries does not
/// count. A cgroup in default-allow mode lists only `a *:* rwm`: its deny
/// exceptions are not shown, so "unrestricted" is the best we can know.
pub fn coverage(entries: &[DeviceRule], dev: &DeviceAccess) -> Coverage {
    if entries
        .iter()
        .any(|e| e.dev_type == DevType::Any && e.access & RW == RW)
    {
        return Coverage::Unrestricted;
    }
    let covers =
        |e: &&DeviceRule| e.dev_type == DevType::Char && e.names_char(dev) && e.access & RW == RW;
    if entries.iter().any(|e| covers(&e)) {
        Coverage::Covered
    } else {
        Coverage::NotCovered
    }
}

/// The line written to `devices.allow`.
pub fn allow_rule(dev: &DeviceAccess) -> String {
    format!("c {}:{} rw", dev.major, dev.minor)
}

/// Grants read/write of `dev` in the devices-controller directory `dir`.
pub fn allow(dir: &Path, dev: &DeviceAccess) -> Result<AllowOutcome> {
    let list_path = dir.join("devices.list");
    let text = fs::read_to_string(&list_path)
        .with_context(|| format!("reading {}", list_path.display()))?;
    let entries =
        parse_devices_list(&text).with_context(|| format!("parsing {}", list_path.display()))?;
    match coverage(&entries, dev) {
        Coverage::Unrestricted => Ok(AllowOutcome::Unrestricted),
        Coverage::Covered => Ok(AllowOutcome::AlreadyAllowed),
        Coverage::NotCovered => {
            let allow_path = dir.join("devices.allow");
            // One write per rule: the kernel parses each write() as one line.
            fs::OpenOptions::new()
                .write(true)
                .open(&allow_path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, allow_rule(dev).as_bytes()))
                .with_context(|| {
                    format!(
                        "writing {:?} to {} (EPERM here means the parent cgroup does not allow the device either)",
                        allow_rule(dev),
                        allow_path.display()
                    )
                })?;
            Ok(AllowOutcome::Added)
        }
    }
}

/// Takes back exactly the rule [`allow`] wrote, through `devices.deny`.
pub fn deny(dir: &Path, dev: &DeviceAccess) -> Result<()> {
    let deny_path = dir.join("devices.deny");
    fs::OpenOptions::new()
        .write(true)
        .open(&deny_path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, allow_rule(dev).as_bytes()))
        .with_context(|| format!("writing {:?} to {}", allow_rule(dev), deny_path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::{ACC_MKNOD, ACC_READ, ACC_WRITE};

    const TPM: DeviceAccess = DeviceAccess {
        major: 253,
        minor: 65536,
    };

    /// What runc leaves in a default container's devices.list.
    const RUNC_LIST: &str = "c 1:5 rwm\nc 1:3 rwm\nc 1:9 rwm\nc 1:8 rwm\nc 5:0 rwm\nc 5:1 rwm\n\
                             c *:* m\nb *:* m\nc 1:7 rwm\nc 136:* rwm\nc 5:2 rwm\nc 10:200 rwm\n";

    fn cov(list: &str) -> Coverage {
        coverage(&parse_devices_list(list).unwrap(), &TPM)
    }

    #[test]
    fn parses_lines() {
        let entries = parse_devices_list(RUNC_LIST).unwrap();
        assert_eq!(entries.len(), 12);
        assert_eq!(
            entries[6],
            DeviceRule {
                allow: true,
                dev_type: DevType::Char,
                major: None,
                minor: None,
                access: ACC_MKNOD
            }
        );
        assert_eq!(
            entries[9],
            DeviceRule {
                allow: true,
                dev_type: DevType::Char,
                major: Some(136),
                minor: None,
                access: ACC_READ | ACC_WRITE | ACC_MKNOD
            }
        );
        assert!(parse_devices_list("").unwrap().is_empty());
        for bad in ["x 1:3 rwm", "c 1:3", "c 1-3 rwm", "c 1:3 rwx", "c one:3 r"] {
            assert!(parse_devices_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decides_coverage() {
        assert_eq!(cov("a *:* rwm\n"), Coverage::Unrestricted);
        assert_eq!(cov(RUNC_LIST), Coverage::NotCovered);
        assert_eq!(cov("c *:* rw\n"), Coverage::Covered);
        assert_eq!(cov("c *:* rwm\n"), Coverage::Covered);
        assert_eq!(cov("c 253:* rw\n"), Coverage::Covered);
        assert_eq!(cov("c 253:65536 rw\n"), Coverage::Covered);
        assert_eq!(cov("c *:65536 rw\n"), Coverage::Covered);
        assert_eq!(cov("c 253:65537 rw\n"), Coverage::NotCovered);
        assert_eq!(cov("c 254:* rw\n"), Coverage::NotCovered);
        assert_eq!(cov("b 253:65536 rw\n"), Coverage::NotCovered);
        assert_eq!(cov("c 253:65536 r\n"), Coverage::NotCovered);
        // Read and write from two entries: the kernel wants one entry.
        assert_eq!(cov("c 253:65536 r\nc 253:* w\n"), Coverage::NotCovered);
    }

    fn fake_hierarchy(list: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("devices.list"), list).unwrap();
        fs::write(dir.path().join("devices.allow"), "").unwrap();
        dir
    }

    #[test]
    fn writes_the_rule_only_when_needed() {
        let dir = fake_hierarchy(RUNC_LIST);
        assert_eq!(allow(dir.path(), &TPM).unwrap(), AllowOutcome::Added);
        let written = fs::read_to_string(dir.path().join("devices.allow")).unwrap();
        assert_eq!(written, "c 253:65536 rw");

        for (list, want) in [
            ("c 253:* rwm\n", AllowOutcome::AlreadyAllowed),
            ("a *:* rwm\n", AllowOutcome::Unrestricted),
        ] {
            let dir = fake_hierarchy(list);
            assert_eq!(allow(dir.path(), &TPM).unwrap(), want);
            assert_eq!(
                fs::read_to_string(dir.path().join("devices.allow")).unwrap(),
                ""
            );
        }
    }

    #[test]
    fn deny_takes_back_the_exact_rule() {
        let dir = fake_hierarchy(RUNC_LIST);
        fs::write(dir.path().join("devices.deny"), "").unwrap();
        deny(dir.path(), &TPM).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("devices.deny")).unwrap(),
            "c 253:65536 rw"
        );
        let gone = tempfile::tempdir().unwrap();
        let err = format!("{:#}", deny(gone.path(), &TPM).unwrap_err());
        assert!(err.contains("devices.deny"), "{err}");
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", allow(dir.path(), &TPM).unwrap_err());
        assert!(err.contains("devices.list"), "{err}");
        let dir = fake_hierarchy(RUNC_LIST);
        fs::remove_file(dir.path().join("devices.allow")).unwrap();
        let err = format!("{:#}", allow(dir.path(), &TPM).unwrap_err());
        assert!(
            err.contains("devices.allow") && err.contains("c 253:65536 rw"),
            "{err}"
        );
    }
}
