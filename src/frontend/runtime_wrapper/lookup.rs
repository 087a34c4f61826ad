//! Finding the real OCI runtime the wrapper becomes.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};

use super::PREFIX;
use crate::files::{is_executable, FileId};

/// Used when PATH is unset, as execvp does.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds the real runtime: `name` as a path when it has a slash, else the
/// first executable of that name on `path_var`. Never this program itself:
/// a wrapper installed as `runc` early on PATH would exec itself forever.
pub fn resolve_runtime(
    name: &str,
    path_var: Option<&OsStr>,
    me: Option<FileId>,
) -> anyhow::Result<PathBuf> {
    let is_me = |p: &Path| me.is_some() && FileId::of(p) == me;
    if name.contains('/') {
        let path = PathBuf::from(name);
        if !is_executable(&path) {
            bail!("the OCI runtime {name} (policy [runtime] path) is not an executable file; install it or set [runtime] path to the real runtime");
        }
        if is_me(&path) {
            bail!("the OCI runtime {name} (policy [runtime] path) is {PREFIX} itself; set [runtime] path to the real runtime, e.g. /usr/bin/runc");
        }
        return Ok(path);
    }
    let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut skipped_self = None;
    // An empty PATH entry means the working directory, which here is the
    // container's bundle: never look there.
    for dir in std::env::split_paths(path_var).filter(|d| d.is_absolute()) {
        let candidate = dir.join(name);
        if !is_executable(&candidate) {
            continue;
        }
        if is_me(&candidate) {
            skipped_self.get_or_insert(candidate);
            continue;
        }
        return Ok(candidate);
    }
    let also = skipped_self
        .map(|p| format!(" (only {PREFIX} itself, at {})", p.display()))
        .unwrap_or_default();
    Err(anyhow!(
        "the OCI runtime {name:?} (policy [runtime] path) is not on PATH {}{also}; install runc or set [runtime] path",
        path_var.to_string_lossy()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn runtime_resolution_never_picks_itself() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a");
        let second = dir.path().join("b");
        for d in [&first, &second] {
            std::fs::create_dir(d).unwrap();
            let f = d.join("runc");
            std::fs::write(&f, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = std::env::join_paths([&first, &second]).unwrap();
        let me = FileId::of(&first.join("runc"));
        assert_eq!(
            resolve_runtime("runc", Some(&path), None).unwrap(),
            first.join("runc")
        );
        assert_eq!(
            resolve_runtime("runc", Some(&path), me).unwrap(),
            second.join("runc")
        );
        // A symlink to itself is still itself.
        std::fs::remove_file(second.join("runc")).unwrap();
        std::os::unix::fs::symlink(first.join("runc"), second.join("runc")).unwrap();
        let err = resolve_runtime("runc", Some(&path), me)
            .unwrap_err()
            .to_string();
        assert!(err.contains("itself"), "{err}");
        let explicit = second.join("runc");
        let err = resolve_runtime(explicit.to_str().unwrap(), Some(&path), me)
            .unwrap_err()
            .to_string();
        assert!(err.contains("itself"), "{err}");

        // Missing, not executable, relative PATH entries.
        let err = resolve_runtime("nope", Some(&path), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"nope\"") && err.contains("[runtime] path"),
            "{err}"
        );
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        assert!(resolve_runtime(plain.to_str().unwrap(), None, None).is_err());
        assert!(resolve_runtime("runc", Some(OsStr::new("a:b")), None).is_err());
    }
}
