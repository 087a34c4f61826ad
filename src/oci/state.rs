//! What the runtime tells a hook: the OCI state on stdin and the bundle's
//! config.json.
//!
//! Both are read leniently as JSON values: runtimes differ in the state's
//! `status` ("creating" for runc, "created" for crun) and extra fields (crun
//! adds "root"), and a hook must not fail a container over a field it does
//! not use. The fields it does use are checked strictly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

/// The parts of the OCI state a hook needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub id: String,
    pub pid: i32,
    pub bundle: PathBuf,
    pub annotations: BTreeMap<String, String>,
}

/// The state is small; anything bigger than this is not a state.
const MAX_STATE_BYTES: usize = 1 << 20;

impl ContainerState {
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        if bytes.len() > MAX_STATE_BYTES {
            bail!(
                "OCI state on stdin is {} bytes; refusing more than {MAX_STATE_BYTES}",
                bytes.len()
            );
        }
        let v: Value = serde_json::from_slice(bytes).context("OCI state on stdin is not JSON")?;
        let obj = v
            .as_object()
            .ok_or_else(|| anyhow!("OCI state on stdin is not a JSON object"))?;
        let id = obj
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow!("OCI state has no container \"id\""))?
            .to_owned();
        let pid = obj
            .get("pid")
            .and_then(Value::as_i64)
            .filter(|p| *p > 0 && *p <= i64::from(i32::MAX))
            .ok_or_else(|| anyhow!("OCI state of container {id} has no valid \"pid\" (is this hook registered for a stage before the container process exists?)"))?
            as i32;
        let bundle = obj
            .get("bundle")
            .and_then(Value::as_str)
            .filter(|s| s.starts_with('/'))
            .ok_or_else(|| anyhow!("OCI state of container {id} has no absolute \"bundle\" path"))?
            .into();
        let annotations = annotations(&v)
            .with_context(|| format!("OCI state of container {id}: bad \"annotations\""))?;
        Ok(Self {
            id,
            pid,
            bundle,
            annotations,
        })
    }
}

/// The `annotations` of an OCI document (the state or config.json): absent
/// or null means none; anything but an object of strings is an error (the
/// OCI spec says `map[string]string`).
pub fn annotations(doc: &Value) -> anyhow::Result<BTreeMap<String, String>> {
    match doc.get("annotations") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => bail!("/annotations/{k} is {other}, not a string"),
            })
            .collect(),
        Some(other) => bail!("/annotations is {other}, not an object"),
    }
}

/// A bundle's config.json, kept as JSON.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    pub dir: PathBuf,
    pub spec: Value,
}

impl BundleSpec {
    pub fn load(bundle: &Path) -> anyhow::Result<Self> {
        let path = bundle.join("config.json");
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let spec: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        if !spec.is_object() {
            bail!("{} is not a JSON object", path.display());
        }
        Ok(Self {
            dir: bundle.to_path_buf(),
            spec,
        })
    }

