//! Files: recognised by their identity (device and inode), not their name
//! (the wrapper must never execute itself, and the hook finds its own entry
//! in a spec whatever path names it); whether one can be executed; and
//! plain files edited in place, atomically ([`PlainFile`]).

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{anyhow, bail, Context};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::Mode;

/// The identity of a file, to recognise this very program under another name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// The running executable (inode comparison also catches hard links and
    /// symlinks that canonical paths would not).
    pub fn current_exe() -> Option<Self> {
        Self::of(Path::new("/proc/self/exe"))
    }
}

/// A regular file with an execute bit: what a runtime can execute.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A regular file read through a handle on its directory, never through a
/// link, and replaced atomically: a reader sees the old contents or the new,
/// never half of them, and the new file lands in the directory that was
/// read, whatever its path means by then. A file that does not exist yet
/// reads as `None` and is created on the first write.
///
/// config.json in a bundle and the engines' configuration files are edited
/// through it.
#[derive(Debug)]
pub struct PlainFile {
    path: PathBuf,
    dir: OwnedFd,
    name: OsString,
    existing: Option<(fs::Metadata, Vec<u8>)>,
}

/// The error of [`PlainFile::read`] for a symlink, for callers that know
/// better what to tell the user.
#[derive(Debug)]
pub struct IsSymlink(pub PathBuf);

impl std::fmt::Display for IsSymlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is a symlink; refusing to edit through it (name the file it points to instead)",
            self.0.display()
        )
    }
}

impl std::error::Error for IsSymlink {}

/// Files bigger than this are not configuration files.
const MAX_PLAIN_FILE_BYTES: u64 = 16 << 20;

