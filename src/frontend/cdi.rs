//! `oci-tpm-hook cdi generate`: a Container Device Interface spec of the
//! host's TPMs, so that engines that read CDI (podman, docker ≥ 25 with
//! the `cdi` feature, containerd's CRI with `enable_cdi`, CRI-O) give a
//! container a TPM with `--device oci-tpm-hook.dev/tpm=tpmrm0`.
//!
//! One device per TPM 2.0 resource manager the policy allows, each exactly
//! what [`decide`] grants a container that asks for it by annotation: the
//! node (no device numbers: CDI runtimes read them from the host's node
//! when they apply the spec, so a spec survives a changed major), mode
//! 0660 owned by root with the host's `tss` GID, that GID as an additional
//! group of the process, the TCTI environment, and the createRuntime hook
//! that proves the TPM from inside the container. CDI cannot annotate a
//! container, so the hook names the device on its command line
//! (`--annotation oci-tpm-hook/device=tpmrm0`).
//!
//! Written as JSON, which every CDI reader accepts (`.json` beside
//! `.yaml`), by the JSON writer the project already has: no YAML crate.
//! `cdiVersion` is 0.7.0, the first with `additionalGids`, which is what
//! lets a non-root container user open the node without `--group-add`;
//! docker 26.1's CDI library knows versions up to 0.7.0, podman 5.4's and
//! containerd 1.7.24's up to 0.8.0.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::core::decision::{decide, Decision};
use crate::core::grant::Grant;
use crate::core::hook_entry::HookEntry;
use crate::core::host::HostRoots;
use crate::core::policy::{self, Policy};
use crate::core::request::KEY_DEVICE;
use crate::core::subject::Subject;
use crate::files::{json_like, PlainFile};
use clap::Args;

/// The CDI kind of the devices: `--device oci-tpm-hook.dev/tpm=tpmrm0`.
pub const KIND: &str = "oci-tpm-hook.dev/tpm";
/// The lowest CDI version with `additionalGids`.
pub const CDI_VERSION: &str = "0.7.0";
/// Where `cdi generate` writes by default: the directory CDI keeps for
/// specs generated at run time (they are regenerated at boot and whenever
/// a TPM appears or goes away, by the packaged udev rule).
pub const DEFAULT_OUTPUT: &str = "/var/run/cdi/oci-tpm-hook.json";

/// The spec, and the TPMs left out with the reason.
#[derive(Debug)]
pub struct Generated {
    /// `None` when no TPM made it in (a CDI spec needs at least one device).
    pub spec: Option<Value>,
    pub devices: Vec<String>,
    pub left_out: Vec<(String, String)>,
}

/// The CDI spec for the TPMs on `host` that `policy` allows. An error only
/// when the spec could not be right (no hook binary to prove the devices);
/// a TPM that cannot be granted is left out with its reason.
pub fn generate(
    policy: &Policy,
    policy_file: &Path,
    host: &HostRoots,
) -> anyhow::Result<Generated> {
    let names = host.resource_managers().unwrap_or_default();
    let mut devices = Vec::new();
    let mut left_out = Vec::new();
    for name in names.into_iter().filter(|n| policy.device_allowed(n)) {
        let subject = Subject {
            id: "cdi".into(),
            annotations: BTreeMap::from([(KEY_DEVICE.to_owned(), name.clone())]),
            ..Default::default()
        };
        match decide(&subject, policy, host) {
            Decision::Grant(grant) => {
                let hook = HookEntry::for_grant(policy, policy_file, &grant)?;
                let device = device(&grant, &grant.device.path, Some(&hook));
                devices.push((name, device));
            }
            Decision::Refuse(r) => left_out.push((name, r.error.root_cause().to_string())),
            Decision::NotRequested => unreachable!("the subject asks for {name}"),
        }
    }
    let spec = spec(KIND, devices.iter().map(|(_, d)| d.clone()).collect());
    Ok(Generated {
        spec,
        devices: devices.into_iter().map(|(n, _)| n).collect(),
        left_out,
    })
}

/// A spec of `kind` with `devices`; `None` without any (a CDI spec needs
/// at least one device).
pub fn spec(kind: &str, devices: Vec<Value>) -> Option<Value> {
    (!devices.is_empty()).then(|| {
        json!({
            "cdiVersion": CDI_VERSION,
            "kind": kind,
            "devices": devices,
        })
    })
}

/// One CDI device: what the grant gives (the node at `host_path` as the
/// runtime sees the host), and the hook that proves it, if any.
pub fn device(grant: &Grant, host_path: &Path, hook: Option<&HookEntry>) -> Value {
    let container_path = grant.container_path.display().to_string();
    let mut node = json!({
        "path": container_path,
        "hostPath": host_path.display().to_string(),
        "type": "c",
        "permissions": "rw",
        "fileMode": grant.mode,
        "uid": 0,
    });
    let mut edits = serde_json::Map::new();
    edits.insert(
        "env".into(),
        json!(grant
            .env()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()),
    );
    // With access = "process-gid" the spec names no group: the hook gives
    // the node the process's own GID before the container starts.
    if grant.process_needs_group() {
        node["gid"] = json!(grant.gid);
    }
    edits.insert("deviceNodes".into(), json!([node]));
    if grant.process_needs_group() {
        edits.insert("additionalGids".into(), json!([grant.gid]));
    }
    if let Some(hook) = hook {
        edits.insert("hooks".into(), json!([hook_entry(grant, hook)]));
    }
    json!({"name": grant.device.name, "containerEdits": edits})
}

