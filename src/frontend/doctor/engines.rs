//! The container engines found on the host, each checked for what it needs
//! to hand a container its TPM: podman and CRI-O the hooks.d file, docker
//! the runtime wrapper, containerd and CRI-O NRI with the plugin running;
//! and, for engines on the systemd cgroup manager, the helper that tells
//! systemd about the device.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::checks::sorted_entries;
use super::{Check, Host};
use crate::files::is_executable;
use crate::privileged::systemd;

/// Every engine check; engines that are not installed are skipped.
pub fn all(host: &Host) -> Vec<Check> {
    vec![
        hooks_dir(host),
        docker(host),
        containerd(host),
        crio(host),
        systemd_units(host, systemd::helper_path()),
    ]
}

/// The helper program that adds the TPM to a container unit's
/// `DeviceAllow=` (`helper`: where the hook finds it, or why not).
fn systemd_units(host: &Host, helper: anyhow::Result<PathBuf>) -> Check {
    let name = "systemd units";
    let systemd_runs = host.path(systemd::SYSTEMD_RUNNING).is_dir();
    match (helper, systemd_runs) {
        (Ok(p), true) => Check::pass(
            name,
            format!(
                "a container in a systemd unit gets the TPM in the unit's DeviceAllow= too, through {}",
                p.display()
            ),
        ),
        (Ok(p), false) => Check::skip(
            name,
            format!("systemd is not the init system ({} is installed)", p.display()),
        ),
        (Err(e), true) => Check::warn(
            name,
            format!("{e:#}"),
            "with the systemd cgroup manager a container then loses its TPM at systemctl \
             daemon-reload, and under crun cannot use it at all: install the whole package \
             (oci-tpm-systemd goes beside oci-tpm-hook or in ../libexec/oci-tpm-hook)",
        ),
        (Err(_), false) => Check::skip(name, "systemd is not the init system"),
    }
}

/// Whether an engine's binary is installed.
fn installed(host: &Host, name: &str) -> bool {
    ["/usr/bin", "/usr/local/bin", "/usr/sbin", "/usr/local/sbin"]
        .iter()
        .any(|d| is_executable(&host.path(d).join(name)))
}

/// hooks.d directories in the order engines read them: a same-named file in
/// /etc overrides the one in /usr/share.
const HOOKS_DIRS: [&str; 2] = [
    "/usr/share/containers/oci/hooks.d",
    "/etc/containers/oci/hooks.d",
];

/// Our hooks.d file: the one whose `when` names an `oci-tpm-hook/`
/// annotation; its hook binary must exist.
fn hooks_dir(host: &Host) -> Check {
    let name = "podman/CRI-O hooks.d";
    if !installed(host, "podman") && !installed(host, "crio") {
        return Check::skip(name, "neither podman nor CRI-O is installed");
    }
    let mut ours: Vec<(String, PathBuf)> = Vec::new();
    for dir in HOOKS_DIRS {
        for file in sorted_entries(&host.path(dir))
            .into_iter()
            .filter(|f| f.ends_with(".json"))
        {
            let path = host.path(dir).join(&file);
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let mentions_us = v
                .pointer("/when/annotations")
                .and_then(Value::as_object)
                .is_some_and(|a| a.keys().any(|k| k.contains("oci-tpm-hook")));
            if mentions_us {
                ours.retain(|(f, _)| f != &file); // /etc overrides
                ours.push((file, path));
            }
        }
    }
    let Some((_, file)) = ours.first() else {
        return Check::fail(
            name,
            format!("no hooks.d file for oci-tpm-hook in {}", HOOKS_DIRS.join(" or ")),
            "install the package, or copy hooks.d/oci-tpm-hook.json to /usr/share/containers/oci/hooks.d/",
        );
    };
    let v: Value =
        serde_json::from_str(&fs::read_to_string(file).unwrap_or_default()).unwrap_or(Value::Null);
    let hook = v
        .pointer("/hook/path")
        .and_then(Value::as_str)
        .unwrap_or("");
    let stages_ok = v
        .get("stages")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|x| x == "createRuntime"));
    let shown = file
        .strip_prefix(&host.root)
        .map(|p| Path::new("/").join(p))
        .unwrap_or_else(|_| file.clone());
    if !is_executable(&host.path(hook)) {
        return Check::fail(
            name,
            format!("{} runs {hook:?}, which is not an executable file", shown.display()),
            "install oci-tpm-hook there, or correct hook.path in that file (engines skip a hooks.d file whose binary is missing)",
        );
    }
    if !stages_ok {
        return Check::fail(
            name,
            format!("{} does not run at the createRuntime stage", shown.display()),
            "set \"stages\": [\"createRuntime\"] (the hook needs the container's namespaces before it starts)",
        );
    }
    Check::pass(name, format!("{} runs {hook}", shown.display()))
}

