//! The TPM plugin: turns a container's request into an NRI adjustment.
//!
//! Everything that decides lives in [`crate::core::decision::decide`]; this file only
//! reads the NRI messages into a [`Subject`] and writes the [`Grant`] back
//! as a device, environment and the createRuntime hook that self-tests it.

use std::path::PathBuf;

use tracing::warn;

use super::api::{
    self, Container, ContainerAdjustment, CreateContainerRequest, Hook, Hooks, KeyValue,
    LinuxContainerAdjustment, LinuxDevice, OptionalFileMode, OptionalInt, OptionalUInt32,
    PodSandbox,
};
use super::stub::Plugin;
use super::ttrpc::{code, Status};
use crate::core::decision::{decide, Decision, Refusal};
use crate::core::grant::Grant;
use crate::core::hook_entry::HookEntry;
use crate::core::host::HostRoots;
use crate::core::policy::Policy;
use crate::core::request::mentions_us;
use crate::core::subject::Subject;

pub struct TpmPlugin {
    pub policy: Policy,
    /// Where the policy came from; passed on to the hook when it is not the
    /// default, so both judge by the same file.
    pub policy_path: PathBuf,
    pub host: HostRoots,
    /// Add the createRuntime hook (off, by the operator's explicit choice,
    /// where the runtime refuses hook injection: no self-test then).
    pub inject_hook: bool,
}

/// How the log names this front-end.
const FRONT_END: &str = "NRI plugin";

impl TpmPlugin {
    pub fn new(policy: Policy, policy_path: PathBuf, host: HostRoots, inject_hook: bool) -> Self {
        Self {
            policy,
            policy_path,
            host,
            inject_hook,
        }
    }

    /// The adjustment for a grant, with the hook that proves it (the same
    /// rule as every front-end: no hook binary, no unproven grant). A spec
    /// that already has the hook (the fail-closed base spec) needs no other.
    fn grant(&self, grant: &Grant, existing: &Hooks) -> anyhow::Result<ContainerAdjustment> {
        let ours = self.policy.hook.path.display().to_string();
        let hook = if self.inject_hook && !has_hook(existing, &ours) {
            let entry = HookEntry::for_grant(&self.policy, &self.policy_path, grant)?;
            Some(Hook {
                path: entry.path.display().to_string(),
                args: entry.args,
                env: entry.env,
                timeout: entry.timeout.map(|t| OptionalInt { value: t as i64 }),
            })
        } else {
            None
        };
        Ok(adjustment(grant, hook, existing))
    }
}

impl Plugin for TpmPlugin {
    fn configure(&mut self, req: &api::ConfigureRequest) -> Result<i32, Status> {
        if !req.config.trim().is_empty() {
            warn!("NRI: ignoring the plugin configuration the runtime passed; the policy file is the only configuration");
        }
        Ok(api::event_mask(api::Event::CreateContainer))
    }

    fn create_container(
        &mut self,
        req: &CreateContainerRequest,
    ) -> Result<Option<ContainerAdjustment>, Status> {
        let Some(subject) = subject(req) else {
            return Ok(None); // the fast path: nothing asked, nothing to do
        };
        let no_hooks = Hooks::default();
        let existing = req
            .container
            .as_ref()
            .and_then(|c| c.hooks.as_ref())
            .unwrap_or(&no_hooks);
        let refusal = match decide(&subject, &self.policy, &self.host) {
            Decision::NotRequested => return Ok(None),
            Decision::Refuse(r) => r,
            Decision::Grant(grant) => match self.grant(&grant, existing) {
                Ok(adjust) => {
                    let self_test = if self.inject_hook {
                        format!("hook, self-test {}", grant.self_test)
                    } else {
                        "no hook (--no-hook): not self-tested".to_string()
                    };
                    crate::log::granted(
                        FRONT_END,
                        &subject,
                        &grant,
                        &format!("device with group {}, {self_test}", grant.gid),
                    );
                    return Ok(Some(adjust));
                }
                Err(e) => Refusal::new(
                    grant.required,
                    e.context(format!(
                        "{}: cannot give it TPM {}",
                        subject.describe(),
                        grant.device.name
                    )),
                ),
            },
        };
        if refusal.fails_container() {
            crate::log::refused(FRONT_END, &subject, &refusal);
            return Err(Status::new(
                code::FAILED_PRECONDITION,
                format!("oci-tpm-hook: {}", refusal.message()),
            ));
        }
        crate::log::started_without(FRONT_END, &subject, &refusal);
        Ok(None)
    }
}

