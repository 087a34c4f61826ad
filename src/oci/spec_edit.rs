//! Lossless edits of an OCI bundle's `config.json`.
//!
//! The spec is handled as a `serde_json::Value` (with `preserve_order`), never
//! as typed structs: a typed round trip drops every field the structs do not
//! know, and the engine that wrote the file may know more than we do. Only
//! the keys a [`Grant`] needs are added; everything else keeps its value and
//! its place.
//!
//! [`apply`] is pure so every spec-editing front-end can share it;
//! [`super::bundle::BundleFile`] is the file layer: it rewrites the file only
//! when something changed, atomically, with the original mode and owner.

use std::fmt;
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use serde_json::{json, Map, Value};

use crate::core::grant::Grant;
use crate::core::hook_entry::HookEntry;
use crate::core::identity::ProcessIdentity;

/// How the hook entry looks in config.json.
fn hook_value(hook: &HookEntry) -> Value {
    let mut entry = Map::new();
    entry.insert("path".into(), json!(hook.path.to_string_lossy()));
    entry.insert("args".into(), json!(hook.args));
    if !hook.env.is_empty() {
        entry.insert("env".into(), json!(hook.env));
    }
    if let Some(t) = hook.timeout {
        entry.insert("timeout".into(), json!(t));
    }
    Value::Object(entry)
}

/// One edit [`apply`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A `linux.devices` entry for the node was added.
    DeviceNode(PathBuf),
    /// An existing entry for the same device had another group or mode.
    DeviceNodeOwnership(PathBuf),
    /// The `linux.resources.devices` allow rule was added.
    CgroupRule(String),
    AdditionalGid(u32),
    Env(&'static str),
    Hook(PathBuf),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DeviceNode(p) => write!(f, "device {}", p.display()),
            Self::DeviceNodeOwnership(p) => write!(f, "group and mode of device {}", p.display()),
            Self::CgroupRule(r) => write!(f, "cgroup rule {r}"),
            Self::AdditionalGid(g) => write!(f, "additional GID {g}"),
            Self::Env(k) => write!(f, "env {k}"),
            Self::Hook(p) => write!(f, "createRuntime hook {}", p.display()),
        }
    }
}

/// What [`apply`] changed; empty when the spec already had everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes(pub Vec<Change>);

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("nothing");
        }
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// Puts everything `grant` needs into `spec`: the device node, the cgroup
/// allow rule, the group as an additional GID of the process, the TCTI
/// environment and the validating hook. Idempotent: a second call returns
/// no changes. On error `spec` is left as it was.
pub fn apply(spec: &mut Value, grant: &Grant, hook: &HookEntry) -> anyhow::Result<Changes> {
    // Work on a copy so a shape error half-way leaves the caller's spec whole.
    let mut work = spec.clone();
    let changes = apply_in_place(&mut work, grant, hook)?;
    if !changes.is_empty() {
        *spec = work;
    }
    Ok(changes)
}

