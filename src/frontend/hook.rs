//! The createRuntime hook: from the OCI state on stdin to a TPM proven
//! working for the container's own process.
//!
//! Order: state → request? (no: return at once) → policy + host validation
//! (`decision::decide`) → config.json: the process's user, its user namespace,
//! whether it could open the node at all (refused here, before anything
//! changes) → the node inside the rootfs (refuses what the image planted)
//! → the device-cgroup rule (unless the spec already allows the device) →
//! the container's systemd unit told about the device (when the hook added
//! the rule and systemd keeps a device list for the unit: its rules decide
//! too, and a `systemctl daemon-reload` re-applies them) → the self-test,
//! run as the container's process from inside its cgroup and namespaces →
//! one outcome event. When a step after the first change fails, everything
//! done so far is taken back: a refused or abandoned grant leaves no node,
//! no rule and no entry in the unit behind.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};

use crate::core::decision::{decide, Decision, Refusal};
use crate::core::grant::Grant;
use crate::core::host::HostRoots;
use crate::core::identity::{self, NodeOwnership, ProcessIdentity};
use crate::core::policy::{self, NodeAccess, Policy};
use crate::core::request;
use crate::core::subject::Subject;
use crate::core::userns::IdMaps;
use crate::oci::bundle::{BundleFile, Spec};
use crate::oci::state::ContainerState;
use crate::privileged::container::ContainerProcess;
use crate::privileged::credentials::{self, RanAs};
use crate::privileged::node::{self, NodeMethod, NodeOutcome, NodeSpec};
use crate::privileged::systemd;
use devcgroup::{ContainerCgroup, DeviceAccess, DeviceGrant};
use tpm2_selftest::{self as tpm, SelfTestLevel, SelfTestReport};

/// Bound on the helper that makes the node (fork, setns, mknod).
const NODE_STEP_TIMEOUT: Duration = Duration::from_secs(2);
/// Time on top of the self-test's own deadline for forking, joining the
/// cgroup and namespaces and taking the process's credentials.
const SELF_TEST_MARGIN: Duration = Duration::from_secs(1);
/// What the hook keeps of the runtime's timeout for undoing its work after
/// a failed self-test and for exiting.
const HOOK_RESERVE: Duration = Duration::from_millis(1500);
/// Bound on the program that talks to systemd (start, connect, read the
/// unit's list, add to it, read it back; each call bounded by itself).
const SYSTEMD_STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Below this the self-test cannot be meaningful.
const MIN_SELF_TEST: Duration = Duration::from_millis(200);

/// What the hook did for one container.
#[derive(Debug)]
pub enum HookResult {
    /// The container asked for nothing.
    NotRequested,
    Delivered(Box<Delivery>),
    /// The container must not start; the reason (already in the log).
    Refused(String),
    /// `required=false` and the TPM could not be delivered: the container
    /// starts without it; the warning (already in the log).
    StartedWithout(String),
}

#[derive(Debug)]
pub struct Delivery {
    pub grant: Grant,
    /// The node's group in the container.
    pub node_gid: u32,
    pub cgroup: String,
    /// What the container's systemd unit knows of the device (see
    /// [`systemd`]), or why it could not be told.
    pub systemd: String,
    pub node: NodeOutcome,
    /// Who the self-test ran as, and what it found.
    pub self_test: Option<SelfTested>,
    pub duration: Duration,
    /// Where the time went, for the log and `make bench`.
    pub phases: Phases,
}

/// Milliseconds spent in each step of a delivery, from the hook's start.
#[derive(Debug, Default, Clone, Copy)]
pub struct Phases {
    /// From the runtime's fork of the hook to the hook's first instruction
    /// (exec, loading): outside the hook's own clock, read from the
    /// kernel's record of the process's start (10 ms steps).
    pub startup_ms: Option<u64>,
    /// Everything before the first change: `state_ms` + `decide_ms` +
    /// `spec_ms` + `attach_ms`.
    pub plan_ms: u64,
    /// Reading the OCI state (until the runtime has written all of it and
    /// closed the hook's stdin) and parsing it.
    pub state_ms: u64,
    /// The policy, the log, the request and the host's TPM.
    pub decide_ms: u64,
    /// Privileges, config.json, the process's identity and access.
    pub spec_ms: u64,
    /// The container's cgroup found, its process pinned.
    pub attach_ms: u64,
    pub node_ms: u64,
    pub cgroup_ms: u64,
    pub self_test_ms: u64,
    pub systemd_ms: u64,
}

