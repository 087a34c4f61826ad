//! The hook binary as a runtime calls it: OCI state on stdin, exit status and
//! stderr as the user sees them. These cases need no TPM and no root: they
//! stop before anything is granted (the lab scenarios cover the rest).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn hook(state: &str, config: Option<&Path>) -> Output {
    hook_with(state, config, &[])
}

fn hook_with(state: &str, config: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oci-tpm-hook"));
    cmd.args(args);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hook");
    // A hook that stops at its command line exits without reading: the
    // write then meets a closed pipe, which is no failure of the test.
    match child.stdin.take().unwrap().write_all(state.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    child.wait_with_output().unwrap()
}

fn state(annotations: &str, bundle: &Path) -> String {
    format!(
        r#"{{"ociVersion":"1.0.2","id":"c0ffee0000000000","status":"creating","pid":1,"bundle":"{}","annotations":{annotations}}}"#,
        bundle.display()
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A bundle and a policy whose host has no TPM at all.
fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[log]\ntarget = \"stderr\"\n").unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"root":{"path":"rootfs"}}"#,
    )
    .unwrap();
    (dir, config)
}

#[test]
fn no_request_is_silent_success() {
    let (dir, config) = setup();
    let before = std::fs::read(dir.path().join("config.json")).unwrap();
    let out = hook(
        &state(r#"{"io.podman.annotations.autoremove":"TRUE"}"#, dir.path()),
        Some(&config),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(dir.path().join("config.json")).unwrap(),
        before
    );
}

#[test]
fn a_request_given_on_the_command_line_counts_as_the_containers() {
    // What a CDI spec's hook runs: the container carries no annotation.
    let (dir, config) = setup();
    let args = ["hook", "--annotation", "oci-tpm-hook/device=tpmrm7"];
    let out = hook_with(&state("{}", dir.path()), Some(&config), &args);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("tpmrm7") && err.contains("container c0ffee000000"),
        "{err}"
    );
    // It wins over the container's own annotation of the same key.
    let out = hook_with(
        &state(r#"{"oci-tpm-hook/device":"none"}"#, dir.path()),
        Some(&config),
        &args,
    );
    assert!(stderr(&out).contains("tpmrm7"), "{}", stderr(&out));
    // A malformed one is a usage error before any state is read.
    let out = hook_with(
        "{}",
        Some(&config),
        &["hook", "--annotation", "oci-tpm-hook/device=/dev/tpmrm0"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not valid"), "{}", stderr(&out));
}

#[test]
fn malformed_state_fails_with_a_message() {
    for bad in ["", "{", "[]", r#"{"id":"x"}"#] {
        let out = hook(bad, None);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(
            stderr(&out).starts_with("oci-tpm-hook: "),
            "{}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("state"), "{}", stderr(&out));
    }
}

#[test]
fn bad_annotation_names_key_value_and_allowed() {
    let (dir, config) = setup();
    let out = hook(
        &state(
            r#"{"oci-tpm-hook/device":"tpmrm0","oci-tpm-hook/self-test":"sometimes"}"#,
            dir.path(),
        ),
        Some(&config),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for want in [
        "container c0ffee000000",
        "oci-tpm-hook/self-test",
        "sometimes",
        "\"quick\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
}

#[test]
fn missing_tpm_fails_closed_or_warns_when_optional() {
    let (dir, config) = setup();
    let out = hook(
        &state(r#"{"oci-tpm-hook/device":"tpmrm7"}"#, dir.path()),
        Some(&config),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("tpmrm7") && err.contains("container c0ffee000000"),
        "{err}"
    );

    let out = hook(
        &state(
            r#"{"oci-tpm-hook/device":"tpmrm7","oci-tpm-hook/required":"false"}"#,
            dir.path(),
        ),
        Some(&config),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("starts without a TPM"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn exclusive_device_refused_by_default() {
    let (dir, config) = setup();
    let out = hook(
        &state(r#"{"oci-tpm-hook/device":"tpm0"}"#, dir.path()),
        Some(&config),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("exclusive"), "{}", stderr(&out));
}

#[test]
fn malformed_policy_is_an_error_not_ignored() {
    let (dir, config) = setup();
    std::fs::write(&config, "[devices]\nallow = \"everything\"\n").unwrap();
    let out = hook(
        &state(r#"{"oci-tpm-hook/device":"auto"}"#, dir.path()),
        Some(&config),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&config.display().to_string()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_arguments_are_usage_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_oci-tpm-hook"))
        .arg("--frobnicate")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Usage:"), "{}", stderr(&out));
}

fn run_with(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oci-tpm-hook"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Every subcommand answers --help and --version on stdout with exit 0.
#[test]
fn help_and_version_like_peers() {
    for args in [
        &["--help"][..],
        &["--version"],
        &["hook", "--help"],
        &["selftest", "--help"],
        &["nri", "--help"],
        &["device-plugin", "--help"],
        &["selftest", "--version"],
    ] {
        let out = run_with(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("Usage:") || stdout.starts_with("oci-tpm-hook"),
            "{args:?}: {stdout}"
        );
        assert!(out.stderr.is_empty(), "{args:?}: {}", stderr(&out));
    }
    let v = run_with(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("oci-tpm-hook {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Usage errors exit 2 on stderr, for subcommands too.
#[test]
fn usage_errors_exit_2() {
    for args in [
        &["selftest", "--level", "sometimes"][..],
        &["nri", "--index", "7"],
        &["device-plugin", "--resource-name", "tpm"],
        &["device-plugin", "--resource-name", "kubernetes.io/tpm"],
        &["device-plugin", "--shares", "0"],
        &["no-such-command"],
    ] {
        let out = run_with(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            stderr(&out).contains("error:"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// Run by hand on a terminal, the hook says what it expects instead of
/// waiting silently for input.
#[test]
fn a_bare_hook_on_a_terminal_explains_itself() {
    let pty = nix::pty::openpty(None, None).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_oci-tpm-hook"))
        .stdin(Stdio::from(std::fs::File::from(pty.slave)))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("OCI state on stdin"),
        "{}",
        stderr(&out)
    );
}

/// Without the kubelet's directory the device plugin stops at once, saying
/// what to check, with a failure status (a DaemonSet's pod shows it).
#[test]
fn device_plugin_without_the_kubelets_directory_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("device-plugins");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[log]\ntarget = \"stderr\"\n").unwrap();
    let out = run_with(&[
        "device-plugin",
        "--kubelet-dir",
        missing.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--no-nfd",
        "--no-cdi",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("oci-tpm-device-plugin: "), "{err}");
    assert!(
        err.contains(&format!(
            "the kubelet's device plugin directory {} does not exist",
            missing.display()
        )) && err.contains("is a kubelet running on this node"),
        "{err}"
    );
}
