//! Getting a refusal to the person who ran podman, when the runtime throws
//! the hook's own output away.
//!
//! runc puts a failing hook's stderr into its own error, which the engine
//! shows. crun instead gives hooks `/dev/null` as stdout and stderr (unless
//! the `run.oci.hooks.stderr` annotation names a file) and reports only
//! "error executing hook `PATH` (exit code: 1)". What the engine does show
//! is the runtime's own error: podman (through conmon) reads the runtime's
//! `--log` file when it holds exactly one JSON entry, and otherwise the
//! runtime's stderr. So when the hook finds its stderr is `/dev/null`, it
//! writes the reason to its runtime's stderr and appends it, in the
//! runtime's format, to the runtime's `--log` file; with the runtime's own
//! entry after it the file holds two, and podman shows the runtime's
//! stderr, which now starts with the reason.
//!
//! The runtime is the hook's parent process; only a parent whose command
//! line is a runtime's `create` or `run` is written to.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

use crate::oci::runtime_cli::parse_args;
use crate::oci::runtime_log::RuntimeLog;

/// Who signs the lines.
const SPEAKER: &str = "oci-tpm-hook";

/// Reports `message` through the runtime when our own stderr goes nowhere.
/// Best effort: never fails, never blocks for long (a write to a pipe the
/// runtime's caller drains).
pub fn report_through_runtime(message: &str) {
    if !stderr_is_discarded() {
        return;
    }
    let parent = nix::unistd::getppid().as_raw();
    if parent <= 1 {
        return;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{parent}/cmdline")) else {
        return;
    };
    let Some(args) = runtime_args(&cmdline) else {
        return;
    };
    let inv = parse_args(&args);
    if !inv.edits_bundle() {
        return;
    }
    RuntimeLog::new(&inv, SPEAKER).append("error", message);
    if let Ok(mut err) = std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(format!("/proc/{parent}/fd/2"))
    {
        let _ = writeln!(err, "{SPEAKER}: {message}");
    }
}

/// `/dev/null` (1:3) as our fd 2: the runtime discards what we print.
fn stderr_is_discarded() -> bool {
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| {
        m.file_type().is_char_device()
            && nix::sys::stat::major(m.rdev()) == 1
            && nix::sys::stat::minor(m.rdev()) == 3
    })
}

/// The arguments after argv0 of a NUL-separated command line.
fn runtime_args(cmdline: &[u8]) -> Option<Vec<OsString>> {
    if cmdline.is_empty() {
        return None; // a zombie or kernel thread
    }
    let mut parts = cmdline
        .split(|b| *b == 0)
        .map(|p| OsString::from_vec(p.to_vec()));
    parts.next()?;
    let mut args: Vec<OsString> = parts.collect();
    // The command line ends with a NUL, which leaves one empty part.
    if args.last().is_some_and(|a| a.is_empty()) {
        args.pop();
    }
    Some(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_crun_command_line_as_podman_gives_it() {
        let cmdline = b"/usr/bin/crun\0--systemd-cgroup\0--log-format=json\0--log\0/run/c/oci-log\0create\0--bundle\0/b\0--pid-file\0/p\0abc\0";
        let args = runtime_args(cmdline).unwrap();
        let inv = parse_args(&args);
        assert!(inv.edits_bundle());
        assert_eq!(
            inv.log.as_deref(),
            Some(std::path::Path::new("/run/c/oci-log"))
        );
        assert_eq!(inv.log_format.as_deref(), Some("json"));
        assert_eq!(inv.container_id.as_deref(), Some("abc"));
        assert!(runtime_args(b"").is_none());
    }

    #[test]
    fn log_lines_are_in_the_runtimes_format() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("oci-log");
        let args = runtime_args(
            format!(
                "crun\0--log-format=json\0--log={}\0create\0x\0",
                log.display()
            )
            .as_bytes(),
        )
        .unwrap();
        let inv = parse_args(&args);
        assert!(RuntimeLog::new(&inv, SPEAKER).append("error", "no TPM\nfor you"));
        let text = std::fs::read_to_string(&log).unwrap();
        let entry: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(entry["level"], "error");
        assert_eq!(entry["msg"], "oci-tpm-hook: no TPM\nfor you");
        assert_eq!(text.lines().count(), 1);
    }
}
