//! The grant: what a container must get to use a host TPM.
//!
//! [`decide`] is the one place where request, policy and host meet; every
//! front-end calls it and then expresses the [`Grant`] in its own terms
//! (a node made by the hook, a spec edit, an NRI adjustment).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::core::host::{container_path, HostRoots, HostTpm};
use crate::core::identity::{Engine, ProcessIdentity};
use crate::core::policy::{self, NodeAccess, Policy};
use crate::core::request::{self, Requester, TpmRequest};
use crate::text::untrusted;
use tpm2_selftest::SelfTestLevel;

/// The node's mode: the owner (root) and the group may read and write.
pub const NODE_MODE: u32 = 0o660;

/// A container as the front-ends see it.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    /// The runtime's container id.
    pub id: String,
    pub annotations: BTreeMap<String, String>,
    /// When the front-end knows the Kubernetes container name better than
    /// the annotations (NRI).
    pub container_name: Option<String>,
    /// When the front-end knows the pod namespace better than the annotations.
    pub pod_namespace: Option<String>,
}

impl Subject {
    pub fn requester(&self) -> Requester {
        let mut r = Requester::from_annotations(&self.annotations);
        if self.container_name.is_some() {
            r.container_name.clone_from(&self.container_name);
        }
        if self.pod_namespace.is_some() {
            r.pod_namespace.clone_from(&self.pod_namespace);
        }
        r
    }

    /// "container 3f2a… (pod attest/licence, container app)": how every
    /// message names the container. Names come from whoever started the
    /// container, so they are shown escaped.
    pub fn describe(&self) -> String {
        let r = self.requester();
        // Engines show 64-hex-digit ids by their first 12 digits; other ids
        // (runc's, CRI's names) are shown whole.
        let short = if self.id.len() == 64 && self.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            untrusted(&self.id[..12])
        } else {
            untrusted(&self.id)
        };
        let esc = |v: &Option<String>| v.as_deref().map(|s| untrusted(s).into_owned());
        let (ns, pod, c) = (
            esc(&r.pod_namespace),
            esc(&r.pod_name),
            esc(&r.container_name),
        );
        match (&ns, &pod, &c) {
            (Some(ns), Some(pod), Some(c)) => {
                format!("container {short} (pod {ns}/{pod}, container {c})")
            }
            (Some(ns), _, Some(c)) => format!("container {short} (namespace {ns}, container {c})"),
            (_, _, Some(c)) => format!("container {short} ({c})"),
            _ => format!("container {short}"),
        }
    }

    /// The container id, escaped for logs.
    pub fn id_for_log(&self) -> String {
        untrusted(&self.id).into_owned()
    }

    /// Who starts the container, as far as the fix for a refusal goes.
    pub fn engine(&self) -> Engine {
        let r = self.requester();
        if r.pod_namespace.is_some() || r.pod_name.is_some() {
            Engine::Kubernetes
        } else {
            Engine::Cli
        }
    }
}

/// Everything a container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub device: HostTpm,
    /// Where the node appears inside the container.
    pub container_path: PathBuf,
    pub mode: u32,
    /// The policy's group (`[node] group`), as a host GID.
    pub gid: u32,
    pub group_name: Option<String>,
    /// Whose group the node gets (`[node] access`); see [`Grant::node_gid`].
    pub access: NodeAccess,
    pub self_test: SelfTestLevel,
    pub timeout: Duration,
    pub required: bool,
}

impl Grant {
    /// The node's group for a container whose process is `process` (when
    /// the front-end knows it): the policy's group, or with
    /// `access = "process-gid"` the process's own GID.
    pub fn node_gid(&self, process: Option<&ProcessIdentity>) -> u32 {
        match (self.access, process) {
            (NodeAccess::ProcessGid, Some(p)) => p.gid,
            _ => self.gid,
        }
    }

    /// Whether the process needs the node's group as an additional GID.
    pub fn process_needs_group(&self) -> bool {
        self.access == NodeAccess::Group
    }

