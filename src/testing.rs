//! A stand-in host for tests: `/dev`, `/sys` and `/etc/group` in a temp
//! dir, with TPMs whose nodes are symlinks to `/dev/null` (1:3: a real
//! character device any user can stat). One for every test of the crate,
//! unit and integration alike (the latter through the `test-support`
//! feature).

use std::fs;
use std::path::Path;

use crate::core::host::HostRoots;

/// A host with a `tss` group and no TPM yet.
pub struct FakeHost {
    dir: tempfile::TempDir,
    pub roots: HostRoots,
}

impl FakeHost {
    /// The `tss` group has `tss_gid`.
    pub fn new(tss_gid: u32) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let roots = HostRoots {
            dev: dir.path().join("dev"),
            sys: dir.path().join("sys"),
            group_file: dir.path().join("group"),
        };
        fs::create_dir_all(&roots.dev).expect("dev");
        fs::create_dir_all(&roots.sys).expect("sys");
        fs::write(
            &roots.group_file,
            format!("root:x:0:\ntss:x:{tss_gid}:\nvideo:x:44:a,b\n"),
        )
        .expect("group file");
        Self { dir, roots }
    }

    /// The usual: `tss` is 102, `tpmrm0` is a TPM 2.0 whose node is 1:3.
    pub fn with_tpm() -> Self {
        let host = Self::new(102);
        host.add_tpm(0, "1:3", "2");
        host
    }

    /// Adds `tpmrmN` registered in sysfs as `rm_dev` ("MAJ:MIN"), its chip
    /// `tpmN` of TPM version `version`, and its node.
    pub fn add_tpm(&self, index: u32, rm_dev: &str, version: &str) {
        let sys = &self.roots.sys;
        let rm = sys.join(format!("class/tpmrm/tpmrm{index}"));
        fs::create_dir_all(&rm).expect("sysfs tpmrm");
        fs::write(rm.join("dev"), format!("{rm_dev}\n")).expect("sysfs dev");
        let chip = sys.join(format!("class/tpm/tpm{index}"));
        fs::create_dir_all(&chip).expect("sysfs tpm");
        fs::write(chip.join("dev"), "10:224\n").expect("sysfs dev");
        fs::write(chip.join("tpm_version_major"), format!("{version}\n")).expect("version");
        std::os::unix::fs::symlink("/dev/null", self.roots.dev.join(format!("tpmrm{index}")))
            .expect("node");
    }

    /// The temp dir everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
