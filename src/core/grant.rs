//! The grant: what a container must get to use a host TPM.
//!
//! [`decide`] is the one place where request, policy and host meet; every
//! front-end calls it and then expresses the [`Grant`] in its own terms
//! (a node made by the hook, a spec edit, an NRI adjustment).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;

use crate::core::decision::{Decision, Refusal};
use crate::core::host::{container_path, HostRoots, HostTpm};
use crate::core::identity::ProcessIdentity;
use crate::core::policy::{NodeAccess, Policy};
use crate::core::request::{self, DeviceSelector, TpmRequest};
use crate::core::subject::Subject;
use tpm2_selftest::SelfTestLevel;

/// The node's mode: the owner (root) and the group may read and write.
pub const NODE_MODE: u32 = 0o660;

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

/// Request → policy → host: what to do with the container.
pub fn decide(subject: &Subject, policy: &Policy, host: &HostRoots) -> Decision {
    let who = subject.describe();
    let request = match request::parse(&subject.annotations, subject.container_name.as_deref()) {
        Ok(Some(r)) => r,
        Ok(None) => return Decision::NotRequested,
        // A malformed request always fails: nobody meant it.
        Err(e) => return Decision::Refuse(Refusal::new(true, anyhow!("{who}: {e}"))),
    };
    match grant_for(subject, &request, policy, host) {
        Ok(grant) => Decision::Grant(Box::new(grant)),
        Err(error) => Decision::Refuse(Refusal::new(
            request.required,
            error.context(format!("{who}: cannot give it TPM {}", request.device)),
        )),
    }
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
    let name = match &request.device {
        DeviceSelector::Named(name) => {
            policy.check_device(name)?;
            name.clone()
        }
        DeviceSelector::Auto => policy.first_allowed(&host.resource_managers()?)?.to_owned(),
    };
    let device = host.validate(&name)?;
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

/// A grant of `tpmrm0` (1:3) with group 102, for other modules' tests.
#[cfg(test)]
pub(crate) fn decide_for_tests() -> Grant {
    let host = crate::testing::FakeHost::with_tpm();
    let subject = Subject {
        id: "c0ffee".into(),
        annotations: [("oci-tpm-hook/device".to_string(), "tpmrm0".to_string())].into(),
        ..Default::default()
    };
    match decide(&subject, &Policy::default(), &host.roots) {
        Decision::Grant(g) => *g,
        other => panic!("no grant: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;

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

    fn refusal(d: Decision) -> (bool, String) {
        match d {
            Decision::Refuse(r) => (r.fails_container(), r.message()),
            other => panic!("not a refusal: {other:?}"),
        }
    }

    #[test]
    fn no_request_no_grant() {
        let host = FakeHost::with_tpm();
        assert!(matches!(
            decide(&subject(&[]), &Policy::default(), &host.roots),
            Decision::NotRequested
        ));
    }

    #[test]
    fn full_grant() {
        let g = decide_for_tests();
        assert_eq!(g.container_path, PathBuf::from("/dev/tpmrm0"));
        assert_eq!(
            (g.device.major, g.device.minor, g.gid, g.mode),
            (1, 3, 102, 0o660)
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
        assert_eq!(back.device, DeviceSelector::Named("tpmrm0".into()));
        assert_eq!(back.self_test, Some(SelfTestLevel::Quick));
        assert!(back.required);
    }

    #[test]
    fn auto_takes_the_first_device_the_policy_allows() {
        let host = FakeHost::new(102);
        host.add_tpm(2, "1:3", "2");
        host.add_tpm(10, "1:3", "2");
        let auto = subject(&[("oci-tpm-hook/device", "auto")]);
        let Decision::Grant(g) = decide(&auto, &Policy::default(), &host.roots) else {
            panic!("no grant");
        };
        assert_eq!(g.device.name, "tpmrm2");
        let mut only10 = Policy::default();
        only10.devices.allow = vec!["tpmrm1*".into()];
        let Decision::Grant(g) = decide(&auto, &only10, &host.roots) else {
            panic!("no grant");
        };
        assert_eq!(g.device.name, "tpmrm10");
        let (required, msg) = refusal(decide(&auto, &Policy::default(), &FakeHost::new(5).roots));
        assert!(required && msg.contains("no TPM 2.0"), "{msg}");
    }

    #[test]
    fn refusals_carry_required_and_name_the_container() {
        let host = FakeHost::with_tpm();
        let (required, msg) = refusal(decide(
            &subject(&[
                ("oci-tpm-hook/device", "tpmrm7"),
                ("oci-tpm-hook/required", "false"),
            ]),
            &Policy::default(),
            &host.roots,
        ));
        assert!(!required);
        assert!(
            msg.contains("container 0123456789ab") && msg.contains("tpmrm7"),
            "{msg}"
        );
        let (required, _) = refusal(decide(
            &subject(&[
                ("oci-tpm-hook/device", "tpmrm0"),
                ("oci-tpm-hook/self-test", "x"),
                ("oci-tpm-hook/required", "false"),
            ]),
            &Policy::default(),
            &host.roots,
        ));
        assert!(required, "a malformed request always fails");
        let (_, msg) = refusal(decide(
            &subject(&[("oci-tpm-hook/device", "tpm0")]),
            &Policy::default(),
            &host.roots,
        ));
        assert!(msg.contains("exclusive"), "{msg}");
    }

    #[test]
    fn namespace_policy_applies() {
        let host = FakeHost::with_tpm();
        let mut p = Policy::default();
        p.kubernetes.namespaces = vec!["attest".into()];
        let mut s = subject(&[
            ("oci-tpm-hook/device", "auto"),
            ("io.kubernetes.pod.namespace", "default"),
            ("io.kubernetes.pod.name", "web"),
            ("io.kubernetes.container.name", "app"),
        ]);
        let (_, msg) = refusal(decide(&s, &p, &host.roots));
        assert!(
            msg.contains("pod default/web, container app") && msg.contains("namespace"),
            "{msg}"
        );
        s.pod_namespace = Some("attest".into());
        assert!(matches!(decide(&s, &p, &host.roots), Decision::Grant(_)));
    }
}
