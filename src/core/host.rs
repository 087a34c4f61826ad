//! The host side: find and validate the TPM device, and the group for the node.
//!
//! Everything is read through [`HostRoots`] so tests can stand a temp dir in
//! for `/dev`, `/sys` and `/etc/group`.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};

use crate::core::policy::GroupSpec;
use crate::core::request::is_tpm_device_name;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoots {
    pub dev: PathBuf,
    pub sys: PathBuf,
    pub group_file: PathBuf,
}

impl Default for HostRoots {
    fn default() -> Self {
        Self {
            dev: "/dev".into(),
            sys: "/sys".into(),
            group_file: "/etc/group".into(),
        }
    }
}

/// A validated host TPM character device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTpm {
    /// Name under /dev, e.g. `tpmrm0`.
    pub name: String,
    pub path: PathBuf,
    pub major: u32,
    pub minor: u32,
}

/// The group the node gets, as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGroup {
    pub gid: u32,
    pub name: Option<String>,
}

impl HostRoots {
    /// The host's `/dev`, `/sys` and `/etc/group` under `root`: where a
    /// plugin running in a container sees them (`--host-root`). The paths
    /// that go to the runtime stay the host's own ([`container_path`]).
    pub fn under(root: &Path) -> Self {
        Self {
            dev: root.join("dev"),
            sys: root.join("sys"),
            group_file: root.join("etc/group"),
        }
    }

    /// The host's TPM 2.0 resource managers (`tpmrmN`), lowest number first;
    /// an error when there is none.
    pub fn resource_managers(&self) -> anyhow::Result<Vec<String>> {
        let class = self.sys.join("class/tpmrm");
        let mut names: Vec<(u32, String)> = match std::fs::read_dir(&class) {
            Ok(entries) => entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|n| Some((n.strip_prefix("tpmrm")?.parse().ok()?, n)))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", class.display())),
        };
        names.sort();
        if names.is_empty() {
            bail!(
                "no TPM 2.0 on this host: {} has no tpmrm devices (is the TPM enabled in firmware and its driver loaded, e.g. tpm_tis or tpm_crb?)",
                class.display()
            );
        }
        Ok(names.into_iter().map(|(_, n)| n).collect())
    }

    /// Checks that /dev/<name> is the character device the kernel's TPM
    /// driver registered under that name, and that the chip is TPM 2.0.
    pub fn validate(&self, name: &str) -> anyhow::Result<HostTpm> {
        if !is_tpm_device_name(name) {
            bail!("{name:?} is not a TPM device name");
        }
        let (class, index) = match name.strip_prefix("tpmrm") {
            Some(i) => ("tpmrm", i),
            None => ("tpm", &name[3..]),
        };
        let sys_dev = self.sys.join("class").join(class).join(name).join("dev");
        let registered = match std::fs::read_to_string(&sys_dev) {
            Ok(text) => parse_major_minor(&text)
                .with_context(|| format!("unexpected contents of {}", sys_dev.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "host has no TPM device {name} ({} is missing); list the host's TPMs with `ls /sys/class/tpmrm` or ask for oci-tpm-hook/device=auto",
                sys_dev.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", sys_dev.display())),
        };

        // Resource-manager devices exist only for TPM 2.0 chips; check the
        // chip's own word where the kernel gives it.
        let version_file = self
            .sys
            .join(format!("class/tpm/tpm{index}/tpm_version_major"));
        if let Ok(v) = std::fs::read_to_string(&version_file) {
            if v.trim() != "2" {
                bail!(
                    "host TPM tpm{index} is version {} (per {}); only TPM 2.0 is supported",
                    v.trim(),
                    version_file.display()
                );
            }
        }

        let path = self.dev.join(name);
        let meta = std::fs::metadata(&path).with_context(|| {
            format!(
                "host device {} is missing although the kernel registered {name} ({}:{}); is udev running?",
                path.display(),
                registered.0,
                registered.1
            )
        })?;
        if !meta.file_type().is_char_device() {
            bail!("host {} is not a character device", path.display());
        }
        let rdev = meta.rdev();
        let actual = (
            nix::sys::stat::major(rdev) as u32,
            nix::sys::stat::minor(rdev) as u32,
        );
        if actual != registered {
            bail!(
                "host {} is {}:{} but the kernel registered {name} as {}:{} ({}); refusing a node that is not the TPM",
                path.display(),
                actual.0,
                actual.1,
                registered.0,
                registered.1,
                sys_dev.display()
            );
        }
        Ok(HostTpm {
            name: name.to_owned(),
            path,
            major: actual.0,
            minor: actual.1,
        })
    }

    /// Resolves the policy's group against the host's group file.
    pub fn group(&self, spec: &GroupSpec) -> anyhow::Result<HostGroup> {
        match spec {
            GroupSpec::Gid(gid) => Ok(HostGroup {
                gid: *gid,
                name: None,
            }),
            GroupSpec::Name(name) => {
                let text = std::fs::read_to_string(&self.group_file)
                    .with_context(|| format!("cannot read {}", self.group_file.display()))?;
                let gid = gid_of(&text, name).ok_or_else(|| {
                    anyhow!(
                        "group {name:?} is not in the host's {} (install tpm2-tss/tpm-udev, which create it, or set [node] group in the policy)",
                        self.group_file.display()
                    )
                })?;
                Ok(HostGroup {
                    gid,
                    name: Some(name.clone()),
                })
            }
        }
    }
}

/// Parses the kernel's `MAJOR:MINOR` text.
pub fn parse_major_minor(text: &str) -> anyhow::Result<(u32, u32)> {
    let (maj, min) = text
        .trim()
        .split_once(':')
        .ok_or_else(|| anyhow!("expected MAJOR:MINOR, got {:?}", text.trim()))?;
    Ok((
        maj.parse().with_context(|| format!("bad major {maj:?}"))?,
        min.parse().with_context(|| format!("bad minor {min:?}"))?,
    ))
}

/// Looks a group name up in group(5) text.
pub fn gid_of(group_file: &str, name: &str) -> Option<u32> {
    group_file.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        fields.nth(1)?.trim().parse().ok()
    })
}

