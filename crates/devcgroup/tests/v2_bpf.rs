//! cgroup v2 device programs, for real: needs root and a cgroup2 mount
//! (a pure v2 system, or the unified hierarchy of a hybrid one).
//!
//! Each test makes its own cgroup `<cgroup2>/oci-tpm-hook-test.<pid>.<n>/c`,
//! attaches a deny-by-default program like a runtime would, and checks real
//! `open()` results from a child process moved into that cgroup. A guard
//! detaches the programs and removes the directories.

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use devcgroup::bpf::filter::deny_by_default;
use devcgroup::bpf::insn::{Insn, R0};
use devcgroup::bpf::patch;
use devcgroup::bpf::sys::{self, ATTACH_CGROUP_DEVICE, F_ALLOW_MULTI};
use devcgroup::bpf::unblind::unblind;
use devcgroup::rule::DeviceRule;
use devcgroup::{self, mountinfo, AllowOutcome, CgroupVersion, ContainerCgroup, DeviceAccess};
use nix::errno::Errno;

#[path = "support/cgroup_child.rs"]
mod cgroup_child;
use cgroup_child::open_in;

const NULL: &str = "/dev/null"; // 1:3, allowed by the "runtime"
const ZERO: &str = "/dev/zero"; // 1:5, what we grant
const FULL: &str = "/dev/full"; // 1:7, stays denied
const ZERO_DEV: DeviceAccess = DeviceAccess { major: 1, minor: 5 };

/// `None` (after saying why) when the tests cannot run here.
fn cgroup2_mount() -> Option<PathBuf> {
    let skip = |reason: &str| {
        if std::env::var_os("CI").is_some() {
            panic!("{reason}; CI is set, so the privileged cgroup tests must run");
        }
        // Straight to stderr: the test harness captures eprintln! output
        // of passing tests, and a skip must not go unnoticed.
        let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {reason} ***\n");
        None
    };
    if !nix::unistd::geteuid().is_root() {
        return skip("not root");
    }
    let text = fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    let mounts = mountinfo::parse(&text).expect("parsing mountinfo");
    match mounts.iter().find(|m| m.is_cgroup2() && m.root == "/") {
        Some(m) => Some(m.mount_point.clone()),
        None => skip("no cgroup2 filesystem mounted"),
    }
}

/// A test-owned cgroup (parent dir + child `c`), torn down on drop.
struct TestCgroup {
    parent: PathBuf,
    child: PathBuf,
}

impl TestCgroup {
    fn new(mount: &Path) -> TestCgroup {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "oci-tpm-hook-test.{}.{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let parent = mount.join(name);
        let child = parent.join("c");
        fs::create_dir(&parent).expect("creating the test cgroup");
        let guard = TestCgroup { parent, child };
        fs::create_dir(&guard.child).expect("creating the child cgroup");
        guard
    }

    fn fd(&self) -> OwnedFd {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&self.child)
            .unwrap()
            .into()
    }

    fn attach(&self, insns: &[Insn], flags: u32) {
        let prog = sys::prog_load(insns, "test_runtime").unwrap_or_else(|e| panic!("{e}"));
        sys::prog_attach(
            self.fd().as_fd(),
            prog.as_fd(),
            ATTACH_CGROUP_DEVICE,
            flags,
            None,
        )
        .unwrap();
    }

    fn attached(&self) -> sys::Attached {
        sys::prog_query(self.fd().as_fd(), ATTACH_CGROUP_DEVICE, 0).unwrap()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Ok(attached) = sys::prog_query(self.fd().as_fd(), ATTACH_CGROUP_DEVICE, 0) {
            for id in attached.ids {
                if let Ok(prog) = sys::prog_get_fd_by_id(id) {
                    let _ = sys::prog_detach(self.fd().as_fd(), prog.as_fd(), ATTACH_CGROUP_DEVICE);
                }
            }
        }
        for dir in [&self.child, &self.parent] {
            if let Err(e) = fs::remove_dir(dir) {
                eprintln!("cleanup: removing {}: {e}", dir.display());
            }
        }
    }
}

