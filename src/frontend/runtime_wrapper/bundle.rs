//! The `create`/`run` part of the wrapper: decide, and put the grant into
//! the bundle's config.json.

use anyhow::{bail, Context};

use super::lookup::is_executable;
use super::PREFIX;
use crate::core::grant::{decide, HookEntry, Subject};
use crate::core::host::HostRoots;
use crate::core::policy::{resolve_path, Policy};
use crate::oci::runtime_cli::Invocation;
use crate::oci::runtime_log::RuntimeLog;
use crate::oci::spec_edit::{Changes, SpecFile};

/// What the wrapper did to a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleOutcome {
    /// Nothing asked for, or the command line had no container id.
    Untouched,
    /// A TPM was refused but not required: the container starts without one.
    Skipped,
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
    let mut file = match SpecFile::read(&config) {
        Ok(f) => f,
        // Unsure where the bundle is: leave judging it to the runtime.
        Err(_) if !inv.unknown_flags.is_empty() => return Ok(BundleOutcome::Untouched),
        Err(e) => return Err(e.context(where_())),
    };
    let subject = Subject {
        id: id.clone(),
        annotations: file.annotations().with_context(where_)?,
        ..Default::default()
    };
    let grant = match decide(&subject, policy, host) {
        Ok(None) => return Ok(BundleOutcome::Untouched),
        Ok(Some(grant)) => grant,
        Err(refusal) if !refusal.required => {
            log.warn(&format!(
                "{refusal}; starting it without a TPM as oci-tpm-hook/required=false allows"
            ));
            return Ok(BundleOutcome::Skipped);
        }
        Err(refusal) => return Err(refusal.error),
    };
    let who = subject.describe();
    if !inv.unknown_flags.is_empty() {
        bail!(
            "{who} asks for a TPM, but the runtime command line has flags {PREFIX} does not know ({}), so it cannot be sure which config.json the runtime will read; refusing to start the container without its TPM",
            inv.unknown_flags.join(", ")
        );
    }
    if !is_executable(&policy.hook.path) {
        bail!(
            "{who} asks for a TPM, but the hook {} (policy [hook] path) that checks it is not an executable file; install oci-tpm-hook there or set [hook] path",
            policy.hook.path.display()
        );
    }
    let hook = HookEntry::for_grant(
        &policy.hook.path,
        &grant,
        HookEntry::policy_env(&resolve_path(None)),
    );
    let changes = file
        .apply_and_write(&grant, &hook)
        .with_context(|| format!("{who}: bundle {}", bundle_display(inv)))?;
    log.info(&format!(
        "{who}: host {} (c {}:{}) at {}; added {changes}",
        grant.device.name,
        grant.device.major,
        grant.device.minor,
        grant.container_path.display(),
    ));
    Ok(BundleOutcome::Granted(changes))
}

fn bundle_display(inv: &Invocation) -> String {
    match &inv.bundle {
        Some(b) if !b.as_os_str().is_empty() => b.display().to_string(),
        _ => std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| ".".into()),
    }
}