    /// The request this grant answers, as annotations that a spec-editing
    /// front-end adds to the container, so that the hook it adds finds the
    /// same request in the container's own state (containerd does not copy
    /// pod annotations into containers by default) without the per-container
    /// form, which it already resolved.
    pub fn request_annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (request::KEY_DEVICE.to_owned(), self.device.name.clone()),
            (
                request::KEY_SELF_TEST.to_owned(),
                self.self_test.to_string(),
            ),
            (request::KEY_REQUIRED.to_owned(), self.required.to_string()),
        ])
    }

    /// The device-cgroup rule in `devices.allow` syntax.
    pub fn cgroup_rule(&self) -> String {
        format!("c {}:{} rw", self.device.major, self.device.minor)
    }

    /// Environment that points TPM software at the node: tpm2-tools reads
    /// `TPM2TOOLS_TCTI`, the tpm2-tss libraries `TSS2_TCTI`.
    pub fn env(&self) -> [(&'static str, String); 2] {
        let tcti = format!("device:{}", self.container_path.display());
        [("TPM2TOOLS_TCTI", tcti.clone()), ("TSS2_TCTI", tcti)]
    }
}

/// Head room the hook gets above the self-test's own deadline, for host
/// validation and joining the container before the test starts.
const HOOK_TIMEOUT_MARGIN_SECS: u64 = 5;

/// The createRuntime hook entry a spec-editing front-end (docker wrapper,
/// NRI plugin) adds, so that the hook validates the device and runs the
/// self-test inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEntry {
    pub path: PathBuf,
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs; runtimes give hooks this environment and nothing else.
    pub env: Vec<String>,
    /// Seconds the runtime waits for the hook before killing it.
    pub timeout: Option<u64>,
}

impl HookEntry {
    /// The entry for `oci-tpm-hook` in hook mode (argv0 only, no subcommand),
    /// with a timeout a little above the grant's self-test deadline.
    pub fn for_grant(hook_path: &Path, grant: &Grant, env: Vec<String>) -> Self {
        let test_secs = grant.timeout.as_millis().div_ceil(1000) as u64;
        Self {
            path: hook_path.to_path_buf(),
            args: vec!["oci-tpm-hook".into()],
            env,
            timeout: Some(test_secs + HOOK_TIMEOUT_MARGIN_SECS),
        }
    }

    /// The hook's environment when the front-end judged by `policy_file`:
    /// hand a non-default policy on, so that both judge by the same rules.
    pub fn policy_env(policy_file: &Path) -> Vec<String> {
        if policy_file == Path::new(policy::DEFAULT_PATH) {
            Vec::new()
        } else {
            vec![format!("{}={}", policy::PATH_ENV, policy_file.display())]
        }
    }
}

