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

fn query_error(e: io::Error, path: &Path) -> anyhow::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "; bpf(2) was refused: the hook needs CAP_SYS_ADMIN (or CAP_BPF) in the host's \
             user namespace, which nested setups (a runtime inside a container or an LXC \
             guest) do not have — run the hook on the host, or give the container the device \
             through its spec (--device / linux.resources.devices)"
        }
        Some(libc::EINVAL) => {
            "; the kernel does not support querying cgroup BPF programs (needs Linux ≥ 4.15)"
        }
        _ => "",
    };
    anyhow!("BPF_PROG_QUERY on {} failed: {e}{hint}", path.display())
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
            .context("BPF_PROG_ATTACH (single-program mode)");
    }
    match host.attach(new, F_ALLOW_MULTI | F_REPLACE, Some(old)) {
        Ok(()) => Ok(()),
        // BPF_F_REPLACE arrived in Linux 5.6. Without it attach the copy
        // first, then detach the original: in between both run, and since
        // the copy allows a superset, access only ever widens to the target.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::debug!("BPF_F_REPLACE not supported; attaching then detaching");
            host.attach(new, F_ALLOW_MULTI, None)
                .context("BPF_PROG_ATTACH (ALLOW_MULTI)")?;
            if let Err(e) = host.detach(old) {
                // Leave things as they were rather than with two programs.
                let _ = host.detach(new);
                return Err(anyhow!(e).context("BPF_PROG_DETACH of the original program"));
            }
            Ok(())
        }
        Err(e) => Err(anyhow!(e).context("BPF_PROG_ATTACH (ALLOW_MULTI|REPLACE)")),
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
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::super::bpf::filter::deny_by_default;
    use super::super::bpf::insn::R6;
    use super::super::bpf::sys::F_ALLOW_OVERRIDE;
    use super::*;
    use crate::rule::DeviceRule;

    const TPM: DeviceAccess = DeviceAccess {
        major: 253,
        minor: 65536,
    };

    /// An in-memory cgroup with the kernel's attach semantics.
    #[derive(Default)]
    struct Fake {
        flags: u32,
        attached: RefCell<Vec<u32>>,
        inherited: Vec<u32>,
        programs: RefCell<HashMap<u32, Vec<Insn>>>,
        maps: HashMap<u32, u32>,
        next_id: RefCell<u32>,
        no_replace: bool,
        query_errno: Option<i32>,
        /// Loads fail once this many have succeeded.
        loads_before_failure: Option<usize>,
        log: RefCell<Vec<String>>,
    }

    impl Fake {
        fn with(flags: u32, progs: Vec<Vec<Insn>>) -> Fake {
            let fake = Fake {
                flags,
                next_id: RefCell::new(100),
                ..Default::default()
            };
            for insns in progs {
                let id = fake.add(insns);
                fake.attached.borrow_mut().push(id);
            }
            fake
        }

        fn add(&self, insns: Vec<Insn>) -> u32 {
            let mut next = self.next_id.borrow_mut();
            *next += 1;
            self.programs.borrow_mut().insert(*next, insns);
            *next
        }

        fn attached_insns(&self) -> Vec<Vec<Insn>> {
            let progs = self.programs.borrow();
            self.attached
                .borrow()
                .iter()
                .map(|id| progs[id].clone())
                .collect()
        }
    }

    fn errno(e: i32) -> io::Error {
        io::Error::from_raw_os_error(e)
    }

    impl ProgramHost for Fake {
        type Prog = u32;

        fn attached(&self) -> io::Result<Attached> {
            if let Some(e) = self.query_errno {
                return Err(errno(e));
            }
            Ok(Attached {
                flags: self.flags,
                ids: self.attached.borrow().clone(),
            })
        }

        fn effective(&self) -> io::Result<Vec<u32>> {
            let mut ids = self.inherited.clone();
            ids.extend(self.attached.borrow().iter());
            Ok(ids)
        }

        fn open(&self, id: u32) -> Result<Program<u32>> {
            let insns = self
                .programs
                .borrow()
                .get(&id)
                .cloned()
                .context("no such program")?;
            Ok(Program {
                handle: id,
                insns,
                nr_map_ids: self.maps.get(&id).copied().unwrap_or(0),
            })
        }

        fn load(&self, insns: &[Insn]) -> Result<u32> {
            let loads = self.log.borrow().iter().filter(|l| *l == "load").count();
            if self.loads_before_failure.is_some_and(|n| loads >= n) {
                bail!("the verifier said no");
            }
            self.log.borrow_mut().push("load".into());
            Ok(self.add(insns.to_vec()))
        }

        fn attach(&self, prog: &u32, flags: u32, replace: Option<&u32>) -> io::Result<()> {
            self.log
                .borrow_mut()
                .push(format!("attach {prog} {flags} {replace:?}"));
            let mut attached = self.attached.borrow_mut();
            if flags & F_ALLOW_MULTI == 0 {
                attached.clear();
                attached.push(*prog);
                return Ok(());
            }
            if flags & F_REPLACE != 0 {
                if self.no_replace {
                    return Err(errno(libc::EINVAL));
                }
                let old = replace.expect("replace fd with F_REPLACE");
                let slot = attached
                    .iter_mut()
                    .find(|id| *id == old)
                    .ok_or(errno(libc::ENOENT))?;
                *slot = *prog;
                return Ok(());
            }
            if attached.contains(prog) {
                return Err(errno(libc::EEXIST));
            }
            attached.push(*prog);
            Ok(())
        }

        fn detach(&self, prog: &u32) -> io::Result<()> {
            self.log.borrow_mut().push(format!("detach {prog}"));
            let mut attached = self.attached.borrow_mut();
            let before = attached.len();
            attached.retain(|id| id != prog);
            if attached.len() == before {
                return Err(errno(libc::ENOENT));
            }
            Ok(())
        }
    }

    fn runtime_program() -> Vec<Insn> {
        deny_by_default(&[DeviceRule::allow_char(1, 3), DeviceRule::allow_char(1, 5)]).unwrap()
    }

    fn allows_tpm(insns: &[Insn]) -> bool {
        patch::allows_read_write(insns, &TPM).unwrap()
    }

    fn path() -> &'static Path {
        Path::new("/sys/fs/cgroup/test.scope")
    }

    #[test]
    fn nothing_attached_is_unrestricted() {
        let fake = Fake::with(0, vec![]);
        assert_eq!(
            allow(&fake, path(), &TPM).unwrap().0,
            AllowOutcome::Unrestricted
        );
        assert!(fake.log.borrow().is_empty());
    }

    #[test]
    fn patches_and_swaps_in_place_then_is_idempotent() {
        let fake = Fake::with(F_ALLOW_MULTI, vec![runtime_program()]);
        assert_eq!(allow(&fake, path(), &TPM).unwrap().0, AllowOutcome::Added);
        assert_eq!(
            *fake.log.borrow(),
            [
                "load",
                &format!("attach 102 {} Some(101)", F_ALLOW_MULTI | F_REPLACE)
            ]
        );
        let progs = fake.attached_insns();
        assert_eq!(progs.len(), 1);
        assert!(patch::starts_with_allow_block(&progs[0], &TPM));

        fake.log.borrow_mut().clear();
        assert_eq!(
            allow(&fake, path(), &TPM).unwrap().0,
            AllowOutcome::AlreadyAllowed
        );
        assert!(fake.log.borrow().is_empty());
        assert_eq!(fake.attached_insns().len(), 1);
    }

    #[test]
    fn revoke_puts_the_originals_back() {
        let second = deny_by_default(&[DeviceRule::allow_char(1, 3)]).unwrap();
        let fake = Fake::with(F_ALLOW_MULTI, vec![runtime_program(), second]);
        let before = fake.attached_insns();
        let (outcome, swapped) = allow(&fake, path(), &TPM).unwrap();
        assert_eq!(outcome, AllowOutcome::Added);
        assert!(fake.attached_insns().iter().all(|p| allows_tpm(p)));
        revoke(&fake, &swapped).unwrap();
        assert_eq!(fake.attached_insns(), before);
        assert!(!fake.attached_insns().iter().any(|p| allows_tpm(p)));
    }

    #[test]
    fn a_failure_half_way_restores_what_was_swapped() {
        let second = deny_by_default(&[DeviceRule::allow_char(1, 3)]).unwrap();
        let mut fake = Fake::with(F_ALLOW_MULTI, vec![runtime_program(), second]);
        fake.loads_before_failure = Some(1);
        let before = fake.attached_insns();
        let err = format!("{:#}", allow(&fake, path(), &TPM).err().unwrap());
        assert!(err.contains("verifier"), "{err}");
        assert_eq!(fake.attached_insns(), before, "left as it was");
    }

    #[test]
    fn patches_only_the_programs_that_deny() {
        let permissive = deny_by_default(&[DeviceRule::allow_char(253, 65536)]).unwrap();
        let fake = Fake::with(F_ALLOW_MULTI, vec![permissive.clone(), runtime_program()]);
        assert_eq!(allow(&fake, path(), &TPM).unwrap().0, AllowOutcome::Added);
        let progs = fake.attached_insns();
        assert_eq!(progs.len(), 2);
        assert_eq!(progs[0], permissive);
        assert!(progs.iter().all(|p| allows_tpm(p)));
    }

    #[test]
    fn falls_back_to_attach_then_detach_without_replace() {
        let mut fake = Fake::with(F_ALLOW_MULTI, vec![runtime_program()]);
        fake.no_replace = true;
        assert_eq!(allow(&fake, path(), &TPM).unwrap().0, AllowOutcome::Added);
        assert_eq!(
            *fake.log.borrow(),
            [
                "load".to_string(),
                format!("attach 102 {} Some(101)", F_ALLOW_MULTI | F_REPLACE),
                format!("attach 102 {F_ALLOW_MULTI} None"),
                "detach 101".to_string(),
            ]
        );
        assert_eq!(*fake.attached.borrow(), [102]);
    }

    #[test]
    fn single_program_modes_are_replaced_by_attaching() {
        for flags in [0, F_ALLOW_OVERRIDE] {
            let fake = Fake::with(flags, vec![runtime_program()]);
            assert_eq!(allow(&fake, path(), &TPM).unwrap().0, AllowOutcome::Added);
            assert_eq!(
                *fake.log.borrow(),
                ["load".to_string(), format!("attach 102 {flags} None")]
            );
            assert!(allows_tpm(&fake.attached_insns()[0]));
        }
    }

    #[test]
    fn eperm_explains_nested_setups() {
        let mut fake = Fake::with(F_ALLOW_MULTI, vec![]);
        fake.query_errno = Some(libc::EPERM);
        let err = format!("{:#}", allow(&fake, path(), &TPM).unwrap_err());
        assert!(err.contains("test.scope"), "{err}");
        assert!(err.contains("nested"), "{err}");
        assert!(err.contains("--device"), "{err}");
    }

    #[test]
    fn refuses_without_touching_anything() {
        // One patchable program and one with a helper call: nothing changes.
        let mut with_call = vec![Insn::call(0, 14)];
        with_call.extend(runtime_program());
        let fake = Fake::with(F_ALLOW_MULTI, vec![runtime_program(), with_call]);
        let err = format!("{:#}", allow(&fake, path(), &TPM).unwrap_err());
        assert!(
            err.contains("device program 102") && err.contains("calls a helper"),
            "{err}"
        );
        assert!(fake.log.borrow().is_empty());

        // A program that uses a map (seen in its info, not only its code).
        let mut fake = Fake::with(F_ALLOW_MULTI, vec![runtime_program()]);
        fake.maps.insert(101, 1);
        let err = format!("{:#}", allow(&fake, path(), &TPM).unwrap_err());
        assert!(err.contains("map"), "{err}");
        assert!(fake.log.borrow().is_empty());

        let mut with_map = Insn::ld_imm64(R6, 1, 3).to_vec();
        with_map.extend(runtime_program());
        let fake = Fake::with(F_ALLOW_MULTI, vec![with_map]);
        assert!(allow(&fake, path(), &TPM).is_err());
        assert!(fake.log.borrow().is_empty());
    }

    #[test]
    fn inherited_programs_are_left_alone() {
        let mut fake = Fake::with(F_ALLOW_MULTI, vec![runtime_program()]);
        let ancestor = fake.add(runtime_program());
        fake.inherited = vec![ancestor];
        assert_eq!(allow(&fake, path(), &TPM).unwrap().0, AllowOutcome::Added);
        assert_eq!(fake.attached.borrow().len(), 1);
        assert_eq!(fake.programs.borrow()[&ancestor], runtime_program());
    }
}