/// docker: a runtime whose path is `oci-tpm-runtime`.
fn docker(host: &Host) -> Check {
    let name = "docker runtime";
    if !installed(host, "dockerd") {
        return Check::skip(name, "docker is not installed");
    }
    let file = host.path("/etc/docker/daemon.json");
    let text = match fs::read_to_string(&file) {
        Ok(t) => t,
        Err(_) => {
            return Check::fail(
                name,
                "no /etc/docker/daemon.json: docker has no runtime for TPM containers",
                "oci-tpm-hook configure docker (then restart docker)",
            )
        }
    };
    let v: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            return Check::fail(
                name,
                format!("/etc/docker/daemon.json is not valid JSON: {e}"),
                "fix the file; docker itself refuses to start with it",
            )
        }
    };
    let ours = v.get("runtimes").and_then(Value::as_object).and_then(|r| {
        r.iter().find_map(|(k, rt)| {
            let path = rt.get("path").and_then(Value::as_str)?;
            path.ends_with("oci-tpm-runtime")
                .then(|| (k.clone(), path.to_owned()))
        })
    });
    match ours {
        None => Check::fail(
            name,
            "docker has no runtime whose path is oci-tpm-runtime",
            "oci-tpm-hook configure docker (then restart docker); run containers with --runtime tpm",
        ),
        Some((runtime, path)) if !is_executable(&host.path(&path)) => Check::fail(
            name,
            format!("runtime {runtime:?} points at {path}, which is not an executable file"),
            "install oci-tpm-runtime there, or correct the path in /etc/docker/daemon.json",
        ),
        Some((runtime, path)) => {
            let default = v.get("default-runtime").and_then(Value::as_str) == Some(&runtime);
            Check::pass(
                name,
                format!(
                    "runtime {runtime:?} = {path}{}",
                    if default {
                        " (the default runtime)"
                    } else {
                        "; containers need --runtime"
                    }
                ),
            )
        }
    }
}

/// containerd: NRI enabled in its config, and a plugin process running.
fn containerd(host: &Host) -> Check {
    let name = "containerd NRI";
    if !installed(host, "containerd") {
        return Check::skip(name, "containerd is not installed");
    }
    let config = fs::read_to_string(host.path("/etc/containerd/config.toml")).unwrap_or_default();
    let table: toml::Table = match config.parse() {
        Ok(t) => t,
        Err(e) => {
            return Check::fail(
                name,
                format!("/etc/containerd/config.toml is not valid TOML: {e}"),
                "fix the file; containerd itself refuses to start with it",
            )
        }
    };
    // containerd 2.x (config version 3) has NRI on unless disabled; 1.7
    // (version 2, or none) off unless enabled.
    let version = table
        .get("version")
        .and_then(toml::Value::as_integer)
        .unwrap_or(2);
    let disable = table
        .get("plugins")
        .and_then(|p| p.get("io.containerd.nri.v1.nri"))
        .and_then(|n| n.get("disable"))
        .and_then(toml::Value::as_bool);
    let enabled = match disable {
        Some(d) => !d,
        None => version >= 3,
    };
    if !enabled {
        return Check::fail(
            name,
            format!("NRI is not enabled in /etc/containerd/config.toml (config version {version})"),
            "oci-tpm-hook configure containerd (then restart containerd)",
        );
    }
    plugin_running(host, name, "containerd")
}

