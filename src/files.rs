//! Recognising files: by their identity (device and inode), not their name
//! (the wrapper must never execute itself, and the hook finds its own entry
//! in a spec whatever path names it), and whether one can be executed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

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
