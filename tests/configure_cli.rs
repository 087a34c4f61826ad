//! `oci-tpm-hook configure` as an administrator runs it: on files in a temp
//! dir, with the exit status and output they see.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

fn configure(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oci-tpm-hook"))
        .arg("configure")
        .args(args)
        .output()
        .expect("run oci-tpm-hook")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn docker_keeps_keys_mode_and_owner_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("daemon.json");
    let original = "{\n    \"log-driver\": \"journald\",\n    \"data-root\": \"/srv/docker\"\n}\n";
    std::fs::write(&path, original).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Another owner than the caller, where the tests run as root.
    let owner = if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&path, Some(1234), Some(1235)).unwrap();
        Some((1234, 1235))
    } else {
        eprintln!("not root: the owner part of this test is skipped");
        None
    };

    let dry = configure(&[
        "docker",
        "--config",
        s(&path),
        "--set-as-default",
        "--dry-run",
    ]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let out = text(&dry.stdout);
    assert!(
        out.contains("+  \"runtimes\"") || out.contains("+    \"runtimes\""),
        "{out}"
    );
    assert!(out.contains("+    \"default-runtime\": \"tpm\""), "{out}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        original,
        "dry run wrote"
    );

    let run = configure(&["docker", "--config", s(&path), "--set-as-default"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(
        text(&run.stdout).contains("restart docker"),
        "{}",
        text(&run.stdout)
    );
    let after = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&after).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["log-driver", "data-root", "runtimes", "default-runtime"]
    );
    assert_eq!(v["runtimes"]["tpm"]["path"], "/usr/bin/oci-tpm-runtime");
    assert!(
        after.starts_with("{\n    \"log-driver\""),
        "indent kept: {after}"
    );
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    if let Some(owner) = owner {
        assert_eq!((meta.uid(), meta.gid()), owner);
    }

    let again = configure(&["docker", "--config", s(&path), "--set-as-default"]);
    assert!(again.status.success());
    assert!(
        text(&again.stdout).contains("already configured"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().ino(),
        meta.ino(),
        "rewritten"
    );
}

#[test]
fn malformed_files_are_refused_untouched_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("daemon.json");
    std::fs::write(&path, "{\"debug\": true,\n").unwrap();
    let out = configure(&["docker", "--config", s(&path)]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(s(&path))
            && err.contains("not valid JSON")
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"debug\": true,\n"
    );

    let config = dir.path().join("config.toml");
    std::fs::write(&config, "version = 2\n[plugins.\"x\"\n").unwrap();
    let out = configure(&[
        "containerd",
        "--config",
        s(&config),
        "--drop-in-dir",
        s(&dir.path().join("conf.d")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not valid TOML"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !dir.path().join("conf.d").exists(),
        "the drop-in was written"
    );
}

#[test]
fn containerd_writes_the_drop_in_then_the_import() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "# ours\nversion = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause:3.9\"\n").unwrap();
    let conf_d = dir.path().join("conf.d");
    let args = [
        "containerd",
        "--config",
        s(&config),
        "--drop-in-dir",
        s(&conf_d),
    ];
    let out = configure(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let drop_in = std::fs::read_to_string(conf_d.join("oci-tpm-hook.toml")).unwrap();
    assert!(
        drop_in.contains("version = 2\n")
            && drop_in.contains("[plugins.\"io.containerd.nri.v1.nri\"]")
    );
    let main = std::fs::read_to_string(&config).unwrap();
    assert!(
        main.starts_with("# ours\nversion = 2\nimports = [\""),
        "{main}"
    );
    assert!(
        main.contains(&format!("{}/*.toml", conf_d.display())),
        "{main}"
    );
    assert!(main.contains("sandbox_image = \"pause:3.9\""), "{main}");
    let again = configure(&args);
    assert!(
        text(&again.stdout).contains("already configured"),
        "{}",
        text(&again.stdout)
    );
}

#[test]
fn crio_writes_its_drop_in() {
    let dir = tempfile::tempdir().unwrap();
    let out = configure(&["crio", "--drop-in-dir", s(dir.path()), "--hooks-dir"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let text = std::fs::read_to_string(dir.path().join("50-oci-tpm-hook.conf")).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(doc["crio"]["nri"]["enable_nri"].as_bool(), Some(true));
    assert!(doc["crio"]["runtime"]["hooks_dir"].is_array());
}