/// /dev/zero is refused, then granted; /dev/full stays refused.
fn grants_zero_and_only_zero(cg: &ContainerCgroup) {
    assert_eq!(open_in(cg, ZERO, |_| {}), Err(Errno::EPERM));
    assert_eq!(
        cg.allow_device(&ZERO_DEV).unwrap().outcome,
        AllowOutcome::Added
    );
    assert_eq!(open_in(cg, ZERO, |_| {}), Ok(()));
    assert_eq!(open_in(cg, FULL, |_| {}), Err(Errno::EPERM));
}

fn runtime_program() -> Vec<Insn> {
    deny_by_default(&[DeviceRule::allow_char(1, 3)]).unwrap()
}

#[test]
fn grants_a_device_by_patching_the_attached_program() {
    let Some(mount) = cgroup2_mount() else { return };
    let t = TestCgroup::new(&mount);
    t.attach(&runtime_program(), F_ALLOW_MULTI);
    let cg = ContainerCgroup::v2(&t.child);

    // The child really is in our cgroup, and locate() finds it there.
    let seen = open_in(&cg, NULL, |pid| {
        let found = devcgroup::locate(pid).unwrap();
        match found.version() {
            CgroupVersion::V2 => assert_eq!(found.device_dir(), t.child),
            // Hybrid host: v1 devices decide, the unified dir is joined too.
            CgroupVersion::V1 => assert!(found.dirs().contains(&t.child), "{found:?}"),
        }
    });
    assert_eq!(seen, Ok(()));
    assert_eq!(open_in(&cg, ZERO, |_| {}), Err(Errno::EPERM));
    assert_eq!(open_in(&cg, FULL, |_| {}), Err(Errno::EPERM));
    let before = t.attached();

    // Granted, then taken back: the runtime's own program is attached again.
    let grant = cg.allow_device(&ZERO_DEV).unwrap();
    assert_eq!(grant.outcome, AllowOutcome::Added);
    assert_eq!(open_in(&cg, ZERO, |_| {}), Ok(()));
    grant.revoke().unwrap();
    assert_eq!(t.attached(), before, "the original program is back");
    assert_eq!(open_in(&cg, ZERO, |_| {}), Err(Errno::EPERM));
    assert_eq!(open_in(&cg, NULL, |_| {}), Ok(()));

    assert_eq!(
        cg.allow_device(&ZERO_DEV).unwrap().outcome,
        AllowOutcome::Added
    );
    assert_eq!(open_in(&cg, ZERO, |_| {}), Ok(()));
    assert_eq!(open_in(&cg, NULL, |_| {}), Ok(()));
    assert_eq!(
        open_in(&cg, FULL, |_| {}),
        Err(Errno::EPERM),
        "the original rules still decide"
    );

    let after = t.attached();
    assert_eq!(after.ids.len(), 1);
    assert_ne!(after.ids, before.ids, "the program was swapped");
    assert_eq!(after.flags, F_ALLOW_MULTI);
    let prog = sys::prog_get_fd_by_id(after.ids[0]).unwrap();
    let info = sys::prog_info(prog.as_fd()).unwrap();
    // (On hardened hosts the dump is blinded; unblind is a no-op otherwise.)
    let insns = unblind(&info.insns).unwrap();
    assert!(patch::starts_with_allow_block(&insns, &ZERO_DEV));
    assert_eq!(info.name, devcgroup::PROGRAM_NAME);

    // Idempotent: no second block, no second program.
    assert_eq!(
        cg.allow_device(&ZERO_DEV).unwrap().outcome,
        AllowOutcome::AlreadyAllowed
    );
    assert_eq!(t.attached(), after);
    assert_eq!(open_in(&cg, ZERO, |_| {}), Ok(()));
}

#[test]
fn no_program_means_unrestricted() {
    let Some(mount) = cgroup2_mount() else { return };
    let t = TestCgroup::new(&mount);
    let cg = ContainerCgroup::v2(&t.child);
    assert_eq!(
        cg.allow_device(&ZERO_DEV).unwrap().outcome,
        AllowOutcome::Unrestricted
    );
    assert!(t.attached().ids.is_empty());
    assert_eq!(open_in(&cg, ZERO, |_| {}), Ok(()));
}

