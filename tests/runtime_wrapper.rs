//! The `oci-tpm-runtime` binary end to end, with a stand-in for runc that
//! records how it was called. (Granting a real TPM is the lab's job; here the
//! host has none, which exercises the refusal paths.)

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WRAPPER: &str = env!("CARGO_BIN_EXE_oci-tpm-runtime");

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(runtime: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-runc");
        // Records its arguments NUL-separated, then exits 7 so the test can
        // tell "exec'd the runtime" from the wrapper's own exit.
        fs::write(
            &fake,
            "#!/bin/sh\n: > \"$0.args\"\nfor a in \"$@\"; do printf '%s\\0' \"$a\" >> \"$0.args\"; done\nexit 7\n",
        )
        .unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        let runtime = runtime
            .map(str::to_owned)
            .unwrap_or_else(|| fake.display().to_string());
        fs::write(
            dir.path().join("config.toml"),
            format!(
                "[runtime]\npath = \"{runtime}\"\n[hook]\npath = \"{}\"\n",
                fake.display()
            ),
        )
        .unwrap();
        fs::create_dir(dir.path().join("bundle")).unwrap();
        Self { dir }
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn config(&self, annotations: &str) -> PathBuf {
        let path = self.bundle().join("config.json");
        fs::write(
            &path,
            format!(r#"{{"ociVersion":"1.0.2","process":{{"user":{{"uid":1000,"gid":1000}},"args":["sh"]}},"annotations":{annotations},"linux":{{}}}}"#),
        )
        .unwrap();
        path
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(WRAPPER)
            .args(args)
            .current_dir(self.bundle())
            .env("OCI_TPM_HOOK_CONFIG", self.dir.path().join("config.toml"))
            .output()
            .unwrap()
    }

    /// The arguments the stand-in runtime got, or None if it never ran.
    fn runtime_args(&self) -> Option<Vec<String>> {
        let text = fs::read_to_string(self.dir.path().join("fake-runc.args")).ok()?;
        Some(text.split_terminator('\0').map(str::to_owned).collect())
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log.json")
    }
}

fn snapshot(path: &Path) -> (Vec<u8>, u64, i64, i64) {
    let m = fs::metadata(path).unwrap();
    (fs::read(path).unwrap(), m.ino(), m.mtime(), m.mtime_nsec())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn other_subcommands_pass_through_verbatim() {
    let s = Setup::new(None);
    for args in [
        &["--root", "/run/x", "delete", "--force", "id with space"][..],
        &["state", "c"],
        &["--version"],
        &[],
        &["frobnicate", "-b", "/nonexistent", "--", "x"],
    ] {
        let _ = fs::remove_file(s.dir.path().join("fake-runc.args"));
        let out = s.run(args);
        assert_eq!(out.status.code(), Some(7), "{args:?}: {}", stderr(&out));
        assert_eq!(s.runtime_args().unwrap(), args, "{args:?}");
        assert!(out.stderr.is_empty(), "{}", stderr(&out));
    }
}

/// `--version` says who answers first, then the real runtime answers.
#[test]
fn version_names_the_wrapper_then_the_runtime() {
    let s = Setup::new(None);
    let out = s.run(&["--version"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "the runtime ran: {}",
        stderr(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!(
            "oci-tpm-runtime version {} (wrapping ",
            env!("CARGO_PKG_VERSION")
        )),
        "{stdout}"
    );
    assert_eq!(s.runtime_args().unwrap(), ["--version"]);
}

#[test]
fn no_request_leaves_config_identical() {
    let s = Setup::new(None);
    let config = s.config(r#"{"org.opencontainers.image.title":"x"}"#);
    let before = snapshot(&config);
    let log = s.log().display().to_string();
    let bundle = s.bundle().display().to_string();
    for args in [
        vec![
            "--log",
            &log,
            "--log-format",
            "json",
            "create",
            "--bundle",
            &bundle,
            "--pid-file",
            "/tmp/p",
            "c1",
        ],
        vec!["run", "-d", "c1"], // bundle = working directory
        vec!["create", &format!("-b={bundle}"), "c1"],
    ] {
        let out = s.run(&args);
        assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
        assert_eq!(s.runtime_args().unwrap(), args);
        assert_eq!(snapshot(&config), before, "{args:?}");
        assert!(out.stderr.is_empty(), "{}", stderr(&out));
    }
    assert!(!s.log().exists(), "nothing to say, nothing logged");
}

#[test]
fn bad_annotation_fails_visibly_and_leaves_config_identical() {
    let s = Setup::new(None);
    let config = s.config(r#"{"oci-tpm-hook/device":"tpmrm0","oci-tpm-hook/self-test":"fast"}"#);
    let before = snapshot(&config);
    let log = s.log().display().to_string();
    let out = s.run(&[
        "--log",
        &log,
        "--log-format",
        "json",
        "create",
        "--bundle",
        ".",
        "c0ffee",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(s.runtime_args().is_none(), "the runtime must not run");
    let err = stderr(&out);
    assert!(err.starts_with("oci-tpm-runtime: "), "{err}");
    assert!(
        err.contains("oci-tpm-hook/self-test")
            && err.contains("\"fast\"")
            && err.contains("c0ffee"),
        "{err}"
    );
    assert_eq!(snapshot(&config), before);

    // containerd reads the last "error" entry of the log: level, msg, time.
    let line = fs::read_to_string(s.log()).unwrap();
    let entry: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(entry["level"], "error");
    assert!(entry["msg"]
        .as_str()
        .unwrap()
        .starts_with("oci-tpm-runtime: container c0ffee"));
    assert!(entry["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn missing_tpm_required_fails_optional_passes() {
    // This host has no /dev/tpmrm9 (nor, usually, any TPM).
    let s = Setup::new(None);
    let config = s.config(r#"{"oci-tpm-hook/device":"tpmrm9"}"#);
    let before = snapshot(&config);
    let out = s.run(&["create", "c2"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("tpmrm9") && err.contains("container c2"),
        "{err}"
    );
    assert_eq!(snapshot(&config), before);
    assert!(s.runtime_args().is_none());

    let config = s.config(r#"{"oci-tpm-hook/device":"tpmrm9","oci-tpm-hook/required":"false"}"#);
    let before = snapshot(&config);
    let log = s.log().display().to_string();
    let out = s.run(&["--log", &log, "--log-format=json", "create", "c2"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        out.stderr.is_empty(),
        "warnings go to the log: {}",
        stderr(&out)
    );
    assert_eq!(snapshot(&config), before);
    let entry: serde_json::Value =
        serde_json::from_str(fs::read_to_string(s.log()).unwrap().trim()).unwrap();
    assert_eq!(entry["level"], "warning");
    assert!(entry["msg"].as_str().unwrap().contains("without a TPM"));
}

#[test]
fn malformed_config_fails_and_is_untouched() {
    let s = Setup::new(None);
    let config = s.bundle().join("config.json");
    fs::write(&config, "{\"annotations\": {\"oci-tpm-hook/device\": ").unwrap();
    let before = snapshot(&config);
    let out = s.run(&["--log", "/dev/null", "create", "c3"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("not valid JSON") && err.contains("c3"),
        "{err}"
    );
    assert_eq!(snapshot(&config), before);
    // Text log format goes the same way, without breaking on a missing file.
    let log = s.log().display().to_string();
    let out = s.run(&["--log", &log, "create", "c3"]);
    assert_eq!(out.status.code(), Some(1));
    let text = fs::read_to_string(s.log()).unwrap();
    assert!(
        text.starts_with("time=\"") && text.contains("level=error msg=\"oci-tpm-runtime: "),
        "{text}"
    );
}

#[test]
fn runtime_problems_are_clear_errors() {
    let s = Setup::new(Some("/nonexistent/runc"));
    let config = s.config(r#"{}"#);
    let before = snapshot(&config);
    let out = s.run(&["create", "c4"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/runc") && err.contains("[runtime] path"),
        "{err}"
    );
    assert_eq!(snapshot(&config), before);

    let s = Setup::new(Some("no-such-runtime-anywhere"));
    let out = s.run(&["state", "c4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not on PATH"), "{}", stderr(&out));

    // Pointed at itself: refused, not an exec loop.
    let s = Setup::new(Some(WRAPPER));
    let out = s.run(&["state", "c4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("itself"), "{}", stderr(&out));
}

#[test]
fn malformed_policy_is_an_error() {
    let s = Setup::new(None);
    fs::write(s.dir.path().join("config.toml"), "[runtime\n").unwrap();
    let out = s.run(&["state", "c5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("config.toml"), "{}", stderr(&out));
}
