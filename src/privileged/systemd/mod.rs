//! Keeping a hook-made device rule across a systemd reload.
//!
//! With the systemd cgroup driver (runc, crun, podman's `cgroup_manager =
//! "systemd"`, the kubelet's `cgroupDriver: systemd`) the container's cgroup
//! is a systemd unit, usually a scope. When that unit carries a device list
//! (`DevicePolicy=` other than `auto`, or any `DeviceAllow=`), systemd
//! rewrites the cgroup's device rules from it whenever it re-applies the
//! unit — `systemctl daemon-reload` among others — and a rule the hook added
//! on its own is gone: the container loses its TPM while it runs.
//!
//! So the hook tells systemd about the device too: the unit's
//! `DeviceAllow=` gains the TPM (`SetUnitProperties`, runtime only, over the
//! D-Bus system bus), and systemd's rules include it each time it
//! re-applies them. This happens before the self-test, because systemd's
//! rules may already decide now: crun runs the container's process in a
//! child of its scope, and the scope's own device program, systemd's, must
//! allow the TPM too. An abandoned grant puts the unit's list back as it
//! was. A unit without a device list is left alone: systemd imposes no
//! device rules on it, so a reload keeps the grant, and giving it a first
//! `DeviceAllow=` would switch on systemd's allow-list and cut off the
//! container's other devices.
//!
//! The D-Bus client ([`bus`], over zbus) is its own small program,
//! `oci-tpm-systemd`, which the hook runs as a bounded child (see
//! [`super::child`]) only for containers in a systemd unit. Two reasons:
//! zbus runs threads, and the hook must stay single-threaded to fork its
//! helpers; and a container that asks for nothing would otherwise pay for
//! the D-Bus stack in the hook binary's size, page faults and start-up.
//!
//! Not covered: a runtime that itself resets the unit's list later
//! (`runc update`), which the spec-editing front-ends avoid.

pub mod bus;

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::child;

/// Present while systemd is the init system (sd_booted(3)).
pub const SYSTEMD_RUNNING: &str = "/run/systemd/system";
/// The program that talks to systemd ([`bus`]): beside the hook, or in
/// the libexec directory of the hook's prefix (where packages put it).
pub const HELPER_BIN: &str = "oci-tpm-systemd";
/// Below the prefix (the parent of the hook's directory).
const HELPER_LIBEXEC: &str = "libexec/oci-tpm-hook";
/// The unit types that hold processes (and so containers), by name suffix,
/// with the D-Bus interface that carries their cgroup settings.
const UNIT_TYPES: [(&str, &str); 2] = [
    (".scope", "org.freedesktop.systemd1.Scope"),
    (".service", "org.freedesktop.systemd1.Service"),
];

/// What became of the unit's device list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReloadOutcome {
    /// systemd does not run, or the cgroup is not one of its units (the
    /// cgroupfs driver): nothing re-applies rules behind the hook's back.
    NoUnit,
    /// The unit has no device list: a reload leaves the grant in place.
    Unrestricted { unit: String },
    /// The unit's list already allows the device.
    AlreadyListed { unit: String },
    /// The device was added to the unit's `DeviceAllow=`, which was
    /// `previous` before (kept to take the addition back).
    Added {
        unit: String,
        previous: Vec<(String, String)>,
    },
}

impl std::fmt::Display for ReloadOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadOutcome::NoUnit => f.write_str("no systemd unit"),
            ReloadOutcome::Unrestricted { unit } => write!(f, "{unit} has no device list"),
            ReloadOutcome::AlreadyListed { unit } => write!(f, "{unit} lists the device"),
            ReloadOutcome::Added { unit, .. } => write!(f, "added to DeviceAllow of {unit}"),
        }
    }
}

impl ReloadOutcome {
    /// Undoes [`ReloadOutcome::Added`] (through the helper program,
    /// within `timeout`); nothing to do for the other outcomes.
    pub fn take_back(&self, timeout: Duration) -> anyhow::Result<()> {
        if !matches!(self, ReloadOutcome::Added { .. }) {
            return Ok(());
        }
        let outcome = serde_json::to_string(self).context("cannot encode the unit's old list")?;
        child::run_program(timeout, &helper_path()?, &["take-back", outcome.as_str()])
    }
}

/// The systemd unit whose cgroup is `cgroup_dir` (or holds it: crun puts
/// the container's process in a `container` child of its scope): the
/// innermost path component named like a unit that can hold processes.
/// `None` for cgroups no unit owns, e.g. those of the cgroupfs driver.
fn unit_of_cgroup(cgroup_dir: &Path) -> Option<String> {
    let names: Vec<&str> = cgroup_dir
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => n.to_str(),
            _ => None,
        })
        .collect();
    for name in names.iter().rev() {
        if name.ends_with(".slice") {
            // Slices hold no processes; a unit would sit below one.
            return None;
        }
        if unit_interface(name).is_some() {
            return Some((*name).to_owned());
        }
    }
    None
}

/// A unit's device settings as systemd holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList {
    /// `DevicePolicy=`: `auto`, `closed` or `strict`.
    pub policy: String,
    /// `DeviceAllow=`: a path (or `char-*`/`block-*` class) and rights.
    pub allowed: Vec<(String, String)>,
}

