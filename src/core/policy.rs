//! Host policy: `/etc/oci-tpm-hook/config.toml`.
//!
//! The file is optional (the defaults are safe), but a file that is present
//! and malformed is an error: a typo must never widen or silently change what
//! containers get.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::core::request::{Requester, TpmRequest};
use tpm2_selftest::SelfTestLevel;

pub const DEFAULT_PATH: &str = "/etc/oci-tpm-hook/config.toml";
/// Overrides [`DEFAULT_PATH`] for every front-end.
pub const PATH_ENV: &str = "OCI_TPM_HOOK_CONFIG";

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct Policy {
    pub devices: DevicePolicy,
    pub kubernetes: KubernetesPolicy,
    pub node: NodePolicy,
    pub self_test: SelfTestPolicy,
    pub runtime: RuntimePolicy,
    pub hook: HookPolicy,
    pub log: LogPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct DevicePolicy {
    /// Device names that may be handed out; `*` matches any run of characters.
    /// The default hands out only resource-manager devices: `/dev/tpmN` is
    /// exclusive (a second opener gets EBUSY), so giving it to one container
    /// takes the TPM away from the host and every other container.
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct KubernetesPolicy {
    /// Pod namespaces that may ask for a TPM; empty = any. Containers that are
    /// not part of a Kubernetes pod are not affected by this list.
    pub namespaces: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct NodePolicy {
    /// Group owning the node in the container: a group name looked up in the
    /// host's group file, or a numeric GID.
    pub group: GroupSpec,
    /// Who in the container may open the node.
    pub access: NodeAccess,
}

/// Who in the container may open the node (mode 0660, owner root).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeAccess {
    /// The node's group is `[node] group` (the host's `tss`): root, and
    /// processes that have that GID (`--group-add`, `supplementalGroups`).
    #[default]
    Group,
    /// The node's group is the container process's own primary GID, so an
    /// image that runs as a fixed non-root user works without extra groups.
    /// The node is the container's own, so this gives nothing to anyone
    /// outside it; inside, every process with that GID can use the TPM, and
    /// the host's `tss` GID no longer marks who may. Not for containers with
    /// a user namespace (their node is the host's, bind-mounted).
    ProcessGid,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum GroupSpec {
    Gid(u32),
    Name(String),
}

impl fmt::Display for GroupSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gid(g) => write!(f, "GID {g}"),
            Self::Name(n) => write!(f, "group {n:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct SelfTestPolicy {
    pub level: SelfTestLevel,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct RuntimePolicy {
    /// The OCI runtime `oci-tpm-runtime` executes after editing the bundle: a
    /// path, or a name looked up on PATH.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct HookPolicy {
    /// The hook binary the spec-editing front-ends add to a container's spec.
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// journald when its socket exists, else stderr.
    #[default]
    Auto,
    Journald,
    Stderr,
    /// Append to `[log] file`: for hosts without journald.
    File,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct LogPolicy {
    pub target: LogTarget,
    /// error, warn, info, debug or trace.
    pub level: String,
    /// With `target = "file"`: the file events are appended to.
    pub file: Option<PathBuf>,
}

impl Default for DevicePolicy {
    fn default() -> Self {
        Self {
            allow: vec!["tpmrm*".into()],
        }
    }
}

impl Default for NodePolicy {
    fn default() -> Self {
        Self {
            group: GroupSpec::Name("tss".into()),
            access: NodeAccess::Group,
        }
    }
}

impl Default for SelfTestPolicy {
    fn default() -> Self {
        Self {
            level: SelfTestLevel::Quick,
            timeout_ms: 5000,
        }
    }
}

impl Default for RuntimePolicy {
    fn default() -> Self {
        Self {
            path: "runc".into(),
        }
    }
}

impl Default for HookPolicy {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/usr/bin/oci-tpm-hook"),
        }
    }
}

impl Default for LogPolicy {
    fn default() -> Self {
        Self {
            target: LogTarget::Auto,
            level: "info".into(),
            file: None,
        }
    }
}

/// Where the policy comes from: an explicit path, else `$OCI_TPM_HOOK_CONFIG`,
/// else [`DEFAULT_PATH`].
pub fn resolve_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(PATH_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

impl Policy {
    /// Loads the policy. A missing file at the *default* path means defaults;
    /// a missing file that was named explicitly is an error.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(DEFAULT_PATH) =>
            {
                return Ok(Self::default())
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read policy file {}", path.display()))
            }
        };
        Self::parse(&text).with_context(|| {
            format!(
                "policy file {} is not valid; fix it or remove it to use the defaults",
                path.display()
            )
        })
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let policy: Self = toml::from_str(text)?;
        policy.validate()?;
        Ok(policy)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.devices.allow.is_empty() {
            bail!("[devices] allow is empty: no container could get a TPM; list e.g. \"tpmrm*\"");
        }
        for pattern in &self.devices.allow {
            if pattern.is_empty() || pattern.contains('/') {
                bail!(
                    "[devices] allow: {pattern:?} is not a device name pattern (e.g. \"tpmrm*\")"
                );
            }
        }
        if self.self_test.timeout_ms == 0 || self.self_test.timeout_ms > 120_000 {
            bail!(
                "[self-test] timeout-ms = {} is out of range (1 to 120000)",
                self.self_test.timeout_ms
            );
        }
        if let GroupSpec::Name(n) = &self.node.group {
            if n.is_empty() || n.contains(':') || n.contains('\n') {
                bail!("[node] group = {n:?} is not a group name");
            }
        }
        if !matches!(
            self.log.level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            bail!(
                "[log] level = {:?}: allowed error, warn, info, debug, trace",
                self.log.level
            );
        }
        match (&self.log.target, &self.log.file) {
            (LogTarget::File, Some(f)) if f.is_absolute() => {}
            (LogTarget::File, _) => bail!("[log] target = \"file\" needs an absolute `file` path"),
            (_, Some(_)) => bail!("[log] file is only used with target = \"file\""),
            _ => {}
        }
        if self.runtime.path.is_empty() {
            bail!("[runtime] path is empty");
        }
        if !self.hook.path.is_absolute() {
            bail!("[hook] path = {:?} must be absolute", self.hook.path);
        }
        Ok(())
    }

    pub fn device_allowed(&self, name: &str) -> bool {
        self.devices.allow.iter().any(|p| glob_match(p, name))
    }

    /// Refuses a named device the policy does not allow, saying why.
    pub fn check_device(&self, name: &str) -> anyhow::Result<()> {
        if self.device_allowed(name) {
            return Ok(());
        }
        let why = match name.strip_prefix("tpm") {
            Some(index) if !name.starts_with("tpmrm") => format!(
                "; /dev/{name} is exclusive (one opener at a time, so the host and other containers would lose the TPM): ask for tpmrm{index} instead, or allow it explicitly"
            ),
            _ => String::new(),
        };
        bail!(
            "device {name} is not allowed by policy [devices] allow = {:?}{why}",
            self.devices.allow
        )
    }

    /// For `device=auto`: the first of the host's devices (in its order)
    /// the policy allows.
    pub fn first_allowed<'a>(&self, names: &'a [String]) -> anyhow::Result<&'a str> {
        names
            .iter()
            .find(|n| self.device_allowed(n))
            .map(String::as_str)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no TPM device on this host is allowed by policy [devices] allow = {:?}",
                    self.devices.allow
                )
            })
    }

    /// Checks who is asking. Which device may be handed out is decided once
    /// the device is known (see [`Policy::device_allowed`]).
    ///
    /// With a namespace list, every namespace the container claims must be
    /// on it (see [`Requester::namespace_claims`]): a pod can add claims but
    /// never remove the one its engine wrote, so a pod from another
    /// namespace cannot pass by claiming an allowed one, nor by an empty
    /// value.
    pub fn admit(&self, requester: &Requester) -> Result<(), String> {
        let allowed = &self.kubernetes.namespaces;
        if allowed.is_empty() {
            return Ok(());
        }
        for (key, ns) in &requester.namespace_claims {
            let ns_shown = crate::text::untrusted(ns);
            let key_shown = crate::text::untrusted(key);
            if ns.is_empty() {
                return Err(format!(
                    "{key_shown} is empty: a pod whose Kubernetes namespace is not known may not ask for a TPM (policy [kubernetes] namespaces = {allowed:?})"
                ));
            }
            if !allowed.iter().any(|a| glob_match(a, ns)) {
                return Err(format!(
                    "Kubernetes namespace {ns_shown:?} ({key_shown}) may not ask for a TPM (policy [kubernetes] namespaces = {allowed:?})"
                ));
            }
        }
        Ok(())
    }

    pub fn self_test_level(&self, request: &TpmRequest) -> SelfTestLevel {
        request.self_test.unwrap_or(self.self_test.level)
    }

    pub fn self_test_timeout(&self) -> Duration {
        Duration::from_millis(self.self_test.timeout_ms)
    }
}