impl PlainFile {
    /// Reads `path`; a missing file is not an error (see [`Self::contents`]),
    /// a missing directory is.
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
        .with_context(|| format!("cannot open the directory {}", dir_path.display()))?;
        let fd = match nix::fcntl::openat(
            dir.as_fd(),
            name.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Some(fd),
            Err(Errno::ENOENT) => None,
            Err(Errno::ELOOP) => return Err(IsSymlink(path.to_path_buf()).into()),
            Err(e) => bail!("cannot read {shown}: {e}"),
        };
        let existing = match fd {
            None => None,
            Some(fd) => {
                let file = fs::File::from(fd);
                let meta = file
                    .metadata()
                    .with_context(|| format!("cannot stat {shown}"))?;
                if !meta.file_type().is_file() {
                    bail!("{shown} is not a regular file; refusing to edit it");
                }
                // Room for the whole file and one byte more: read in one
                // call, EOF in the next (an empty Vec grows from 32 bytes,
                // a read call per doubling).
                let expected = meta.len().min(MAX_PLAIN_FILE_BYTES) as usize + 1;
                let mut bytes = Vec::with_capacity(expected);
                file.take(MAX_PLAIN_FILE_BYTES + 1)
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("cannot read {shown}"))?;
                if bytes.len() as u64 > MAX_PLAIN_FILE_BYTES {
                    bail!(
                        "{shown} is larger than {MAX_PLAIN_FILE_BYTES} bytes; refusing to edit it"
                    );
                }
                Some((meta, bytes))
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            dir,
            name,
            existing,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's bytes as read, `None` when it did not exist.
    pub fn contents(&self) -> Option<&[u8]> {
        self.existing.as_ref().map(|(_, b)| b.as_slice())
    }

    pub fn metadata(&self) -> Option<&fs::Metadata> {
        self.existing.as_ref().map(|(m, _)| m)
    }

    /// Replaces the file: a temp file in the same directory with the
    /// original's mode and owner (a new file gets `new_mode` and the
    /// caller's owner), fsync, rename over the original (refused when the
    /// name no longer holds the file that was read, or, for a new file,
    /// when one appeared meanwhile), fsync of the directory.
    pub fn write(&self, bytes: &[u8], new_mode: u32) -> anyhow::Result<()> {
        self.replace(bytes, new_mode)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    fn replace(&self, bytes: &[u8], new_mode: u32) -> anyhow::Result<()> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let tmp = format!(
            ".{}.oci-tpm.{}.{}",
            self.name.to_string_lossy(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let meta = self.metadata();
        let mode = meta.map_or(new_mode, |m| m.mode()) & 0o7777;
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
            .with_context(|| format!("cannot create {tmp} beside it"))?;
            let mut file = fs::File::from(fd);
            // The umask may have cleared bits of the requested mode.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
            if let Some(meta) = meta {
                let owner = file.metadata()?;
                if (owner.uid(), owner.gid()) != (meta.uid(), meta.gid()) {
                    std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))
                        .context("cannot give the new file the original's owner")?;
                }
            }
            file.write_all(bytes)?;
            file.sync_all()?;
            match meta {
                Some(meta) => {
                    let now = nix::sys::stat::fstatat(
                        self.dir.as_fd(),
                        self.name.as_os_str(),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )?;
                    if (now.st_dev, now.st_ino) != (meta.dev(), meta.ino()) {
                        bail!("the file changed while it was being edited; leaving it alone");
                    }
                    nix::fcntl::renameat(
                        self.dir.as_fd(),
                        tmp.as_str(),
                        self.dir.as_fd(),
                        self.name.as_os_str(),
                    )?;
                }
                None => nix::fcntl::renameat2(
                    self.dir.as_fd(),
                    tmp.as_str(),
                    self.dir.as_fd(),
                    self.name.as_os_str(),
                    RenameFlags::RENAME_NOREPLACE,
                )
                .map_err(|e| match e {
                    Errno::EEXIST => {
                        anyhow!("the file appeared while it was being written; leaving it alone")
                    }
                    e => e.into(),
                })?,
            }
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

/// Serializes `value` in the style of `original`: compact when the original
/// was on one line (what engines write), else indented with the original's
/// indent unit (two spaces for an empty original); a trailing newline is
/// kept when there was one.
pub fn json_like(value: &serde_json::Value, original: &[u8]) -> anyhow::Result<Vec<u8>> {
    let text = String::from_utf8_lossy(original);
    let indent: Option<String> = if original.iter().all(u8::is_ascii_whitespace) {
        Some("  ".into())
    } else {
        text.lines().skip(1).find_map(|line| {
            let ws: String = line
                .chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .collect();
            (!ws.is_empty()).then_some(ws)
        })
    };
    let mut out = Vec::with_capacity(original.len() + 512);
    match indent {
        None => serde_json::to_writer(&mut out, value)?,
        Some(unit) => {
            let formatter = serde_json::ser::PrettyFormatter::with_indent(unit.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
            serde::Serialize::serialize(value, &mut ser)?;
        }
    }
    if original.ends_with(b"\n") || original.iter().all(u8::is_ascii_whitespace) {
        out.push(b'\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_style_follows_the_original() {
        let v = json!({"a": [1], "b": {"c": true}});
        assert_eq!(
            json_like(&v, b"{\"a\":1}").unwrap(),
            br#"{"a":[1],"b":{"c":true}}"#
        );
        let tabbed = json_like(&v, b"{\n\t\"a\": 1\n}\n").unwrap();
        assert_eq!(
            String::from_utf8(tabbed).unwrap(),
            "{\n\t\"a\": [\n\t\t1\n\t],\n\t\"b\": {\n\t\t\"c\": true\n\t}\n}\n"
        );
        let spaced = json_like(&v, b"{\n  \"a\": 1\n}").unwrap();
        assert!(String::from_utf8(spaced)
            .unwrap()
            .starts_with("{\n  \"a\": [\n    1"));
        let fresh = String::from_utf8(json_like(&json!({"a": 1}), b"").unwrap()).unwrap();
        assert_eq!(fresh, "{\n  \"a\": 1\n}\n");
    }

    #[test]
    fn plain_file_round_trip_keeps_mode_and_inode_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        let f = PlainFile::read(&path).unwrap();
        assert!(f.contents().is_none());
        f.write(b"{}\n", 0o640).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        // A second writer that read "missing" must not clobber it.
        let err = format!("{:#}", f.write(b"{\"x\":1}", 0o644).unwrap_err());
        assert!(err.contains("appeared"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"{}\n");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let f = PlainFile::read(&path).unwrap();
        assert_eq!(f.contents(), Some(&b"{}\n"[..]));
        f.write(b"{\"a\":1}\n", 0o644).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        // The file was replaced since `f` read it: a second write is refused.
        let err = format!("{:#}", f.write(b"{}", 0o644).unwrap_err());
        assert!(err.contains("changed"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"{\"a\":1}\n");
        // No temp files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn plain_file_refuses_links_and_odd_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("real"), "x").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        let err = PlainFile::read(&dir.path().join("link"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a symlink"), "{err}");
        fs::create_dir(dir.path().join("sub")).unwrap();
        let err = PlainFile::read(&dir.path().join("sub"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let err = format!(
            "{:#}",
            PlainFile::read(&dir.path().join("nodir/file")).unwrap_err()
        );
        assert!(err.contains("cannot open the directory"), "{err}");
    }
}