/// The answer of the child that ran the self-test as the container's
/// process.
#[derive(Debug, Serialize, Deserialize)]
pub struct SelfTested {
    pub ran_as: RanAs,
    pub report: SelfTestReport,
}

/// Runs the hook on a state read from `input`. `given` are request
/// annotations from the hook's command line (a CDI spec's hook names the
/// device it delivers there, as CDI cannot annotate a container); they
/// count as the container's own and win over its same keys. An `Err` (bad
/// input before any container is known, a malformed policy) fails the
/// container too.
pub fn run(
    input: impl Read,
    config: Option<&Path>,
    given: &BTreeMap<String, String>,
    host: &HostRoots,
) -> anyhow::Result<HookResult> {
    let started = Instant::now();
    let mut bytes = Vec::new();
    input
        .take((1 << 20) + 1)
        .read_to_end(&mut bytes)
        .context("cannot read the OCI state from stdin")?;
    let mut state = ContainerState::parse(&bytes)?;
    state
        .annotations
        .extend(given.iter().map(|(k, v)| (k.clone(), v.clone())));
    if !request::mentions_us(&state.annotations) {
        return Ok(HookResult::NotRequested);
    }
    // Taken here, not right after the read: a container that asks for
    // nothing pays for nothing it does not need.
    let state_read = started.elapsed();
    scrub_process_environment();

    let policy = Policy::load(&policy::resolve_path(config))?;
    crate::log::init(&policy.log, "oci-tpm-hook")?;
    let subject = Subject {
        id: state.id.clone(),
        annotations: state.annotations.clone(),
        ..Default::default()
    };
    let refusal = match decide(&subject, &policy, host) {
        Decision::NotRequested => return Ok(HookResult::NotRequested),
        Decision::Refuse(r) => r,
        Decision::Grant(grant) => match deliver(&state, &subject, &grant, started, state_read) {
            Ok(delivery) => {
                log_delivery(&subject, &delivery);
                return Ok(HookResult::Delivered(Box::new(delivery)));
            }
            Err(e) => Refusal::new(
                grant.required,
                e.context(format!(
                    "{}: TPM {} ({}:{}) could not be delivered",
                    subject.describe(),
                    grant.device.name,
                    grant.device.major,
                    grant.device.minor
                )),
            ),
        },
    };
    Ok(if refusal.fails_container() {
        crate::log::refused(FRONT_END, &subject, &refusal);
        HookResult::Refused(refusal.message())
    } else {
        crate::log::started_without(FRONT_END, &subject, &refusal);
        HookResult::StartedWithout(refusal.warning())
    })
}

/// How the log names this front-end.
const FRONT_END: &str = "hook";

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

/// Everything the delivery needs to know about the container before it
/// changes anything.
struct Plan {
    rootfs: PathBuf,
    process: ProcessIdentity,
    node: NodeSpec,
    method: NodeMethod,
    /// The spec's own rules already allow the device.
    rule_in_spec: bool,
    /// How long the self-test may take, within the runtime's timeout.
    self_test_timeout: Duration,
}

