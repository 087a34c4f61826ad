//! cgroup v2: grant a device by patching the attached device programs.
//!
//! The steps (query, read, decide, load, swap) run against [`ProgramHost`],
//! so the decisions — what counts as already allowed, when to refuse, how
//! to swap on old kernels — are unit-tested with a fake; [`KernelHost`] is
//! the thin `bpf(2)` implementation.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::bpf::insn::Insn;
use super::bpf::patch::{self, Plan};
use super::bpf::sys::{self, Attached, ATTACH_CGROUP_DEVICE, F_ALLOW_MULTI, F_REPLACE};
use super::{AllowOutcome, DeviceAccess};

/// Name given to the programs we load, so `bpftool prog` shows who made them.
pub const PROGRAM_NAME: &str = "oci_tpm_hook";

/// An attached program as read back from the kernel.
pub(crate) struct Program<P> {
    pub handle: P,
    pub insns: Vec<Insn>,
    pub nr_map_ids: u32,
}

/// The kernel operations the v2 path needs, for one cgroup.
pub(crate) trait ProgramHost {
    type Prog;
    /// Device programs attached to the cgroup itself.
    fn attached(&self) -> io::Result<Attached>;
    /// Ids of all device programs that decide for the cgroup, including
    /// those inherited from ancestors.
    fn effective(&self) -> io::Result<Vec<u32>>;
    fn open(&self, id: u32) -> Result<Program<Self::Prog>>;
    fn load(&self, insns: &[Insn]) -> Result<Self::Prog>;
    fn attach(&self, prog: &Self::Prog, flags: u32, replace: Option<&Self::Prog>)
        -> io::Result<()>;
    fn detach(&self, prog: &Self::Prog) -> io::Result<()>;
}

/// The programs [`allow`] swapped, kept so the grant can be taken back.
#[derive(Debug)]
pub(crate) struct Swapped<P> {
    flags: u32,
    /// (the runtime's original, our patched copy) for each replaced program.
    pairs: Vec<(P, P)>,
}

/// Grants read/write of `dev` to the cgroup behind `host`. `path` is only
/// used in messages.
pub(crate) fn allow<H: ProgramHost>(
    host: &H,
    path: &Path,
    dev: &DeviceAccess,
) -> Result<(AllowOutcome, Swapped<H::Prog>)> {
    let attached = host.attached().map_err(|e| query_error(e, path))?;
    check_inherited(host, path, dev, &attached.ids);
    let mut swapped = Swapped {
        flags: attached.flags,
        pairs: Vec::new(),
    };
    if attached.ids.is_empty() {
        return Ok((AllowOutcome::Unrestricted, swapped));
    }

    // Decide for every program before changing any, so a refusal leaves the
    // cgroup exactly as it was.
    let mut patches = Vec::new();
    for &id in &attached.ids {
        let prog = host
            .open(id)
            .with_context(|| format!("reading device program {id}"))?;
        if prog.nr_map_ids > 0 {
            bail!(
                "device program {id} uses {} BPF map(s); only self-contained programs can be \
                 patched — grant the device through the container spec instead",
                prog.nr_map_ids
            );
        }
        match patch::plan(&prog.insns, dev).with_context(|| format!("device program {id}"))? {
            Plan::AlreadyAllowed => {
                tracing::debug!(id, %dev, path = %path.display(), "device program already allows the device");
            }
            Plan::Patch(insns) => patches.push((id, prog.handle, insns)),
        }
    }
    if patches.is_empty() {
        return Ok((AllowOutcome::AlreadyAllowed, swapped));
    }

    for (id, old, insns) in patches {
        let new = host
            .load(&insns)
            .and_then(|new| {
                swap(host, attached.flags, &old, &new)?;
                Ok(new)
            })
            .with_context(|| format!("replacing device program {id}"));
        match new {
            Ok(new) => swapped.pairs.push((old, new)),
            Err(e) => {
                // All or nothing: put back the programs already swapped.
                if let Err(undo) = revoke(host, &swapped) {
                    tracing::warn!(error = %format!("{undo:#}"), path = %path.display(), "could not restore the original device programs");
                }
                return Err(e);
            }
        }
        tracing::debug!(id, %dev, path = %path.display(), "device program replaced by a patched copy");
    }
    Ok((AllowOutcome::Added, swapped))
}

/// Puts the runtime's original programs back in place of the patched
/// copies [`allow`] attached.
pub(crate) fn revoke<H: ProgramHost>(host: &H, swapped: &Swapped<H::Prog>) -> Result<()> {
    for (original, patched) in swapped.pairs.iter().rev() {
        swap(host, swapped.flags, patched, original)
            .context("putting the original device program back")?;
    }
    Ok(())
}

/// What to do when bpf(2) refuses the hook itself.
const BPF_REFUSED_HINT: &str =
    "; bpf(2) was refused: the hook needs CAP_SYS_ADMIN (or CAP_BPF) in \
     the host's user namespace, which nested setups (a runtime inside a container or an LXC \
     guest) do not have, and no security module (SELinux, AppArmor, lockdown) may forbid it — \
     run the hook on the host, or give the container the device through its spec (--device / \
     linux.resources.devices)";

fn is_refusal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