fn apply_in_place(spec: &mut Value, grant: &Grant, hook: &HookEntry) -> anyhow::Result<Changes> {
    let found = kind(spec);
    let root = spec
        .as_object_mut()
        .ok_or_else(|| anyhow!("the spec is {found}, not a JSON object"))?;
    let mut changes = Vec::new();

    // Check `process` first: a spec without a process cannot be started, and
    // noticing that before touching `linux` keeps the error about the cause.
    let process = match root.get_mut("process") {
        Some(Value::Object(p)) => p,
        Some(other) => bail!("/process is {}, not an object", kind(other)),
        None => bail!("the spec has no /process; there is no process to give the TPM to"),
    };
    let user = match process.get_mut("user") {
        Some(Value::Object(u)) => u,
        Some(other) => bail!("/process/user is {}, not an object", kind(other)),
        None => bail!("the spec has no /process/user"),
    };
    let identity = ProcessIdentity::from_spec(&json!({"process": {"user": user.clone()}}))?;
    let node_gid = grant.node_gid(Some(&identity));
    if grant.process_needs_group() {
        let gids = array_entry(user, "additionalGids", "/process/user/additionalGids")?;
        if !gids.iter().any(|g| g.as_u64() == Some(u64::from(node_gid))) {
            gids.push(json!(node_gid));
            changes.push(Change::AdditionalGid(node_gid));
        }
    }
    let env = array_entry(process, "env", "/process/env")?;
    for (key, value) in grant.env() {
        // Any value the user set wins: they may point at another TCTI on purpose.
        let set = env.iter().any(|e| {
            e.as_str()
                .and_then(|s| s.split_once('='))
                .is_some_and(|(k, _)| k == key)
        });
        if !set {
            env.push(json!(format!("{key}={value}")));
            changes.push(Change::Env(key));
        }
    }

    let linux = object_entry(root, "linux", "/linux")?;
    let devices = array_entry(linux, "devices", "/linux/devices")?;
    if let Some(change) = ensure_device_node(devices, grant, node_gid)? {
        changes.push(change);
    }
    let resources = object_entry(linux, "resources", "/linux/resources")?;
    let rules = array_entry(resources, "devices", "/linux/resources/devices")?;
    if !crate::oci::device_rules::allows_char_device(rules, grant.device.major, grant.device.minor)?
    {
        rules.push(json!({
            "allow": true,
            "type": "c",
            "major": grant.device.major,
            "minor": grant.device.minor,
            "access": "rw",
        }));
        changes.push(Change::CgroupRule(grant.cgroup_rule()));
    }

    let hooks = object_entry(root, "hooks", "/hooks")?;
    let create_runtime = array_entry(hooks, "createRuntime", "/hooks/createRuntime")?;
    let hook_path = hook.path.to_string_lossy();
    let present = create_runtime
        .iter()
        .any(|h| h.get("path").and_then(Value::as_str) == Some(&hook_path));
    if !present {
        create_runtime.push(hook_value(hook));
        changes.push(Change::Hook(hook.path.clone()));
    }
    Ok(Changes(changes))
}

/// Adds the node, or checks an entry the engine already has for that path
/// (e.g. `docker run --device /dev/tpmrm0` together with the annotation).
fn ensure_device_node(
    devices: &mut Vec<Value>,
    grant: &Grant,
    gid: u32,
) -> anyhow::Result<Option<Change>> {
    let path = grant.container_path.to_string_lossy();
    let existing = devices
        .iter_mut()
        .find(|d| d.get("path").and_then(Value::as_str) == Some(&path));
    let Some(entry) = existing else {
        devices.push(json!({
            "path": path,
            "type": "c",
            "major": grant.device.major,
            "minor": grant.device.minor,
            "fileMode": grant.mode,
            "uid": 0,
            "gid": gid,
        }));
        return Ok(Some(Change::DeviceNode(grant.container_path.clone())));
    };
    let entry = entry
        .as_object_mut()
        .ok_or_else(|| anyhow!("/linux/devices has an entry for {path} that is not an object"))?;
    let same_device = entry.get("type").and_then(Value::as_str) == Some("c")
        && entry.get("major").and_then(Value::as_u64) == Some(u64::from(grant.device.major))
        && entry.get("minor").and_then(Value::as_u64) == Some(u64::from(grant.device.minor));
    if !same_device {
        bail!(
            "the spec already has another device at {path} ({}); it is not host {} (c {}:{}): drop the --device for {path} or the annotation",
            describe_device(entry),
            grant.device.name,
            grant.device.major,
            grant.device.minor
        );
    }
    // The same device: make sure the group can use it, or the non-root user
    // the additional GID is for would still get EACCES. The mode may carry
    // file-type bits (docker writes 0o20660); keep them.
    let mode = entry.get("fileMode").and_then(Value::as_u64);
    let want_mode = u64::from(grant.mode);
    let mode_ok = mode.is_some_and(|m| m & 0o7777 == want_mode);
    let gid_ok = entry.get("gid").and_then(Value::as_u64) == Some(u64::from(gid));
    if mode_ok && gid_ok {
        return Ok(None);
    }
    if !mode_ok {
        let type_bits = mode.unwrap_or(0) & !0o7777;
        entry.insert("fileMode".into(), json!(type_bits | want_mode));
    }
    if !gid_ok {
        entry.insert("gid".into(), json!(gid));
    }
    Ok(Some(Change::DeviceNodeOwnership(
        grant.container_path.clone(),
    )))
}

fn describe_device(entry: &Map<String, Value>) -> String {
    let field = |k: &str| {
        entry
            .get(k)
            .map(|v| v.to_string().trim_matches('"').to_owned())
            .unwrap_or_else(|| "?".into())
    };
    format!("{} {}:{}", field("type"), field("major"), field("minor"))
}

