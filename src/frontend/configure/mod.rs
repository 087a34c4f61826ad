//! `oci-tpm-hook configure docker|containerd|crio`: the engine's own
//! configuration edited so that it gives containers their TPM, as
//! `nvidia-ctk runtime configure` does for GPUs.
//!
//! Every edit is planned in full before any file changes: a file that
//! cannot be read or parsed is refused with its name and what to do, and
//! nothing is written. Edits keep everything they do not need to change
//! (keys, their order, comments where the format has them, the file's mode
//! and owner); running it again changes nothing; each file is replaced
//! atomically ([`PlainFile`]). `--dry-run` prints the unified diff and
//! writes nothing. Nothing is restarted: the output says what to restart.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::files::PlainFile;
use clap::{Args, Subcommand};

pub mod containerd;
pub mod crio;
pub mod docker;

use containerd::ConfigureContainerdArgs;
use crio::ConfigureCrioArgs;
use docker::ConfigureDockerArgs;

/// New configuration files are readable by everyone, like the engines'
/// own defaults.
const NEW_FILE_MODE: u32 = 0o644;

/// One file's planned change.
#[derive(Debug)]
pub struct FileEdit {
    path: PathBuf,
    /// `None` while the file's directory does not exist yet (it is made
    /// when the edit is written, not when it is shown).
    file: Option<PlainFile>,
    new: Vec<u8>,
}

