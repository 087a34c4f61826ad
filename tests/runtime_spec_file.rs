//! config.json on disk: lossless, idempotent, atomic, and untouched on error.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use oci_tpm_hook::core::grant::Grant;
use oci_tpm_hook::core::hook_entry::HookEntry;
use oci_tpm_hook::core::host::HostTpm;
use oci_tpm_hook::oci::bundle::BundleFile;
use serde_json::Value;
use tpm2_selftest::SelfTestLevel;

/// Shaped like what docker writes (compact), with fields no OCI struct knows,
/// at the top level and nested, and keys in no particular order.
const DOCKER_LIKE: &str = r#"{"ociVersion":"1.0.2-dev","x-vendor":{"b":1,"a":[true,null,{"z":"q"}]},"process":{"user":{"uid":1000,"gid":0,"x-user-note":"kept"},"terminal":false,"args":["tpm2_getrandom","--hex","8"],"env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","HOSTNAME=3f2a"],"cwd":"/","capabilities":{"bounding":["CAP_CHOWN"]},"noNewPrivileges":true},"root":{"path":"/var/lib/docker/overlay2/x/merged"},"hostname":"3f2a","mounts":[{"destination":"/proc","type":"proc","source":"proc","options":["nosuid","noexec","nodev"]}],"hooks":{"prestart":[{"path":"/usr/bin/dockerd","args":["libnetwork-setkey","-exec-root=/var/run/docker","3f2a","c0ffee"]}]},"annotations":{"oci-tpm-hook/device":"tpmrm0"},"linux":{"resources":{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}],"memory":{"disableOOMKiller":false}},"cgroupsPath":"system.slice:docker:3f2a","x-linux-future":{"k":[1,2,3]},"namespaces":[{"type":"mount"},{"type":"network","path":"/var/run/docker/netns/1"}],"maskedPaths":["/proc/acpi"],"readonlyPaths":["/proc/bus"]}}"#;

fn grant() -> Grant {
    Grant {
        device: HostTpm {
            name: "tpmrm0".into(),
            path: "/dev/tpmrm0".into(),
            major: 253,
            minor: 65536,
        },
        container_path: "/dev/tpmrm0".into(),
        mode: 0o660,
        gid: 102,
        group_name: Some("tss".into()),
        access: oci_tpm_hook::core::policy::NodeAccess::Group,
        self_test: SelfTestLevel::Quick,
        timeout: Duration::from_secs(5),
        required: true,
    }
}

fn hook() -> HookEntry {
    HookEntry::unchecked(
        Path::new("/usr/bin/oci-tpm-hook"),
        Path::new(oci_tpm_hook::core::policy::DEFAULT_PATH),
        &grant(),
    )
}

fn write_config(dir: &Path, text: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.join("config.json");
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn pop(v: &mut Value, pointer: &str) -> Value {
    v.pointer_mut(pointer)
        .and_then(Value::as_array_mut)
        .and_then(Vec::pop)
        .unwrap_or_else(|| panic!("nothing to pop at {pointer}"))
}

#[test]
fn only_the_intended_additions() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), DOCKER_LIKE, 0o640);
    let mut file = BundleFile::read(&path).unwrap();
    let changes = file.apply_and_write(&grant(), &hook()).unwrap();
    assert_eq!(changes.0.len(), 6, "{changes}");

    let bytes = fs::read(&path).unwrap();
    assert!(!bytes.contains(&b'\n'), "a compact file stays compact");
    let mut edited: Value = serde_json::from_slice(&bytes).unwrap();

    // The additions, exactly.
    assert_eq!(
        edited["linux"]["devices"],
        serde_json::json!([{"path": "/dev/tpmrm0", "type": "c", "major": 253, "minor": 65536,
                            "fileMode": 432, "uid": 0, "gid": 102}])
    );
    assert_eq!(
        pop(&mut edited, "/linux/resources/devices"),
        serde_json::json!({"allow": true, "type": "c", "major": 253, "minor": 65536, "access": "rw"})
    );
    assert_eq!(
        pop(&mut edited, "/process/env"),
        "TSS2_TCTI=device:/dev/tpmrm0"
    );
    assert_eq!(
        pop(&mut edited, "/process/env"),
        "TPM2TOOLS_TCTI=device:/dev/tpmrm0"
    );
    assert_eq!(
        pop(&mut edited, "/hooks/createRuntime")["path"],
        "/usr/bin/oci-tpm-hook"
    );
    assert_eq!(
        edited["process"]["user"]["additionalGids"],
        serde_json::json!([102])
    );

    // Take away what was created from nothing; the rest must be the original,
    // byte for byte when serialized the same way (key order included).
    let linux = edited["linux"].as_object_mut().unwrap();
    linux.shift_remove("devices");
    edited["process"]["user"]
        .as_object_mut()
        .unwrap()
        .shift_remove("additionalGids");
    edited["hooks"]
        .as_object_mut()
        .unwrap()
        .shift_remove("createRuntime");
    assert_eq!(serde_json::to_string(&edited).unwrap(), DOCKER_LIKE);

    // Mode kept.
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
    // No temp files left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn second_apply_does_not_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), DOCKER_LIKE, 0o600);
    BundleFile::read(&path)
        .unwrap()
        .apply_and_write(&grant(), &hook())
        .unwrap();
    let before = fs::read(&path).unwrap();
    let meta = fs::metadata(&path).unwrap();
    std::thread::sleep(Duration::from_millis(20));

    let changes = BundleFile::read(&path)
        .unwrap()
        .apply_and_write(&grant(), &hook())
        .unwrap();
    assert!(changes.is_empty(), "{changes}");
    let after = fs::metadata(&path).unwrap();
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(
        (after.ino(), after.mtime_nsec(), after.mtime()),
        (meta.ino(), meta.mtime_nsec(), meta.mtime())
    );
    assert_eq!(after.mode() & 0o7777, 0o600);
}

