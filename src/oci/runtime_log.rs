//! An OCI runtime's `--log` file, in runc's format (logrus text or JSON
//! lines), where containerd and podman look for the reason a runtime call
//! failed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::SystemTime;

use super::runtime_cli::Invocation;

/// Where a message goes: the runtime's `--log` file, in runc's format,
/// signed by who speaks (`oci-tpm-runtime`, or the hook when it reports
/// through its runtime).
#[derive(Debug, Clone)]
pub struct RuntimeLog {
    file: Option<PathBuf>,
    json: bool,
    speaker: &'static str,
}

impl RuntimeLog {
    /// The log of the runtime invoked as `inv`, lines signed by `speaker`.
    pub fn new(inv: &Invocation, speaker: &'static str) -> Self {
        Self {
            file: inv.log.clone(),
            json: inv.log_format.as_deref() == Some("json"),
            speaker,
        }
    }

    /// No log file: errors go to stderr only.
    pub fn stderr_only(speaker: &'static str) -> Self {
        Self {
            file: None,
            json: false,
            speaker,
        }
    }

    /// Errors go everywhere a user might look, as runc's own do.
    pub fn error(&self, msg: &str) {
        eprintln!("{}: {msg}", self.speaker);
        self.append("error", msg);
    }

    /// Warnings go to the log file; to stderr only when there is none, since
    /// stderr of `create` can be the container's own output.
    pub fn warn(&self, msg: &str) {
        if !self.append("warning", msg) {
            eprintln!("{}: {msg}", self.speaker);
        }
    }

    pub fn info(&self, msg: &str) {
        self.append("info", msg);
    }

    /// Appends one line; false when there is no log file or it cannot be
    /// written (a message must never fail the container).
    pub fn append(&self, level: &str, msg: &str) -> bool {
        let Some(path) = &self.file else {
            return false;
        };
        let msg = format!("{}: {msg}", self.speaker);
        let time = rfc3339(SystemTime::now());
        let line = if self.json {
            serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
        } else {
            // logrus's text format; JSON string escaping is close to Go's %q.
            format!(
                "time={} level={level} msg={}",
                serde_json::Value::from(time),
                serde_json::Value::from(msg)
            )
        };
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"))
            .is_ok()
    }
}

/// UTC timestamp as Go's `time.Time` parses it from JSON (RFC 3339).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(0, 5);
        assert_eq!(rfc3339(t), "1970-01-01T00:00:00.000000005Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_251_199); // leap year
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.000000000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn lines_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        for (format, json) in [("json", true), ("text", false)] {
            let file = dir.path().join(format);
            let inv = Invocation {
                log: Some(file.clone()),
                log_format: Some(format.into()),
                ..Default::default()
            };
            assert!(RuntimeLog::new(&inv, "me").append("error", "no \"TPM\""));
            let line = std::fs::read_to_string(&file).unwrap();
            if json {
                let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
                assert_eq!(
                    (v["level"].as_str(), v["msg"].as_str()),
                    (Some("error"), Some("me: no \"TPM\""))
                );
            } else {
                assert!(
                    line.contains("level=error msg=\"me: no \\\"TPM\\\"\""),
                    "{line}"
                );
            }
        }
        assert!(!RuntimeLog::stderr_only("me").append("error", "nowhere"));
    }
}
