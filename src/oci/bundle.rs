//! A bundle's config.json: opened safely, queried leniently, rewritten
//! losslessly.
//!
//! [`Spec`] is the document (pure queries: rootfs, user namespace, device
//! rules, the hook's own timeout); [`BundleFile`] is the file it came from,
//! opened without following links and rewritten atomically through a handle
//! on the bundle directory. The hook reads through it, the docker wrapper
//! also edits through it (the edits themselves are [`super::spec_edit`]).
//! The spec stays a `serde_json::Value` throughout: the engine that wrote
//! it may know fields no struct of ours does, and a typed round trip would
//! drop them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use super::spec_edit::{apply, kind, Changes};
use crate::core::grant::Grant;
use crate::core::hook_entry::HookEntry;
use crate::core::request::mentions_us;
use crate::files::{json_like, IsSymlink, PlainFile};

/// A bundle's spec and the directory it belongs to.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The bundle directory (relative paths in the spec start here).
    pub dir: PathBuf,
    pub json: Value,
}

impl Spec {
    /// The rootfs as the host (and, before pivot_root, the container's mount
    /// namespace) sees it.
    pub fn rootfs(&self) -> anyhow::Result<PathBuf> {
        let root = self
            .json
            .pointer("/root/path")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow!("{}/config.json has no root.path", self.dir.display()))?;
        Ok(self.dir.join(root))
    }

    /// Whether the container gets a user namespace of its own.
    pub fn has_user_namespace(&self) -> bool {
        self.json
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
        self.json
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
        let rules = match self.json.pointer("/linux/resources/devices") {
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

/// A bundle's config.json as read from disk, ready to be edited and written
/// back only if the edit changed something.
///
/// The file is opened without following links and must be a regular file:
/// a config.json that is a symlink or a FIFO is refused, never edited
/// through. The rewrite goes through a handle on the bundle directory, so
/// it lands in the directory that was read, whatever its path means later
/// ([`PlainFile`]).
#[derive(Debug)]
pub struct BundleFile {
    file: PlainFile,
    pub spec: Spec,
}

impl BundleFile {
    /// `<bundle>/config.json`.
    pub fn load(bundle: &Path) -> anyhow::Result<Self> {
        Self::read(&bundle.join("config.json"))
    }

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        Self::parse(Self::open(path)?)
    }

    /// The spec, read whole only when it may ask for a TPM: `None` when its
    /// annotations alone show that it asks for nothing (most containers;
    /// see [`Self::annotations_only`]). Errors are those of [`Self::read`] (open, then parse).
    pub fn read_if_asked(path: &Path) -> anyhow::Result<Option<Self>> {
        let file = Self::open(path)?;
        let asks_nothing = file
            .contents()
            .and_then(|bytes| Self::annotations_only(bytes).ok())
            .is_some_and(|a| !mentions_us(&a));
        if asks_nothing {
            return Ok(None);
        }
        Self::parse(file).map(Some)
    }

    /// The file's bytes, read safely, not yet parsed.
    fn open(path: &Path) -> anyhow::Result<PlainFile> {
        PlainFile::read(path).map_err(|e| match e.downcast_ref::<IsSymlink>() {
            Some(_) => anyhow!(
                "{} is a symlink; refusing to edit through it (the bundle must hold the spec itself)",
                path.display()
            ),
            None => e,
        })
    }

    /// The document in a file [`Self::open`] read.
    fn parse(file: PlainFile) -> anyhow::Result<Self> {
        let path = file.path().to_path_buf();
        let shown = path.display();
        let original = file
            .contents()
            .ok_or_else(|| anyhow!("cannot read {shown}: it does not exist"))?;
        let spec: Value = serde_json::from_slice(original)
            .with_context(|| format!("{shown} is not valid JSON"))?;
        if !spec.is_object() {
            bail!("{shown} holds {}, not a JSON object", kind(&spec));
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Ok(Self {
            file,
            spec: Spec { dir, json: spec },
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Only the annotations of config.json's bytes; every other field is
    /// skipped, not built. This is the docker wrapper's path for the many
    /// containers that ask for nothing: building the whole document as a
    /// `Value` (and dropping it) was most of the wrapper's time per runtime
    /// call. Errs whenever the document is not a plain object or the
    /// annotations are not strings; callers then read the whole document,
    /// whose error is the one to show. The skipped fields' strings are not
    /// checked for UTF-8: a spec that asks for nothing goes to the runtime
    /// as it is, and the runtime judges it.
    pub fn annotations_only(bytes: &[u8]) -> anyhow::Result<BTreeMap<String, String>> {
        #[derive(serde::Deserialize)]
        struct AnnotationsOnly {
            #[serde(default)]
            annotations: Option<Value>,
        }
        // A derived struct would also take a JSON array (field by position).
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            bail!("not a JSON object");
        }
        let doc: AnnotationsOnly = serde_json::from_slice(bytes)?;
        crate::oci::state::annotations_value(doc.annotations.as_ref())
    }

    pub fn annotations(&self) -> anyhow::Result<BTreeMap<String, String>> {
        crate::oci::state::annotations(&self.spec.json)
            .with_context(|| format!("in {}", self.path().display()))
    }

    /// Applies the grant and writes the file when that changed anything; an
    /// unchanged spec leaves the file untouched (same bytes, same inode).
    pub fn apply_and_write(&mut self, grant: &Grant, hook: &HookEntry) -> anyhow::Result<Changes> {
        let changes = apply(&mut self.spec.json, grant, hook)
            .with_context(|| format!("cannot edit {}", self.path().display()))?;
        if !changes.is_empty() {
            let original = self.file.contents().unwrap_or_default();
            let bytes = json_like(&self.spec.json, original)?;
            // The file exists (it was read), so its own mode is kept.
            self.file.write(&bytes, 0o644)?;
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> Spec {
        Spec {
            dir: "/b".into(),
            json: v,
        }
    }

    #[test]
    fn annotations_only_agrees_with_the_whole_document() {
        let docs: &[&str] = &[
            r#"{}"#,
            r#"  {"annotations": null}"#,
            r#"{"process":{"args":["sh"]},"annotations":{"oci-tpm-hook/device":"tpmrm0","b":"c"},"linux":{}}"#,
            r#"{"annotations":{"a":"1"},"z":[1,2,{"annotations":{"x":"y"}}]}"#,
            r#"{"annotations":{"k":"v","k":"w"}}"#,
            r#"{"hooks":{"prestart":[{"path":"/x"}]},"annotations":{"a":"\u0062"}}"#,
        ];
        for doc in docs {
            let whole =
                crate::oci::state::annotations(&serde_json::from_str(doc).unwrap()).unwrap();
            assert_eq!(
                BundleFile::annotations_only(doc.as_bytes()).unwrap(),
                whole,
                "{doc}"
            );
        }
        // Where the whole document is refused, so is the fast path (the
        // caller then shows the whole document's error).
        for bad in [
            r#"[{"annotations":{"a":"b"}}]"#,
            r#"{"annotations":{"k":1}}"#,
            r#"{"annotations":[]}"#,
            r#"{"annotations":{}} trailing"#,
            r#"{"annotations":{"a":"b"}"#,
            r#""annotations""#,
            "",
        ] {
            assert!(
                BundleFile::annotations_only(bad.as_bytes()).is_err(),
                "{bad}"
            );
        }
        // Found by fuzzing: invalid UTF-8 in a skipped field. The whole
        // document is refused, the fast path answers.
        let latin1 = b"{\"root\":{\"path\":\"/\x85rootfs\"},\"annotations\":{\"a\":\"b\"}}";
        assert!(serde_json::from_slice::<Value>(latin1).is_err());
        let fast = BundleFile::annotations_only(latin1).unwrap();
        assert_eq!(fast.get("a").map(String::as_str), Some("b"));
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
        let err = format!("{:#}", BundleFile::load(dir.path()).unwrap_err());
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        let err = format!("{:#}", BundleFile::load(dir.path()).unwrap_err());
        assert!(err.contains("not valid JSON"), "{err}");
    }
}