    /// The rootfs as the host (and, before pivot_root, the container's mount
    /// namespace) sees it.
    pub fn rootfs(&self) -> anyhow::Result<PathBuf> {
        let root = self
            .spec
            .pointer("/root/path")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow!("{}/config.json has no root.path", self.dir.display()))?;
        Ok(self.dir.join(root))
    }

    /// Whether the container gets a user namespace of its own.
    pub fn has_user_namespace(&self) -> bool {
        self.spec
            .pointer("/linux/namespaces")
            .and_then(Value::as_array)
            .is_some_and(|ns| {
                ns.iter()
                    .any(|n| n.get("type").and_then(Value::as_str) == Some("user"))
            })
    }

    /// The timeout, in seconds, the runtime gives the running hook: the
    /// smallest `timeout` among the createRuntime entries that run this very
    /// executable (engines copy hooks.d entries into the spec). `None` when
    /// no entry sets one.
    pub fn own_hook_timeout(&self) -> Option<u64> {
        let me = crate::files::FileId::current_exe()?;
        self.spec
            .pointer("/hooks/createRuntime")
            .and_then(Value::as_array)?
            .iter()
            .filter(|h| {
                h.get("path")
                    .and_then(Value::as_str)
                    .and_then(|p| crate::files::FileId::of(Path::new(p)))
                    == Some(me)
            })
            .filter_map(|h| h.get("timeout").and_then(Value::as_u64))
            .filter(|t| *t > 0)
            .min()
    }

    /// Whether `linux.resources.devices` already lets the container read and
    /// write the char device: rules apply in order, the last match wins, and
    /// the runtime starts from "deny all".
    pub fn allows_char_device(&self, major: u32, minor: u32) -> anyhow::Result<bool> {
        let rules = match self.spec.pointer("/linux/resources/devices") {
            None | Some(Value::Null) => return Ok(false),
            Some(Value::Array(rules)) => rules,
            Some(_) => bail!(
                "linux.resources.devices in {}/config.json is not a list",
                self.dir.display()
            ),
        };
        crate::oci::device_rules::allows_char_device(rules, major, minor)
            .with_context(|| format!("in {}/config.json", self.dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn annotations_shape() {
        assert!(annotations(&json!({})).unwrap().is_empty());
        let a = annotations(&json!({"annotations": {"oci-tpm-hook/device": "tpmrm0"}})).unwrap();
        assert_eq!(a["oci-tpm-hook/device"], "tpmrm0");
        let err = annotations(&json!({"annotations": {"k": 1}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/annotations/k"), "{err}");
        assert!(annotations(&json!({"annotations": []})).is_err());
    }

    #[test]
    fn runc_and_crun_states() {
        let runc = br#"{"ociVersion":"1.0.2","id":"abc","status":"creating","pid":42,"bundle":"/run/b","annotations":{"oci-tpm-hook/device":"tpmrm0"}}"#;
        let s = ContainerState::parse(runc).unwrap();
        assert_eq!((s.id.as_str(), s.pid), ("abc", 42));
        assert_eq!(s.annotations["oci-tpm-hook/device"], "tpmrm0");
        let crun = br#"{"ociVersion":"1.0.0","id":"x","status":"created","pid":7,"bundle":"/b","root":"/b/rootfs"}"#;
        let s = ContainerState::parse(crun).unwrap();
        assert!(s.annotations.is_empty());
    }

    #[test]
    fn malformed_states() {
        for bad in [
            &b""[..],
            b"[]",
            b"{",
            br#"{"pid":1,"bundle":"/b"}"#,
            br#"{"id":"a","bundle":"/b"}"#,
            br#"{"id":"a","pid":0,"bundle":"/b"}"#,
            br#"{"id":"a","pid":99999999999,"bundle":"/b"}"#,
            br#"{"id":"a","pid":"1","bundle":"/b"}"#,
            br#"{"id":"a","pid":1,"bundle":"relative"}"#,
            br#"{"id":"a","pid":1,"bundle":"/b","annotations":{"k":1}}"#,
            br#"{"id":"a","pid":1,"bundle":"/b","annotations":[]}"#,
        ] {
            assert!(
                ContainerState::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(ContainerState::parse(&vec![b' '; MAX_STATE_BYTES + 1]).is_err());
    }

    fn spec(v: Value) -> BundleSpec {
        BundleSpec {
            dir: "/b".into(),
            spec: v,
        }
    }

    #[test]
    fn rootfs_relative_and_absolute() {
        assert_eq!(
            spec(json!({"root":{"path":"rootfs"}})).rootfs().unwrap(),
            PathBuf::from("/b/rootfs")
        );
        assert_eq!(
            spec(json!({"root":{"path":"/r"}})).rootfs().unwrap(),
            PathBuf::from("/r")
        );
        assert!(spec(json!({})).rootfs().is_err());
    }

    #[test]
    fn user_namespace() {
        assert!(
            spec(json!({"linux":{"namespaces":[{"type":"mount"},{"type":"user"}]}}))
                .has_user_namespace()
        );
        assert!(!spec(json!({"linux":{"namespaces":[{"type":"mount"}]}})).has_user_namespace());
    }

    #[test]
    fn device_rules_last_match_wins() {
        let s = spec(json!({"linux":{"resources":{"devices":[
            {"allow":false,"access":"rwm"},
            {"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"},
            {"allow":true,"type":"c","major":253,"minor":65536,"access":"rw"}
        ]}}}));
        assert!(s.allows_char_device(253, 65536).unwrap());
        assert!(!s.allows_char_device(253, 65537).unwrap());
        let denied_after = spec(json!({"linux":{"resources":{"devices":[
            {"allow":true,"type":"c","major":253,"minor":65536,"access":"rw"},
            {"allow":false,"type":"c","major":253,"access":"w"}
        ]}}}));
        assert!(!denied_after.allows_char_device(253, 65536).unwrap());
        let wildcard =
            spec(json!({"linux":{"resources":{"devices":[{"allow":true,"access":"rwm"}]}}}));
        assert!(wildcard.allows_char_device(10, 224).unwrap());
        let read_only = spec(
            json!({"linux":{"resources":{"devices":[{"allow":true,"type":"c","major":253,"minor":-1,"access":"r"}]}}}),
        );
        assert!(!read_only.allows_char_device(253, 0).unwrap());
        assert!(!spec(json!({})).allows_char_device(1, 3).unwrap());
    }

    #[test]
    fn bad_device_rules_are_errors() {
        for bad in [
            json!({"linux":{"resources":{"devices":{}}}}),
            json!({"linux":{"resources":{"devices":[{"access":"rw"}]}}}),
            json!({"linux":{"resources":{"devices":[{"allow":true,"type":"x"}]}}}),
            json!({"linux":{"resources":{"devices":[{"allow":true,"major":"1"}]}}}),
        ] {
            assert!(spec(bad.clone()).allows_char_device(1, 3).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_hook_timeout_is_the_smallest_of_our_entries() {
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        let me = me.to_str().unwrap();
        let s = spec(json!({"hooks": {"createRuntime": [
            {"path": me, "timeout": 30},
            {"path": "/bin/true", "timeout": 1},
            {"path": me, "timeout": 7},
            {"path": me}
        ]}}));
        assert_eq!(s.own_hook_timeout(), Some(7));
        assert_eq!(
            spec(json!({"hooks": {"createRuntime": [{"path": me}]}})).own_hook_timeout(),
            None
        );
        assert_eq!(spec(json!({})).own_hook_timeout(), None);
    }

    #[test]
    fn load_reports_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", BundleSpec::load(dir.path()).unwrap_err());
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        let err = format!("{:#}", BundleSpec::load(dir.path()).unwrap_err());
        assert!(err.contains("not valid JSON"), "{err}");
    }
}
