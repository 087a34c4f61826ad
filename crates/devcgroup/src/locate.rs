//! Finding a process's cgroup directories from `/proc/<pid>/cgroup` and the
//! caller's mount table.
//!
//! [`resolve`] is pure; [`locate_in`] reads the two files under a root
//! prefix, so tests can stand a temporary directory in for `/`.

use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::mountinfo::{self, Mount};
use super::proc_cgroup::{self, CgroupLine};
use super::ContainerCgroup;

/// Where `cgroup_path` (from `/proc/<pid>/cgroup`) lives under `mount`, with
/// `root` prefixed to the mount point. `None` when the mount does not show
/// that cgroup (it is mounted from a different subtree).
fn dir_in(mount: &Mount, cgroup_path: &str, root: &Path) -> Option<PathBuf> {
    let rel = if mount.root == "/" {
        cgroup_path.trim_start_matches('/')
    } else {
        let rest = cgroup_path.strip_prefix(mount.root.as_str())?;
        if !rest.is_empty() && !rest.starts_with('/') {
            return None; // "/foo" is not under "/fo"
        }
        rest.trim_start_matches('/')
    };
    let mount_point = mount
        .mount_point
        .strip_prefix("/")
        .unwrap_or(&mount.mount_point);
    let dir = root.join(mount_point);
    // Joining "" would add a trailing slash.
    Some(if rel.is_empty() { dir } else { dir.join(rel) })
}

fn check_path(line: &CgroupLine) -> Result<()> {
    let path = &line.path;
    if path.ends_with(" (deleted)") {
        bail!("the cgroup {path:?} was deleted (the process is exiting)");
    }
    // Outside the reader's cgroup namespace the kernel shows "/../..".
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        bail!("the cgroup path {path:?} is not visible from here (another cgroup namespace?)");
    }
    Ok(())
}

/// The directory for `line` in the last matching mount that shows it (later
/// mounts in mountinfo shadow earlier ones).
fn find_dir(line: &CgroupLine, mounts: &[Mount], root: &Path) -> Option<PathBuf> {
    mounts
        .iter()
        .rev()
        .filter(|m| {
            if line.is_unified() {
                m.is_cgroup2()
            } else {
                m.is_cgroup1_with(&line.controllers)
            }
        })
        .find_map(|m| dir_in(m, &line.path, root))
}

/// Combines a process's cgroup lines with the mount table.
///
/// A process with a v1 `devices` hierarchy is [`CgroupVersion::V1`] even on
/// hybrid systems — that is where the runtime put its rules, as runc and
/// crun do; its unified directory (if any) is still joined. Otherwise the
/// v2 line decides.
///
/// [`CgroupVersion::V1`]: super::CgroupVersion::V1
pub fn resolve(lines: &[CgroupLine], mounts: &[Mount], root: &Path) -> Result<ContainerCgroup> {
    let mut devices = None;
    let mut v1_dirs = Vec::new();
    let mut unified = None;
    for line in lines {
        if line.is_unified() {
            check_path(line)?;
            unified = find_dir(line, mounts, root);
            continue;
        }
        let is_devices = line.has_controller("devices");
        if is_devices {
            check_path(line)?;
        } else if check_path(line).is_err() {
            continue; // only the devices hierarchy must be usable
        }
        match find_dir(line, mounts, root) {
            Some(dir) if is_devices => devices = Some(dir),
            Some(dir) => v1_dirs.push(dir),
            None if is_devices => bail!(
                "the process's devices cgroup {:?} is on a cgroup v1 hierarchy that is not mounted here",
                line.path
            ),
            None => {}
        }
    }
    if let Some(devices) = devices {
        v1_dirs.extend(unified);
        return Ok(ContainerCgroup::v1(devices, v1_dirs));
    }
    if let Some(dir) = unified {
        return Ok(ContainerCgroup::v2(dir));
    }
    if lines.iter().any(CgroupLine::is_unified) {
        bail!("the process is in a cgroup v2 hierarchy, but no cgroup2 filesystem that shows it is mounted here");
    }
    bail!("the process has neither a cgroup v1 devices hierarchy nor a cgroup v2 one")
}

/// Reads `<root>/proc/<pid>/cgroup` and `<root>/proc/self/mountinfo` (our
/// own mount table: the directories we will write to are the ones *we* see)
/// and resolves them; the result's directories must exist.
pub fn locate_in(root: &Path, pid: i32) -> Result<ContainerCgroup> {
    let cgroup_file = root.join(format!("proc/{pid}/cgroup"));
    let text = fs::read_to_string(&cgroup_file)
        .with_context(|| format!("reading {}", cgroup_file.display()))?;
    let lines =
        proc_cgroup::parse(&text).with_context(|| format!("parsing {}", cgroup_file.display()))?;
    let mountinfo_file = root.join("proc/self/mountinfo");
    let text = fs::read_to_string(&mountinfo_file)
        .with_context(|| format!("reading {}", mountinfo_file.display()))?;
    let mounts =
        mountinfo::parse(&text).with_context(|| format!("parsing {}", mountinfo_file.display()))?;
    let cgroup = resolve(&lines, &mounts, root)
        .with_context(|| format!("finding the cgroup of pid {pid}"))?;
    let dir = cgroup.device_dir();
    if !dir.is_dir() {
        bail!(
            "the cgroup directory {} of pid {pid} does not exist (did the process exit?)",
            dir.display()
        );
    }
    Ok(cgroup)
}

