//! The createRuntime hook: from the OCI state on stdin to a TPM proven
//! working inside the container.
//!
//! Order: state → request? (no: return at once) → policy + host validation
//! (`grant::decide`) → device-cgroup rule (unless the spec already allows
//! the device) → node inside the rootfs → self-test from inside the
//! container → one outcome event.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cgroup::{self, AllowOutcome, DeviceAccess};
use crate::container::ContainerProcess;
use crate::grant::{self, Grant, Subject};
use crate::host::HostRoots;
use crate::node::{self, NodeMethod, NodeOutcome, NodeSpec};
use crate::policy::{self, Policy};
use crate::request;
use crate::state::{BundleSpec, ContainerState};
use crate::tpm::{self, SelfTestLevel, SelfTestReport};
use crate::userns::IdMaps;

/// Time on top of the self-test's own deadline for forking, joining and
/// making the node.
const CHILD_MARGIN: Duration = Duration::from_secs(2);

/// What the hook did for one container.
#[derive(Debug)]
pub enum HookResult {
    /// The container asked for nothing.
    NotRequested,
    Delivered(Box<Delivery>),
    /// `required=false` and the TPM could not be delivered: the container
    /// starts without it.
    SkippedOptional(String),
}

#[derive(Debug)]
pub struct Delivery {
    pub grant: Grant,
    pub cgroup: String,
    pub node: NodeOutcome,
    pub self_test: Option<SelfTestReport>,
    pub duration: Duration,
}

/// Runs the hook on a state read from `input`. An `Err` fails the container.
pub fn run(
    input: impl Read,
    config: Option<&Path>,
    host: &HostRoots,
) -> anyhow::Result<HookResult> {
    let started = Instant::now();
    let mut bytes = Vec::new();
    input
        .take((1 << 20) + 1)
        .read_to_end(&mut bytes)
        .context("cannot read the OCI state from stdin")?;
    let state = ContainerState::parse(&bytes)?;
    if !request::mentions_us(&state.annotations) {
        return Ok(HookResult::NotRequested);
    }
    scrub_process_environment();

    let policy = Policy::load(&policy::resolve_path(config))?;
    crate::log::init(&policy.log, "oci-tpm-hook")?;
    let subject = Subject {
        id: state.id.clone(),
        annotations: state.annotations.clone(),
        ..Default::default()
    };
    let grant = match grant::decide(&subject, &policy, host) {
        Ok(None) => return Ok(HookResult::NotRequested),
        Ok(Some(g)) => g,
        Err(refusal) if refusal.required => return Err(refusal.error),
        Err(refusal) => return Ok(skip_optional(&subject, refusal.error)),
    };
    let required = grant.required;
    match deliver(&state, &grant, started).with_context(|| {
        format!(
            "{}: TPM {} ({}:{}) could not be delivered",
            subject.describe(),
            grant.device.name,
            grant.device.major,
            grant.device.minor
        )
    }) {
        Ok(delivery) => {
            log_delivery(&subject, &delivery);
            Ok(HookResult::Delivered(Box::new(delivery)))
        }
        Err(e) if required => Err(e),
        Err(e) => Ok(skip_optional(&subject, e)),
    }
}

/// The hook acts with the runtime's privileges next to a container image it
/// must not trust: from here on nothing inherited (environment, cwd) may
/// steer it. A container that asks for nothing never gets this far, so the
/// fast path does not pay for it.
fn scrub_process_environment() {
    // Single-threaded here, so changing the environment races with nothing.
    for (key, _) in std::env::vars_os() {
        std::env::remove_var(key);
    }
    std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let _ = std::env::set_current_dir("/");
}

fn skip_optional(subject: &Subject, error: anyhow::Error) -> HookResult {
    let msg = format!("{error:#}");
    tracing::warn!(container_id = %subject.id, "{msg}; oci-tpm-hook/required=false, so the container starts without a TPM");
    HookResult::SkippedOptional(msg)
}

/// The answer of the child that acted as the container.
#[derive(Debug, Serialize, Deserialize)]
struct InContainer {
    node: NodeOutcome,
    self_test: Option<SelfTestReport>,
}

/// What the hook does needs these; a hook run without them (rootless
/// engines run hooks inside the user's namespace) gets a clear message
/// instead of an EPERM from deep inside.
const NEEDED_CAPS: [caps::Capability; 4] = [
    caps::Capability::CAP_SYS_ADMIN, // setns, mount, bpf
    caps::Capability::CAP_MKNOD,
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_FOWNER,
];

fn check_privileges() -> anyhow::Result<()> {
    let effective =
        caps::read(None, caps::CapSet::Effective).context("cannot read the hook's capabilities")?;
    let missing: Vec<String> = NEEDED_CAPS
        .iter()
        .filter(|c| !effective.contains(c))
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "the hook runs without {} (rootless engines run hooks without host privileges): \
             give the device with --device and --group-add instead, or run the container with a rootful engine",
            missing.join(", ")
        );
    }
    Ok(())
}