/// CRI-O: NRI is on by default since 1.30; a drop-in may turn it off.
fn crio(host: &Host) -> Check {
    let name = "CRI-O NRI";
    if !installed(host, "crio") {
        return Check::skip(name, "CRI-O is not installed");
    }
    let mut files = vec![host.path("/etc/crio/crio.conf")];
    let dropins = host.path("/etc/crio/crio.conf.d");
    files.extend(
        sorted_entries(&dropins)
            .into_iter()
            .map(|f| dropins.join(f)),
    );
    let mut enabled = true;
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        if let Ok(t) = text.parse::<toml::Table>() {
            if let Some(e) = t
                .get("crio")
                .and_then(|c| c.get("nri"))
                .and_then(|n| n.get("enable_nri"))
                .and_then(toml::Value::as_bool)
            {
                enabled = e; // later files win
            }
        }
    }
    if !enabled {
        return Check::warn(
            name,
            "NRI is turned off in CRI-O's configuration; its hooks.d path still works",
            "oci-tpm-hook configure crio, to use the NRI plugin instead of hooks.d",
        );
    }
    plugin_running(host, name, "CRI-O")
}

/// An `oci-tpm-hook nri` process, or the file the runtime launches itself.
fn plugin_running(host: &Host, name: &str, engine: &str) -> Check {
    let proc = host.path("/proc");
    let running = sorted_entries(&proc)
        .into_iter()
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        .any(|pid| {
            let cmd = fs::read(proc.join(pid).join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"oci-tpm-hook"))
                && args.get(1).is_some_and(|a| *a == b"nri")
        });
    let prelaunched = sorted_entries(&host.path("/opt/nri/plugins"))
        .iter()
        .any(|f| f.ends_with("oci-tpm-hook"));
    if running || prelaunched {
        return Check::pass(
            name,
            if running {
                "NRI enabled; the oci-tpm-hook plugin is running"
            } else {
                "NRI enabled; the plugin is installed for the runtime to launch"
            },
        );
    }
    Check::warn(
        name,
        format!("NRI is enabled but no oci-tpm-hook NRI plugin is running; {engine} pods get their TPM only through the hooks.d path, if any"),
        "systemctl enable --now oci-tpm-nri (or deploy the DaemonSet)",
    )
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn host(&self) -> Host {
            Host {
                root: self.dir.path().to_path_buf(),
                policy_file: "/etc/oci-tpm-hook/config.toml".into(),
                self_test_timeout: Duration::from_millis(100),
            }
        }
        fn write(&self, path: &str, text: &str) {
            let p = self.dir.path().join(path.trim_start_matches('/'));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, text).unwrap();
        }
        fn executable(&self, path: &str) {
            self.write(path, "#!/bin/sh\n");
            let p = self.dir.path().join(path.trim_start_matches('/'));
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn systemd_units_need_the_helper_only_under_systemd() {
        let f = Fake::new();
        let found = || Ok(PathBuf::from("/usr/libexec/oci-tpm-hook/oci-tpm-systemd"));
        let missing = || Err(anyhow::anyhow!("oci-tpm-systemd is missing"));
        let c = systemd_units(&f.host(), found());
        assert_eq!(c.status, Status::Skip);
        assert!(
            c.detail
                .contains("/usr/libexec/oci-tpm-hook/oci-tpm-systemd"),
            "{c:?}"
        );
        assert_eq!(systemd_units(&f.host(), missing()).status, Status::Skip);
        fs::create_dir_all(f.dir.path().join("run/systemd/system")).unwrap();
        assert_eq!(systemd_units(&f.host(), found()).status, Status::Pass);
        let c = systemd_units(&f.host(), missing());
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("missing"), "{c:?}");
        assert!(c.fix.unwrap().contains("daemon-reload"));
    }

    const HOOK_JSON: &str = r#"{"version":"1.0.0","hook":{"path":"/usr/bin/oci-tpm-hook"},"when":{"annotations":{"^oci-tpm-hook/.*$":".*"}},"stages":["createRuntime"]}"#;

    #[test]
    fn engines_that_are_absent_are_skipped() {
        let f = Fake::new();
        assert!(all(&f.host()).iter().all(|c| c.status == Status::Skip));
    }

    #[test]
    fn hooks_dir_file_and_its_binary() {
        let f = Fake::new();
        f.executable("/usr/bin/podman");
        let c = hooks_dir(&f.host());
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("hooks.d/oci-tpm-hook.json"));
        f.write(
            "/usr/share/containers/oci/hooks.d/oci-tpm-hook.json",
            HOOK_JSON,
        );
        let c = hooks_dir(&f.host());
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("not an executable file"), "{c:?}");
        f.executable("/usr/bin/oci-tpm-hook");
        assert_eq!(hooks_dir(&f.host()).status, Status::Pass);
        // /etc overrides a same-named file.
        f.write(
            "/etc/containers/oci/hooks.d/oci-tpm-hook.json",
            &HOOK_JSON.replace("createRuntime", "prestart"),
        );
        let c = hooks_dir(&f.host());
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("createRuntime"), "{c:?}");
    }

    #[test]
    fn docker_runtime_registration() {
        let f = Fake::new();
        f.executable("/usr/sbin/dockerd");
        assert_eq!(docker(&f.host()).status, Status::Fail);
        f.write("/etc/docker/daemon.json", r#"{"log-level":"warn"}"#);
        let c = docker(&f.host());
        assert!(c.fix.unwrap().contains("configure docker"));
        f.write(
            "/etc/docker/daemon.json",
            r#"{"runtimes":{"tpm":{"path":"/usr/bin/oci-tpm-runtime"}}}"#,
        );
        assert_eq!(docker(&f.host()).status, Status::Fail);
        f.executable("/usr/bin/oci-tpm-runtime");
        let c = docker(&f.host());
        assert_eq!(c.status, Status::Pass);
        assert!(c.detail.contains("--runtime"), "{c:?}");
        f.write("/etc/docker/daemon.json", "{");
        assert!(docker(&f.host()).detail.contains("not valid JSON"));
    }

    #[test]
    fn containerd_nri_by_config_version_and_plugin() {
        let f = Fake::new();
        f.executable("/usr/bin/containerd");
        f.write("/etc/containerd/config.toml", "version = 2\n");
        let c = containerd(&f.host());
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("configure containerd"));
        f.write(
            "/etc/containerd/config.toml",
            "version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\ndisable = false\n",
        );
        assert_eq!(containerd(&f.host()).status, Status::Warn, "no plugin yet");
        f.write("/proc/77/cmdline", "/usr/bin/oci-tpm-hook\0nri\0");
        assert_eq!(containerd(&f.host()).status, Status::Pass);
        f.write("/etc/containerd/config.toml", "version = 3\n");
        assert_eq!(
            containerd(&f.host()).status,
            Status::Pass,
            "2.x: on by default"
        );
        f.write(
            "/etc/containerd/config.toml",
            "version = 3\n[plugins.\"io.containerd.nri.v1.nri\"]\ndisable = true\n",
        );
        assert_eq!(containerd(&f.host()).status, Status::Fail);
    }

    #[test]
    fn crio_nri_can_be_turned_off_by_a_drop_in() {
        let f = Fake::new();
        f.executable("/usr/local/bin/crio");
        f.write("/opt/nri/plugins/10-oci-tpm-hook", "");
        assert_eq!(crio(&f.host()).status, Status::Pass);
        f.write(
            "/etc/crio/crio.conf.d/90-off.conf",
            "[crio.nri]\nenable_nri = false\n",
        );
        assert_eq!(crio(&f.host()).status, Status::Warn);
    }
}