/// Shell-style matching with `*` only: device names and namespaces need no more.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty(); // no '*' at all: exact match
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::request::DeviceSelector;

    #[test]
    fn device_choice() {
        let p = Policy::default();
        assert!(p.check_device("tpmrm3").is_ok());
        let err = p.check_device("tpm0").unwrap_err().to_string();
        assert!(
            err.contains("exclusive") && err.contains("tpmrm0 instead"),
            "{err}"
        );
        let names = ["tpmrm2".to_string(), "tpmrm10".to_string()];
        assert_eq!(p.first_allowed(&names).unwrap(), "tpmrm2");
        let mut only10 = Policy::default();
        only10.devices.allow = vec!["tpmrm1*".into()];
        assert_eq!(only10.first_allowed(&names).unwrap(), "tpmrm10");
        let err = only10.check_device("tpmrm2").unwrap_err().to_string();
        assert!(
            err.contains("not allowed") && !err.contains("exclusive"),
            "{err}"
        );
        only10.devices.allow = vec!["none*".into()];
        assert!(only10.first_allowed(&names).is_err());
    }

    #[test]
    fn defaults_without_file() {
        let p = Policy::parse("").unwrap();
        assert_eq!(p, Policy::default());
        assert!(p.device_allowed("tpmrm0"));
        assert!(p.device_allowed("tpmrm12"));
        assert!(!p.device_allowed("tpm0"));
        assert_eq!(p.node.group, GroupSpec::Name("tss".into()));
        assert_eq!(p.self_test.level, SelfTestLevel::Quick);
    }

    #[test]
    fn full_file() {
        let p = Policy::parse(
            r#"
            [devices]
            allow = ["tpmrm*", "tpm0"]
            [kubernetes]
            namespaces = ["attest", "lic-*"]
            [node]
            group = 974
            access = "process-gid"
            [self-test]
            level = "full"
            timeout-ms = 8000
            [runtime]
            path = "/usr/sbin/runc"
            [hook]
            path = "/usr/local/bin/oci-tpm-hook"
            [log]
            target = "stderr"
            level = "debug"
            "#,
        )
        .unwrap();
        assert!(p.device_allowed("tpm0"));
        assert_eq!(p.node.group, GroupSpec::Gid(974));
        assert_eq!(p.node.access, NodeAccess::ProcessGid);
        assert_eq!(p.self_test.level, SelfTestLevel::Full);
        assert_eq!(p.self_test_timeout(), Duration::from_secs(8));
        assert_eq!(p.log.target, LogTarget::Stderr);
        let claims = |pairs: &[(&str, &str)]| Requester {
            namespace_claims: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let (cri, crio) = (
            "io.kubernetes.cri.sandbox-namespace",
            "io.kubernetes.pod.namespace",
        );
        assert!(p.admit(&claims(&[(cri, "attest")])).is_ok());
        assert!(p.admit(&claims(&[(crio, "lic-prod")])).is_ok());
        let err = p.admit(&claims(&[(cri, "default")])).unwrap_err();
        assert!(err.contains("\"default\"") && err.contains(cri), "{err}");
        // Not a pod: the list does not apply.
        assert!(p.admit(&Requester::default()).is_ok());
        // A pod under CRI-O (pod.namespace is the engine's) claiming an
        // allowed namespace through containerd's key, and the reverse.
        assert!(p
            .admit(&claims(&[(cri, "attest"), (crio, "default")]))
            .is_err());
        assert!(p
            .admit(&claims(&[(cri, "default"), (crio, "attest")]))
            .is_err());
        // An empty claim hides nothing.
        let err = p
            .admit(&claims(&[(cri, ""), (crio, "attest")]))
            .unwrap_err();
        assert!(err.contains("is empty"), "{err}");
    }

    #[test]
    fn malformed_files_are_errors() {
        for bad in [
            "[devices]\nallow = \"tpmrm*\"",      // wrong type
            "[devices]\nalow = [\"tpmrm*\"]",     // typo
            "[sefl-test]\nlevel = \"quick\"",     // unknown table
            "[self-test]\nlevel = \"fast\"",      // unknown level
            "[self-test]\ntimeout-ms = 0",        // out of range
            "[devices]\nallow = []",              // nothing could ever be granted
            "[devices]\nallow = [\"/dev/tpm0\"]", // a path, not a name
            "[node]\ngroup = \"a:b\"",
            "[node]\naccess = \"everyone\"",
            "[log]\nlevel = \"loud\"",
            "[hook]\npath = \"relative\"",
            "[log]\ntarget = \"file\"",
            "[log]\nfile = \"/var/log/x\"",
            "not toml at all [",
        ] {
            assert!(Policy::parse(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn missing_explicit_file_is_an_error_default_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("config.toml");
        assert!(Policy::load(&missing).is_err());
        std::fs::write(&missing, "[self-test]\nlevel = \"none\"\n").unwrap();
        assert_eq!(
            Policy::load(&missing).unwrap().self_test.level,
            SelfTestLevel::None
        );
        std::fs::write(&missing, "[self-test\n").unwrap();
        let err = format!("{:#}", Policy::load(&missing).unwrap_err());
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn level_from_request_or_policy() {
        let p = Policy::default();
        let mut req = TpmRequest {
            device: DeviceSelector::Auto,
            self_test: None,
            required: true,
        };
        assert_eq!(p.self_test_level(&req), SelfTestLevel::Quick);
        req.self_test = Some(SelfTestLevel::None);
        assert_eq!(p.self_test_level(&req), SelfTestLevel::None);
    }

    #[test]
    fn shipped_example_is_the_defaults() {
        let text = include_str!("../../packaging/config.toml");
        assert_eq!(Policy::parse(text).unwrap(), Policy::default());
    }

    #[test]
    fn globs() {
        assert!(glob_match("tpmrm*", "tpmrm0"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(glob_match("tpm0", "tpm0"));
        assert!(!glob_match("tpm0", "tpm01"));
        assert!(!glob_match("tpmrm*", "tpm0"));
        assert!(!glob_match("a*bc", "abc-"));
        assert!(!glob_match("ab*b", "ab"));
    }
}
