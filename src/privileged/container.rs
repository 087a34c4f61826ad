//! Acting as the container: a forked child (see [`child`]) that joins the
//! container's namespaces (and cgroup, where the caller asks) and runs one
//! task there.
//!
//! Why a child: `setns(CLONE_NEWNS)` and `setns(CLONE_NEWUSER)` are refused
//! in a multi-threaded process, the device cgroup checks `open()` against
//! the *opener's* cgroup, and the self-test must run with the container
//! process's own credentials, which cannot be given back.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use anyhow::Context;
use nix::sched::{setns, CloneFlags};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::child;

/// A running container's process, as seen from the host.
pub struct ContainerProcess {
    pub pid: i32,
    mount_ns: OwnedFd,
    /// The container's user namespace, when it is not the hook's own.
    user_ns: Option<OwnedFd>,
}

fn open_ns(pid: i32, ns: &str) -> anyhow::Result<OwnedFd> {
    let path = format!("/proc/{pid}/ns/{ns}");
    nix::fcntl::open(
        path.as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("cannot open {path}: has the container's process {pid} exited?"))
}

impl ContainerProcess {
    /// Opens the namespace handles now, while the pid certainly names the
    /// container's init (the runtime holds it at createRuntime).
    pub fn open(pid: i32) -> anyhow::Result<Self> {
        let mount_ns = open_ns(pid, "mnt")?;
        let user_ns = open_ns(pid, "user")?;
        let same_user_ns = match (
            std::fs::metadata("/proc/self/ns/user"),
            std::fs::metadata(format!("/proc/{pid}/ns/user")),
        ) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        };
        Ok(Self {
            pid,
            mount_ns,
            user_ns: (!same_user_ns).then_some(user_ns),
        })
    }

    /// In the child: enter the container's mount namespace.
    pub fn enter_mount_namespace(&self) -> anyhow::Result<()> {
        setns(self.mount_ns.as_fd(), CloneFlags::CLONE_NEWNS)
            .context("cannot enter the container's mount namespace")
    }

    /// The container's user namespace, when it has its own.
    pub fn user_namespace(&self) -> Option<BorrowedFd<'_>> {
        self.user_ns.as_ref().map(AsFd::as_fd)
    }

    /// Runs `task` in a forked child of the hook (see [`child`]); its
    /// result must arrive within `timeout`. The task enters what it needs
    /// (see [`enter_mount_namespace`](Self::enter_mount_namespace)).
    pub fn run<T, F>(&self, timeout: Duration, task: F) -> anyhow::Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(&Self) -> anyhow::Result<T>,
    {
        child::run(timeout, || task(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Forking needs a single-threaded process, which the test harness is
    // not: the child-process tests live in tests/container_child.rs, which
    // runs without the harness.

    #[test]
    fn missing_process_is_a_clear_error() {
        let err = ContainerProcess::open(i32::MAX).err().unwrap().to_string();
        assert!(err.contains("exited"), "{err}");
    }
}
