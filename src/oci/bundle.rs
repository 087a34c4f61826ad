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
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{anyhow, bail, Context};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde_json::Value;

use super::spec_edit::{apply, kind, Changes};
use crate::core::grant::Grant;
use crate::core::hook_entry::HookEntry;

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
/// it lands in the directory that was read, whatever its path means later.
#[derive(Debug)]
pub struct BundleFile {
    path: PathBuf,
    dir: OwnedFd,
    name: OsString,
    meta: fs::Metadata,
    original: Vec<u8>,
    pub spec: Spec,
}

impl BundleFile {
    /// `<bundle>/config.json`.
    pub fn load(bundle: &Path) -> anyhow::Result<Self> {
        Self::read(&bundle.join("config.json"))
    }

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
            spec: Spec {
                dir: dir_path.to_path_buf(),
                json: spec,
            },
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn annotations(&self) -> anyhow::Result<BTreeMap<String, String>> {
        crate::oci::state::annotations(&self.spec.json)
            .with_context(|| format!("in {}", self.path.display()))
    }

    /// Applies the grant and writes the file when that changed anything; an
    /// unchanged spec leaves the file untouched (same bytes, same inode).
    pub fn apply_and_write(&mut self, grant: &Grant, hook: &HookEntry) -> anyhow::Result<Changes> {
        let changes = apply(&mut self.spec.json, grant, hook)
            .with_context(|| format!("cannot edit {}", self.path.display()))?;
        if !changes.is_empty() {
            let bytes = serialize_like(&self.spec.json, &self.original)?;
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
    use serde_json::json;

    fn spec(v: Value) -> Spec {
        Spec {
            dir: "/b".into(),
            json: v,
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
        let err = format!("{:#}", BundleFile::load(dir.path()).unwrap_err());
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        let err = format!("{:#}", BundleFile::load(dir.path()).unwrap_err());
        assert!(err.contains("not valid JSON"), "{err}");
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