fn plan(
    state: &ContainerState,
    subject: &Subject,
    grant: &Grant,
    spec: &Spec,
    started: Instant,
) -> anyhow::Result<Plan> {
    let rootfs = spec.rootfs()?;
    let process = ProcessIdentity::from_spec(&spec.json).with_context(|| {
        format!(
            "{}/config.json has a malformed process user",
            spec.dir.display()
        )
    })?;
    let maps = if spec.has_user_namespace() {
        Some(IdMaps::of_process(state.pid)?)
    } else {
        None
    };
    let (node_gid, method, ownership) = match &maps {
        None => {
            let gid = grant.node_gid(Some(&process));
            let ownership = NodeOwnership {
                uid: 0,
                gid,
                mode: grant.mode,
            };
            (gid, NodeMethod::Mknod, ownership)
        }
        Some(maps) => {
            if grant.access == NodeAccess::ProcessGid {
                bail!(
                    "the container has a user namespace: its node is the host's {} bind-mounted, \
                     whose group cannot be the process's own; policy [node] access = \"process-gid\" \
                     does not apply to it. Map host GID {} into the container instead \
                     (e.g. podman --userns=auto:gidmapping=5000:{}:1 --group-add 5000)",
                    grant.device.path.display(),
                    grant.gid,
                    grant.gid
                );
            }
            // The container sees the host's node itself, with its host
            // owner, group and mode.
            let ownership = host_node_ownership(&grant.device.path)?;
            let method = NodeMethod::BindHostNode {
                as_owner: maps.root_on_host(),
            };
            (ownership.gid, method, ownership)
        }
    };
    identity::check_access(&process, ownership, maps.as_ref()).map_err(|denied| {
        anyhow!(
            "{denied}, so it could not use {}; {}",
            grant.container_path.display(),
            denied.remedy(subject.engine())
        )
    })?;
    let node = NodeSpec {
        path: grant.container_path.clone(),
        major: grant.device.major,
        minor: grant.device.minor,
        mode: grant.mode,
        gid: node_gid,
    };
    let rule_in_spec = spec.allows_char_device(node.major, node.minor)?;
    let self_test_timeout = self_test_budget(
        grant.timeout,
        spec.own_hook_timeout().map(Duration::from_secs),
        started.elapsed(),
    )?;
    Ok(Plan {
        rootfs,
        process,
        node,
        method,
        rule_in_spec,
        self_test_timeout,
    })
}

/// The policy's self-test time, cut to what the runtime's timeout for the
/// hook leaves once the hook's other steps and its undo work are counted:
/// a hook killed by its runtime could not take its grant back.
fn self_test_budget(
    policy: Duration,
    hook_timeout: Option<Duration>,
    elapsed: Duration,
) -> anyhow::Result<Duration> {
    let Some(limit) = hook_timeout else {
        return Ok(policy);
    };
    let left = limit
        .saturating_sub(elapsed)
        .saturating_sub(NODE_STEP_TIMEOUT + SELF_TEST_MARGIN + HOOK_RESERVE);
    if left < MIN_SELF_TEST.min(policy) {
        let overhead = NODE_STEP_TIMEOUT + SELF_TEST_MARGIN + HOOK_RESERVE;
        // Time gone before the hook could begin counts too: on a loaded host
        // the runtime's clock runs from the hook's fork.
        let late = if elapsed >= Duration::from_secs(1) {
            format!(
                ", and {:.1} s of it had passed before the hook could begin (a loaded host)",
                elapsed.as_secs_f64()
            )
        } else {
            String::new()
        };
        bail!(
            "the runtime gives the hook only {} s (the \"timeout\" of its hooks.d entry, or of the hook a \
             front-end added from [self-test] timeout-ms){late}, too little for a self-test of up to {} ms: \
             raise that timeout to at least {} s or lower [self-test] timeout-ms",
            limit.as_secs(),
            policy.as_millis(),
            (elapsed + policy + overhead).as_secs().saturating_add(1)
        );
    }
    Ok(policy.min(left))
}

/// How long this process had existed when `at` was taken: the kernel's
/// start time of the process (clock ticks since boot) against the boot
/// clock. `None` where either cannot be read.
fn process_age_at(at: Instant) -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    let now = Duration::from(nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?);
    let age_now = now.checked_sub(start_since_boot(&stat, ticks_per_second as u64)?)?;
    age_now.checked_sub(at.elapsed())
}

