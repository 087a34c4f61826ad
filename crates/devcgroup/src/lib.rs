//! Granting a char device to a running container's cgroup, taking the grant
//! back, and joining that cgroup.
//!
//! A library of its own: it knows nothing of TPMs, annotations or policy,
//! so any tool that must let a container's cgroup reach one more device
//! (after the runtime set its rules) can use it. oci-tpm-hook calls, in
//! order:
//!
//! ```no_run
//! # fn demo(container_pid: i32, child_pid: i32) -> anyhow::Result<()> {
//! use devcgroup::DeviceAccess;
//!
//! // From /proc/<pid>/cgroup and our own mount table.
//! let cg = devcgroup::locate(container_pid)?;
//! // Idempotent: Added, AlreadyAllowed or Unrestricted.
//! let grant = cg.allow_device(&DeviceAccess::new(253, 65536))?;
//! // A forked self-test child joins, so its open() meets the container's rules.
//! cg.join(child_pid)?;
//! // Abandoned (say, the self-test failed): take it back.
//! grant.revoke()?;
//! # Ok(()) }
//! ```
//!
//! - **cgroup v1**: the `devices` controller. `devices.list` is checked for
//!   an entry that already grants `c MAJ:MIN rw` (`a *:* rwm`, `c *:* rw…`,
//!   `c MAJ:* …`, exact); otherwise `c MAJ:MIN rw` goes to `devices.allow`.
//! - **cgroup v2**: runtimes attach `BPF_CGROUP_DEVICE` programs, and every
//!   attached program must allow an access. Each attached program that does
//!   not yet allow the device is replaced by a copy with an allow block
//!   prepended (see [`bpf::patch`]); programs with calls or maps are refused.
//!
//! Hybrid systems (v1 controllers plus a unified hierarchy) are treated as
//! v1 when the process has a v1 `devices` hierarchy, as runc and crun do.
//!
//! Limits, by design: only read/write is granted (not mknod — create the
//! node before joining the cgroup); programs attached to *ancestor* cgroups
//! are shared with other containers and are never modified (a warning is
//! logged when one is known to deny); a v1 cgroup in default-allow mode
//! shows only `a *:* rwm`, hiding any deny exceptions, and is reported as
//! unrestricted; a runtime or systemd that later
//! re-applies its own rules (`runc update`, `systemctl daemon-reload`) drops
//! the grant unless its own list holds the device too — the spec-editing
//! front-ends put it there through the spec, the hook tells systemd.
//!
//! On hardened hosts (`net.core.bpf_jit_harden=2`) the kernel hands back
//! programs with blinded constants; [`bpf::unblind`] folds them back first.
//!
//! Layout: pure parsers and decisions ([`proc_cgroup`], [`mountinfo`],
//! [`locate`](mod@locate), [`v1`], [`bpf::patch`], [`bpf::unblind`],
//! [`bpf::interp`]) are unit-tested; the privileged parts ([`bpf::sys`],
//! the file writes) are thin and tested as root in `tests/cgroup_*.rs`.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub mod bpf;
pub mod locate;
pub mod mountinfo;
pub mod proc_cgroup;
pub mod rule;
pub mod v1;
mod v2;

pub use v2::PROGRAM_NAME;

/// A character device to grant, read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceAccess {
    pub major: u32,
    pub minor: u32,
}

impl DeviceAccess {
    pub fn new(major: u32, minor: u32) -> DeviceAccess {
        DeviceAccess { major, minor }
    }

    /// From a `st_rdev`, e.g. of `/dev/tpmrm0`.
    pub fn from_rdev(rdev: u64) -> DeviceAccess {
        DeviceAccess {
            major: nix::sys::stat::major(rdev) as u32,
            minor: nix::sys::stat::minor(rdev) as u32,
        }
    }
}

impl fmt::Display for DeviceAccess {
    /// The device-cgroup rule form, `c MAJ:MIN rw`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c {}:{} rw", self.major, self.minor)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        })
    }
}

