//! The host's TPM as the doctor checks it: chips and their drivers, the
//! resource-manager nodes, their group against the policy, who holds the
//! exclusive `/dev/tpmN`, and a quick self-test of each TPM the policy
//! hands out.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tpm2_selftest::{self as tpm, SelfTestLevel};

use super::{Check, Host};
use crate::core::host::HostRoots;
use crate::core::policy::Policy;

/// Every TPM check, in order.
pub fn tpm(host: &Host, policy: &Policy) -> Vec<Check> {
    let roots = HostRoots {
        dev: host.path("/dev"),
        sys: host.path("/sys"),
        group_file: host.path("/etc/group"),
    };
    let mut out = vec![chips(host)];
    let rms = match roots.resource_managers() {
        Ok(rms) => rms,
        Err(e) => {
            out.push(Check::fail(
                "resource manager",
                format!("{e:#}"),
                "containers use /dev/tpmrmN, which the kernel makes for TPM 2.0 chips only: see the check above",
            ));
            return out;
        }
    };
    for name in &rms {
        out.push(node(&roots, name));
    }
    out.push(group(&roots, policy, &rms));
    out.push(exclusive_holders(host));
    for name in rms.iter().filter(|n| policy.device_allowed(n)) {
        out.push(self_test(host, name));
    }
    if !rms.iter().any(|n| policy.device_allowed(n)) {
        out.push(Check::fail(
            "policy devices",
            format!(
                "none of {} is allowed by [devices] allow = {:?}",
                rms.join(", "),
                policy.devices.allow
            ),
            "list the devices containers may get in [devices] allow, e.g. \"tpmrm*\"",
        ));
    }
    out
}