/// The start time (field 22) of a `/proc/PID/stat` line, as time since
/// boot. The fields are counted after the command's closing parenthesis:
/// the command itself may hold spaces and parentheses.
fn start_since_boot(stat: &str, ticks_per_second: u64) -> Option<Duration> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After ")" come field 3 (state) onwards: field 22 is the 20th.
    let ticks: u64 = after_comm.split_whitespace().nth(19)?.parse().ok()?;
    if ticks_per_second == 0 {
        return None;
    }
    Some(Duration::from_millis(
        ticks.saturating_mul(1000) / ticks_per_second,
    ))
}

fn host_node_ownership(path: &Path) -> anyhow::Result<NodeOwnership> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    Ok(NodeOwnership {
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode() & 0o7777,
    })
}

fn deliver(
    state: &ContainerState,
    subject: &Subject,
    grant: &Grant,
    started: Instant,
    state_read: Duration,
) -> anyhow::Result<Delivery> {
    let ms = |since: Instant| since.elapsed().as_millis() as u64;
    let mut phases = Phases {
        startup_ms: process_age_at(started).map(|age| age.as_millis() as u64),
        state_ms: state_read.as_millis() as u64,
        decide_ms: started.elapsed().saturating_sub(state_read).as_millis() as u64,
        ..Phases::default()
    };
    let t = Instant::now();
    check_privileges()?;
    let bundle = BundleFile::load(&state.bundle)?;
    let plan = plan(state, subject, grant, &bundle.spec, started)?;
    phases.spec_ms = ms(t);
    let t = Instant::now();
    let cgroup = devcgroup::locate(state.pid)
        .with_context(|| format!("cannot find the cgroup of container process {}", state.pid))?;
    let process = ContainerProcess::open(state.pid)?;
    phases.attach_ms = ms(t);
    phases.plan_ms = ms(started);

    // The node first: it refuses whatever the image planted at its path
    // before the cgroup changes.
    let t = Instant::now();
    let node = make_node(&process, &plan)?;
    phases.node_ms = ms(t);
    let mut rule: Option<DeviceGrant> = None;
    let mut in_unit: Option<systemd::ReloadOutcome> = None;
    let outcome = (|| {
        let t = Instant::now();
        let cgroup_outcome = if plan.rule_in_spec {
            "in-spec".to_owned()
        } else {
            let granted =
                cgroup.allow_device(&DeviceAccess::new(plan.node.major, plan.node.minor))?;
            let shown = granted.outcome.to_string();
            rule = Some(granted);
            shown
        };
        phases.cgroup_ms = ms(t);
        // A rule in the spec reached the unit through the runtime already.
        let t = Instant::now();
        let unit = if plan.rule_in_spec {
            "rule in the spec".to_owned()
        } else {
            tell_systemd(&cgroup, grant, &mut in_unit)
        };
        phases.systemd_ms = ms(t);
        let t = Instant::now();
        let self_test = self_test_as_the_process(&process, &cgroup, &plan, grant.self_test)?;
        phases.self_test_ms = ms(t);
        Ok((cgroup_outcome, unit, self_test))
    })();
    match outcome {
        Ok((cgroup_outcome, systemd, self_test)) => Ok(Delivery {
            grant: grant.clone(),
            node_gid: plan.node.gid,
            cgroup: format!("{} {cgroup_outcome}", cgroup.version()),
            systemd,
            node,
            self_test,
            duration: started.elapsed(),
            phases,
        }),
        Err(e) => {
            take_back(&process, &plan, node, rule, in_unit);
            Err(e)
        }
    }
}