/// Reads the container as the shared core sees it, or `None` at once when
/// neither the pod nor the container carries an `oci-tpm-hook/` annotation.
///
/// Pod annotations come first and the container's win: in Kubernetes the
/// request is a pod annotation; containerd may also copy it into the
/// container's (`pod_annotations` passthrough).
pub fn subject(req: &CreateContainerRequest) -> Option<Subject> {
    // A message the runtime left out reads as an empty one.
    let (no_pod, no_container) = (PodSandbox::default(), Container::default());
    let pod = req.pod.as_ref().unwrap_or(&no_pod);
    let container = req.container.as_ref().unwrap_or(&no_container);
    if !mentions_us(&pod.annotations) && !mentions_us(&container.annotations) {
        return None;
    }
    let mut annotations = pod.annotations.clone();
    annotations.extend(
        container
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    // For messages that name the pod, when the runtime did not copy it.
    if !pod.name.is_empty() {
        annotations
            .entry("io.kubernetes.cri.sandbox-name".into())
            .or_insert_with(|| pod.name.clone());
    }
    let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
    Some(Subject {
        id: container.id.clone(),
        annotations,
        container_name: non_empty(&container.name),
        pod_namespace: non_empty(&pod.namespace),
    })
}

fn has_hook(hooks: &Hooks, path: &str) -> bool {
    hooks.create_runtime.iter().any(|h| h.path == path)
}

/// The adjustment for a grant: the request as the container's annotations,
/// the device node (the runtime adds the matching device-cgroup allow rule
/// itself), the TCTI environment, and the hook unless the container already
/// has it (the fail-closed base runtime spec puts it there).
pub fn adjustment(grant: &Grant, hook: Option<Hook>, existing: &Hooks) -> ContainerAdjustment {
    let hooks = hook
        .filter(|h| !has_hook(existing, &h.path))
        .map(|h| Hooks {
            create_runtime: vec![h],
            ..Default::default()
        });
    ContainerAdjustment {
        // The hook reads the request from the container's own annotations,
        // and containerd does not copy the pod's there by default.
        annotations: grant.request_annotations(),
        env: grant
            .env()
            .into_iter()
            .map(|(k, v)| KeyValue {
                key: k.to_string(),
                value: v,
            })
            .collect(),
        hooks,
        linux: Some(LinuxContainerAdjustment {
            devices: vec![LinuxDevice {
                path: grant.container_path.display().to_string(),
                r#type: "c".into(),
                major: i64::from(grant.device.major),
                minor: i64::from(grant.device.minor),
                file_mode: Some(OptionalFileMode { value: grant.mode }),
                uid: Some(OptionalUInt32 { value: 0 }),
                gid: Some(OptionalUInt32 { value: grant.gid }),
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;
    use std::fs;

    struct Fixture {
        _host: FakeHost,
        plugin: TpmPlugin,
        hook: String,
    }

    /// A host with tpmrm0 = 253:65536, group tss = 102, and a hook binary.
    fn fixture() -> Fixture {
        let host = FakeHost::with_tpm();
        let hook = host.dir().join("oci-tpm-hook");
        fs::write(&hook, "").unwrap();
        fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let mut policy = Policy::default();
        policy.hook.path = hook.clone();
        let plugin = TpmPlugin::new(
            policy,
            crate::core::policy::DEFAULT_PATH.into(),
            host.roots.clone(),
            true,
        );
        Fixture {
            _host: host,
            plugin,
            hook: hook.display().to_string(),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn request(pod: &[(&str, &str)], container: &[(&str, &str)]) -> CreateContainerRequest {
        CreateContainerRequest {
            pod: Some(PodSandbox {
                id: "pod0".into(),
                name: "licence".into(),
                namespace: "attest".into(),
                annotations: map(pod),
                ..Default::default()
            }),
            container: Some(Container {
                id: "0123456789abcdef".into(),
                pod_sandbox_id: "pod0".into(),
                name: "app".into(),
                annotations: map(container),
                ..Default::default()
            }),
        }
    }

    fn device(a: &ContainerAdjustment) -> &LinuxDevice {
        &a.linux.as_ref().unwrap().devices[0]
    }

    #[test]
    fn no_request_is_an_empty_answer() {
        let mut f = fixture();
        let req = request(
            &[("other/key", "x")],
            &[("io.kubernetes.cri.container-name", "app")],
        );
        assert!(subject(&req).is_none(), "fast path");
        assert_eq!(f.plugin.create_container(&req).unwrap(), None);
    }

    #[test]
    fn pod_request_gets_device_env_and_hook() {
        let mut f = fixture();
        let req = request(&[("oci-tpm-hook/device", "tpmrm0")], &[]);
        let a = f.plugin.create_container(&req).unwrap().unwrap();
        assert_eq!(
            device(&a),
            &LinuxDevice {
                path: "/dev/tpmrm0".into(),
                r#type: "c".into(),
                major: 1,
                minor: 3,
                file_mode: Some(OptionalFileMode { value: 0o660 }),
                uid: Some(OptionalUInt32 { value: 0 }),
                gid: Some(OptionalUInt32 { value: 102 }),
            }
        );
        assert_eq!(
            a.env,
            [
                KeyValue {
                    key: "TPM2TOOLS_TCTI".into(),
                    value: "device:/dev/tpmrm0".into()
                },
                KeyValue {
                    key: "TSS2_TCTI".into(),
                    value: "device:/dev/tpmrm0".into()
                }
            ]
        );
        assert_eq!(
            a.annotations,
            map(&[
                ("oci-tpm-hook/device", "tpmrm0"),
                ("oci-tpm-hook/required", "true"),
                ("oci-tpm-hook/self-test", "quick")
            ]),
            "the hook finds the request in the container's own annotations"
        );
        let hooks = a.hooks.unwrap();
        assert_eq!(hooks.create_runtime.len(), 1);
        let h = &hooks.create_runtime[0];
        assert_eq!(h.path, f.hook);
        assert_eq!(h.args, ["oci-tpm-hook"]);
        assert!(h.env.is_empty(), "default policy path: nothing to pass");
        assert_eq!(
            h.timeout,
            Some(OptionalInt { value: 10 }),
            "5 s self-test + 5 s margin"
        );
        assert!(hooks.prestart.is_empty() && hooks.poststop.is_empty());
    }

    #[test]
    fn container_annotation_wins_and_per_container_form_applies() {
        let mut f = fixture();
        // The pod says tpmrm9 (absent), the container overrides with auto.
        let req = request(
            &[("oci-tpm-hook/device", "tpmrm9")],
            &[("oci-tpm-hook/device", "auto")],
        );
        assert!(f.plugin.create_container(&req).unwrap().is_some());

        // Per-container form names this container (NRI gives its name).
        let req = request(&[("oci-tpm-hook/device.app", "tpmrm0")], &[]);
        assert!(f.plugin.create_container(&req).unwrap().is_some());
        // … and not another one.
        let req = request(&[("oci-tpm-hook/device.sidecar", "tpmrm0")], &[]);
        assert_eq!(f.plugin.create_container(&req).unwrap(), None);
    }

    #[test]
    fn required_refusal_fails_with_a_clear_message() {
        let mut f = fixture();
        let req = request(&[("oci-tpm-hook/device", "tpmrm7")], &[]);
        let status = f.plugin.create_container(&req).unwrap_err();
        assert_eq!(status.code, code::FAILED_PRECONDITION);
        for part in [
            "oci-tpm-hook:",
            "0123456789ab",
            "attest/licence",
            "app",
            "tpmrm7",
        ] {
            assert!(
                status.message.contains(part),
                "{part:?} not in {}",
                status.message
            );
        }
        // A malformed request always fails, whatever `required` says.
        let req = request(
            &[
                ("oci-tpm-hook/device", "tpmrm0"),
                ("oci-tpm-hook/required", "maybe"),
            ],
            &[],
        );
        let status = f.plugin.create_container(&req).unwrap_err();
        assert!(
            status.message.contains("oci-tpm-hook/required"),
            "{}",
            status.message
        );
    }

    #[test]
    fn optional_refusal_starts_without_tpm() {
        let mut f = fixture();
        let req = request(
            &[
                ("oci-tpm-hook/device", "tpmrm7"),
                ("oci-tpm-hook/required", "false"),
            ],
            &[],
        );
        assert_eq!(f.plugin.create_container(&req).unwrap(), None);
    }

    #[test]
    fn namespace_policy_uses_the_pod_namespace() {
        let mut f = fixture();
        f.plugin.policy.kubernetes.namespaces = vec!["prod".into()];
        let req = request(&[("oci-tpm-hook/device", "auto")], &[]);
        let status = f.plugin.create_container(&req).unwrap_err();
        assert!(status.message.contains("\"attest\""), "{}", status.message);
    }

    #[test]
    fn hook_not_added_twice_missing_or_disabled() {
        let mut f = fixture();
        let mut req = request(&[("oci-tpm-hook/device", "tpmrm0")], &[]);
        // Already there from the base runtime spec (the fail-closed setup).
        let container = req.container.as_mut().unwrap();
        let hooks = container.hooks.get_or_insert_with(Hooks::default);
        hooks.create_runtime.push(Hook {
            path: f.hook.clone(),
            args: vec!["oci-tpm-hook".into()],
            ..Default::default()
        });
        let a = f.plugin.create_container(&req).unwrap().unwrap();
        assert_eq!(a.hooks, None);
        assert!(a.linux.is_some(), "the device is still added");

        let req = request(&[("oci-tpm-hook/device", "tpmrm0")], &[]);
        f.plugin.inject_hook = false;
        let a = f.plugin.create_container(&req).unwrap().unwrap();
        assert_eq!(a.hooks, None);
        assert_eq!(device(&a).gid, Some(OptionalUInt32 { value: 102 }));

        // No hook binary: nothing unproven is granted; the container fails,
        // or with required=false starts without a TPM.
        f.plugin.inject_hook = true;
        f.plugin.policy.hook.path = "/nonexistent/oci-tpm-hook".into();
        let status = f.plugin.create_container(&req).unwrap_err();
        assert!(
            status.message.contains("/nonexistent/oci-tpm-hook")
                && status.message.contains("[hook] path"),
            "{}",
            status.message
        );
        let optional = request(
            &[
                ("oci-tpm-hook/device", "tpmrm0"),
                ("oci-tpm-hook/required", "false"),
            ],
            &[],
        );
        assert_eq!(f.plugin.create_container(&optional).unwrap(), None);
    }

    #[test]
    fn non_default_policy_is_passed_to_the_hook() {
        let mut f = fixture();
        f.plugin.policy_path = "/etc/tpm/policy.toml".into();
        f.plugin.policy.self_test.timeout_ms = 12_500;
        let req = request(&[("oci-tpm-hook/device", "tpmrm0")], &[]);
        let a = f.plugin.create_container(&req).unwrap().unwrap();
        let h = &a.hooks.unwrap().create_runtime[0];
        assert_eq!(h.env, ["OCI_TPM_HOOK_CONFIG=/etc/tpm/policy.toml"]);
        assert_eq!(
            h.timeout,
            Some(OptionalInt { value: 18 }),
            "12.5 s rounded up + 5 s"
        );
    }

    #[test]
    fn configure_subscribes_to_create_container_only() {
        let mut f = fixture();
        let events = f
            .plugin
            .configure(&api::ConfigureRequest::default())
            .unwrap();
        assert_eq!(events, 1 << 3);
    }
}
