//! The `create`/`run` part of the wrapper: decide, and put the grant into
//! the bundle's config.json.

use anyhow::{anyhow, bail, Context};

use super::PREFIX;
use crate::core::decision::{decide, Decision, Refusal};
use crate::core::grant::Grant;
use crate::core::hook_entry::HookEntry;
use crate::core::host::HostRoots;
use crate::core::policy::{resolve_path, Policy};
use crate::core::request::mentions_us;
use crate::core::subject::Subject;
use crate::oci::bundle::BundleFile;
use crate::oci::runtime_cli::Invocation;
use crate::oci::runtime_log::RuntimeLog;
use crate::oci::spec_edit::Changes;

/// How the log names this front-end.
const FRONT_END: &str = "docker runtime wrapper";

/// What the wrapper did to a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleOutcome {
    /// Nothing asked for, or the command line had no container id.
    Untouched,
    /// A TPM was refused but not required: the container starts without one.
    StartedWithout,
    /// The grant is in the spec; empty changes = it already was.
    Granted(Changes),
}

/// The `create`/`run` part: decide, and put the grant into config.json. On
/// error the file is exactly as it was.
pub fn prepare_bundle(
    inv: &Invocation,
    policy: &Policy,
    host: &HostRoots,
    log: &RuntimeLog,
) -> anyhow::Result<BundleOutcome> {
    let Some(id) = &inv.container_id else {
        // The runtime itself will reject a create without an id.
        return Ok(BundleOutcome::Untouched);
    };
    let config = inv.config_path();
    let where_ = || format!("container {id}, bundle {}", bundle_display(inv));
    let mut file = match BundleFile::read_if_asked(&config) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(BundleOutcome::Untouched),
        // Unsure where the bundle is: leave judging it to the runtime.
        Err(_) if !inv.unknown_flags.is_empty() => return Ok(BundleOutcome::Untouched),
        Err(e) => return Err(e.context(where_())),
    };
    let subject = Subject {
        id: id.clone(),
        annotations: file.annotations().with_context(where_)?,
        ..Default::default()
    };
    if !mentions_us(&subject.annotations) {
        return Ok(BundleOutcome::Untouched);
    }
    crate::log::init_unless_stderr(&policy.log, PREFIX)?;
    let refusal = match decide(&subject, policy, host) {
        Decision::NotRequested => return Ok(BundleOutcome::Untouched),
        Decision::Refuse(r) => r,
        Decision::Grant(grant) => match grant_in_spec(inv, &mut file, policy, &grant) {
            Ok(changes) => {
                log.info(&format!(
                    "{}: host {} (c {}:{}) at {}; added {changes}",
                    subject.describe(),
                    grant.device.name,
                    grant.device.major,
                    grant.device.minor,
                    grant.container_path.display(),
                ));
                crate::log::granted(FRONT_END, &subject, &grant, &changes.to_string());
                return Ok(BundleOutcome::Granted(changes));
            }
            Err(e) => Refusal::new(grant.required, e.context(subject.describe())),
        },
    };
    if refusal.fails_container() {
        crate::log::refused(FRONT_END, &subject, &refusal);
        return Err(anyhow!(refusal.message()));
    }
    crate::log::started_without(FRONT_END, &subject, &refusal);
    log.warn(&refusal.warning());
    Ok(BundleOutcome::StartedWithout)
}

/// Writes the grant and the hook that proves it into config.json.
fn grant_in_spec(
    inv: &Invocation,
    file: &mut BundleFile,
    policy: &Policy,
    grant: &Grant,
) -> anyhow::Result<Changes> {
    if !inv.unknown_flags.is_empty() {
        bail!(
            "the runtime command line has flags {PREFIX} does not know ({}), so it cannot be sure which config.json the runtime will read",
            inv.unknown_flags.join(", ")
        );
    }
    let hook = HookEntry::for_grant(policy, &resolve_path(None), grant)?;
    file.apply_and_write(grant, &hook)
        .with_context(|| format!("bundle {}", bundle_display(inv)))
}

fn bundle_display(inv: &Invocation) -> String {
    match &inv.bundle {
        Some(b) if !b.as_os_str().is_empty() => b.display().to_string(),
        _ => std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| ".".into()),
    }
}