#[cfg(test)]
mod tests {
    use super::super::CgroupVersion;
    use super::*;

    const UNIFIED_MOUNTS: &str = "\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
28 24 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    const HYBRID_MOUNTS: &str = "\
31 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:20 - cgroup cgroup rw,devices
41 31 0:38 / /sys/fs/cgroup/net_cls rw,nosuid,nodev,noexec,relatime shared:21 - cgroup cgroup rw,net_cls
";

    fn resolve_text(cgroup: &str, mounts: &str) -> Result<ContainerCgroup> {
        resolve(
            &proc_cgroup::parse(cgroup).unwrap(),
            &mountinfo::parse(mounts).unwrap(),
            Path::new("/"),
        )
    }

    #[test]
    fn unified() {
        let cg = resolve_text(
            "0::/system.slice/libpod-abc.scope/container\n",
            UNIFIED_MOUNTS,
        )
        .unwrap();
        assert_eq!(cg.version(), CgroupVersion::V2);
        let dir = Path::new("/sys/fs/cgroup/system.slice/libpod-abc.scope/container");
        assert_eq!(cg.device_dir(), dir);
        assert_eq!(cg.dirs(), [dir]);
    }

    #[test]
    fn hybrid_is_v1_and_joins_everything() {
        let text = "\
12:devices:/docker/abc
11:cpu,cpuacct:/docker/abc
7:net_cls:/
1:name=systemd:/docker/abc
0::/docker/abc
";
        let cg = resolve_text(text, HYBRID_MOUNTS).unwrap();
        assert_eq!(cg.version(), CgroupVersion::V1);
        assert_eq!(
            cg.device_dir(),
            Path::new("/sys/fs/cgroup/devices/docker/abc")
        );
        let dirs: Vec<_> = cg.dirs().iter().map(|d| d.to_str().unwrap()).collect();
        assert_eq!(
            dirs,
            [
                "/sys/fs/cgroup/devices/docker/abc",
                "/sys/fs/cgroup/cpu,cpuacct/docker/abc",
                "/sys/fs/cgroup/net_cls",
                "/sys/fs/cgroup/systemd/docker/abc",
                "/sys/fs/cgroup/unified/docker/abc",
            ]
        );
    }

    #[test]
    fn v1_without_devices_line_uses_unified() {
        let cg = resolve_text("1:name=systemd:/a\n0::/a\n", HYBRID_MOUNTS).unwrap();
        assert_eq!(cg.version(), CgroupVersion::V2);
        assert_eq!(cg.device_dir(), Path::new("/sys/fs/cgroup/unified/a"));
    }

    #[test]
    fn mount_roots_are_stripped() {
        // Inside a container whose cgroupfs shows only its own subtree.
        let mounts =
            "50 40 0:37 /docker/abc /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices\n\
                      51 40 0:37 /other /mnt/elsewhere rw - cgroup cgroup rw,devices\n";
        let cg = resolve_text("3:devices:/docker/abc/inner\n", mounts).unwrap();
        assert_eq!(cg.device_dir(), Path::new("/sys/fs/cgroup/devices/inner"));
        // "/docker/abcd" is not under the mount root "/docker/abc".
        let err = resolve_text("3:devices:/docker/abcd\n", mounts).unwrap_err();
        assert!(err.to_string().contains("not mounted here"), "{err}");
    }

    #[test]
    fn later_mounts_win() {
        let mounts = "28 24 0:25 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
                      90 24 0:25 / /run/cg rw - cgroup2 cgroup2 rw\n";
        let cg = resolve_text("0::/a\n", mounts).unwrap();
        assert_eq!(cg.device_dir(), Path::new("/run/cg/a"));
    }

    #[test]
    fn errors() {
        let err = resolve_text("0::/a\n", HYBRID_MOUNTS.lines().next().unwrap()).unwrap_err();
        assert!(err.to_string().contains("no cgroup2"), "{err}");
        let err = resolve_text("0::/a (deleted)\n", UNIFIED_MOUNTS).unwrap_err();
        assert!(err.to_string().contains("deleted"), "{err}");
        let err = resolve_text("0::/../../x\n", UNIFIED_MOUNTS).unwrap_err();
        assert!(err.to_string().contains("not visible"), "{err}");
        let err = resolve_text("5:devices:/a\n", UNIFIED_MOUNTS).unwrap_err();
        assert!(err.to_string().contains("not mounted here"), "{err}");
        assert!(resolve_text("", UNIFIED_MOUNTS).is_err());
    }

    #[test]
    fn locate_in_a_fake_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("proc/42")).unwrap();
        fs::create_dir_all(r.join("proc/self")).unwrap();
        fs::write(r.join("proc/42/cgroup"), "0::/machine.slice/c1\n").unwrap();
        fs::write(r.join("proc/self/mountinfo"), UNIFIED_MOUNTS).unwrap();
        let err = format!("{:#}", locate_in(r, 42).unwrap_err());
        assert!(err.contains("does not exist"), "{err}");

        let dir = r.join("sys/fs/cgroup/machine.slice/c1");
        fs::create_dir_all(&dir).unwrap();
        let cg = locate_in(r, 42).unwrap();
        assert_eq!(cg.version(), CgroupVersion::V2);
        assert_eq!(cg.device_dir(), dir);

        let err = format!("{:#}", locate_in(r, 43).unwrap_err());
        assert!(err.contains("proc/43/cgroup"), "{err}");
    }
}