/// The container's systemd unit gets the device in its own rules (see
/// [`systemd`]); what was added is left in `added` for [`take_back`]. Not
/// being able to tell systemd does not stop a grant that works without it:
/// it is logged as a warning, because the TPM then lasts only until systemd
/// re-applies the unit's device rules. (Where systemd's rules decide now,
/// the self-test that follows fails instead.)
fn tell_systemd(
    cgroup: &ContainerCgroup,
    grant: &Grant,
    added: &mut Option<systemd::ReloadOutcome>,
) -> String {
    let Some(unit) = systemd::unit_to_tell(cgroup.device_dir()) else {
        return systemd::ReloadOutcome::NoUnit.to_string();
    };
    let d = &grant.device;
    let told = systemd::allow_in_unit(&unit, &d.path, d.major, d.minor, SYSTEMD_STEP_TIMEOUT);
    match told {
        Ok(outcome) => {
            let shown = outcome.to_string();
            // Only an addition has something to take back.
            if matches!(outcome, systemd::ReloadOutcome::Added { .. }) {
                *added = Some(outcome);
            }
            shown
        }
        Err(e) => {
            let e = format!("{e:#}");
            tracing::warn!(
                error = %e,
                device = %d.path.display(),
                "could not add the TPM to the container's systemd unit: the container has the TPM \
                 until systemd re-applies the unit's device rules (systemctl daemon-reload)"
            );
            format!("not told: {e}")
        }
    }
}

fn make_node(process: &ContainerProcess, plan: &Plan) -> anyhow::Result<NodeOutcome> {
    process.run(NODE_STEP_TIMEOUT, |p| {
        p.enter_mount_namespace()?;
        node::open_node_dir(&plan.rootfs, &plan.node.path)?.ensure(&plan.node, plan.method)
    })
}

/// Undoes an abandoned grant: the rules first (so nothing can open the
/// device any more), then the node. Failures here are logged; the error
/// that made the hook give up is the one the user sees.
fn take_back(
    process: &ContainerProcess,
    plan: &Plan,
    node: NodeOutcome,
    rule: Option<DeviceGrant>,
    in_unit: Option<systemd::ReloadOutcome>,
) {
    if let Some(rule) = rule {
        if let Err(e) = rule.revoke() {
            tracing::error!(error = %format!("{e:#}"), "could not take back the device-cgroup rule");
        }
    }
    let unit_undone = in_unit.map(|u| u.take_back(SYSTEMD_STEP_TIMEOUT));
    if let Some(Err(e)) = unit_undone {
        tracing::error!(error = %format!("{e:#}"), "could not take back the device from the systemd unit");
    }
    let undone = process.run(NODE_STEP_TIMEOUT, |p| {
        p.enter_mount_namespace()?;
        node::open_node_dir(&plan.rootfs, &plan.node.path)?.undo(&plan.node, node)
    });
    if let Err(e) = undone {
        tracing::error!(error = %format!("{e:#}"), node = %plan.node.path.display(), "could not take back the node");
    }
}

/// In a child that joined the container's cgroup, mount namespace and user
/// namespace and took the process's own credentials: open the node as the
/// container will, and talk to the TPM through it.
fn self_test_as_the_process(
    process: &ContainerProcess,
    cgroup: &ContainerCgroup,
    plan: &Plan,
    level: SelfTestLevel,
) -> anyhow::Result<Option<SelfTested>> {
    if level == SelfTestLevel::None {
        return Ok(None);
    }
    let timeout = plan.self_test_timeout;
    let tested = process.run(timeout + SELF_TEST_MARGIN, |p| {
        let me = nix::unistd::getpid().as_raw();
        cgroup
            .join(me)
            .context("cannot join the container's cgroup")?;
        p.enter_mount_namespace()?;
        // Opened while still privileged: the rootfs's host path is not
        // searchable for the container's user, its /dev is.
        let dir = node::open_node_dir(&plan.rootfs, &plan.node.path)?;
        let ran_as = credentials::assume(&plan.process, p.user_namespace())
            .context("cannot become the container's process")?;
        let fd = dir
            .open_for_io(&plan.node)
            .map_err(|e| {
                anyhow!("TPM self-test ({level}) from inside the container, as {ran_as}, could not start: {e:#}")
            })?;
        let mut transport = tpm::DeviceTransport::from_fd(fd)?;
        let report = tpm::selftest::run(&mut transport, level, timeout).map_err(|e| {
            anyhow!("TPM self-test ({level}) from inside the container, as {ran_as}, failed: {e}")
        })?;
        Ok(SelfTested { ran_as, report })
    })?;
    Ok(Some(tested))
}

