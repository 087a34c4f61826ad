//! A stand-in host with one TPM (/dev, /sys and /etc/group in a temp dir),
//! shared by the front-ends' integration tests.

use std::fs;
use std::path::Path;

use oci_tpm_hook::core::host::HostRoots;

/// Lays out `tpmrm0` (its node is a symlink to /dev/null, 1:3: any character
/// device will do) and a `tss` group with `tss_gid` under `dir`.
pub fn fake_host(dir: &Path, tss_gid: u32) -> HostRoots {
    let roots = HostRoots {
        dev: dir.join("dev"),
        sys: dir.join("sys"),
        group_file: dir.join("group"),
    };
    fs::create_dir_all(roots.sys.join("class/tpmrm/tpmrm0")).unwrap();
    fs::create_dir_all(roots.sys.join("class/tpm/tpm0")).unwrap();
    fs::write(roots.sys.join("class/tpm/tpm0/tpm_version_major"), "2\n").unwrap();
    fs::write(roots.sys.join("class/tpmrm/tpmrm0/dev"), "1:3\n").unwrap();
    fs::create_dir_all(&roots.dev).unwrap();
    std::os::unix::fs::symlink("/dev/null", roots.dev.join("tpmrm0")).unwrap();
    fs::write(&roots.group_file, format!("root:x:0:\ntss:x:{tss_gid}:\n")).unwrap();
    roots
}
