//! `oci-tpm-runtime`: a runc wrapper for docker, which has no hooks directory.
//!
//! docker (through containerd's shim) calls a registered runtime with runc's
//! command line. On `create` and `run` the wrapper reads the bundle's
//! config.json, and when its annotations ask for a TPM puts the grant into the
//! spec itself (device, cgroup rule, GID, env, validating hook); then, for
//! every subcommand, it execs the real runtime with the arguments unchanged.
//! Putting the device into the spec (instead of granting it behind the
//! runtime's back) keeps the rule alive when systemd re-applies a unit's
//! device list, and lets the process get the group, which a hook cannot do.
//!
//! Errors go to stderr *and* to the runtime's `--log` file in runc's format:
//! containerd reports the last "error" entry of that file to docker, while
//! stderr of `create` may be the container's own stderr stream.
//!
//! On `exec` it gives the new process the TPM node's group when the
//! container has a TPM from the wrapper ([`exec`]).
//!
//! Layout: [`bundle`] decides and edits config.json, [`lookup`] finds the
//! real runtime; the command line and the log format are
//! [`crate::oci::runtime_cli`] and [`crate::oci::runtime_log`].

mod bundle;
mod exec;
mod lookup;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

pub use bundle::{prepare_bundle, BundleOutcome};
pub use exec::prepare_exec;
pub use lookup::resolve_runtime;

use crate::core::host::HostRoots;
use crate::core::policy::{resolve_path, Policy};
use crate::files::FileId;
use crate::oci::runtime_cli::{parse_args, Invocation};
use crate::oci::runtime_log::RuntimeLog;

/// Prefix of every message, so a user reading docker's error knows who spoke.
pub const PREFIX: &str = "oci-tpm-runtime";

/// Everything before the exec: policy, runtime, bundle. The runtime is found
/// first so that a missing runtime leaves config.json untouched.
fn prepare(inv: &Invocation, log: &RuntimeLog) -> anyhow::Result<PathBuf> {
    let policy = Policy::load(&resolve_path(None))?;
    let runtime = resolve_runtime(
        &policy.runtime.path,
        std::env::var_os("PATH").as_deref(),
        FileId::current_exe(),
    )?;
    if inv.edits_bundle() {
        prepare_bundle(inv, &policy, &HostRoots::default(), log)?;
    } else if inv.command.as_deref() == Some("exec") {
        // A process that cannot get the TPM's group still runs, as it would
        // have without the wrapper: say why, do not fail every exec.
        match prepare_exec(&runtime, inv) {
            Ok(gids) if !gids.is_empty() => log.info(&format!(
                "exec: added the TPM's group {gids:?} to the process"
            )),
            Ok(_) => {}
            Err(e) => log.warn(&format!("exec: the TPM's group was not added: {e:#}")),
        }
    }
    Ok(runtime)
}

/// The whole wrapper: returns only on error (the exit code), else it has
/// become the real runtime with the original arguments.
pub fn run(args: Vec<OsString>) -> i32 {
    let inv = parse_args(&args);
    let log = RuntimeLog::new(&inv, PREFIX);
    let runtime = match prepare(&inv, &log) {
        Ok(r) => r,
        Err(e) => {
            log.error(&format!("{e:#}"));
            return 1;
        }
    };
    if inv.command.is_none() && args.iter().any(|a| a == "--version" || a == "-v") {
        // Who answers first, then the real runtime's own lines.
        println!(
            "{PREFIX} version {} (wrapping {})",
            env!("CARGO_PKG_VERSION"),
            runtime.display()
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    let err = std::process::Command::new(&runtime).args(&args).exec();
    log.error(&format!("cannot execute {}: {err}", runtime.display()));
    // 127/126 as a shell would: not found / not executable.
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}
