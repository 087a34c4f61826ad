//! Parser for `/proc/<pid>/cgroup`.
//!
//! One line per hierarchy: `ID:CONTROLLERS:PATH`. cgroup v1 lines name their
//! controllers (`5:devices:/docker/abc`, `9:name=systemd:/…`,
//! `2:cpu,cpuacct:/…`); the v2 line is `0::/path`. Hybrid systems have both.

use anyhow::{bail, Context, Result};

/// One line of `/proc/<pid>/cgroup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLine {
    pub hierarchy_id: u32,
    /// Controllers and named-hierarchy tags (`name=systemd`); empty for v2.
    pub controllers: Vec<String>,
    /// Path relative to the hierarchy's root (as seen from the reader's
    /// cgroup namespace).
    pub path: String,
}

impl CgroupLine {
    /// The cgroup v2 (unified) line.
    pub fn is_unified(&self) -> bool {
        self.hierarchy_id == 0 && self.controllers.is_empty()
    }

    pub fn has_controller(&self, name: &str) -> bool {
        self.controllers.iter().any(|c| c == name)
    }
}

/// Parses the whole file.
pub fn parse(text: &str) -> Result<Vec<CgroupLine>> {
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // The path may itself contain ':' — split at the first two only.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("cgroup line {line:?} does not have the form ID:CONTROLLERS:PATH");
        };
        let hierarchy_id = id
            .parse()
            .with_context(|| format!("bad hierarchy id in cgroup line {line:?}"))?;
        let controllers = controllers
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        lines.push(CgroupLine {
            hierarchy_id,
            controllers,
            path: path.to_owned(),
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_only() {
        let lines = parse("0::/system.slice/libpod-abc.scope/container\n").unwrap();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].is_unified());
        assert_eq!(lines[0].path, "/system.slice/libpod-abc.scope/container");
    }

    #[test]
    fn hybrid() {
        let text = "12:devices:/docker/0123abc\n\
                    11:cpu,cpuacct:/docker/0123abc\n\
                    1:name=systemd:/docker/0123abc\n\
                    0::/docker/0123abc\n";
        let lines = parse(text).unwrap();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].has_controller("devices") && !lines[0].is_unified());
        assert_eq!(lines[1].controllers, ["cpu", "cpuacct"]);
        assert!(lines[2].has_controller("name=systemd"));
        assert!(lines[3].is_unified());
    }

    #[test]
    fn colons_in_paths_and_bad_lines() {
        let lines = parse("4:devices:/kubepods/pod:x:y\n").unwrap();
        assert_eq!(lines[0].path, "/kubepods/pod:x:y");
        assert!(parse("devices:/x\n").is_err());
        assert!(parse("x:devices:/x\n").is_err());
    }
}