/// `parent[key]` as an object, created when absent (or null).
fn object_entry<'a>(
    parent: &'a mut Map<String, Value>,
    key: &str,
    at: &str,
) -> anyhow::Result<&'a mut Map<String, Value>> {
    let slot = parent.entry(key).or_insert_with(|| json!({}));
    if slot.is_null() {
        *slot = json!({});
    }
    let found = kind(slot);
    slot.as_object_mut()
        .ok_or_else(|| anyhow!("{at} is {found}, not an object"))
}

/// `parent[key]` as an array, created when absent (or null, which Go writes
/// for an empty slice without `omitempty`).
fn array_entry<'a>(
    parent: &'a mut Map<String, Value>,
    key: &str,
    at: &str,
) -> anyhow::Result<&'a mut Vec<Value>> {
    let slot = parent.entry(key).or_insert_with(|| json!([]));
    if slot.is_null() {
        *slot = json!([]);
    }
    let found = kind(slot);
    slot.as_array_mut()
        .ok_or_else(|| anyhow!("{at} is {found}, not an array"))
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::host::HostTpm;
    use crate::core::policy::NodeAccess;
    use std::path::Path;
    use std::time::Duration;
    use tpm2_selftest::SelfTestLevel;

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
            access: NodeAccess::Group,
            self_test: SelfTestLevel::Quick,
            timeout: Duration::from_millis(5000),
            required: true,
        }
    }

    fn hook() -> HookEntry {
        HookEntry::unchecked(
            Path::new("/usr/bin/oci-tpm-hook"),
            Path::new(crate::core::policy::DEFAULT_PATH),
            &grant(),
        )
    }

    fn minimal() -> Value {
        json!({"ociVersion": "1.0.2", "process": {"user": {"uid": 1000, "gid": 1000}, "args": ["sh"]}})
    }

    #[test]
    fn adds_everything_to_a_minimal_spec() {
        let mut spec = minimal();
        let changes = apply(&mut spec, &grant(), &hook()).unwrap();
        assert_eq!(changes.0.len(), 6, "{changes}");
        assert_eq!(
            spec["linux"]["devices"][0],
            json!({"path": "/dev/tpmrm0", "type": "c", "major": 253, "minor": 65536,
                   "fileMode": 432, "uid": 0, "gid": 102})
        );
        assert_eq!(
            spec["linux"]["resources"]["devices"][0],
            json!({"allow": true, "type": "c", "major": 253, "minor": 65536, "access": "rw"})
        );
        assert_eq!(spec["process"]["user"]["additionalGids"], json!([102]));
        assert_eq!(
            spec["process"]["env"],
            json!([
                "TPM2TOOLS_TCTI=device:/dev/tpmrm0",
                "TSS2_TCTI=device:/dev/tpmrm0"
            ])
        );
        assert_eq!(
            spec["hooks"]["createRuntime"][0],
            json!({"path": "/usr/bin/oci-tpm-hook", "args": ["oci-tpm-hook"], "timeout": 10})
        );
        assert!(apply(&mut spec, &grant(), &hook()).unwrap().is_empty());
    }

    #[test]
    fn process_gid_access_gives_the_node_the_process_group() {
        let mut spec = minimal();
        let mut g = grant();
        g.access = NodeAccess::ProcessGid;
        apply(&mut spec, &g, &hook()).unwrap();
        assert_eq!(spec["linux"]["devices"][0]["gid"], json!(1000));
        assert!(
            spec["process"]["user"].get("additionalGids").is_none(),
            "no extra group needed: {spec}"
        );
        assert!(apply(&mut spec, &g, &hook()).unwrap().is_empty());
    }

    #[test]
    fn hook_timeout_rounds_up() {
        let mut g = grant();
        g.timeout = Duration::from_millis(2500);
        let h = HookEntry::unchecked(Path::new("/h"), Path::new("/etc/p.toml"), &g);
        assert_eq!(h.timeout, Some(8));
        assert_eq!(
            hook_value(&h)["env"],
            json!(["OCI_TPM_HOOK_CONFIG=/etc/p.toml"])
        );
    }

    #[test]
    fn keeps_what_is_there() {
        let mut spec = minimal();
        spec["process"]["env"] = json!(["PATH=/bin", "TSS2_TCTI=swtpm:port=2321"]);
        spec["process"]["user"]["additionalGids"] = json!([5, 102]);
        spec["hooks"] =
            json!({"createRuntime": [{"path": "/usr/bin/oci-tpm-hook", "args": ["x"]}]});
        let changes = apply(&mut spec, &grant(), &hook()).unwrap();
        assert_eq!(
            changes.0,
            vec![
                Change::Env("TPM2TOOLS_TCTI"),
                Change::DeviceNode("/dev/tpmrm0".into()),
                Change::CgroupRule("c 253:65536 rw".into()),
            ]
        );
        assert_eq!(
            spec["process"]["env"],
            json!([
                "PATH=/bin",
                "TSS2_TCTI=swtpm:port=2321",
                "TPM2TOOLS_TCTI=device:/dev/tpmrm0"
            ])
        );
        assert_eq!(spec["process"]["user"]["additionalGids"], json!([5, 102]));
        assert_eq!(spec["hooks"]["createRuntime"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn existing_device_entry() {
        // docker run --device /dev/tpmrm0: same device, group 0, mode with type bits.
        let mut spec = minimal();
        spec["linux"] = json!({"devices": [{"path": "/dev/tpmrm0", "type": "c", "major": 253,
            "minor": 65536, "fileMode": 8624, "uid": 0, "gid": 0}]});
        let changes = apply(&mut spec, &grant(), &hook()).unwrap();
        assert!(changes
            .0
            .contains(&Change::DeviceNodeOwnership("/dev/tpmrm0".into())));
        let dev = &spec["linux"]["devices"][0];
        assert_eq!(
            (dev["fileMode"].as_u64(), dev["gid"].as_u64()),
            (Some(0o20660), Some(102))
        );
        assert_eq!(spec["linux"]["devices"].as_array().unwrap().len(), 1);

        // Another device at the same path is an error, and the spec is untouched.
        let mut spec = minimal();
        spec["linux"] =
            json!({"devices": [{"path": "/dev/tpmrm0", "type": "c", "major": 10, "minor": 224}]});
        let before = spec.clone();
        let err = format!("{:#}", apply(&mut spec, &grant(), &hook()).unwrap_err());
        assert!(
            err.contains("c 10:224") && err.contains("253:65536"),
            "{err}"
        );
        assert_eq!(spec, before);
    }

    #[test]
    fn wrong_shapes_are_errors_and_leave_the_spec_alone() {
        for (patch, at) in [
            (json!({"linux": {"devices": {}}}), "/linux/devices"),
            (json!({"linux": []}), "/linux"),
            (
                json!({"linux": {"resources": {"devices": "rw"}}}),
                "/linux/resources/devices",
            ),
            (
                json!({"linux": {"resources": {"devices": [1]}}}),
                "/linux/resources/devices/0",
            ),
            (
                json!({"hooks": {"createRuntime": {}}}),
                "/hooks/createRuntime",
            ),
            (json!({"process": "sh"}), "/process"),
            (
                json!({"process": {"user": {}, "env": "A=B"}}),
                "/process/env",
            ),
            (
                json!({"process": {"user": {"additionalGids": 102}}}),
                "/process/user/additionalGids",
            ),
            (json!({"process": {}}), "/process/user"),
        ] {
            let mut spec = minimal();
            for (k, v) in patch.as_object().unwrap() {
                spec[k] = v.clone();
            }
            let before = spec.clone();
            let err = format!("{:#}", apply(&mut spec, &grant(), &hook()).unwrap_err());
            assert!(err.contains(at), "{at}: {err}");
            assert_eq!(spec, before, "{at}");
        }
        let mut no_process = json!({"ociVersion": "1.0.2"});
        assert!(apply(&mut no_process, &grant(), &hook()).is_err());
        assert_eq!(no_process, json!({"ociVersion": "1.0.2"}));
        assert!(apply(&mut json!([]), &grant(), &hook()).is_err());
    }

    #[test]
    fn nulls_count_as_absent() {
        let mut spec = minimal();
        spec["linux"] = json!({"devices": null, "resources": null});
        spec["process"]["user"]["additionalGids"] = Value::Null;
        assert_eq!(apply(&mut spec, &grant(), &hook()).unwrap().0.len(), 6);
    }
}
