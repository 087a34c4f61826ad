//! cgroup v1 `devices` controller, for real: needs root and a mounted v1
//! devices hierarchy (legacy or hybrid hosts). Pure v2 hosts skip it — the
//! parsing and decisions are unit-tested, and v1 end-to-end runs in the lab.
//!
//! The test makes `<devices>/oci-tpm-hook-test.<pid>.<n>`, sets it up like
//! a runtime (deny all, allow /dev/null), and checks real `open()` results
//! from a child process moved into it. A guard removes the directory.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use devcgroup::{self, mountinfo, v1, AllowOutcome, CgroupVersion, ContainerCgroup, DeviceAccess};
use nix::errno::Errno;

#[path = "support/cgroup_child.rs"]
mod cgroup_child;
use cgroup_child::open_in;

const ZERO_DEV: DeviceAccess = DeviceAccess { major: 1, minor: 5 };

fn say_skipped(reason: &str) {
    // Straight to stderr: the harness captures eprintln! of passing tests.
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {reason} ***\n");
}

/// `None` (after saying why) when the test cannot run here.
fn devices_mount() -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        if std::env::var_os("CI").is_some() {
            panic!("not root; CI is set, so the privileged cgroup tests must run");
        }
        say_skipped("not root");
        return None;
    }
    let text = fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    let mounts = mountinfo::parse(&text).expect("parsing mountinfo");
    let devices = ["devices".to_string()];
    match mounts
        .iter()
        .find(|m| m.is_cgroup1_with(&devices) && m.root == "/")
    {
        Some(m) => Some(m.mount_point.clone()),
        // Not a failure even in CI: modern hosts have no v1 at all.
        None => {
            say_skipped("no cgroup v1 devices hierarchy mounted");
            None
        }
    }
}

struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(mount: &Path) -> TestCgroup {
        let dir = mount.join(format!("oci-tpm-hook-test.{}", std::process::id()));
        fs::create_dir(&dir).expect("creating the test cgroup");
        TestCgroup(dir)
    }

    fn write(&self, file: &str, line: &str) {
        fs::write(self.0.join(file), line).unwrap_or_else(|e| panic!("{file} <- {line}: {e}"));
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir(&self.0) {
            eprintln!("cleanup: removing {}: {e}", self.0.display());
        }
    }
}

#[test]
fn grants_a_device_through_devices_allow() {
    let Some(mount) = devices_mount() else { return };
    let t = TestCgroup::new(&mount);
    // What a runtime does: deny everything, then allow what the spec lists.
    t.write("devices.deny", "a");
    t.write("devices.allow", "c 1:3 rwm");
    let cg = ContainerCgroup::v1(&t.0, vec![]);

    let found = open_in(&cg, "/dev/null", |pid| {
        let found = devcgroup::locate(pid).unwrap();
        assert_eq!(found.version(), CgroupVersion::V1);
        assert_eq!(found.device_dir(), t.0);
    });
    assert_eq!(found, Ok(()));
    assert_eq!(open_in(&cg, "/dev/zero", |_| {}), Err(Errno::EPERM));

    // Granted, then taken back: exactly as before.
    let grant = cg.allow_device(&ZERO_DEV).unwrap();
    assert_eq!(grant.outcome, AllowOutcome::Added);
    assert_eq!(open_in(&cg, "/dev/zero", |_| {}), Ok(()));
    grant.revoke().unwrap();
    assert_eq!(open_in(&cg, "/dev/zero", |_| {}), Err(Errno::EPERM));
    assert_eq!(open_in(&cg, "/dev/null", |_| {}), Ok(()));

    assert_eq!(
        cg.allow_device(&ZERO_DEV).unwrap().outcome,
        AllowOutcome::Added
    );
    assert_eq!(open_in(&cg, "/dev/zero", |_| {}), Ok(()));
    assert_eq!(open_in(&cg, "/dev/full", |_| {}), Err(Errno::EPERM));

    let list = fs::read_to_string(t.0.join("devices.list")).unwrap();
    let entries = v1::parse_devices_list(&list).unwrap();
    assert_eq!(v1::coverage(&entries, &ZERO_DEV), v1::Coverage::Covered);
    assert_eq!(list.lines().filter(|l| l.starts_with("c 1:5 ")).count(), 1);

    assert_eq!(
        cg.allow_device(&ZERO_DEV).unwrap().outcome,
        AllowOutcome::AlreadyAllowed
    );
    assert_eq!(
        fs::read_to_string(t.0.join("devices.list")).unwrap(),
        list,
        "nothing changed the second time"
    );

    // Switched to default-allow, the cgroup lists only `a *:* rwm`.
    t.write("devices.allow", "a");
    assert_eq!(
        cg.allow_device(&ZERO_DEV).unwrap().outcome,
        AllowOutcome::Unrestricted
    );
}
