//! `create`/`run` bundle handling through the library, against a stand-in
//! host (/dev, /sys, /etc/group in a temp dir) that has a TPM.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_tpm_hook::core::host::HostRoots;
use oci_tpm_hook::core::policy::Policy;
use oci_tpm_hook::frontend::runtime_wrapper::{prepare_bundle, BundleOutcome, PREFIX};
use oci_tpm_hook::oci::runtime_cli::parse_args;
use oci_tpm_hook::oci::runtime_log::RuntimeLog;
use serde_json::Value;

use oci_tpm_hook::testing::FakeHost;

struct Host {
    host: FakeHost,
    roots: HostRoots,
    policy: Policy,
}

fn host() -> Host {
    let host = FakeHost::new(974);
    host.add_tpm(0, "1:3", "2");
    let roots = host.roots.clone();
    let hook = host.dir().join("oci-tpm-hook");
    fs::write(&hook, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    let mut policy = Policy::default();
    policy.hook.path = hook;
    Host {
        host,
        roots,
        policy,
    }
}

fn bundle(h: &Host, annotations: &str) -> PathBuf {
    let b = h.host.dir().join("bundle");
    fs::create_dir_all(&b).unwrap();
    fs::write(
        b.join("config.json"),
        format!(r#"{{"ociVersion":"1.0.2","process":{{"user":{{"uid":1000,"gid":1000}},"env":["PATH=/bin"]}},"annotations":{annotations},"linux":{{"resources":{{"devices":[{{"allow":false,"access":"rwm"}}]}}}}}}"#),
    )
    .unwrap();
    b
}

fn prepare(h: &Host, args: &[&str]) -> anyhow::Result<BundleOutcome> {
    let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    prepare_bundle(
        &parse_args(&args),
        &h.policy,
        &h.roots,
        &RuntimeLog::stderr_only(PREFIX),
    )
}

fn config(b: &Path) -> Value {
    serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap()
}

#[test]
fn grants_into_the_spec_once() {
    let h = host();
    let b = bundle(&h, r#"{"oci-tpm-hook/device":"auto"}"#);
    let bs = b.display().to_string();
    let BundleOutcome::Granted(changes) = prepare(&h, &["create", "--bundle", &bs, "c"]).unwrap()
    else {
        panic!("no grant")
    };
    assert_eq!(changes.0.len(), 6, "{changes}");
    let spec = config(&b);
    assert_eq!(spec["linux"]["devices"][0]["gid"], 974);
    assert_eq!(spec["linux"]["devices"][0]["major"], 1);
    assert_eq!(spec["linux"]["resources"]["devices"][1]["access"], "rw");
    assert_eq!(
        spec["process"]["user"]["additionalGids"],
        serde_json::json!([974])
    );
    assert_eq!(
        spec["process"]["env"][1],
        "TPM2TOOLS_TCTI=device:/dev/tpmrm0"
    );
    let hook = &spec["hooks"]["createRuntime"][0];
    assert_eq!(hook["path"], h.policy.hook.path.display().to_string());
    assert_eq!(hook["args"], serde_json::json!(["oci-tpm-hook"]));
    assert_eq!(hook["timeout"], 10);

    // Again (say the engine retried): nothing changes, the file is not rewritten.
    let ino = fs::metadata(b.join("config.json")).unwrap().ino();
    let before = fs::read(b.join("config.json")).unwrap();
    let BundleOutcome::Granted(again) = prepare(&h, &["run", "-b", &bs, "c"]).unwrap() else {
        panic!("no grant")
    };
    assert!(again.is_empty(), "{again}");
    assert_eq!(fs::read(b.join("config.json")).unwrap(), before);
    assert_eq!(fs::metadata(b.join("config.json")).unwrap().ino(), ino);
}

#[test]
fn refusals_leave_the_file_alone() {
    let h = host();
    for (annotations, needle) in [
        (r#"{"oci-tpm-hook/device":"tpm0"}"#, "exclusive"),
        (r#"{"oci-tpm-hook/device":"tpmrm1"}"#, "tpmrm1"),
        (
            r#"{"oci-tpm-hook/device":"tpmrm0","oci-tpm-hook/required":"maybe"}"#,
            "\"maybe\"",
        ),
        (
            r#"{"oci-tpm-hook/device":7}"#,
            "/annotations/oci-tpm-hook/device",
        ),
    ] {
        let b = bundle(&h, annotations);
        let bs = b.display().to_string();
        let before = fs::read(b.join("config.json")).unwrap();
        let err = format!(
            "{:#}",
            prepare(&h, &["create", "-b", &bs, "idx"]).unwrap_err()
        );
        assert!(
            err.contains(needle) && err.contains("idx"),
            "{annotations}: {err}"
        );
        assert_eq!(fs::read(b.join("config.json")).unwrap(), before);
    }
}

#[test]
fn missing_hook_binary_is_an_error_before_any_edit() {
    let mut h = host();
    h.policy.hook.path = h.host.dir().join("missing-hook");
    let b = bundle(&h, r#"{"oci-tpm-hook/device":"tpmrm0"}"#);
    let bs = b.display().to_string();
    let before = fs::read(b.join("config.json")).unwrap();
    let err = format!(
        "{:#}",
        prepare(&h, &["create", "-b", &bs, "c"]).unwrap_err()
    );
    assert!(
        err.contains("missing-hook") && err.contains("[hook] path"),
        "{err}"
    );
    assert_eq!(fs::read(b.join("config.json")).unwrap(), before);
}

#[test]
fn unknown_flags_refuse_a_tpm_but_not_others() {
    let h = host();
    let b = bundle(&h, r#"{"oci-tpm-hook/device":"tpmrm0"}"#);
    let bs = b.display().to_string();
    let before = fs::read(b.join("config.json")).unwrap();
    let err = format!(
        "{:#}",
        prepare(&h, &["create", "--frob", "-b", &bs, "c"]).unwrap_err()
    );
    assert!(err.contains("frob"), "{err}");
    assert_eq!(fs::read(b.join("config.json")).unwrap(), before);

    let plain = bundle(&h, "{}");
    let ps = plain.display().to_string();
    assert_eq!(
        prepare(&h, &["create", "--frob", "-b", &ps, "c"]).unwrap(),
        BundleOutcome::Untouched
    );
    // And where the bundle cannot even be read, the runtime is left to judge.
    assert_eq!(
        prepare(&h, &["create", "--frob", "-b", "/nonexistent", "c"]).unwrap(),
        BundleOutcome::Untouched
    );
    assert!(prepare(&h, &["create", "-b", "/nonexistent", "c"]).is_err());
}

#[test]
fn no_container_id_is_left_to_the_runtime() {
    let h = host();
    let b = bundle(&h, r#"{"oci-tpm-hook/device":"tpmrm0"}"#);
    let bs = b.display().to_string();
    assert_eq!(
        prepare(&h, &["create", "-b", &bs]).unwrap(),
        BundleOutcome::Untouched
    );
}