impl FileEdit {
    pub fn new(target: Target, new: Vec<u8>) -> Self {
        Self {
            path: target.path,
            file: target.file,
            new,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's bytes now, `None` when it does not exist.
    pub fn old_contents(&self) -> Option<&[u8]> {
        self.file.as_ref().and_then(PlainFile::contents)
    }

    /// The file's bytes as they would be after the edit.
    pub fn new_contents(&self) -> &[u8] {
        &self.new
    }

    pub fn changes_anything(&self) -> bool {
        self.old_contents() != Some(self.new.as_slice())
    }

    /// A unified diff (`/dev/null` for a file that does not exist yet).
    pub fn diff(&self) -> String {
        let old = String::from_utf8_lossy(self.old_contents().unwrap_or_default());
        let new = String::from_utf8_lossy(&self.new);
        let shown = self.path.display().to_string();
        let old_name = if self.old_contents().is_some() {
            shown.as_str()
        } else {
            "/dev/null"
        };
        similar::TextDiff::from_lines(old.as_ref(), new.as_ref())
            .unified_diff()
            .context_radius(3)
            .header(old_name, &shown)
            .to_string()
    }

    fn write(&self) -> anyhow::Result<()> {
        match &self.file {
            Some(file) => file.write(&self.new, NEW_FILE_MODE),
            None => {
                if let Some(dir) = self.path.parent() {
                    std::fs::create_dir_all(dir).with_context(|| {
                        format!("cannot create the directory {}", dir.display())
                    })?;
                }
                PlainFile::read(&self.path)?.write(&self.new, NEW_FILE_MODE)
            }
        }
    }
}

/// A file about to be edited, read (or found missing) before anything is
/// written.
#[derive(Debug)]
pub struct Target {
    path: PathBuf,
    file: Option<PlainFile>,
}

impl Target {
    /// Reads `path`; a file (or its directory) that does not exist yet is
    /// no error: it is created when the edit is written.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let dir_exists = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .is_none_or(Path::is_dir);
        let file = if dir_exists {
            Some(PlainFile::read(path)?)
        } else {
            None
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The file's bytes, `None` when it does not exist.
    pub fn contents(&self) -> Option<&[u8]> {
        self.file.as_ref().and_then(PlainFile::contents)
    }

    /// Its text; an error for a file that is not UTF-8.
    pub fn text(&self) -> anyhow::Result<Option<&str>> {
        self.contents()
            .map(|b| {
                std::str::from_utf8(b)
                    .map_err(|_| anyhow::anyhow!("it is not UTF-8 text: fix it and run this again"))
            })
            .transpose()
    }
}

/// What one `configure` run would do.
#[derive(Debug, Default)]
pub struct Plan {
    /// In the order they are written.
    pub edits: Vec<FileEdit>,
    /// What the engine needs afterwards, e.g. a restart.
    pub then: String,
}

impl Plan {
    pub fn changes_anything(&self) -> bool {
        self.edits.iter().any(FileEdit::changes_anything)
    }
}

/// The error for a file that is there but cannot be parsed: the user fixes
/// it first (the caller names the file and says nothing was changed).
pub(crate) fn malformed(
    format: &str,
    engine: &str,
    error: impl std::fmt::Display,
) -> anyhow::Error {
    anyhow::anyhow!(
        "not valid {format} ({error}): fix it ({engine} cannot read it either) and run this again"
    )
}

/// The context every refusal gets: which file, and that it was left alone.
pub(crate) fn cannot_edit(path: &Path) -> String {
    format!("cannot edit {} (nothing was changed)", path.display())
}

/// `oci-tpm-hook configure ...`.
pub fn main(args: &ConfigureArgs) -> anyhow::Result<std::process::ExitCode> {
    let plan = match &args.command {
        ConfigureCommand::Docker(a) => docker::plan(a)?,
        ConfigureCommand::Containerd(a) => containerd::plan(a)?,
        ConfigureCommand::Crio(a) => crio::plan(a)?,
    };
    apply(&plan, args.dry_run, &mut std::io::stdout().lock())?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Writes the plan (or with `dry_run` only shows it) and says what changed.
pub fn apply(plan: &Plan, dry_run: bool, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    if !plan.changes_anything() {
        for e in &plan.edits {
            writeln!(out, "unchanged {}", e.path().display())?;
        }
        writeln!(out, "nothing to change: already configured")?;
        return Ok(());
    }
    for e in plan.edits.iter().filter(|e| e.changes_anything()) {
        if dry_run {
            write!(out, "{}", e.diff())?;
        } else {
            e.write()?;
            writeln!(out, "wrote {}", e.path().display())?;
        }
    }
    if dry_run {
        writeln!(out, "dry run: nothing was written")?;
    } else {
        writeln!(out, "{}", plan.then)?;
    }
    Ok(())
}

/// The path of the binary a configuration names, for the defaults.
pub(crate) fn installed(name: &str) -> PathBuf {
    Path::new("/usr/bin").join(name)
}

#[derive(Args, Debug)]
#[command(after_help = CONFIGURE_AFTER_HELP)]
pub struct ConfigureArgs {
    #[command(subcommand)]
    pub command: ConfigureCommand,
    /// Show the changes as a unified diff; write nothing
    #[arg(long, global = true)]
    pub dry_run: bool,
}

const CONFIGURE_AFTER_HELP: &str = "\
Edits keep every other setting (keys, their order, comments in TOML) and the
file's mode and owner; running it again changes nothing; each file is replaced
atomically. A file that cannot be parsed is refused and left as it is. Nothing
is restarted: the output says what to restart.";

#[derive(Subcommand, Debug)]
pub enum ConfigureCommand {
    /// daemon.json: the runtime "tpm" (oci-tpm-runtime), optionally as the default, optionally CDI
    Docker(ConfigureDockerArgs),
    /// NRI on through a drop-in (config version 2: containerd 1.7, 3: containerd 2.x)
    Containerd(ConfigureContainerdArgs),
    /// A drop-in in crio.conf.d: NRI on, optionally the hooks directories
    Crio(ConfigureCrioArgs),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_shows_a_diff_and_writes_nothing_then_apply_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.conf");
        std::fs::write(&path, "a\nb\n").unwrap();
        let plan = Plan {
            edits: vec![FileEdit::new(
                Target::read(&path).unwrap(),
                b"a\nc\n".to_vec(),
            )],
            then: "restart it".into(),
        };
        let mut out = Vec::new();
        apply(&plan, true, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("-b\n+c\n"), "{out}");
        assert!(out.contains(&format!("+++ {}", path.display())), "{out}");
        assert!(out.contains("nothing was written"), "{out}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\n");
        let mut out = Vec::new();
        apply(&plan, false, &mut out).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nc\n");
        assert!(String::from_utf8(out).unwrap().ends_with("restart it\n"));
    }

    #[test]
    fn a_new_file_diffs_against_dev_null() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conf.d/new.toml");
        let edit = FileEdit::new(Target::read(&path).unwrap(), b"x = 1\n".to_vec());
        assert!(edit.changes_anything());
        let diff = edit.diff();
        assert!(diff.starts_with("--- /dev/null\n"), "{diff}");
        assert!(diff.contains("+x = 1"), "{diff}");
        assert!(
            !path.parent().unwrap().exists(),
            "showing the edit made no directory"
        );
        edit.write().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x = 1\n");
    }

    #[test]
    fn an_unchanged_plan_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("same");
        std::fs::write(&path, "x\n").unwrap();
        let plan = Plan {
            edits: vec![FileEdit::new(Target::read(&path).unwrap(), b"x\n".to_vec())],
            then: String::new(),
        };
        let mut out = Vec::new();
        apply(&plan, false, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("already configured"), "{out}");
    }
}