/// Why a container cannot get what it asked for.
#[derive(Debug)]
pub struct Refusal {
    /// Whether the container must fail (`oci-tpm-hook/required`); malformed
    /// requests always fail.
    pub required: bool,
    pub error: anyhow::Error,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Refusal {}

/// Request → policy → host: `Ok(None)` when the container asks for nothing.
pub fn decide(
    subject: &Subject,
    policy: &Policy,
    host: &HostRoots,
) -> Result<Option<Grant>, Refusal> {
    let who = subject.describe();
    let request =
        request::parse(&subject.annotations, subject.container_name.as_deref()).map_err(|e| {
            Refusal {
                required: true,
                error: anyhow::anyhow!("{who}: {e}"),
            }
        })?;
    let Some(request) = request else {
        return Ok(None);
    };
    grant_for(subject, &request, policy, host)
        .map(Some)
        .map_err(|error| Refusal {
            required: request.required,
            error: error.context(format!("{who}: cannot give it TPM {}", request.device)),
        })
}

fn grant_for(
    subject: &Subject,
    request: &TpmRequest,
    policy: &Policy,
    host: &HostRoots,
) -> anyhow::Result<Grant> {
    policy
        .admit(&subject.requester())
        .map_err(anyhow::Error::msg)?;
    let device = host.find_tpm(&request.device, policy)?;
    let group = host.group(&policy.node.group)?;
    Ok(Grant {
        container_path: container_path(&device.name),
        device,
        mode: NODE_MODE,
        gid: group.gid,
        group_name: group.name,
        access: policy.node.access,
        self_test: policy.self_test_level(request),
        timeout: policy.self_test_timeout(),
        required: request.required,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn host() -> (tempfile::TempDir, HostRoots) {
        let dir = tempfile::tempdir().unwrap();
        let roots = HostRoots {
            dev: dir.path().join("dev"),
            sys: dir.path().join("sys"),
            group_file: dir.path().join("group"),
        };
        fs::create_dir_all(roots.sys.join("class/tpmrm/tpmrm0")).unwrap();
        fs::write(roots.sys.join("class/tpmrm/tpmrm0/dev"), "1:3\n").unwrap();
        fs::create_dir_all(&roots.dev).unwrap();
        std::os::unix::fs::symlink("/dev/null", roots.dev.join("tpmrm0")).unwrap();
        fs::write(&roots.group_file, "tss:x:109:\n").unwrap();
        (dir, roots)
    }

    fn subject(pairs: &[(&str, &str)]) -> Subject {
        Subject {
            id: "0123456789abcdef0123".into(),
            annotations: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn hook_entry_passes_a_non_default_policy_on() {
        assert!(HookEntry::policy_env(Path::new(policy::DEFAULT_PATH)).is_empty());
        assert_eq!(
            HookEntry::policy_env(Path::new("/etc/x.toml")),
            ["OCI_TPM_HOOK_CONFIG=/etc/x.toml"]
        );
    }

    #[test]
    fn no_request_no_grant() {
        let (_d, h) = host();
        assert!(decide(&subject(&[]), &Policy::default(), &h)
            .unwrap()
            .is_none());
    }

    #[test]
    fn full_grant() {
        let (_d, h) = host();
        let g = decide(
            &subject(&[("oci-tpm-hook/device", "tpmrm0")]),
            &Policy::default(),
            &h,
        )
        .unwrap()
        .unwrap();
        assert_eq!(g.container_path, PathBuf::from("/dev/tpmrm0"));
        assert_eq!(
            (g.device.major, g.device.minor, g.gid, g.mode),
            (1, 3, 109, 0o660)
        );
        assert_eq!(g.cgroup_rule(), "c 1:3 rw");
        assert_eq!(
            g.env()[0],
            ("TPM2TOOLS_TCTI", "device:/dev/tpmrm0".to_string())
        );
        assert_eq!(g.self_test, SelfTestLevel::Quick);
        assert!(g.required);
        // The annotations parse back to the same request.
        let back = request::parse(&g.request_annotations(), None)
            .unwrap()
            .unwrap();
        assert_eq!(back.device, request::DeviceSelector::Named("tpmrm0".into()));
        assert_eq!(back.self_test, Some(SelfTestLevel::Quick));
        assert!(back.required);
    }

    #[test]
    fn refusals_carry_required_and_name_the_container() {
        let (_d, h) = host();
        let r = decide(
            &subject(&[
                ("oci-tpm-hook/device", "tpmrm7"),
                ("oci-tpm-hook/required", "false"),
            ]),
            &Policy::default(),
            &h,
        )
        .unwrap_err();
        assert!(!r.required);
        let msg = r.to_string();
        assert!(
            msg.contains("container 0123456789ab") && msg.contains("tpmrm7"),
            "{msg}"
        );

        let bad = decide(
            &subject(&[
                ("oci-tpm-hook/device", "tpmrm0"),
                ("oci-tpm-hook/self-test", "x"),
            ]),
            &Policy::default(),
            &h,
        )
        .unwrap_err();
        assert!(bad.required, "a malformed request always fails");
    }

    #[test]
    fn namespace_policy_applies() {
        let (_d, h) = host();
        let mut p = Policy::default();
        p.kubernetes.namespaces = vec!["attest".into()];
        let mut s = subject(&[
            ("oci-tpm-hook/device", "auto"),
            ("io.kubernetes.pod.namespace", "default"),
            ("io.kubernetes.pod.name", "web"),
            ("io.kubernetes.container.name", "app"),
        ]);
        let msg = decide(&s, &p, &h).unwrap_err().to_string();
        assert!(
            msg.contains("pod default/web, container app") && msg.contains("namespace"),
            "{msg}"
        );
        s.pod_namespace = Some("attest".into());
        assert!(decide(&s, &p, &h).unwrap().is_some());
    }
}