#[test]
fn pretty_files_stay_pretty() {
    let dir = tempfile::tempdir().unwrap();
    let text = "{\n\t\"ociVersion\": \"1.0.2\",\n\t\"process\": {\n\t\t\"user\": {\n\t\t\t\"uid\": 0,\n\t\t\t\"gid\": 0\n\t\t}\n\t}\n}\n";
    let path = write_config(dir.path(), text, 0o644);
    BundleFile::read(&path)
        .unwrap()
        .apply_and_write(&grant(), &hook())
        .unwrap();
    let out = fs::read_to_string(&path).unwrap();
    assert!(
        out.starts_with("{\n\t\"ociVersion\": \"1.0.2\",\n\t\"process\": {\n\t\t\"user\": {"),
        "{out}"
    );
    assert!(out.ends_with("}\n"));
}

#[test]
fn malformed_inputs_leave_the_file_byte_identical() {
    for (text, needle) in [
        ("{\"process\": ", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ("", "not valid JSON"),
        (
            r#"{"process":{"user":{"uid":0,"gid":0}},"linux":{"devices":{"path":"/dev/x"}}}"#,
            "/linux/devices is an object, not an array",
        ),
        (
            r#"{"process":{"user":{"uid":0,"gid":0},"env":"PATH=/bin"}}"#,
            "/process/env",
        ),
        (
            r#"{"process":{"user":{"uid":0,"gid":0}},"hooks":[]}"#,
            "/hooks is an array",
        ),
        (
            r#"{"process":{"user":{"uid":0,"gid":0}},"linux":{"resources":{"devices":[{"allow":true},"x"]}}}"#,
            "/linux/resources/devices/1",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), text, 0o644);
        let meta = fs::metadata(&path).unwrap();
        let err = BundleFile::read(&path).and_then(|mut f| f.apply_and_write(&grant(), &hook()));
        let msg = format!("{:#}", err.unwrap_err());
        assert!(msg.contains(needle), "{text}: {msg}");
        assert!(
            msg.contains(&path.display().to_string()),
            "names the file: {msg}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        assert_eq!(fs::metadata(&path).unwrap().ino(), meta.ino());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}

#[test]
fn symlinks_and_odd_files_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.json");
    fs::write(&real, DOCKER_LIKE).unwrap();
    let link = dir.path().join("config.json");
    std::os::unix::fs::symlink("real.json", &link).unwrap();
    let err = format!("{:#}", BundleFile::read(&link).unwrap_err());
    assert!(err.contains("is a symlink"), "{err}");
    assert_eq!(fs::read_to_string(&real).unwrap(), DOCKER_LIKE);

    let fifo_dir = tempfile::tempdir().unwrap();
    let fifo = fifo_dir.path().join("config.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let err = format!("{:#}", BundleFile::read(&fifo).unwrap_err());
    assert!(err.contains("not a regular file"), "{err}");

    let sub = tempfile::tempdir().unwrap();
    fs::create_dir(sub.path().join("config.json")).unwrap();
    let err = format!(
        "{:#}",
        BundleFile::read(&sub.path().join("config.json")).unwrap_err()
    );
    assert!(err.contains("not a regular file"), "{err}");
}