/// What [`ContainerCgroup::allow_device`] found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowOutcome {
    /// A rule was added (v1) or programs were replaced (v2).
    Added,
    /// The cgroup's rules already allowed the device; nothing changed.
    AlreadyAllowed,
    /// The cgroup restricts no devices (no program attached, or v1 `a *:*
    /// rwm`); nothing changed.
    Unrestricted,
}

impl fmt::Display for AllowOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AllowOutcome::Added => "added",
            AllowOutcome::AlreadyAllowed => "already-allowed",
            AllowOutcome::Unrestricted => "unrestricted",
        })
    }
}

/// What [`ContainerCgroup::allow_device`] did, held so that an abandoned
/// grant can be taken back ([`DeviceGrant::revoke`]).
#[derive(Debug)]
pub struct DeviceGrant {
    pub outcome: AllowOutcome,
    undo: Undo,
}

#[derive(Debug)]
enum Undo {
    Nothing,
    /// The exact rule written to `devices.allow`.
    V1 {
        dir: PathBuf,
        dev: DeviceAccess,
    },
    /// The programs swapped for patched copies.
    V2 {
        host: v2::KernelHost,
        swapped: v2::Swapped<std::os::fd::OwnedFd>,
    },
}

impl DeviceGrant {
    /// Takes the grant back: cgroup v1 denies the exact rule that was added,
    /// v2 puts the runtime's original programs back. Nothing to do when the
    /// grant changed nothing.
    pub fn revoke(self) -> Result<()> {
        match self.undo {
            Undo::Nothing => Ok(()),
            Undo::V1 { dir, dev } => v1::deny(&dir, &dev),
            Undo::V2 { host, swapped } => v2::revoke(&host, &swapped),
        }
    }
}

/// A process's cgroup, as far as device access and joining are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerCgroup {
    version: CgroupVersion,
    /// v1: the `devices` hierarchy directory; v2: the unified directory.
    device_dir: PathBuf,
    /// Every directory the process is a member of, `device_dir` first.
    dirs: Vec<PathBuf>,
}

/// Finds the cgroup of `pid` from `/proc/<pid>/cgroup` and our own
/// `/proc/self/mountinfo`.
pub fn locate(pid: i32) -> Result<ContainerCgroup> {
    locate::locate_in(Path::new("/"), pid)
}

impl ContainerCgroup {
    /// A cgroup v2 directory.
    pub fn v2(dir: impl Into<PathBuf>) -> ContainerCgroup {
        let dir = dir.into();
        ContainerCgroup {
            version: CgroupVersion::V2,
            device_dir: dir.clone(),
            dirs: vec![dir],
        }
    }