fn deliver(state: &ContainerState, grant: &Grant, started: Instant) -> anyhow::Result<Delivery> {
    check_privileges()?;
    let bundle = BundleSpec::load(&state.bundle)?;
    let rootfs = bundle.rootfs()?;
    let (major, minor) = (grant.device.major, grant.device.minor);

    let cgroup = cgroup::locate(state.pid)
        .with_context(|| format!("cannot find the cgroup of container process {}", state.pid))?;
    let cgroup_outcome = if bundle.allows_char_device(major, minor)? {
        "in-spec".to_owned()
    } else {
        match cgroup.allow_device(&DeviceAccess { major, minor })? {
            AllowOutcome::Added => "added".to_owned(),
            AllowOutcome::AlreadyAllowed => "already-allowed".to_owned(),
            AllowOutcome::Unrestricted => "unrestricted".to_owned(),
        }
    };

    let spec = NodeSpec {
        path: grant.container_path.clone(),
        major,
        minor,
        mode: grant.mode,
        gid: grant.gid,
    };
    let method = if bundle.has_user_namespace() {
        let maps = IdMaps::of_process(state.pid)?;
        check_gid_mapped(&maps, grant)?;
        NodeMethod::BindHostNode {
            as_owner: maps.root_on_host(),
        }
    } else {
        NodeMethod::Mknod
    };
    let level = grant.self_test;
    let timeout = grant.timeout;
    let process = ContainerProcess::open(state.pid)?;
    let answer: InContainer = process.run(
        timeout + CHILD_MARGIN,
        |me| cgroup.join(me),
        || {
            let dir = node::open_node_dir(&rootfs, &spec.path)?;
            let node = dir.ensure(&spec, method)?;
            let self_test = match run_self_test(&dir, &spec, level, timeout) {
                Ok(r) => r,
                Err(e) => {
                    // Leave nothing half-made: a node we made for a TPM that
                    // does not answer is removed.
                    dir.undo(&spec, node);
                    return Err(e);
                }
            };
            Ok(InContainer { node, self_test })
        },
    )?;
    Ok(Delivery {
        grant: grant.clone(),
        cgroup: format!("{} {}", cgroup.version(), cgroup_outcome),
        node: answer.node,
        self_test: answer.self_test,
        duration: started.elapsed(),
    })
}

/// In a user namespace the node keeps its host group; unless the namespace
/// maps that GID, nothing in the container can ever open the node, and a
/// self-test run with host privileges would prove nothing for it.
fn check_gid_mapped(maps: &IdMaps, grant: &Grant) -> anyhow::Result<()> {
    if crate::userns::inside_id(&maps.gid, grant.gid).is_none() {
        let group = grant
            .group_name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        anyhow::bail!(
            "the container has a user namespace that does not map host GID {}{group}, the group of {}: \
             no process in it could open the device. Map that GID into the container \
             (e.g. podman --userns=auto:gidmapping=<container-gid>:{}:1) or run it without a user namespace",
            grant.gid,
            grant.container_path.display(),
            grant.gid
        );
    }
    Ok(())
}

fn run_self_test(
    dir: &node::NodeDir,
    spec: &NodeSpec,
    level: SelfTestLevel,
    timeout: Duration,
) -> anyhow::Result<Option<SelfTestReport>> {
    if level == SelfTestLevel::None {
        return Ok(None);
    }
    let fd = dir.open_for_io(spec)?;
    let mut transport = tpm::DeviceTransport::from_fd(fd)?;
    let report = tpm::selftest::run(&mut transport, level, timeout).map_err(|e| {
        anyhow::anyhow!("TPM self-test ({level}) from inside the container failed: {e}")
    })?;
    Ok(Some(report))
}

fn log_delivery(subject: &Subject, d: &Delivery) {
    let who = subject.requester();
    let (manufacturer, firmware) = d
        .self_test
        .as_ref()
        .map(|r| {
            (
                r.manufacturer.as_deref().unwrap_or(""),
                r.firmware.as_deref().unwrap_or(""),
            )
        })
        .unwrap_or(("", ""));
    tracing::info!(
        container_id = %subject.id,
        pod_namespace = who.pod_namespace.as_deref().unwrap_or(""),
        pod = who.pod_name.as_deref().unwrap_or(""),
        container = who.container_name.as_deref().unwrap_or(""),
        device = %d.grant.container_path.display(),
        major_minor = %format!("{}:{}", d.grant.device.major, d.grant.device.minor),
        gid = d.grant.gid,
        cgroup = %d.cgroup,
        node = ?d.node,
        self_test = %d.grant.self_test,
        self_test_result = if d.self_test.is_some() { "passed" } else { "skipped" },
        manufacturer,
        firmware,
        duration_ms = d.duration.as_millis() as u64,
        "TPM delivered"
    );
}
