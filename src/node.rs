//! The device node inside a container's rootfs.
//!
//! The rootfs is the image's: any path in it may be a symlink, a regular
//! file or a directory planted to redirect a privileged writer to the host.
//! So the parent directory is resolved with `openat2(RESOLVE_IN_ROOT)` (a
//! symlink can never leave the rootfs), the last component is never
//! followed, and anything at the node's path that is not the expected device
//! is refused, not replaced.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path};

use anyhow::{anyhow, bail, Context};
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, makedev, mknodat, Mode, SFlag};
use nix::unistd::{fchownat, unlinkat, Gid, UnlinkatFlags};
use serde::{Deserialize, Serialize};

/// The node to provide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Absolute path inside the container, e.g. `/dev/tpmrm0`.
    pub path: std::path::PathBuf,
    pub major: u32,
    pub minor: u32,
    pub mode: u32,
    pub gid: u32,
}

/// How to make a missing node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeMethod {
    /// mknod: the normal case.
    Mknod,
    /// Bind-mount the host's node over an empty file: for containers with a
    /// user namespace, whose /dev is mounted `nodev` by the kernel, so a
    /// device node made there could never be opened. The file is created as
    /// the container's root (host uid, gid): a filesystem mounted inside the
    /// namespace cannot store the host's root as an owner (EOVERFLOW).
    BindHostNode { as_owner: Option<(u32, u32)> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeOutcome {
    /// We made the node.
    Created,
    /// We bind-mounted the host's node.
    BindMounted,
    /// The right node was already there (e.g. `--device`), as it should be.
    Kept,
    /// The right device was there with another group or mode; fixed.
    Adjusted,
}

/// The node's parent directory inside the rootfs and the node's name.
pub struct NodeDir {
    pub dir: OwnedFd,
    pub name: String,
}

/// Opens the directory that will hold `node` inside `rootfs`, resolving
/// symlinks as if `rootfs` were `/`.
pub fn open_node_dir(rootfs: &Path, node: &Path) -> anyhow::Result<NodeDir> {
    let (parent, name) = split_node_path(node)?;
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open container rootfs {}", rootfs.display()))?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let dir = openat2(root.as_fd(), parent.as_path(), how).with_context(|| {
        format!(
            "cannot open {} inside the container's rootfs {} (the image must not replace it with something that is not a directory)",
            Path::new("/").join(&parent).display(),
            rootfs.display()
        )
    })?;
    Ok(NodeDir { dir, name })
}

/// `/dev/tpmrm0` → (`dev`, `tpmrm0`). Only plain absolute paths are accepted.
fn split_node_path(node: &Path) -> anyhow::Result<(std::path::PathBuf, String)> {
    let mut parts = Vec::new();
    for c in node.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(p) => parts.push(
                p.to_str()
                    .ok_or_else(|| anyhow!("node path {node:?} is not UTF-8"))?,
            ),
            _ => bail!("node path {} must be absolute and plain", node.display()),
        }
    }
    if !node.is_absolute() || parts.len() < 2 {
        bail!(
            "node path {} must be absolute and below a directory",
            node.display()
        );
    }
    let name = parts.pop().unwrap_or_default().to_owned();
    Ok((parts.iter().collect(), name))
}

/// Runs `f` with the filesystem ids set to `ids` (host uid, gid), then puts
/// them back. setfsuid only affects this thread, and the caller is the
/// single-threaded child acting as the container.
fn with_fs_ids<T>(ids: Option<(u32, u32)>, f: impl FnOnce() -> T) -> T {
    let Some((uid, gid)) = ids else {
        return f();
    };
    let old_gid = nix::unistd::setfsgid(Gid::from_raw(gid));
    let old_uid = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
    let out = f();
    nix::unistd::setfsuid(old_uid);
    nix::unistd::setfsgid(old_gid);
    out
}

fn describe(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFCHR => "a character device",
        _ => "an unknown file type",
    }
}

impl NodeDir {
    /// Makes sure the node is there and right. Never follows the node's own
    /// path and never removes what it did not make.
    pub fn ensure(&self, spec: &NodeSpec, method: NodeMethod) -> anyhow::Result<NodeOutcome> {
        match fstatat(
            self.dir.as_fd(),
            self.name.as_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => self.check_existing(spec, &st),
            Err(Errno::ENOENT) => match method {
                NodeMethod::Mknod => self.create(spec),
                NodeMethod::BindHostNode { as_owner } => self.bind_host_node(spec, as_owner),
            },
            Err(e) => Err(e)
                .with_context(|| format!("cannot stat {} in the container", spec.path.display())),
        }
    }