fn log_delivery(subject: &Subject, d: &Delivery) {
    let who = subject.requester();
    let shown = |v: &Option<String>| {
        v.as_deref()
            .map(|s| crate::text::untrusted(s).into_owned())
            .unwrap_or_default()
    };
    let retries = d.self_test.as_ref().map_or(0, |t| t.report.retries);
    let (manufacturer, firmware, ran_as) = d
        .self_test
        .as_ref()
        .map(|t| {
            (
                t.report.manufacturer.as_deref().unwrap_or(""),
                t.report.firmware.as_deref().unwrap_or(""),
                t.ran_as.to_string(),
            )
        })
        .unwrap_or(("", "", String::new()));
    tracing::info!(
        container_id = %subject.id_for_log(),
        pod_namespace = %shown(&who.pod_namespace),
        pod = %shown(&who.pod_name),
        container = %shown(&who.container_name),
        device = %d.grant.container_path.display(),
        major_minor = %format!("{}:{}", d.grant.device.major, d.grant.device.minor),
        gid = d.node_gid,
        cgroup = %d.cgroup,
        systemd = %d.systemd,
        node = ?d.node,
        self_test = %d.grant.self_test,
        self_test_result = if d.self_test.is_some() { "passed" } else { "skipped" },
        self_test_as = %ran_as,
        self_test_retries = retries,
        manufacturer,
        firmware,
        duration_ms = d.duration.as_millis() as u64,
        startup_ms = d.phases.startup_ms,
        plan_ms = d.phases.plan_ms,
        state_ms = d.phases.state_ms,
        decide_ms = d.phases.decide_ms,
        spec_ms = d.phases.spec_ms,
        attach_ms = d.phases.attach_ms,
        node_ms = d.phases.node_ms,
        cgroup_ms = d.phases.cgroup_ms,
        self_test_ms = d.phases.self_test_ms,
        systemd_ms = d.phases.systemd_ms,
        "TPM delivered"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_read_past_a_command_with_spaces_and_parentheses() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    123456 1000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0";
        assert_eq!(
            start_since_boot(stat, 100),
            Some(Duration::from_millis(1_234_560))
        );
        assert_eq!(start_since_boot(stat, 0), None);
        assert_eq!(start_since_boot("4242 (truncated", 100), None);
        assert_eq!(start_since_boot("4242 (x) S 1 2", 100), None);
    }

    #[test]
    fn this_process_has_an_age() {
        let age = process_age_at(Instant::now()).expect("a process age on Linux");
        assert!(age < Duration::from_secs(24 * 3600), "{age:?}");
    }

    #[test]
    fn the_self_test_fits_the_runtimes_timeout() {
        let five = Duration::from_secs(5);
        assert_eq!(self_test_budget(five, None, Duration::ZERO).unwrap(), five);
        assert_eq!(
            self_test_budget(five, Some(Duration::from_secs(30)), Duration::ZERO).unwrap(),
            five
        );
        // 7 s from the runtime, 1 s gone: 6 s - 2 s - 1 s - 1.5 s = 1.5 s.
        assert_eq!(
            self_test_budget(five, Some(Duration::from_secs(7)), Duration::from_secs(1)).unwrap(),
            Duration::from_millis(1500)
        );
        let err = self_test_budget(five, Some(Duration::from_secs(3)), Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("only 3 s") && err.contains("at least 10 s"),
            "{err}"
        );
        assert!(!err.contains("had passed"), "{err}");
        // Late by 8 s (a loaded host): the advice counts those too.
        let err = self_test_budget(five, Some(Duration::from_secs(10)), Duration::from_secs(8))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("only 10 s")
                && err.contains("8.0 s of it had passed")
                && err.contains("at least 18 s"),
            "{err}"
        );
    }
}