fn query_error(e: io::Error, path: &Path) -> anyhow::Error {
    let hint = if is_refusal(&e) {
        BPF_REFUSED_HINT
    } else if e.raw_os_error() == Some(libc::EINVAL) {
        "; the kernel does not support querying cgroup BPF programs (needs Linux ≥ 4.15)"
    } else {
        ""
    };
    anyhow!("BPF_PROG_QUERY on {} failed: {e}{hint}", path.display())
}

/// An attach that failed, with the hint when bpf(2) refused it (the query
/// passed, so something finer than the capability said no).
fn attach_error(e: io::Error, what: &str) -> anyhow::Error {
    let hint = if is_refusal(&e) { BPF_REFUSED_HINT } else { "" };
    anyhow!("{what} failed: {e}{hint}")
}

/// Programs attached to ancestors also decide, but they are shared with
/// other cgroups and are not ours to change. Say so when one of them is
/// known to deny the device: the self-test would otherwise fail with a bare
/// EPERM.
fn check_inherited<H: ProgramHost>(host: &H, path: &Path, dev: &DeviceAccess, own: &[u32]) {
    let effective = match host.effective() {
        Ok(ids) => ids,
        Err(e) => {
            tracing::debug!(error = %e, path = %path.display(), "effective device program query failed");
            return;
        }
    };
    for id in effective.into_iter().filter(|id| !own.contains(id)) {
        let verdict = host
            .open(id)
            .ok()
            .and_then(|p| patch::allows_read_write(&p.insns, dev).ok());
        if verdict != Some(true) {
            tracing::warn!(
                id,
                %dev,
                path = %path.display(),
                denies = verdict == Some(false),
                "a device program attached to an ancestor cgroup also decides and may deny the \
                 device; it is not modified"
            );
        }
    }
}

/// Puts `new` in place of `old`.
fn swap<H: ProgramHost>(host: &H, flags: u32, old: &H::Prog, new: &H::Prog) -> Result<()> {
    if flags & F_ALLOW_MULTI == 0 {
        // Single-program modes (flags 0 or ALLOW_OVERRIDE): attaching with
        // the same flags replaces the one program atomically.
        return host
            .attach(new, flags, None)
            .map_err(|e| attach_error(e, "BPF_PROG_ATTACH (single-program mode)"));
    }
    match host.attach(new, F_ALLOW_MULTI | F_REPLACE, Some(old)) {
        Ok(()) => Ok(()),
        // BPF_F_REPLACE arrived in Linux 5.6. Without it attach the copy
        // first, then detach the original: in between both run, and since
        // the copy allows a superset, access only ever widens to the target.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::debug!("BPF_F_REPLACE not supported; attaching then detaching");
            host.attach(new, F_ALLOW_MULTI, None)
                .map_err(|e| attach_error(e, "BPF_PROG_ATTACH (ALLOW_MULTI)"))?;
            if let Err(e) = host.detach(old) {
                // Leave things as they were rather than with two programs.
                let _ = host.detach(new);
                return Err(anyhow!(e).context("BPF_PROG_DETACH of the original program"));
            }
            Ok(())
        }
        Err(e) => Err(attach_error(e, "BPF_PROG_ATTACH (ALLOW_MULTI|REPLACE)")),
    }
}

/// [`ProgramHost`] on a real cgroup directory.
#[derive(Debug)]
pub(crate) struct KernelHost {
    cgroup: OwnedFd,
}

impl KernelHost {
    pub fn open(dir: &Path) -> Result<KernelHost> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)
            .with_context(|| format!("opening cgroup directory {}", dir.display()))?;
        Ok(KernelHost {
            cgroup: file.into(),
        })
    }
}

impl ProgramHost for KernelHost {
    type Prog = OwnedFd;

    fn attached(&self) -> io::Result<Attached> {
        sys::prog_query(self.cgroup.as_fd(), ATTACH_CGROUP_DEVICE, 0)
    }

    fn effective(&self) -> io::Result<Vec<u32>> {
        sys::prog_query(
            self.cgroup.as_fd(),
            ATTACH_CGROUP_DEVICE,
            sys::QUERY_EFFECTIVE,
        )
        .map(|a| a.ids)
    }

    fn open(&self, id: u32) -> Result<Program<OwnedFd>> {
        let fd = sys::prog_get_fd_by_id(id).context("BPF_PROG_GET_FD_BY_ID")?;
        let info = sys::prog_info(fd.as_fd()).context("BPF_OBJ_GET_INFO_BY_FD")?;
        if info.prog_type != sys::PROG_TYPE_CGROUP_DEVICE {
            bail!(
                "program {id} has type {}, not CGROUP_DEVICE",
                info.prog_type
            );
        }
        Ok(Program {
            handle: fd,
            insns: info.insns,
            nr_map_ids: info.nr_map_ids,
        })
    }

    fn load(&self, insns: &[Insn]) -> Result<OwnedFd> {
        Ok(sys::prog_load(insns, PROGRAM_NAME)?)
    }

    fn attach(&self, prog: &OwnedFd, flags: u32, replace: Option<&OwnedFd>) -> io::Result<()> {
        sys::prog_attach(
            self.cgroup.as_fd(),
            prog.as_fd(),
            ATTACH_CGROUP_DEVICE,
            flags,
            replace.map(|fd| fd.as_fd()),
        )
    }

    fn detach(&self, prog: &OwnedFd) -> io::Result<()> {
        sys::prog_detach(self.cgroup.as_fd(), prog.as_fd(), ATTACH_CGROUP_DEVICE)
    }
}

#[cfg(test)]
mod tests;