impl DeviceList {
    /// Whether systemd's rules for the unit keep `device` (`/dev/...`,
    /// numbers `major:minor`) open for reading and writing when it
    /// re-applies them: `None` when systemd imposes no device rules on the
    /// unit at all.
    pub fn allows(&self, device: &Path, major: u32, minor: u32) -> Option<bool> {
        if self.policy == "auto" && self.allowed.is_empty() {
            return None;
        }
        let by_numbers = format!("/dev/char/{major}:{minor}");
        Some(self.allowed.iter().any(|(path, rights)| {
            (Path::new(path) == device || *path == by_numbers)
                && rights.contains('r')
                && rights.contains('w')
        }))
    }
}

/// The systemd unit that owns `cgroup_dir`, when systemd runs and the
/// cgroup is one of its units' (checked without D-Bus, so that containers
/// of the cgroupfs driver cost nothing).
pub fn unit_to_tell(cgroup_dir: &Path) -> Option<String> {
    let unit = unit_of_cgroup(cgroup_dir)?;
    Path::new(SYSTEMD_RUNNING).exists().then_some(unit)
}

/// Makes sure systemd's own rules for `unit` let the container use `device`
/// (host path and numbers), now and after a reload: [`bus::allow_in_unit`]
/// in the helper program, within `timeout`.
pub fn allow_in_unit(
    unit: &str,
    device: &Path,
    major: u32,
    minor: u32,
    timeout: Duration,
) -> anyhow::Result<ReloadOutcome> {
    let args = [
        OsString::from("allow"),
        unit.into(),
        device.into(),
        major.to_string().into(),
        minor.to_string().into(),
    ];
    child::run_program(timeout, &helper_path()?, &args)
}

/// Where the helper program is: beside this program, or in the libexec
/// directory of its prefix.
pub fn helper_path() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let prefix = dir.parent().unwrap_or(dir);
    let candidates = [
        dir.join(HELPER_BIN),
        prefix.join(HELPER_LIBEXEC).join(HELPER_BIN),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "{HELPER_BIN}, the program that tells systemd, is missing: neither {} nor {} exists \
                 (install the whole package)",
                candidates[0].display(),
                candidates[1].display()
            )
        })
}

/// The D-Bus interface that carries the cgroup settings of `unit`, when it
/// is named like a unit that holds processes.
fn unit_interface(unit: &str) -> Option<&'static str> {
    UNIT_TYPES.iter().find_map(|(suffix, interface)| {
        unit.strip_suffix(suffix)
            .is_some_and(|stem| !stem.is_empty())
            .then_some(*interface)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_is_the_innermost_scope_or_service() {
        let cases = [
            ("/sys/fs/cgroup/machine.slice/libpod-abc.scope", Some("libpod-abc.scope")),
            // crun: the process sits in a child of its scope.
            ("/sys/fs/cgroup/machine.slice/libpod-abc.scope/container", Some("libpod-abc.scope")),
            (
                "/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-abc.scope",
                Some("cri-containerd-abc.scope"),
            ),
            ("/sys/fs/cgroup/devices/system.slice/docker-abc.scope", Some("docker-abc.scope")),
            ("/sys/fs/cgroup/system.slice/tpm-app.service", Some("tpm-app.service")),
            // The cgroupfs driver: no unit.
            ("/sys/fs/cgroup/libpod_parent/libpod-abc", None),
            ("/sys/fs/cgroup/kubepods/besteffort/pod1/abc", None),
            // A container cgroup under a slice but not itself a unit.
            ("/sys/fs/cgroup/machine.slice/abc", None),
            ("/sys/fs/cgroup/.scope", None),
        ];
        for (dir, want) in cases {
            assert_eq!(unit_of_cgroup(Path::new(dir)).as_deref(), want, "{dir}");
        }
    }

    fn list(policy: &str, entries: &[(&str, &str)]) -> DeviceList {
        DeviceList {
            policy: policy.to_owned(),
            allowed: entries
                .iter()
                .map(|(p, r)| (p.to_string(), r.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_unit_without_a_device_list_imposes_nothing() {
        let tpm = Path::new("/dev/tpmrm0");
        assert_eq!(list("auto", &[]).allows(tpm, 253, 65536), None);
        // Any other policy is an allow-list, even an empty one.
        assert_eq!(list("strict", &[]).allows(tpm, 253, 65536), Some(false));
        assert_eq!(list("closed", &[]).allows(tpm, 253, 65536), Some(false));
    }

    #[test]
    fn the_device_counts_as_listed_by_path_or_numbers_with_read_and_write() {
        let tpm = Path::new("/dev/tpmrm0");
        let runc_like = list("strict", &[("/dev/char/1:3", "rwm"), ("char-pts", "rwm")]);
        assert_eq!(runc_like.allows(tpm, 253, 65536), Some(false));
        for listed in [
            list("strict", &[("/dev/char/1:3", "rwm"), ("/dev/tpmrm0", "rw")]),
            list("strict", &[("/dev/char/253:65536", "rwm")]),
        ] {
            assert_eq!(listed.allows(tpm, 253, 65536), Some(true), "{listed:?}");
        }
        // Read-only is not enough, and another device's numbers are not it.
        assert_eq!(
            list("auto", &[("/dev/tpmrm0", "r")]).allows(tpm, 253, 65536),
            Some(false)
        );
        assert_eq!(
            list("strict", &[("/dev/char/253:1", "rw")]).allows(tpm, 253, 65536),
            Some(false)
        );
    }

    #[test]
    fn scopes_and_services_have_their_own_interfaces() {
        assert_eq!(
            unit_interface("a.scope").unwrap(),
            "org.freedesktop.systemd1.Scope"
        );
        assert_eq!(
            unit_interface("a.service").unwrap(),
            "org.freedesktop.systemd1.Service"
        );
        assert!(unit_interface("a.slice").is_none());
    }
}