    fn check_existing(
        &self,
        spec: &NodeSpec,
        st: &nix::sys::stat::FileStat,
    ) -> anyhow::Result<NodeOutcome> {
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind != SFlag::S_IFCHR {
            bail!(
                "{} in the container is {}, not the TPM device; refusing to touch it (the image must not ship {})",
                spec.path.display(),
                describe(kind),
                spec.path.display()
            );
        }
        let (major, minor) = (
            nix::sys::stat::major(st.st_rdev) as u32,
            nix::sys::stat::minor(st.st_rdev) as u32,
        );
        if (major, minor) != (spec.major, spec.minor) {
            bail!(
                "{} in the container is device {major}:{minor}, not the TPM ({}:{}); refusing to replace it",
                spec.path.display(),
                spec.major,
                spec.minor
            );
        }
        if st.st_gid == spec.gid && st.st_mode & 0o7777 == spec.mode {
            return Ok(NodeOutcome::Kept);
        }
        // A node the runtime made from `--device` copies the host's group,
        // which may not be what policy asks for: fix group and mode in place.
        self.set_owner_and_mode(spec)?;
        Ok(NodeOutcome::Adjusted)
    }

    fn create(&self, spec: &NodeSpec) -> anyhow::Result<NodeOutcome> {
        let dev = makedev(spec.major.into(), spec.minor.into());
        match mknodat(
            self.dir.as_fd(),
            self.name.as_str(),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            dev,
        ) {
            Ok(()) => {}
            // Not allowed to make device nodes here (e.g. a user namespace
            // we were not told about): a bind mount still works.
            Err(Errno::EPERM) => return self.bind_host_node(spec, None),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot create {} in the container", spec.path.display())
                })
            }
        }
        if let Err(e) = self.set_owner_and_mode(spec) {
            // Never leave a half-made node behind.
            let _ = unlinkat(
                self.dir.as_fd(),
                self.name.as_str(),
                UnlinkatFlags::NoRemoveDir,
            );
            return Err(e);
        }
        Ok(NodeOutcome::Created)
    }

    fn set_owner_and_mode(&self, spec: &NodeSpec) -> anyhow::Result<()> {
        fchownat(
            self.dir.as_fd(),
            self.name.as_str(),
            None,
            Some(Gid::from_raw(spec.gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .with_context(|| {
            format!(
                "cannot set group {} on {} in the container",
                spec.gid,
                spec.path.display()
            )
        })?;
        // chmod has no "don't follow" on Linux: go through an O_PATH handle on
        // the node itself (checked above not to be a symlink).
        let node = self.open_path_handle()?;
        let proc_path = format!("/proc/self/fd/{}", node.as_raw_fd());
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            proc_path.as_str(),
            Mode::from_bits_truncate(spec.mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .with_context(|| {
            format!(
                "cannot set mode {:o} on {} in the container",
                spec.mode,
                spec.path.display()
            )
        })
    }

    fn open_path_handle(&self) -> anyhow::Result<OwnedFd> {
        nix::fcntl::openat(
            self.dir.as_fd(),
            self.name.as_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open {} in the container", self.name))
    }

    /// Bind-mounts the host's node (as visible in the container's mount
    /// namespace before pivot_root) over a new empty file.
    fn bind_host_node(
        &self,
        spec: &NodeSpec,
        as_owner: Option<(u32, u32)>,
    ) -> anyhow::Result<NodeOutcome> {
        let host_path = Path::new("/dev").join(&self.name);
        let host = nix::fcntl::open(
            &host_path,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open host node {}", host_path.display()))?;
        let st = nix::sys::stat::fstat(&host)
            .with_context(|| format!("cannot stat host node {}", host_path.display()))?;
        let rdev = (
            nix::sys::stat::major(st.st_rdev) as u32,
            nix::sys::stat::minor(st.st_rdev) as u32,
        );
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFCHR
            || rdev != (spec.major, spec.minor)
        {
            bail!(
                "{} as seen from the container's mount namespace is not the TPM {}:{}",
                host_path.display(),
                spec.major,
                spec.minor
            );
        }
        let target = with_fs_ids(as_owner, || {
            nix::fcntl::openat(
                self.dir.as_fd(),
                self.name.as_str(),
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_WRONLY
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
        })
        .with_context(|| {
            format!(
                "cannot create the mount point {} in the container",
                spec.path.display()
            )
        })?;
        let source = format!("/proc/self/fd/{}", host.as_raw_fd());
        let dest = format!("/proc/self/fd/{}", target.as_raw_fd());
        if let Err(e) = nix::mount::mount(
            Some(source.as_str()),
            dest.as_str(),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        ) {
            drop(target);
            let _ = unlinkat(
                self.dir.as_fd(),
                self.name.as_str(),
                UnlinkatFlags::NoRemoveDir,
            );
            return Err(e).with_context(|| {
                format!(
                    "cannot bind-mount {} onto {} in the container",
                    host_path.display(),
                    spec.path.display()
                )
            });
        }
        Ok(NodeOutcome::BindMounted)
    }

    /// Opens the node for the self-test, exactly as the container will: the
    /// open is checked against the caller's device cgroup.
    pub fn open_for_io(&self, spec: &NodeSpec) -> anyhow::Result<OwnedFd> {
        let fd = nix::fcntl::openat(
            self.dir.as_fd(),
            self.name.as_str(),
            OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::EPERM => anyhow!(
                "opening {} from the container's cgroup is not permitted (EPERM): the device cgroup does not allow {}:{}",
                spec.path.display(),
                spec.major,
                spec.minor
            ),
            Errno::EBUSY => anyhow!("{} is busy (EBUSY): another process holds this exclusive TPM device", spec.path.display()),
            other => anyhow!("cannot open {} in the container: {other}", spec.path.display()),
        })?;
        let st = nix::sys::stat::fstat(&fd)?;
        if nix::sys::stat::major(st.st_rdev) as u32 != spec.major
            || nix::sys::stat::minor(st.st_rdev) as u32 != spec.minor
        {
            bail!("{} changed under the hook", spec.path.display());
        }
        Ok(fd)
    }

    /// Removes what [`NodeDir::ensure`] made, after a failed self-test; a
    /// node that was there before is left alone.
    pub fn undo(&self, spec: &NodeSpec, outcome: NodeOutcome) {
        if outcome == NodeOutcome::BindMounted {
            if let Ok(node) = self.open_path_handle() {
                let path = format!("/proc/self/fd/{}", node.as_raw_fd());
                let _ = nix::mount::umount2(path.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        if matches!(outcome, NodeOutcome::Created | NodeOutcome::BindMounted) {
            if let Err(e) = unlinkat(
                self.dir.as_fd(),
                self.name.as_str(),
                UnlinkatFlags::NoRemoveDir,
            ) {
                tracing::warn!(
                    "cannot remove {} after a failed self-test: {e}",
                    spec.path.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths() {
        let (p, n) = split_node_path(Path::new("/dev/tpmrm0")).unwrap();
        assert_eq!((p.to_str().unwrap(), n.as_str()), ("dev", "tpmrm0"));
        let (p, n) = split_node_path(Path::new("/dev/tpm/rm0")).unwrap();
        assert_eq!((p.to_str().unwrap(), n.as_str()), ("dev/tpm", "rm0"));
        for bad in ["dev/tpmrm0", "/tpmrm0", "/dev/../etc/x", "/", ""] {
            assert!(split_node_path(Path::new(bad)).is_err(), "{bad}");
        }
    }

    fn spec() -> NodeSpec {
        // /dev/null: a char device every machine has.
        NodeSpec {
            path: "/dev/tpmrm0".into(),
            major: 1,
            minor: 3,
            mode: 0o660,
            gid: nix::unistd::getegid().as_raw(),
        }
    }

    /// A rootfs with a /dev directory.
    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("dev")).unwrap();
        d
    }

    #[test]
    fn refuses_what_the_image_planted() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "host file").unwrap();
        for plant in ["symlink", "file", "dir"] {
            let r = rootfs();
            let node = r.path().join("dev/tpmrm0");
            match plant {
                "symlink" => symlink(&victim, &node).unwrap(),
                "file" => std::fs::write(&node, "x").unwrap(),
                _ => std::fs::create_dir(&node).unwrap(),
            }
            let dir = open_node_dir(r.path(), Path::new("/dev/tpmrm0")).unwrap();
            let err = dir
                .ensure(&spec(), NodeMethod::Mknod)
                .unwrap_err()
                .to_string();
            assert!(err.contains("refusing"), "{plant}: {err}");
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host file");
    }

    #[test]
    fn dev_symlink_stays_inside_the_rootfs() {
        let outside = tempfile::tempdir().unwrap();
        let r = tempfile::tempdir().unwrap();
        // The image's /dev points at a host directory by absolute path; with
        // RESOLVE_IN_ROOT it resolves inside the rootfs instead.
        std::os::unix::fs::symlink(outside.path(), r.path().join("dev")).unwrap();
        match open_node_dir(r.path(), Path::new("/dev/tpmrm0")) {
            Err(_) => {} // the target does not exist inside the rootfs: refused
            Ok(dir) => {
                let _ = dir.ensure(&spec(), NodeMethod::Mknod);
            }
        }
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "nothing may appear outside the rootfs"
        );
    }

    #[test]
    fn creates_keeps_and_adjusts_when_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: creates_keeps_and_adjusts_when_root needs root for mknod");
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            return;
        }
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let r = rootfs();
        let node = r.path().join("dev/tpmrm0");
        let mut s = spec();
        s.gid = 4242;
        let dir = open_node_dir(r.path(), &s.path).unwrap();
        assert_eq!(
            dir.ensure(&s, NodeMethod::Mknod).unwrap(),
            NodeOutcome::Created
        );
        let meta = std::fs::metadata(&node).unwrap();
        assert_eq!(
            (meta.gid(), meta.permissions().mode() & 0o7777),
            (4242, 0o660)
        );
        assert_eq!(meta.rdev(), nix::sys::stat::makedev(1, 3));
        assert_eq!(
            dir.ensure(&s, NodeMethod::Mknod).unwrap(),
            NodeOutcome::Kept
        );
        s.gid = 4343;
        assert_eq!(
            dir.ensure(&s, NodeMethod::Mknod).unwrap(),
            NodeOutcome::Adjusted
        );
        assert_eq!(std::fs::metadata(&node).unwrap().gid(), 4343);
        // The right path with the wrong device is refused.
        s.minor = 5;
        assert!(dir.ensure(&s, NodeMethod::Mknod).is_err());
        drop(dir.open_for_io(&spec()).unwrap());
    }
}