    /// A cgroup v1 `devices` directory plus the process's directories in the
    /// other hierarchies (including the unified one on hybrid systems).
    pub fn v1(devices_dir: impl Into<PathBuf>, others: Vec<PathBuf>) -> ContainerCgroup {
        let devices_dir = devices_dir.into();
        let mut dirs = vec![devices_dir.clone()];
        for dir in others {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        ContainerCgroup {
            version: CgroupVersion::V1,
            device_dir: devices_dir,
            dirs,
        }
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Where device rules live: the v1 `devices` directory or the v2 one.
    pub fn device_dir(&self) -> &Path {
        &self.device_dir
    }

    /// Every directory [`join`](Self::join) writes to, the device one first.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Makes read/write of the char device `dev` allowed for the cgroup.
    /// Idempotent: a second call reports [`AllowOutcome::AlreadyAllowed`]
    /// and changes nothing. All or nothing: on error the cgroup is as it was.
    pub fn allow_device(&self, dev: &DeviceAccess) -> Result<DeviceGrant> {
        let dir = &self.device_dir;
        let grant = match self.version {
            CgroupVersion::V1 => v1::allow(dir, dev).map(|outcome| DeviceGrant {
                outcome,
                undo: if outcome == AllowOutcome::Added {
                    Undo::V1 {
                        dir: dir.clone(),
                        dev: *dev,
                    }
                } else {
                    Undo::Nothing
                },
            }),
            CgroupVersion::V2 => v2::KernelHost::open(dir).and_then(|host| {
                let (outcome, swapped) = v2::allow(&host, dir, dev)?;
                Ok(DeviceGrant {
                    outcome,
                    undo: if outcome == AllowOutcome::Added {
                        Undo::V2 { host, swapped }
                    } else {
                        Undo::Nothing
                    },
                })
            }),
        }
        .with_context(|| {
            format!(
                "granting {dev} to cgroup {} ({})",
                dir.display(),
                self.version
            )
        })?;
        tracing::debug!(%dev, dir = %dir.display(), version = %self.version, outcome = %grant.outcome, "device cgroup rule");
        Ok(grant)
    }

    /// Moves `pid` into the cgroup: `cgroup.procs` of the device directory
    /// (must succeed — it is what device checks use) and, on v1, of every
    /// other hierarchy too (best effort: a failure there is logged), so a
    /// self-test child is also held to the container's limits.
    pub fn join(&self, pid: i32) -> Result<()> {
        for (i, dir) in self.dirs.iter().enumerate() {
            let procs = dir.join("cgroup.procs");
            let res = fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .and_then(|mut f| f.write_all(pid.to_string().as_bytes()));
            match res {
                Ok(()) => {}
                Err(e) if i == 0 => {
                    return Err(e)
                        .with_context(|| format!("moving pid {pid} into {}", procs.display()));
                }
                Err(e) => {
                    tracing::warn!(pid, file = %procs.display(), error = %e, "could not join a cgroup hierarchy");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_access() {
        let dev = DeviceAccess::from_rdev(nix::sys::stat::makedev(253, 65536));
        assert_eq!(dev, DeviceAccess::new(253, 65536));
        assert_eq!(dev.to_string(), "c 253:65536 rw");
    }

    #[test]
    fn v1_dirs_are_deduplicated_device_first() {
        let cg = ContainerCgroup::v1("/d", vec!["/a".into(), "/d".into(), "/a".into()]);
        assert_eq!(cg.dirs(), [PathBuf::from("/d"), PathBuf::from("/a")]);
        assert_eq!(cg.version(), CgroupVersion::V1);
    }

    #[test]
    fn join_needs_the_device_hierarchy_only() {
        let tmp = tempfile::tempdir().unwrap();
        let mk = |name: &str, procs: bool| {
            let d = tmp.path().join(name);
            fs::create_dir(&d).unwrap();
            if procs {
                fs::write(d.join("cgroup.procs"), "").unwrap();
            }
            d
        };
        let devices = mk("devices", true);
        let cpu = mk("cpu", true);
        let broken = mk("broken", false);
        let cg = ContainerCgroup::v1(&devices, vec![broken.clone(), cpu.clone()]);
        cg.join(4242).unwrap();
        assert_eq!(
            fs::read_to_string(devices.join("cgroup.procs")).unwrap(),
            "4242"
        );
        assert_eq!(
            fs::read_to_string(cpu.join("cgroup.procs")).unwrap(),
            "4242"
        );

        let cg = ContainerCgroup::v1(&broken, vec![devices]);
        let err = format!("{:#}", cg.join(4242).unwrap_err());
        assert!(
            err.contains("broken/cgroup.procs") && err.contains("4242"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_cgroup_and_device() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = ContainerCgroup::v1(tmp.path(), vec![]);
        let err = format!(
            "{:#}",
            cg.allow_device(&DeviceAccess::new(253, 65536)).unwrap_err()
        );
        assert!(err.contains("c 253:65536 rw"), "{err}");
        assert!(err.contains(&tmp.path().display().to_string()), "{err}");
    }
}