/// The createRuntime hook of a device: CDI cannot annotate a container, so
/// the request goes on the hook's command line.
fn hook_entry(grant: &Grant, hook: &HookEntry) -> Value {
    let mut args = hook.args.clone();
    args.extend([
        "hook".to_owned(),
        "--annotation".to_owned(),
        format!("{KEY_DEVICE}={}", grant.device.name),
    ]);
    let mut entry = json!({
        "hookName": "createRuntime",
        "path": hook.path.display().to_string(),
        "args": args,
    });
    if !hook.env.is_empty() {
        entry["env"] = json!(hook.env);
    }
    if let Some(t) = hook.timeout {
        entry["timeout"] = json!(t);
    }
    entry
}

/// `oci-tpm-hook cdi generate`.
pub fn main(args: &CdiGenerateArgs) -> anyhow::Result<ExitCode> {
    let policy_file = policy::resolve_path(args.config.as_deref());
    let policy = Policy::load(&policy_file)?;
    let generated = generate(&policy, &policy_file, &HostRoots::default())?;
    for (name, reason) in &generated.left_out {
        eprintln!("oci-tpm-hook: cdi: {name} left out: {reason}");
    }
    let to_stdout = args.output == Path::new("-");
    match (&generated.spec, to_stdout) {
        (Some(spec), true) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&json_like(spec, b"")?)?;
        }
        (None, true) => bail!(
            "no TPM 2.0 resource manager on this host that the policy ({}) allows: no CDI spec to write",
            policy_file.display()
        ),
        (Some(spec), false) => {
            let changed = write_spec(&args.output, spec)?;
            println!(
                "{} {}: {}",
                if changed { "wrote" } else { "unchanged" },
                args.output.display(),
                generated
                    .devices
                    .iter()
                    .map(|d| format!("{KIND}={d}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        (None, false) => {
            if remove_spec(&args.output)? {
                println!(
                    "removed {}: no TPM on this host that the policy allows",
                    args.output.display()
                );
            } else {
                println!(
                    "no TPM on this host that the policy allows; no CDI spec at {}",
                    args.output.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the spec atomically, creating its directory; leaves a file that
/// already says the same untouched. Whether it wrote.
pub fn write_spec(path: &Path, spec: &Value) -> anyhow::Result<bool> {
    let bytes = json_like(spec, b"")?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the CDI spec directory {}", dir.display()))?;
    }
    let file = PlainFile::read(path)?;
    if file.contents() == Some(bytes.as_slice()) {
        return Ok(false);
    }
    file.write(&bytes, 0o644)?;
    Ok(true)
}

/// Removes a spec written earlier; whether there was one.
pub fn remove_spec(path: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

#[derive(Args, Debug)]
pub struct CdiGenerateArgs {
    /// Where to write the spec (JSON); - for stdout
    #[arg(long, value_name = "PATH", default_value = DEFAULT_OUTPUT)]
    pub output: PathBuf,
    /// Policy file [default: $OCI_TPM_HOOK_CONFIG or /etc/oci-tpm-hook/config.toml]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::NodeAccess;
    use crate::testing::FakeHost;
    use std::os::unix::fs::PermissionsExt;

    /// A policy whose hook binary exists.
    fn policy(host: &FakeHost) -> Policy {
        let hook = host.dir().join("oci-tpm-hook");
        std::fs::write(&hook, "").unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut p = Policy::default();
        p.hook.path = hook;
        p
    }

    fn default_file() -> &'static Path {
        Path::new(policy::DEFAULT_PATH)
    }

    #[test]
    fn one_device_per_allowed_resource_manager() {
        let host = FakeHost::new(113);
        host.add_tpm(0, "1:3", "2");
        host.add_tpm(1, "1:3", "2");
        let p = policy(&host);
        let g = generate(&p, default_file(), &host.roots).unwrap();
        assert_eq!(g.devices, ["tpmrm0", "tpmrm1"]);
        assert!(g.left_out.is_empty());
        let spec = g.spec.unwrap();
        assert_eq!(spec["cdiVersion"], "0.7.0");
        assert_eq!(spec["kind"], "oci-tpm-hook.dev/tpm");
        let dev = &spec["devices"][1];
        assert_eq!(dev["name"], "tpmrm1");
        let edits = &dev["containerEdits"];
        let node = &edits["deviceNodes"][0];
        assert_eq!(node["path"], "/dev/tpmrm1");
        assert_eq!(
            node["hostPath"],
            host.roots.dev.join("tpmrm1").display().to_string()
        );
        // No device numbers: the runtime reads them from the host's node.
        assert!(node.get("major").is_none() && node.get("minor").is_none());
        assert_eq!(node["type"], "c");
        assert_eq!(node["fileMode"], 0o660);
        assert_eq!(
            (node["uid"].as_u64(), node["gid"].as_u64()),
            (Some(0), Some(113))
        );
        assert_eq!(edits["additionalGids"], json!([113]));
        assert_eq!(
            edits["env"],
            json!([
                "TPM2TOOLS_TCTI=device:/dev/tpmrm1",
                "TSS2_TCTI=device:/dev/tpmrm1"
            ])
        );
        let hook = &edits["hooks"][0];
        assert_eq!(hook["hookName"], "createRuntime");
        assert_eq!(hook["path"], p.hook.path.display().to_string());
        assert_eq!(
            hook["args"],
            json!([
                "oci-tpm-hook",
                "hook",
                "--annotation",
                "oci-tpm-hook/device=tpmrm1"
            ])
        );
        assert_eq!(hook["timeout"], 10);
        assert!(
            hook.get("env").is_none(),
            "the default policy file is not passed on"
        );
    }

    #[test]
    fn the_hooks_request_parses_back_to_the_device() {
        let host = FakeHost::with_tpm();
        let g = generate(&policy(&host), default_file(), &host.roots).unwrap();
        let args = g.spec.unwrap()["devices"][0]["containerEdits"]["hooks"][0]["args"].clone();
        let argv: Vec<String> = serde_json::from_value(args).unwrap();
        let cli = crate::cli::parse(argv.iter().skip(1).map(Into::into));
        let Some(crate::cli::Command::Hook(h)) = cli.command else {
            panic!("not the hook: {argv:?}");
        };
        let request = crate::core::request::parse(&h.given_annotations(), None)
            .unwrap()
            .unwrap();
        assert_eq!(request.device.to_string(), "tpmrm0");
    }

    #[test]
    fn policy_decides_what_is_in_it() {
        let host = FakeHost::new(102);
        host.add_tpm(0, "1:3", "2");
        host.add_tpm(1, "9:9", "2"); // the node is not what sysfs says
        host.add_tpm(2, "1:3", "2");
        let mut p = policy(&host);
        p.devices.allow = vec!["tpmrm0".into(), "tpmrm1".into()];
        let g = generate(&p, Path::new("/etc/other.toml"), &host.roots).unwrap();
        assert_eq!(g.devices, ["tpmrm0"]);
        assert_eq!(g.left_out.len(), 1);
        assert_eq!(g.left_out[0].0, "tpmrm1");
        assert!(g.left_out[0].1.contains("9:9"), "{:?}", g.left_out);
        // A policy file other than the default goes to the hook.
        let spec = g.spec.unwrap();
        assert_eq!(
            spec["devices"][0]["containerEdits"]["hooks"][0]["env"],
            json!(["OCI_TPM_HOOK_CONFIG=/etc/other.toml"])
        );
    }

    #[test]
    fn process_gid_access_leaves_the_group_to_the_runtime_and_the_hook() {
        let host = FakeHost::with_tpm();
        let mut p = policy(&host);
        p.node.access = NodeAccess::ProcessGid;
        let spec = generate(&p, default_file(), &host.roots)
            .unwrap()
            .spec
            .unwrap();
        let edits = &spec["devices"][0]["containerEdits"];
        assert!(edits.get("additionalGids").is_none());
        assert!(edits["deviceNodes"][0].get("gid").is_none());
    }

    #[test]
    fn no_tpm_no_spec_and_no_hook_no_spec() {
        let host = FakeHost::new(102);
        let g = generate(&policy(&host), default_file(), &host.roots).unwrap();
        assert!(g.spec.is_none() && g.devices.is_empty());
        // A host whose tss group is missing: every TPM is left out, saying why.
        let host = FakeHost::with_tpm();
        std::fs::write(&host.roots.group_file, "root:x:0:\n").unwrap();
        let g = generate(&policy(&host), default_file(), &host.roots).unwrap();
        assert!(g.spec.is_none());
        assert!(g.left_out[0].1.contains("\"tss\""), "{:?}", g.left_out);
        // Without the hook binary a device could not be proven: an error.
        let host = FakeHost::with_tpm();
        let mut p = Policy::default();
        p.hook.path = host.dir().join("missing");
        let err = generate(&p, default_file(), &host.roots).unwrap_err();
        assert!(err.to_string().contains("[hook] path"), "{err}");
    }

    #[test]
    fn writing_is_atomic_idempotent_and_removal_is_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdi/oci-tpm-hook.json");
        let spec =
            json!({"cdiVersion": CDI_VERSION, "kind": KIND, "devices": [{"name": "tpmrm0"}]});
        assert!(write_spec(&path, &spec).unwrap());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), spec);
        assert!(text.ends_with("}\n"));
        assert!(!write_spec(&path, &spec).unwrap(), "same spec: untouched");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), meta.ino());
        assert!(remove_spec(&path).unwrap());
        assert!(!remove_spec(&path).unwrap());
    }
}
