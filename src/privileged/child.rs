//! A bounded child of the hook: a forked process that runs one task (or
//! execs one helper program) and answers over a pipe as JSON, the
//! `Result<T, String>` of the task.
//!
//! The parent bounds the wait and kills the child (by its own pid) when the
//! deadline passes. The child dies with the hook (`PR_SET_PDEATHSIG`) and
//! holds none of the runtime's pipes, so a runtime that kills the hook at
//! its timeout is not kept waiting and leaves nothing running in the
//! container's cgroup. A program run this way (`run_program`) writes its
//! answer on its standard output, which is the pipe.
//!
//! Hand-written over fork(2) rather than `std::process` because a task runs
//! Rust code in the child (it enters the container's namespaces and takes
//! its credentials), which `Command` has no way to express.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Runs `task` in a forked child; its result must arrive within `timeout`.
pub fn run<T, F>(timeout: Duration, task: F) -> anyhow::Result<T>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> anyhow::Result<T>,
{
    fork_with_reply(timeout, |reply| write_reply(&reply, task()))
}

/// Runs `program` with `args` in a forked child (on the host, with the
/// hook's credentials); it must print the JSON of `Result<T, String>` on its
/// standard output within `timeout`.
pub fn run_program<T, S>(timeout: Duration, program: &Path, args: &[S]) -> anyhow::Result<T>
where
    T: DeserializeOwned,
    S: AsRef<OsStr>,
{
    fork_with_reply(timeout, |reply| {
        let out = match reply.try_clone() {
            Ok(fd) => Stdio::from(fd),
            Err(e) => return write_reply::<()>(&reply, Err(anyhow!("dup: {e}"))),
        };
        let error = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .exec();
        write_reply::<()>(
            &reply,
            Err(anyhow!("cannot run {}: {error}", program.display())),
        )
    })
}

/// An answer as a child (or a helper program, on its standard output)
/// gives it: the JSON of `Result<T, String>`, the error with its context.
pub fn encode_answer<T: Serialize>(result: anyhow::Result<T>) -> serde_json::Result<Vec<u8>> {
    let reply: Result<T, String> = result.map_err(|e| format!("{e:#}"));
    serde_json::to_vec(&reply)
}

/// The answer into the pipe; the child's exit code.
fn write_reply<T: Serialize>(pipe: &OwnedFd, result: anyhow::Result<T>) -> i32 {
    match encode_answer(result) {
        Ok(bytes) => match nix::unistd::write(pipe, &bytes) {
            Ok(_) => 0,
            Err(_) => 2,
        },
        Err(_) => 3,
    }
}

/// Forks; the child is tied to the hook (its standard descriptors on
/// /dev/null) and runs `in_child` with the pipe's write end, then exits
/// with the code it returns. The parent reads the answer.
fn fork_with_reply<T, F>(timeout: Duration, in_child: F) -> anyhow::Result<T>
where
    T: DeserializeOwned,
    F: FnOnce(OwnedFd) -> i32,
{
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    ensure_single_threaded()?;
    let parent = nix::unistd::getpid();
    // SAFETY: the process has one thread (checked just above), so the
    // child starts with a consistent heap and no lock held by another
    // thread, and may run ordinary Rust code.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            drop(read_end);
            let code = match tie_to_parent(parent) {
                Ok(()) => in_child(write_end),
                Err(e) => write_reply::<()>(&write_end, Err(e)),
            };
            // SAFETY: _exit only ends the process; it skips destructors
            // and atexit handlers, which belong to the parent.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let reply = read_until(read_end, timeout);
            if reply.is_err() {
                let _ = kill(child, Signal::SIGKILL);
                // A child stuck in the TPM driver may take long to die
                // (closing a device waits for the command in flight);
                // the hook's answer must not wait for it, and the
                // container's cgroup must not keep it: it goes back to
                // the hook's own cgroup until the kernel lets it die.
                if !reap_within(child, Duration::from_secs(1)) {
                    evict(child);
                }
            } else {
                reap_within(child, Duration::from_secs(5));
            }
            let bytes = reply?;
            if bytes.is_empty() {
                bail!("the helper process died without an answer");
            }
            let reply: Result<T, String> =
                serde_json::from_slice(&bytes).context("garbled answer from the helper process")?;
            reply.map_err(anyhow::Error::msg)
        }
    }
}

/// fork() in a multi-threaded process leaves the child with other threads'
/// locks held forever; the hook has no threads, and this makes sure.
fn ensure_single_threaded() -> anyhow::Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .ok_or_else(|| anyhow!("/proc/self/status has no Threads line"))?;
    if threads != 1 {
        bail!("internal error: acting as the container needs a single-threaded process, this one has {threads} threads");
    }
    Ok(())
}

/// In the child: die with the parent, and let go of the runtime's pipes.
fn tie_to_parent(parent: Pid) -> anyhow::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("PR_SET_PDEATHSIG")?;
    // The parent may have died before the line above took effect.
    if nix::unistd::getppid() != parent {
        bail!("the hook exited before its helper started");
    }
    let null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .context("cannot open /dev/null")?;
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors, which this child owns;
        // no Rust object holds them.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), target) } < 0 {
            return Err(std::io::Error::last_os_error()).context("dup2 /dev/null");
        }
    }
    Ok(())
}

/// Waits for the child to exit, at most `grace`; false when it is still
/// there, to be reaped by init once the hook has exited.
fn reap_within(child: Pid, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        match waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR)
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => return false,
            _ => return true,
        }
    }
}

/// Moves a killed child that has not died yet into the hook's own cgroup.
fn evict(child: Pid) {
    let moved =
        devcgroup::locate(std::process::id() as i32).and_then(|own| own.join(child.as_raw()));
    match moved {
        Ok(()) => tracing::warn!(pid = child.as_raw(), "a helper stuck in the kernel was moved out of the container's cgroup; it ends when its TPM command returns"),
        Err(e) => tracing::error!(pid = child.as_raw(), error = %format!("{e:#}"), "a helper stuck in the kernel could not be moved out of the container's cgroup"),
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

    // Forking needs a single-threaded process, which the test harness is
    // not: the child-process tests live in tests/container_child.rs, which
    // runs without the harness.

    #[test]
    fn the_harness_is_refused_as_multi_threaded() {
        let err = ensure_single_threaded().unwrap_err().to_string();
        assert!(err.contains("threads"), "{err}");
    }
}
