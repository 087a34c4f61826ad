//! Lossless edits of an OCI bundle's `config.json`.
//!
//! The spec is handled as a `serde_json::Value` (with `preserve_order`), never
//! as typed structs: a typed round trip drops every field the structs do not
//! know, and the engine that wrote the file may know more than we do. Only
//! the keys a [`Grant`] needs are added; everything else keeps its value and
//! its place.
//!
//! [`apply`] is pure so every spec-editing front-end can share it; [`SpecFile`]
//! is the thin file layer: it rewrites the file only when something changed,
//! atomically, with the original mode and owner.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use anyhow::{anyhow, bail, Context};
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

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A bundle's config.json as read from disk, ready to be edited and written
/// back only if the edit changed something.
///
/// The file is opened without following links and must be a regular file:
/// a config.json that is a symlink or a FIFO is refused, never edited
/// through. The rewrite goes through a handle on the bundle directory, so
/// it lands in the directory that was read, whatever its path means later.
#[derive(Debug)]
pub struct SpecFile {
    path: PathBuf,
    dir: OwnedFd,
    name: OsString,
    meta: fs::Metadata,
    original: Vec<u8>,
    pub spec: Value,
}

impl SpecFile {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let shown = path.display();
        let (dir_path, name) = match (path.parent(), path.file_name()) {
            (Some(d), Some(n)) => (
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                },
                n.to_os_string(),
            ),
            _ => bail!("{shown} does not name a file in a directory"),
        };
        let dir = nix::fcntl::open(
            dir_path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open the bundle directory {}", dir_path.display()))?;
        let fd = nix::fcntl::openat(
            dir.as_fd(),
            name.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            nix::errno::Errno::ELOOP => {
                anyhow!("{shown} is a symlink; refusing to edit through it (the bundle must hold the spec itself)")
            }
            e => anyhow!("cannot read {shown}: {e}"),
        })?;
        let mut file = fs::File::from(fd);
        let meta = file
            .metadata()
            .with_context(|| format!("cannot stat {shown}"))?;
        if !meta.file_type().is_file() {
            bail!("{shown} is not a regular file; refusing to edit it");
        }
        let mut original = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut original)
            .with_context(|| format!("cannot read {shown}"))?;
        let spec: Value = serde_json::from_slice(&original)
            .with_context(|| format!("{shown} is not valid JSON"))?;
        if !spec.is_object() {
            bail!("{shown} holds {}, not a JSON object", kind(&spec));
        }
        Ok(Self {
            path: path.to_path_buf(),
            dir,
            name,
            meta,
            original,
            spec,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn annotations(&self) -> anyhow::Result<BTreeMap<String, String>> {
        crate::oci::state::annotations(&self.spec)
            .with_context(|| format!("in {}", self.path.display()))
    }

    /// Applies the grant and writes the file when that changed anything; an
    /// unchanged spec leaves the file untouched (same bytes, same inode).
    pub fn apply_and_write(&mut self, grant: &Grant, hook: &HookEntry) -> anyhow::Result<Changes> {
        let changes = apply(&mut self.spec, grant, hook)
            .with_context(|| format!("cannot edit {}", self.path.display()))?;
        if !changes.is_empty() {
            let bytes = serialize_like(&self.spec, &self.original)?;
            self.replace(&bytes)
                .with_context(|| format!("cannot write {}", self.path.display()))?;
        }
        Ok(changes)
    }

    /// Replaces the file so that a reader sees either the old or the new
    /// one, never a half-written one: a temp file in the same directory with
    /// the original's mode and owner, fsync, rename over the original (still
    /// the file that was read), fsync of the directory.
    fn replace(&self, bytes: &[u8]) -> anyhow::Result<()> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let tmp = format!(
            ".{}.oci-tpm.{}.{}",
            self.name.to_string_lossy(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mode = self.meta.mode() & 0o7777;
        let result = (|| -> anyhow::Result<()> {
            let fd = nix::fcntl::openat(
                self.dir.as_fd(),
                tmp.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(mode),
            )
            .with_context(|| format!("cannot create {tmp} in the bundle"))?;
            let mut file = fs::File::from(fd);
            // The umask may have cleared bits of the requested mode.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
            let owner = file.metadata()?;
            if (owner.uid(), owner.gid()) != (self.meta.uid(), self.meta.gid()) {
                std::os::unix::fs::fchown(&file, Some(self.meta.uid()), Some(self.meta.gid()))
                    .context("cannot give the new file the original's owner")?;
            }
            file.write_all(bytes)?;
            file.sync_all()?;
            let now = nix::sys::stat::fstatat(
                self.dir.as_fd(),
                self.name.as_os_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
            if (now.st_dev, now.st_ino) != (self.meta.dev(), self.meta.ino()) {
                bail!("the file changed under us; leaving it alone");
            }
            nix::fcntl::renameat(
                self.dir.as_fd(),
                tmp.as_str(),
                self.dir.as_fd(),
                self.name.as_os_str(),
            )?;
            nix::unistd::fsync(self.dir.as_fd())?;
            Ok(())
        })();
        if result.is_err() {
            let _ = nix::unistd::unlinkat(
                self.dir.as_fd(),
                tmp.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        result
    }
}

/// Serializes `spec` in the style of `original`: compact when the original
/// was on one line (what engines write), else indented with the original's
/// indent unit; a trailing newline is kept when there was one.
fn serialize_like(spec: &Value, original: &[u8]) -> anyhow::Result<Vec<u8>> {
    let text = String::from_utf8_lossy(original);
    let indent: Option<String> = text.lines().skip(1).find_map(|line| {
        let ws: String = line
            .chars()
            .take_while(|c| *c == ' ' || *c == '\t')
            .collect();
        (!ws.is_empty()).then_some(ws)
    });
    let mut out = Vec::with_capacity(original.len() + 512);
    match indent {
        None => serde_json::to_writer(&mut out, spec)?,
        Some(unit) => {
            let formatter = serde_json::ser::PrettyFormatter::with_indent(unit.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
            serde::Serialize::serialize(spec, &mut ser)?;
        }
    }
    if original.ends_with(b"\n") {
        out.push(b'\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::host::HostTpm;
    use crate::core::policy::NodeAccess;
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

    #[test]
    fn style_follows_the_original() {
        let v = json!({"a": [1], "b": {"c": true}});
        assert_eq!(
            serialize_like(&v, b"{\"a\":1}").unwrap(),
            br#"{"a":[1],"b":{"c":true}}"#
        );
        let tabbed = serialize_like(&v, b"{\n\t\"a\": 1\n}\n").unwrap();
        assert_eq!(
            String::from_utf8(tabbed).unwrap(),
            "{\n\t\"a\": [\n\t\t1\n\t],\n\t\"b\": {\n\t\t\"c\": true\n\t}\n}\n"
        );
        let spaced = serialize_like(&v, b"{\n  \"a\": 1\n}").unwrap();
        assert!(String::from_utf8(spaced)
            .unwrap()
            .starts_with("{\n  \"a\": [\n    1"));
    }
}