/// Where `HostRoots::dev` is `/dev`, this is the path a container sees too.
pub fn container_path(name: &str) -> PathBuf {
    Path::new("/dev").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;
    use std::fs;

    #[test]
    fn validates_a_matching_device() {
        let host = FakeHost::with_tpm();
        let tpm = host.roots.validate("tpmrm0").unwrap();
        assert_eq!((tpm.major, tpm.minor), (1, 3));
        assert_eq!(tpm.path, host.roots.dev.join("tpmrm0"));
    }

    #[test]
    fn refuses_numbers_that_do_not_match_sysfs() {
        let host = FakeHost::new(102);
        host.add_tpm(0, "253:65536", "2");
        let err = format!("{:#}", host.roots.validate("tpmrm0").unwrap_err());
        assert!(err.contains("1:3") && err.contains("253:65536"), "{err}");
    }

    #[test]
    fn refuses_tpm_1_2() {
        let host = FakeHost::new(102);
        host.add_tpm(0, "1:3", "1");
        let err = host.roots.validate("tpmrm0").unwrap_err().to_string();
        assert!(err.contains("only TPM 2.0"), "{err}");
    }

    #[test]
    fn refuses_regular_file_and_missing_node() {
        let host = FakeHost::with_tpm();
        let node = host.roots.dev.join("tpmrm0");
        fs::remove_file(&node).unwrap();
        let err = format!("{:#}", host.roots.validate("tpmrm0").unwrap_err());
        assert!(err.contains("missing"), "{err}");
        fs::write(&node, "").unwrap();
        let err = host.roots.validate("tpmrm0").unwrap_err().to_string();
        assert!(err.contains("not a character device"), "{err}");
    }

    #[test]
    fn missing_device_names_itself_and_the_fix() {
        let host = FakeHost::new(102);
        let err = host.roots.validate("tpmrm7").unwrap_err().to_string();
        assert!(err.contains("tpmrm7") && err.contains("auto"), "{err}");
    }

    #[test]
    fn resource_managers_in_numeric_order() {
        let host = FakeHost::new(102);
        let err = host.roots.resource_managers().unwrap_err().to_string();
        assert!(err.contains("no TPM 2.0"), "{err}");
        host.add_tpm(10, "1:3", "2");
        host.add_tpm(2, "1:3", "2");
        assert_eq!(
            host.roots.resource_managers().unwrap(),
            ["tpmrm2", "tpmrm10"]
        );
    }

    #[test]
    fn groups() {
        let host = FakeHost::new(113);
        let roots = &host.roots;
        assert_eq!(
            roots.group(&GroupSpec::Name("tss".into())).unwrap().gid,
            113
        );
        assert_eq!(roots.group(&GroupSpec::Gid(5)).unwrap().gid, 5);
        let err = roots
            .group(&GroupSpec::Name("tpm".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"tpm\""), "{err}");
    }

    #[test]
    fn group_file_parsing() {
        let text = "# comment\ntss:x:abc:\nbad\nvideo:x:44:a\ntss2:x:9:\n";
        assert_eq!(gid_of(text, "video"), Some(44));
        assert_eq!(gid_of(text, "tss"), None);
        assert_eq!(gid_of(text, "tss2"), Some(9));
        assert_eq!(gid_of(text, "nope"), None);
    }

    #[test]
    fn major_minor() {
        assert_eq!(parse_major_minor("253:65536\n").unwrap(), (253, 65536));
        assert!(parse_major_minor("253").is_err());
        assert!(parse_major_minor("a:b").is_err());
    }
}