#[test]
fn single_program_mode_is_replaced() {
    let Some(mount) = cgroup2_mount() else { return };
    let t = TestCgroup::new(&mount);
    t.attach(&runtime_program(), 0);
    let cg = ContainerCgroup::v2(&t.child);
    grants_zero_and_only_zero(&cg);
    let attached = t.attached();
    assert_eq!((attached.ids.len(), attached.flags), (1, 0));
    assert_eq!(
        cg.allow_device(&ZERO_DEV).unwrap().outcome,
        AllowOutcome::AlreadyAllowed
    );
}

#[test]
fn a_program_that_already_allows_is_left_alone() {
    let Some(mount) = cgroup2_mount() else { return };
    let t = TestCgroup::new(&mount);
    t.attach(
        &deny_by_default(&[DeviceRule::allow_char(1, 5)]).unwrap(),
        F_ALLOW_MULTI,
    );
    let before = t.attached();
    let cg = ContainerCgroup::v2(&t.child);
    assert_eq!(
        cg.allow_device(&ZERO_DEV).unwrap().outcome,
        AllowOutcome::AlreadyAllowed
    );
    assert_eq!(t.attached(), before);
}

#[test]
fn programs_with_calls_are_refused_and_kept() {
    let Some(mount) = cgroup2_mount() else { return };
    let t = TestCgroup::new(&mount);
    // Deny everything, after calling bpf_ktime_get_ns (helper 5).
    t.attach(
        &[Insn::call(0, 5), Insn::mov64_imm(R0, 0), Insn::exit()],
        F_ALLOW_MULTI,
    );
    let before = t.attached();
    let cg = ContainerCgroup::v2(&t.child);
    let err = format!("{:#}", cg.allow_device(&ZERO_DEV).unwrap_err());
    assert!(err.contains("calls a helper"), "{err}");
    assert!(
        err.contains("c 1:5 rw") && err.contains(t.child.to_str().unwrap()),
        "{err}"
    );
    assert_eq!(t.attached(), before);
    assert_eq!(open_in(&cg, ZERO, |_| {}), Err(Errno::EPERM));
}

#[test]
fn load_errors_carry_the_verifier_log() {
    if cgroup2_mount().is_none() {
        return;
    }
    // Returns R0 without ever setting it.
    let err = sys::prog_load(&[Insn::exit()], "test_bad").unwrap_err();
    assert_eq!(err.error.raw_os_error(), Some(libc::EACCES), "{err}");
    assert!(err.to_string().contains("R0 !read_ok"), "{err}");
}

/// Hardened hosts (`net.core.bpf_jit_harden=2`) dump programs with blinded
/// constants; runs only there (set the sysctl to exercise it).
#[test]
fn blinded_programs_are_patched() {
    let Some(mount) = cgroup2_mount() else { return };
    let sysctl = |name: &str| fs::read_to_string(format!("/proc/sys/net/core/{name}")).ok();
    if sysctl("bpf_jit_harden").as_deref().map(str::trim) != Some("2")
        || sysctl("bpf_jit_enable").as_deref().map(str::trim) == Some("0")
    {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: blinded_programs_are_patched needs net.core.bpf_jit_harden=2 and the JIT on ***\n"
        );
        return;
    }
    let t = TestCgroup::new(&mount);
    t.attach(&runtime_program(), F_ALLOW_MULTI);
    let id = t.attached().ids[0];
    let dump = sys::prog_info(sys::prog_get_fd_by_id(id).unwrap().as_fd()).unwrap();
    assert!(
        dump.insns.iter().any(|i| i.dst() == 11 || i.src() == 11),
        "the kernel blinded the program"
    );
    let cg = ContainerCgroup::v2(&t.child);
    grants_zero_and_only_zero(&cg);
    assert_eq!(
        cg.allow_device(&ZERO_DEV).unwrap().outcome,
        AllowOutcome::AlreadyAllowed
    );
    assert_eq!(t.attached().ids.len(), 1);
}
