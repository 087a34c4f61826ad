//! Acting as the container: a forked child that joins the container's cgroup
//! and mount namespace and runs one task there.
//!
//! Why a child: `setns(CLONE_NEWNS)` is refused in a multi-threaded process,
//! and the device cgroup checks `open()` against the *opener's* cgroup, so
//! only a process inside the container's cgroup proves the rule works. The
//! child's answer comes back over a pipe as JSON; the parent bounds the wait
//! and kills the child (by its own pid) when the deadline passes.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A running container's process, as seen from the host.
pub struct ContainerProcess {
    pub pid: i32,
    mount_ns: OwnedFd,
}

impl ContainerProcess {
    /// Opens the namespace handles now, while the pid certainly names the
    /// container's init (the runtime holds it at createRuntime).
    pub fn open(pid: i32) -> anyhow::Result<Self> {
        let path = format!("/proc/{pid}/ns/mnt");
        let mount_ns = nix::fcntl::open(
            path.as_str(),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .with_context(|| {
            format!("cannot open {path}: has the container's process {pid} exited?")
        })?;
        Ok(Self { pid, mount_ns })
    }

    /// Runs `task` in a child that first calls `join_cgroup` (with the
    /// child's own pid) and then enters the container's mount namespace.
    /// The result must arrive within `timeout`.
    pub fn run<T, J, F>(&self, timeout: Duration, join_cgroup: J, task: F) -> anyhow::Result<T>
    where
        T: Serialize + DeserializeOwned,
        J: FnOnce(i32) -> anyhow::Result<()>,
        F: FnOnce() -> anyhow::Result<T>,
    {
        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
        // SAFETY: the hook is single-threaded when it gets here (no runtime,
        // no helper threads), so the child may run ordinary Rust code.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => {
                drop(read_end);
                let outcome = (|| -> anyhow::Result<T> {
                    let me = nix::unistd::getpid().as_raw();
                    join_cgroup(me).context("cannot join the container's cgroup")?;
                    setns(self.mount_ns.as_fd(), CloneFlags::CLONE_NEWNS)
                        .context("cannot enter the container's mount namespace")?;
                    task()
                })();
                let reply: Result<T, String> = outcome.map_err(|e| format!("{e:#}"));
                let code = match serde_json::to_vec(&reply) {
                    Ok(bytes) => match nix::unistd::write(&write_end, &bytes) {
                        Ok(_) => 0,
                        Err(_) => 2,
                    },
                    Err(_) => 3,
                };
                // Skip destructors and atexit handlers that belong to the
                // parent.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(write_end);
                let reply = read_until(read_end, timeout);
                if reply.is_err() {
                    let _ = kill(child, Signal::SIGKILL);
                    // A child stuck in the TPM driver may take long to die
                    // (closing a device waits for the command in flight);
                    // the hook's answer must not wait for it.
                    reap_within(child, Duration::from_secs(1));
                } else {
                    reap_within(child, Duration::from_secs(5));
                }
                let bytes = reply?;
                if bytes.is_empty() {
                    bail!("the helper process in the container died without an answer");
                }
                let reply: Result<T, String> = serde_json::from_slice(&bytes)
                    .context("garbled answer from the helper process")?;
                reply.map_err(anyhow::Error::msg)
            }
        }
    }
}

/// Waits for the child to exit, at most `grace`; a child still running
/// then is left to init, which reaps it once the hook has exited.
fn reap_within(child: Pid, grace: Duration) {
    let deadline = Instant::now() + grace;
    loop {
        match waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR)
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => return,
        }
    }
}

fn read_until(fd: OwnedFd, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut file = std::fs::File::from(fd);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no answer within {} ms", timeout.as_millis());
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(anyhow!("poll: {e}")),
        }
        match file.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > 1 << 20 {
                    bail!("answer from the helper process is too large");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the helper's answer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entering a mount namespace (even our own) needs CAP_SYS_ADMIN.
    fn me() -> Option<ContainerProcess> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: entering a mount namespace needs root");
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            return None;
        }
        Some(ContainerProcess::open(std::process::id() as i32).unwrap())
    }

    #[test]
    fn answer_comes_back() {
        let Some(p) = me() else { return };
        let v: Vec<u32> = p
            .run(Duration::from_secs(5), |_| Ok(()), || Ok(vec![1, 2, 3]))
            .unwrap();
        assert_eq!(v, vec![1, 2, 3]);
    }

    #[test]
    fn errors_come_back_with_context() {
        let Some(p) = me() else { return };
        let err = p
            .run::<u8, _, _>(Duration::from_secs(5), |_| Ok(()), || Err(anyhow!("boom")))
            .unwrap_err();
        assert_eq!(err.to_string(), "boom");
        let err = p
            .run::<u8, _, _>(
                Duration::from_secs(5),
                |_| Err(anyhow!("no cgroup")),
                || Ok(1),
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot join the container's cgroup"),
            "{err}"
        );
    }

    #[test]
    fn a_hung_child_is_killed_at_the_deadline() {
        let Some(p) = me() else { return };
        let started = Instant::now();
        let err = p
            .run::<u8, _, _>(
                Duration::from_millis(300),
                |_| Ok(()),
                || {
                    std::thread::sleep(Duration::from_secs(30));
                    Ok(1)
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("no answer"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn missing_process_is_a_clear_error() {
        let err = ContainerProcess::open(i32::MAX).err().unwrap().to_string();
        assert!(err.contains("exited"), "{err}");
    }
}
