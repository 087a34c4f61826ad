//! The TPM plugin: turns a container's request into an NRI adjustment.
//!
//! Everything that decides lives in [`crate::grant::decide`]; this file only
//! reads the NRI messages into a [`Subject`] and writes the [`Grant`] back
//! as a device, environment and the createRuntime hook that self-tests it.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;

use tracing::{info, warn};

use super::api::{self, ContainerAdjustment, CreateContainerRequest, Hook, Hooks, LinuxDevice};
use super::stub::Plugin;
use super::ttrpc::{code, Status};
use crate::grant::{decide, Grant, Subject};
use crate::host::HostRoots;
use crate::policy::{self, Policy};
use crate::request::PREFIX;

/// How much longer than the self-test the hook may take: host validation,
/// forking into the container, making the node.
const HOOK_TIMEOUT_MARGIN_SECS: i64 = 5;

pub struct TpmPlugin {
    pub policy: Policy,
    /// Where the policy came from; passed on to the hook when it is not the
    /// default, so both judge by the same file.
    pub policy_path: PathBuf,
    pub host: HostRoots,
    /// Add the createRuntime hook (off where the runtime refuses hook
    /// injection; the device is granted either way).
    pub inject_hook: bool,
    /// The hook binary was missing at the last grant: warn once per change.
    hook_missing: bool,
}

impl TpmPlugin {
    pub fn new(policy: Policy, policy_path: PathBuf, host: HostRoots, inject_hook: bool) -> Self {
        Self {
            policy,
            policy_path,
            host,
            inject_hook,
            hook_missing: false,
        }
    }

    /// The hook to add for a grant, if any.
    fn hook_for(&mut self, grant: &Grant) -> Option<Hook> {
        if !self.inject_hook {
            return None;
        }
        let path = &self.policy.hook.path;
        // A missing hook binary would make the runtime fail every container
        // that asks for a TPM; grant the device without the self-test and
        // say so (once, until it is back).
        let missing = !path.is_file();
        if missing != self.hook_missing {
            self.hook_missing = missing;
            if missing {
                warn!(
                    "hook {} does not exist: TPM devices are granted without the createRuntime self-test until it is installed ([hook] path in the policy)",
                    path.display()
                );
            } else {
                info!("hook {} is back: self-tests resume", path.display());
            }
        }
        if missing {
            return None;
        }
        let mut env = Vec::new();
        if self.policy_path != std::path::Path::new(policy::DEFAULT_PATH) {
            env.push(format!(
                "{}={}",
                policy::PATH_ENV,
                self.policy_path.display()
            ));
        }
        let timeout = grant.timeout.as_secs_f64().ceil() as i64 + HOOK_TIMEOUT_MARGIN_SECS;
        Some(Hook {
            path: path.display().to_string(),
            // argv0 and no subcommand: hook mode.
            args: vec!["oci-tpm-hook".into()],
            env,
            timeout: Some(timeout),
        })
    }
}

impl Plugin for TpmPlugin {
    fn configure(&mut self, req: &api::ConfigureRequest) -> Result<i32, Status> {
        if !req.config.trim().is_empty() {
            warn!("NRI: ignoring the plugin configuration the runtime passed; the policy file is the only configuration");
        }
        Ok(api::event_mask(api::EVENT_CREATE_CONTAINER))
    }

    fn create_container(
        &mut self,
        req: &CreateContainerRequest,
    ) -> Result<Option<ContainerAdjustment>, Status> {
        let Some(subject) = subject(req) else {
            return Ok(None); // the fast path: nothing asked, nothing to do
        };
        match decide(&subject, &self.policy, &self.host) {
            Ok(None) => Ok(None),
            Ok(Some(grant)) => {
                let hook = self.hook_for(&grant);
                let adjust = adjustment(&grant, hook, &req.container.hooks);
                let hook_path = self.policy.hook.path.display().to_string();
                let self_test =
                    if has_hook(&req.container.hooks, &hook_path) || adjust.hooks.is_some() {
                        grant.self_test.to_string()
                    } else {
                        "skipped (no hook)".to_string()
                    };
                info!(
                    container = %req.container.id,
                    "{}: granted TPM {} ({}:{}) as {}, group {}, self-test {self_test}",
                    subject.describe(),
                    grant.device.name,
                    grant.device.major,
                    grant.device.minor,
                    grant.container_path.display(),
                    grant.gid,
                );
                Ok(Some(adjust))
            }
            Err(refusal) if refusal.required => {
                warn!(container = %req.container.id, "refused: {refusal}");
                Err(Status::new(
                    code::FAILED_PRECONDITION,
                    format!("oci-tpm-hook: {refusal}"),
                ))
            }
            Err(refusal) => {
                warn!(
                    container = %req.container.id,
                    "{refusal}; starting it without a TPM (oci-tpm-hook/required=false)"
                );
                Ok(None)
            }
        }
    }
}

/// Reads the container as the shared core sees it, or `None` at once when
/// neither the pod nor the container carries an `oci-tpm-hook/` annotation.
///
/// Pod annotations come first and the container's win: in Kubernetes the
/// request is a pod annotation; containerd may also copy it into the
/// container's (`pod_annotations` passthrough).
pub fn subject(req: &CreateContainerRequest) -> Option<Subject> {
    let (pod, container) = (&req.pod, &req.container);
    if !asks(&pod.annotations) && !asks(&container.annotations) {
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

fn asks(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .range::<str, _>((Bound::Included(PREFIX), Bound::Unbounded))
        .next()
        .is_some_and(|(k, _)| k.starts_with(PREFIX))
}

fn has_hook(hooks: &Hooks, path: &str) -> bool {
    hooks.create_runtime.iter().any(|h| h.path == path)
}

/// The adjustment for a grant: the device node (the runtime adds the
/// matching device-cgroup allow rule itself), the TCTI environment, and the
/// hook unless the container already has it (the fail-closed base runtime
/// spec puts it there).
pub fn adjustment(grant: &Grant, hook: Option<Hook>, existing: &Hooks) -> ContainerAdjustment {
    let hooks = hook
        .filter(|h| !has_hook(existing, &h.path))
        .map(|h| Hooks {
            create_runtime: vec![h],
            ..Default::default()
        });
    ContainerAdjustment {
        env: grant
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        hooks,
        linux: Some(api::LinuxContainerAdjustment {
            devices: vec![LinuxDevice {
                path: grant.container_path.display().to_string(),
                kind: "c".into(),
                major: i64::from(grant.device.major),
                minor: i64::from(grant.device.minor),
                file_mode: Some(grant.mode),
                uid: Some(0),
                gid: Some(grant.gid),
            }],
        }),
    }
}
