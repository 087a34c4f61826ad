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
use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
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
    /// The right device was there with another group or mode; fixed. What
    /// it had before, so that an abandoned grant can put it back.
    Adjusted { gid: u32, mode: u32 },
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

/// Refuses anything at the node's path that is not the TPM's char device.
fn check_is_the_device(spec: &NodeSpec, st: &nix::sys::stat::FileStat) -> anyhow::Result<()> {
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
    Ok(())
}

/// Group and mode through the checked handle, never by name: a file swapped
/// in at the path (a hard link to a host file, say) is not touched.
fn set_owner_and_mode(node: &OwnedFd, gid: u32, mode: u32, shown: &Path) -> anyhow::Result<()> {
    fchownat(
        node.as_fd(),
        "",
        None,
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .with_context(|| {
        format!(
            "cannot set group {gid} on {} in the container",
            shown.display()
        )
    })?;
    // fchmod refuses O_PATH handles; the handle's /proc link reaches the
    // same inode without a second lookup of the name.
    let proc_path = format!("/proc/self/fd/{}", node.as_raw_fd());
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        proc_path.as_str(),
        Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .with_context(|| {
        format!(
            "cannot set mode {mode:o} on {} in the container",
            shown.display()
        )
    })
}

impl NodeDir {
    /// Makes sure the node is there and right. Never follows the node's own
    /// path, never removes what it did not make, and changes an existing
    /// node only through a handle that was checked to be the TPM device.
    pub fn ensure(&self, spec: &NodeSpec, method: NodeMethod) -> anyhow::Result<NodeOutcome> {
        match self.open_path_handle() {
            Ok(node) => self.check_existing(spec, &node),
            Err(Errno::ENOENT) => match method {
                NodeMethod::Mknod => self.create(spec),
                NodeMethod::BindHostNode { as_owner } => self.bind_host_node(spec, as_owner),
            },
            Err(e) => Err(e)
                .with_context(|| format!("cannot open {} in the container", spec.path.display())),
        }
    }

    /// `node` is an `O_PATH|O_NOFOLLOW` handle on whatever sits at the
    /// node's path: a symlink there is the link itself, never its target.
    fn check_existing(&self, spec: &NodeSpec, node: &OwnedFd) -> anyhow::Result<NodeOutcome> {
        let st = nix::sys::stat::fstat(node)
            .with_context(|| format!("cannot stat {} in the container", spec.path.display()))?;
        check_is_the_device(spec, &st)?;
        let (gid, mode) = (st.st_gid, st.st_mode & 0o7777);
        if gid == spec.gid && mode == spec.mode {
            return Ok(NodeOutcome::Kept);
        }
        // A node the runtime made from `--device` copies the host's group,
        // which may not be what policy asks for: fix group and mode in place.
        set_owner_and_mode(node, spec.gid, spec.mode, &spec.path)?;
        Ok(NodeOutcome::Adjusted { gid, mode })
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
        let made = self
            .open_path_handle()
            .with_context(|| format!("cannot open {} in the container", spec.path.display()))
            .and_then(|node| {
                let st = nix::sys::stat::fstat(&node)?;
                check_is_the_device(spec, &st)?;
                set_owner_and_mode(&node, spec.gid, spec.mode, &spec.path)
            });
        if let Err(e) = made {
            // Never leave a half-made node behind.
            self.remove(spec);
            return Err(e);
        }
        Ok(NodeOutcome::Created)
    }

    fn open_path_handle(&self) -> nix::Result<OwnedFd> {
        nix::fcntl::openat(
            self.dir.as_fd(),
            self.name.as_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    }

    fn remove(&self, spec: &NodeSpec) {
        if let Err(e) = unlinkat(
            self.dir.as_fd(),
            self.name.as_str(),
            UnlinkatFlags::NoRemoveDir,
        ) {
            tracing::warn!(
                "cannot remove {} from the container: {e}",
                spec.path.display()
            );
        }
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
            // The node is there but no driver answers to its numbers: the
            // TPM was removed after the hook validated it.
            Errno::ENXIO | Errno::ENODEV => anyhow!(
                "cannot open {} in the container ({e}): no TPM answers to {}:{} any more; it went away from the host after it was validated (see ls /sys/class/tpmrm)",
                spec.path.display(),
                spec.major,
                spec.minor
            ),
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

    /// Takes back what [`NodeDir::ensure`] did, when the grant is
    /// abandoned: a node it made is removed (unmounted first when it was a
    /// bind mount), a node it adjusted gets its group and mode back, a node
    /// it kept is left alone. Only ever acts on the TPM's device.
    pub fn undo(&self, spec: &NodeSpec, outcome: NodeOutcome) -> anyhow::Result<()> {
        if outcome == NodeOutcome::Kept {
            return Ok(());
        }
        let node = match self.open_path_handle() {
            Ok(node) => node,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot open {} in the container", spec.path.display())
                })
            }
        };
        if outcome == NodeOutcome::BindMounted {
            let path = format!("/proc/self/fd/{}", node.as_raw_fd());
            nix::mount::umount2(path.as_str(), nix::mount::MntFlags::MNT_DETACH).with_context(
                || format!("cannot unmount {} in the container", spec.path.display()),
            )?;
            drop(node);
            return unlinkat(
                self.dir.as_fd(),
                self.name.as_str(),
                UnlinkatFlags::NoRemoveDir,
            )
            .with_context(|| format!("cannot remove {} from the container", spec.path.display()));
        }
        let st = nix::sys::stat::fstat(&node)?;
        check_is_the_device(spec, &st)?;
        match outcome {
            NodeOutcome::Adjusted { gid, mode } => set_owner_and_mode(&node, gid, mode, &spec.path),
            _ => unlinkat(
                self.dir.as_fd(),
                self.name.as_str(),
                UnlinkatFlags::NoRemoveDir,
            )
            .with_context(|| format!("cannot remove {} from the container", spec.path.display())),
        }
    }
}

#[cfg(test)]
mod tests;