/// The TPM chips the kernel registered, their version and driver; when
/// there is none, whether a TPM is present without a driver.
fn chips(host: &Host) -> Check {
    let class = host.path("/sys/class/tpm");
    let mut found = Vec::new();
    let mut not_2_0 = Vec::new();
    for name in sorted_entries(&class)
        .into_iter()
        .filter(|n| n.starts_with("tpm"))
    {
        let dir = class.join(&name);
        let version = fs::read_to_string(dir.join("tpm_version_major"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|_| "?".into());
        let driver = match fs::read_link(dir.join("device/driver")) {
            Ok(link) => link
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Err(_) if dir.join("device").exists() => "no driver".into(),
            Err(_) => "vTPM proxy (software)".into(),
        };
        if version != "2" {
            not_2_0.push(name.clone());
        }
        found.push(format!("{name}: TPM {version}.0, driver {driver}"));
    }
    if found.is_empty() {
        let unbound = unbound_tpm_devices(host);
        return if unbound.is_empty() {
            Check::fail(
                "tpm",
                "no TPM: /sys/class/tpm is empty",
                "enable the TPM in the firmware (BIOS/UEFI), then load its driver: modprobe tpm_tis (or tpm_crb)",
            )
        } else {
            Check::fail(
                "tpm",
                format!("a TPM is present but no driver is bound to it: {}", unbound.join(", ")),
                format!(
                    "load or bind its driver: modprobe tpm_tis tpm_crb, or echo {} > /sys/bus/platform/drivers/tpm_tis/bind",
                    unbound[0]
                ),
            )
        };
    }
    if !not_2_0.is_empty() {
        return Check::warn(
            "tpm",
            found.join("; "),
            format!(
                "{} is not TPM 2.0: containers can only be given TPM 2.0 resource managers",
                not_2_0.join(", ")
            ),
        );
    }
    Check::pass("tpm", found.join("; "))
}

/// Platform devices with a TPM 2.0 ACPI id and no driver.
fn unbound_tpm_devices(host: &Host) -> Vec<String> {
    let dir = host.path("/sys/bus/platform/devices");
    sorted_entries(&dir)
        .into_iter()
        .filter(|name| {
            let dev = dir.join(name);
            let modalias = fs::read_to_string(dev.join("modalias")).unwrap_or_default();
            (name.starts_with("MSFT0101") || modalias.contains("MSFT0101"))
                && !dev.join("driver").exists()
        })
        .collect()
}

/// `/dev/<name>` is the character device the kernel registered.
fn node(roots: &HostRoots, name: &str) -> Check {
    let check = format!("/dev/{name}");
    match roots.validate(name) {
        Ok(t) => Check::pass(
            check,
            format!("character device {}:{} as the kernel registered it", t.major, t.minor),
        ),
        Err(e) => Check::fail(
            check,
            format!("{e:#}"),
            "let udev recreate it (udevadm trigger --subsystem-match=tpmrm), or remove what stands at that path",
        ),
    }
}

/// The policy's group exists, and the nodes carry it (what udev's TPM
/// rules set) with mode 0660.
fn group(roots: &HostRoots, policy: &Policy, rms: &[String]) -> Check {
    let want = match roots.group(&policy.node.group) {
        Ok(g) => g,
        Err(e) => {
            return Check::fail(
                "group",
                format!("{e:#}"),
                "install tpm-udev (or tpm2-tss), which creates the tss group and its udev rules, or set [node] group in the policy",
            )
        }
    };
    let mut odd = Vec::new();
    for name in rms {
        if let Ok(m) = fs::metadata(roots.dev.join(name)) {
            if m.gid() != want.gid || m.mode() & 0o777 != 0o660 {
                odd.push(format!(
                    "{name} has group {} mode {:o}",
                    m.gid(),
                    m.mode() & 0o777
                ));
            }
        }
    }
    let shown = format!("{} = GID {}", policy.node.group, want.gid);
    if odd.is_empty() {
        Check::pass("group", format!("{shown}; the nodes have it, mode 0660"))
    } else {
        Check::warn(
            "group",
            format!("{shown}, but {}", odd.join(", ")),
            format!(
                "containers get GID {} anyway; for the host's own users install the TPM udev rules (tpm-udev) so /dev/tpmrm* is group {} mode 0660",
                want.gid, policy.node.group
            ),
        )
    }
}

/// Who holds an exclusive `/dev/tpmN` open (the "Resource busy" of
/// container guides).
fn exclusive_holders(host: &Host) -> Check {
    let proc = host.path("/proc");
    let mut holders = Vec::new();
    for pid in sorted_entries(&proc)
        .into_iter()
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        let fds = proc.join(&pid).join("fd");
        for fd in sorted_entries(&fds) {
            let Ok(target) = fs::read_link(fds.join(&fd)) else {
                continue;
            };
            let t = target.to_string_lossy();
            let exclusive = t
                .strip_prefix("/dev/tpm")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if exclusive {
                let comm = fs::read_to_string(proc.join(&pid).join("comm")).unwrap_or_default();
                holders.push(format!("{t} by pid {pid} ({})", comm.trim()));
            }
        }
    }
    if holders.is_empty() {
        Check::pass("exclusive device", "nobody holds /dev/tpmN open")
    } else {
        Check::warn(
            "exclusive device",
            format!("held: {}", holders.join(", ")),
            "containers get /dev/tpmrmN, which shares the TPM and is not affected; only a request for tpmN itself (resource busy, EBUSY) is. Stop that process, or use tpm2-abrmd/tpmrm on the host too",
        )
    }
}

/// A quick self-test through the node, as the hook runs it.
fn self_test(host: &Host, name: &str) -> Check {
    let check = format!("self-test {name}");
    let path = host.path(&format!("/dev/{name}"));
    let outcome = tpm::self_test_device(&path, SelfTestLevel::Quick, host.self_test_timeout)
        .map_err(anyhow::Error::from);
    match outcome {
        Ok(report) => Check::pass(check, report.to_string()),
        Err(e) => Check::fail(
            check,
            format!("{e:#}"),
            "check dmesg for TPM errors; a TPM in failure mode needs a reboot (or a firmware update)",
        ),
    }
}

