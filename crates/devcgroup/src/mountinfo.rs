//! Parser for `/proc/<pid>/mountinfo`, reduced to what finding cgroup
//! hierarchies needs.
//!
//! Line format (proc(5)):
//! `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPER_OPTIONS`.
//! For cgroup v1 the super options name the hierarchy's controllers
//! (`rw,devices`, `rw,cpu,cpuacct`, `rw,xattr,name=systemd`).

use std::path::PathBuf;

use anyhow::{bail, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The directory of the filesystem that is mounted (for cgroupfs: the
    /// cgroup the mount shows as its top).
    pub root: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub super_options: Vec<String>,
}

impl Mount {
    pub fn is_cgroup2(&self) -> bool {
        self.fs_type == "cgroup2"
    }

    /// A cgroup v1 hierarchy that carries every one of `controllers`.
    pub fn is_cgroup1_with(&self, controllers: &[String]) -> bool {
        self.fs_type == "cgroup"
            && !controllers.is_empty()
            && controllers.iter().all(|c| self.super_options.contains(c))
    }
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash) in path fields.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the whole file.
pub fn parse(text: &str) -> Result<Vec<Mount>> {
    let mut mounts = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            bail!("mountinfo line {line:?} has no ' - ' separator");
        };
        if sep < 6 || fields.len() < sep + 4 {
            bail!("mountinfo line {line:?} has too few fields");
        }
        mounts.push(Mount {
            root: unescape(fields[3]),
            mount_point: PathBuf::from(unescape(fields[4])),
            fs_type: fields[sep + 1].to_owned(),
            super_options: fields[sep + 3].split(',').map(str::to_owned).collect(),
        });
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:20 - cgroup cgroup rw,devices
";

    #[test]
    fn parses_hybrid() {
        let mounts = parse(HYBRID).unwrap();
        assert_eq!(mounts.len(), 6);
        assert!(mounts[2].is_cgroup2());
        assert_eq!(
            mounts[2].mount_point,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        let devices = ["devices".to_string()];
        assert!(mounts[5].is_cgroup1_with(&devices));
        assert!(!mounts[4].is_cgroup1_with(&devices));
        let cpu = ["cpu".to_string(), "cpuacct".to_string()];
        assert!(mounts[4].is_cgroup1_with(&cpu));
        assert!(mounts[3].is_cgroup1_with(&["name=systemd".to_string()]));
        assert!(!mounts[1].is_cgroup1_with(&["mode=755".to_string()]));
    }

    #[test]
    fn no_optional_fields_and_escapes() {
        let m = parse("1 0 0:1 /a\\040b /mnt/my\\040cg rw - cgroup2 none rw\n").unwrap();
        assert_eq!(m[0].root, "/a b");
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/my cg"));
        assert_eq!(unescape("x\\134y\\01"), "x\\y\\01");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("1 0 0:1 / /mnt rw cgroup2 none rw\n").is_err());
        assert!(parse("1 0 - cgroup2 none rw\n").is_err());
    }
}
