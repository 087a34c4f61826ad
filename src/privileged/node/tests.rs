//! Tests of the parent module, kept apart so that module reads as code.

use super::*;

#[test]
fn node_paths() {
    let (p, n) = split_node_path(Path::new("/dev/tpmrm0")).unwrap();
    assert_eq!((p.to_str().unwrap(), n.as_str()), ("dev", "tpmrm0"));
    let (p, n) = split_node_path(Path::new("/dev/tpm/rm0")).unwrap();
    assert_eq!((p.to_str().unwrap(), n.as_str()), ("dev/tpm", "rm0"));
    for bad in ["dev/tpmrm0", "/tpmrm0", "/dev/../etc/x", "/", ""] {
        assert!(split_node_path(Path::new(bad)).is_err(), "{bad}");
    }
}

fn spec() -> NodeSpec {
    // /dev/null: a char device every machine has.
    NodeSpec {
        path: "/dev/tpmrm0".into(),
        major: 1,
        minor: 3,
        mode: 0o660,
        gid: nix::unistd::getegid().as_raw(),
    }
}

/// A rootfs with a /dev directory.
fn rootfs() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("dev")).unwrap();
    d
}

#[test]
fn refuses_what_the_image_planted() {
    use std::os::unix::fs::symlink;
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "host file").unwrap();
    for plant in ["symlink", "file", "dir"] {
        let r = rootfs();
        let node = r.path().join("dev/tpmrm0");
        match plant {
            "symlink" => symlink(&victim, &node).unwrap(),
            "file" => std::fs::write(&node, "x").unwrap(),
            _ => std::fs::create_dir(&node).unwrap(),
        }
        let dir = open_node_dir(r.path(), Path::new("/dev/tpmrm0")).unwrap();
        let err = dir
            .ensure(&spec(), NodeMethod::Mknod)
            .unwrap_err()
            .to_string();
        assert!(err.contains("refusing"), "{plant}: {err}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host file");
}

#[test]
fn dev_symlink_stays_inside_the_rootfs() {
    let outside = tempfile::tempdir().unwrap();
    let r = tempfile::tempdir().unwrap();
    // The image's /dev points at a host directory by absolute path; with
    // RESOLVE_IN_ROOT it resolves inside the rootfs instead.
    std::os::unix::fs::symlink(outside.path(), r.path().join("dev")).unwrap();
    match open_node_dir(r.path(), Path::new("/dev/tpmrm0")) {
        Err(_) => {} // the target does not exist inside the rootfs: refused
        Ok(dir) => {
            let _ = dir.ensure(&spec(), NodeMethod::Mknod);
        }
    }
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing may appear outside the rootfs"
    );
}

fn need_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED: {test} needs root for mknod and chown");
    assert!(std::env::var_os("CI").is_none(), "CI runs as root");
    false
}

#[test]
fn creates_keeps_adjusts_and_undoes_when_root() {
    if !need_root("creates_keeps_adjusts_and_undoes_when_root") {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let r = rootfs();
    let node = r.path().join("dev/tpmrm0");
    let mut s = spec();
    s.gid = 4242;
    let dir = open_node_dir(r.path(), &s.path).unwrap();
    assert_eq!(
        dir.ensure(&s, NodeMethod::Mknod).unwrap(),
        NodeOutcome::Created
    );
    let meta = std::fs::metadata(&node).unwrap();
    assert_eq!(
        (meta.gid(), meta.permissions().mode() & 0o7777),
        (4242, 0o660)
    );
    assert_eq!(meta.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(
        dir.ensure(&s, NodeMethod::Mknod).unwrap(),
        NodeOutcome::Kept
    );
    s.gid = 4343;
    s.mode = 0o640;
    let adjusted = dir.ensure(&s, NodeMethod::Mknod).unwrap();
    assert_eq!(
        adjusted,
        NodeOutcome::Adjusted {
            gid: 4242,
            mode: 0o660
        }
    );
    assert_eq!(std::fs::metadata(&node).unwrap().gid(), 4343);
    // Undoing an adjustment puts the group and mode back.
    dir.undo(&s, adjusted).unwrap();
    let meta = std::fs::metadata(&node).unwrap();
    assert_eq!(
        (meta.gid(), meta.permissions().mode() & 0o7777),
        (4242, 0o660)
    );
    // Undoing a kept node leaves it; undoing a made one removes it.
    dir.undo(&s, NodeOutcome::Kept).unwrap();
    assert!(node.exists());
    drop(dir.open_for_io(&spec()).unwrap());
    dir.undo(&s, NodeOutcome::Created).unwrap();
    assert!(!node.exists());
    dir.undo(&s, NodeOutcome::Created).unwrap(); // already gone: fine
                                                 // The right path with the wrong device is refused.
    dir.ensure(&s, NodeMethod::Mknod).unwrap();
    s.minor = 5;
    assert!(dir.ensure(&s, NodeMethod::Mknod).is_err());
    assert!(
        dir.undo(&s, NodeOutcome::Created).is_err(),
        "undo must not remove another device"
    );
}

/// Group and mode go through the checked handle: a hard link to a host
/// file swapped in at the node's name afterwards is never touched.
#[test]
fn ownership_changes_follow_the_handle_not_the_name() {
    if !need_root("ownership_changes_follow_the_handle_not_the_name") {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let r = rootfs();
    let host = tempfile::tempdir_in(r.path()).unwrap();
    let victim = host.path().join("shadow");
    std::fs::write(&victim, "host secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = spec();
    let dir = open_node_dir(r.path(), &s.path).unwrap();
    mknodat(
        dir.dir.as_fd(),
        "tpmrm0",
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(1, 3),
    )
    .unwrap();
    let handle = dir.open_path_handle().unwrap();
    // The swap: the device moves away, a hard link to the victim takes
    // its name.
    std::fs::rename(r.path().join("dev/tpmrm0"), r.path().join("dev/moved")).unwrap();
    std::fs::hard_link(&victim, r.path().join("dev/tpmrm0")).unwrap();
    set_owner_and_mode(&handle, 4242, 0o666, &s.path).unwrap();
    let v = std::fs::metadata(&victim).unwrap();
    assert_eq!((v.gid(), v.permissions().mode() & 0o7777), (0, 0o600));
    let moved = std::fs::metadata(r.path().join("dev/moved")).unwrap();
    assert_eq!(
        (moved.gid(), moved.permissions().mode() & 0o7777),
        (4242, 0o666)
    );
    // And ensure() refuses the regular file now at the name.
    let err = dir.ensure(&s, NodeMethod::Mknod).unwrap_err().to_string();
    assert!(err.contains("a regular file"), "{err}");
}