/// Directory entry names, sorted; none when the directory cannot be read.
pub(super) fn sorted_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;
    use crate::testing::FakeHost;
    use std::time::Duration;

    fn host(fake: &FakeHost) -> Host {
        Host {
            root: fake.dir().to_path_buf(),
            policy_file: "/etc/oci-tpm-hook/config.toml".into(),
            self_test_timeout: Duration::from_millis(200),
        }
    }

    fn by_name<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))
    }

    /// The stand-in host keeps its group file at <root>/group: give the
    /// doctor's /etc/group the same content.
    fn with_etc_group(fake: &FakeHost) {
        fs::create_dir_all(fake.dir().join("etc")).unwrap();
        fs::copy(&fake.roots.group_file, fake.dir().join("etc/group")).unwrap();
    }

    #[test]
    fn no_tpm_and_an_unbound_one_say_what_to_do() {
        let fake = FakeHost::new(102);
        with_etc_group(&fake);
        let checks = tpm(&host(&fake), &Policy::default());
        let t = by_name(&checks, "tpm");
        assert_eq!(t.status, Status::Fail);
        assert!(
            t.fix.as_deref().unwrap().contains("modprobe tpm_tis"),
            "{t:?}"
        );
        assert_eq!(by_name(&checks, "resource manager").status, Status::Fail);

        let dev = fake.dir().join("sys/bus/platform/devices/MSFT0101:00");
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("modalias"), "acpi:MSFT0101:\n").unwrap();
        let t = by_name(&tpm(&host(&fake), &Policy::default()), "tpm").clone();
        assert!(
            t.detail.contains("no driver is bound") && t.detail.contains("MSFT0101:00"),
            "{t:?}"
        );
        assert!(t.fix.unwrap().contains("drivers/tpm_tis/bind"));
    }

    #[test]
    fn a_healthy_fake_tpm_except_the_self_test() {
        let fake = FakeHost::with_tpm();
        with_etc_group(&fake);
        let checks = tpm(&host(&fake), &Policy::default());
        let t = by_name(&checks, "tpm");
        assert_eq!(t.status, Status::Pass, "{t:?}");
        assert!(
            t.detail.contains("tpm0: TPM 2.0, driver vTPM proxy"),
            "{t:?}"
        );
        assert_eq!(by_name(&checks, "/dev/tpmrm0").status, Status::Pass);
        // /dev/null stands in for the node: not group 102, not a TPM.
        assert_eq!(by_name(&checks, "group").status, Status::Warn);
        assert_eq!(by_name(&checks, "exclusive device").status, Status::Pass);
        assert_eq!(by_name(&checks, "self-test tpmrm0").status, Status::Fail);
    }

    #[test]
    fn a_missing_group_and_a_wrong_node_fail_with_fixes() {
        let fake = FakeHost::new(102);
        fake.add_tpm(0, "253:65536", "2");
        fs::create_dir_all(fake.dir().join("etc")).unwrap();
        fs::write(fake.dir().join("etc/group"), "root:x:0:\n").unwrap();
        let checks = tpm(&host(&fake), &Policy::default());
        let node = by_name(&checks, "/dev/tpmrm0");
        assert_eq!(node.status, Status::Fail);
        assert!(node.detail.contains("253:65536"), "{node:?}");
        let group = by_name(&checks, "group");
        assert_eq!(group.status, Status::Fail);
        assert!(group.fix.as_deref().unwrap().contains("tpm-udev"));
    }

    #[test]
    fn holders_of_the_exclusive_device_are_named() {
        let fake = FakeHost::with_tpm();
        with_etc_group(&fake);
        let fds = fake.dir().join("proc/4242/fd");
        fs::create_dir_all(&fds).unwrap();
        std::os::unix::fs::symlink("/dev/tpm0", fds.join("3")).unwrap();
        std::os::unix::fs::symlink("/dev/tpmrm0", fds.join("4")).unwrap();
        fs::write(fake.dir().join("proc/4242/comm"), "tpm2-abrmd\n").unwrap();
        let c = by_name(&tpm(&host(&fake), &Policy::default()), "exclusive device").clone();
        assert_eq!(c.status, Status::Warn);
        assert_eq!(c.detail, "held: /dev/tpm0 by pid 4242 (tpm2-abrmd)");
    }

    #[test]
    fn a_policy_that_allows_nothing_here_fails() {
        let fake = FakeHost::with_tpm();
        with_etc_group(&fake);
        let mut p = Policy::default();
        p.devices.allow = vec!["tpmrm9".into()];
        let checks = tpm(&host(&fake), &p);
        assert_eq!(by_name(&checks, "policy devices").status, Status::Fail);
        assert!(!checks.iter().any(|c| c.name.starts_with("self-test")));
    }
}
