//! What the core answers a front-end, and the one wording of a refusal.
//!
//! [`decide`] is the one place where request, policy and host meet.
//!
//! Every front-end renders the same outcomes in its own terms: nothing to
//! do; a grant to express; a refusal, which fails the container unless the
//! request said `oci-tpm-hook/required=false`, in which case the container
//! starts without a TPM and the reason is a warning.

use std::fmt;

use anyhow::anyhow;

use crate::core::grant::{Grant, NODE_MODE};
use crate::core::host::{container_path, HostRoots};
use crate::core::policy::Policy;
use crate::core::request::{self, DeviceSelector, TpmRequest};
use crate::core::subject::Subject;

/// What a front-end does with a container.
#[derive(Debug)]
pub enum Decision {
    /// The container asks for no TPM.
    NotRequested,
    Grant(Box<Grant>),
    Refuse(Refusal),
}

/// Why a container cannot get what it asked for. The error's context chain
/// names the container, the device and what to do.
#[derive(Debug)]
pub struct Refusal {
    pub error: anyhow::Error,
    /// `oci-tpm-hook/required` (a malformed request is always required).
    required: bool,
}

/// What follows the reason when the container starts anyway.
pub const STARTS_WITHOUT_TPM: &str =
    "the container starts without a TPM (oci-tpm-hook/required=false)";

impl Refusal {
    pub fn new(required: bool, error: anyhow::Error) -> Self {
        Self { error, required }
    }

    /// Whether the container must not start; otherwise it starts without a
    /// TPM.
    pub fn fails_container(&self) -> bool {
        self.required
    }

    /// The reason, as the user sees it when the container fails.
    pub fn message(&self) -> String {
        format!("{:#}", self.error)
    }

    /// The reason and its consequence, when the container starts anyway.
    pub fn warning(&self) -> String {
        format!("{:#}; {STARTS_WITHOUT_TPM}", self.error)
    }
}

impl fmt::Display for Refusal {
    /// The message or the warning, whichever applies.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.required {
            f.write_str(&self.message())
        } else {
            f.write_str(&self.warning())
        }
    }
}

/// Request → policy → host: what to do with the container.
pub fn decide(subject: &Subject, policy: &Policy, host: &HostRoots) -> Decision {
    let who = subject.describe();
    if subject.requester().is_sandbox {
        // A pod's infra container carries the pod's annotations under CRI-O
        // but never uses a TPM.
        return Decision::NotRequested;
    }
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

    #[test]
    fn required_decides_the_wording() {
        let e = || anyhow::anyhow!("no TPM").context("container x");
        let fails = Refusal::new(true, e());
        assert!(fails.fails_container());
        assert_eq!(fails.to_string(), "container x: no TPM");
        let starts = Refusal::new(false, e());
        assert!(!starts.fails_container());
        assert_eq!(
            starts.to_string(),
            "container x: no TPM; the container starts without a TPM (oci-tpm-hook/required=false)"
        );
    }

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
    fn infra_containers_get_nothing() {
        let host = FakeHost::with_tpm();
        for key in [
            "io.kubernetes.cri.container-type",
            "io.kubernetes.cri-o.ContainerType",
        ] {
            let s = subject(&[("oci-tpm-hook/device", "tpmrm0"), (key, "sandbox")]);
            assert!(matches!(
                decide(&s, &Policy::default(), &host.roots),
                Decision::NotRequested
            ));
            let app = subject(&[("oci-tpm-hook/device", "tpmrm0"), (key, "container")]);
            assert!(matches!(
                decide(&app, &Policy::default(), &host.roots),
                Decision::Grant(_)
            ));
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

    /// What the lab saw: under CRI-O a pod in tpm-other claimed tpm-demo
    /// through containerd's key (or an empty one); under containerd, through
    /// CRI-O's. Both must be refused; the honest pod is admitted.
    #[test]
    fn a_pod_cannot_claim_another_namespace() {
        let host = FakeHost::with_tpm();
        let mut p = Policy::default();
        p.kubernetes.namespaces = vec!["tpm-demo".into()];
        let pod = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("oci-tpm-hook/device", "tpmrm0")];
            pairs.extend_from_slice(extra);
            subject(&pairs)
        };
        let crio_engine = ("io.kubernetes.pod.namespace", "tpm-other");
        let containerd_engine = ("io.kubernetes.cri.sandbox-namespace", "tpm-other");
        for spoof in [
            pod(&[
                crio_engine,
                ("io.kubernetes.cri.sandbox-namespace", "tpm-demo"),
            ]),
            pod(&[crio_engine, ("io.kubernetes.cri.sandbox-namespace", "")]),
            pod(&[crio_engine, ("io.kubernetes.cri-o.Namespace", "tpm-demo")]),
            pod(&[
                containerd_engine,
                ("io.kubernetes.pod.namespace", "tpm-demo"),
            ]),
        ] {
            let (required, msg) = refusal(decide(&spoof, &p, &host.roots));
            assert!(
                required && (msg.contains("may not ask") || msg.contains("is empty")),
                "{msg}"
            );
        }
        let honest = pod(&[("io.kubernetes.pod.namespace", "tpm-demo")]);
        assert!(matches!(
            decide(&honest, &p, &host.roots),
            Decision::Grant(_)
        ));
        // NRI: the runtime's own word replaces whatever the annotations say.
        let mut nri = pod(&[("io.kubernetes.pod.namespace", "tpm-other")]);
        nri.pod_namespace = Some("tpm-demo".into());
        assert!(matches!(decide(&nri, &p, &host.roots), Decision::Grant(_)));
    }
}
