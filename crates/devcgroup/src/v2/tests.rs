//! Tests of the parent module, kept apart so that module reads as code.

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
    /// Every attach fails with this errno (a security module's refusal).
    attach_errno: Option<i32>,
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
        if let Some(e) = self.attach_errno {
            return Err(errno(e));
        }
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
fn a_refused_attach_says_why_and_leaves_the_runtimes_program() {
    for flags in [F_ALLOW_MULTI, 0] {
        let mut fake = Fake::with(flags, vec![runtime_program()]);
        fake.attach_errno = Some(libc::EPERM);
        let err = format!("{:#}", allow(&fake, path(), &TPM).unwrap_err());
        assert!(err.contains("BPF_PROG_ATTACH"), "{err}");
        assert!(err.contains("Operation not permitted"), "{err}");
        assert!(err.contains("security module"), "{err}");
        assert!(err.contains("--device"), "{err}");
        assert_eq!(*fake.attached.borrow(), [101], "flags {flags}");
        assert!(!allows_tpm(&fake.attached_insns()[0]));
    }
    // Refused for another reason: no hint about privileges.
    let mut fake = Fake::with(F_ALLOW_MULTI, vec![runtime_program()]);
    fake.attach_errno = Some(libc::ENOMEM);
    let err = format!("{:#}", allow(&fake, path(), &TPM).unwrap_err());
    assert!(!err.contains("security module"), "{err}");
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
