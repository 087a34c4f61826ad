//! `oci-tpm-hook doctor`: the troubleshooting and verification steps a
//! person would otherwise run by hand, each with the fix when it fails.
//!
//! The checks ([`checks`]) read the host through a root directory, so tests
//! give them a stand-in host; this file runs them in order and renders the
//! report as a table for people or one JSON object for machines. Exit
//! status: 0 when nothing failed (warnings allowed), 1 otherwise.

pub mod checks;
pub mod engines;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::core::policy::{self, Policy};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Works, but something a user may trip over.
    Warn,
    Fail,
    /// Not applicable on this host (e.g. an engine that is not installed).
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Self::Pass => "ok",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
            Self::Skip => "-",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What to do, when the status is not `pass`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Pass, detail, None)
    }

    pub fn skip(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Skip, detail, None)
    }

    pub fn warn(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Status::Warn, detail, Some(fix.into()))
    }

    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Status::Fail, detail, Some(fix.into()))
    }

    fn new(
        name: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Self {
            name: name.into(),
            status,
            detail: detail.into(),
            fix,
        }
    }
}

/// Where the checks look: `/` on a real host.
#[derive(Debug, Clone)]
pub struct Host {
    pub root: PathBuf,
    /// The policy file as the front-ends resolve it.
    pub policy_file: PathBuf,
    pub self_test_timeout: Duration,
}

impl Host {
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }
}

/// Runs every check, in the order a person would.
pub fn run_checks(host: &Host) -> Vec<Check> {
    let mut out = Vec::new();
    let policy = match Policy::load(&host.path_of_policy()) {
        Ok(p) => {
            out.push(Check::pass(
                "policy",
                if host.path_of_policy().exists() {
                    format!("{} is valid", host.policy_file.display())
                } else {
                    format!("no {}: the defaults apply", host.policy_file.display())
                },
            ));
            p
        }
        Err(e) => {
            out.push(Check::fail(
                "policy",
                format!("{e:#}"),
                "fix the file (see /usr/share/doc/oci-tpm-hook/examples or the README) or remove it to use the defaults",
            ));
            Policy::default()
        }
    };
    out.extend(checks::tpm(host, &policy));
    out.extend(engines::all(host));
    out
}

impl Host {
    fn path_of_policy(&self) -> PathBuf {
        self.path(&self.policy_file.to_string_lossy())
    }
}

/// Whether the host is fine: no check failed.
pub fn healthy(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// The table for people: one line per check, the fix under a failure.
pub fn render_table(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<4}  {:<width$}  {}\n",
            c.status.label(),
            c.name,
            c.detail
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("{:<4}  {:<width$}  fix: {fix}\n", "", ""));
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    out.push_str(&if failed == 0 {
        format!("\nall checks passed ({warned} warning(s))\n")
    } else {
        format!("\n{failed} check(s) failed, {warned} warning(s)\n")
    });
    out
}

/// `oci-tpm-hook doctor [--json] [--config PATH]`.
pub fn main(json: bool, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let host = Host {
        root: PathBuf::from("/"),
        policy_file: policy::resolve_path(config.as_deref()),
        self_test_timeout: Duration::from_secs(5),
    };
    let checks = run_checks(&host);
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": healthy(&checks), "checks": checks})
        );
    } else {
        print!("{}", render_table(&checks));
    }
    Ok(if healthy(&checks) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_fixes_and_a_verdict() {
        let checks = vec![
            Check::pass("policy", "defaults"),
            Check::fail("tpm", "no TPM", "enable it in firmware"),
            Check::warn("group", "differs", "install tpm-udev"),
            Check::skip("docker", "not installed"),
        ];
        let t = render_table(&checks);
        assert!(t.contains("FAIL  tpm     no TPM\n"), "{t}");
        assert!(t.contains("fix: enable it in firmware"), "{t}");
        assert!(t.ends_with("1 check(s) failed, 1 warning(s)\n"), "{t}");
        assert!(!healthy(&checks));
        assert!(healthy(&checks[2..]));
        let json = serde_json::to_value(&checks[1]).unwrap();
        assert_eq!(json["status"], "fail");
        assert_eq!(json["fix"], "enable it in firmware");
        assert!(serde_json::to_value(&checks[0])
            .unwrap()
            .get("fix")
            .is_none());
    }
}
