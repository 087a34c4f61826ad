//! The createRuntime hook entry a spec-editing front-end (docker wrapper,
//! NRI plugin) adds, so that the hook validates the device and runs the
//! self-test as the container's process.
//!
//! One rule for every front-end: without the hook binary there is no
//! self-test, so a grant that needs one is refused (or, with
//! `required=false`, the container starts without a TPM), never given
//! unproven.

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::core::grant::Grant;
use crate::core::policy::{self, Policy};
use crate::files::is_executable;

/// Head room the hook gets above the self-test's own deadline, for host
/// validation, joining the container, and taking the grant back when the
/// self-test fails.
const HOOK_TIMEOUT_MARGIN_SECS: u64 = 5;

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
    /// The entry for `oci-tpm-hook` (`[hook] path`) in hook mode (argv0
    /// only), with a timeout a little above the grant's self-test deadline,
    /// and the policy file passed on when it is not the default one, so that
    /// the front-end and the hook judge by the same rules. An error when the
    /// hook binary is not there.
    pub fn for_grant(policy: &Policy, policy_file: &Path, grant: &Grant) -> anyhow::Result<Self> {
        let path = &policy.hook.path;
        if !is_executable(path) {
            bail!(
                "the hook {} that self-tests the TPM inside the container is not an executable file: \
                 install oci-tpm-hook there or set [hook] path in the policy",
                path.display()
            );
        }
        Ok(Self::unchecked(path, policy_file, grant))
    }

    /// The same entry, without looking for the binary (for tests and for
    /// showing what would be added).
    pub fn unchecked(path: &Path, policy_file: &Path, grant: &Grant) -> Self {
        let test_secs = grant.timeout.as_millis().div_ceil(1000) as u64;
        let env = if policy_file == Path::new(policy::DEFAULT_PATH) {
            Vec::new()
        } else {
            vec![format!("{}={}", policy::PATH_ENV, policy_file.display())]
        };
        Self {
            path: path.to_path_buf(),
            args: vec!["oci-tpm-hook".into()],
            env,
            timeout: Some(test_secs + HOOK_TIMEOUT_MARGIN_SECS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decision::decide_for_tests;
    use crate::core::grant::Grant;
    use std::os::unix::fs::PermissionsExt;

    fn grant() -> Grant {
        decide_for_tests()
    }

    #[test]
    fn passes_a_non_default_policy_on_and_rounds_the_timeout_up() {
        let mut g = grant();
        g.timeout = std::time::Duration::from_millis(4001);
        let e = HookEntry::unchecked(Path::new("/h"), Path::new(policy::DEFAULT_PATH), &g);
        assert!(e.env.is_empty());
        assert_eq!(e.timeout, Some(10));
        assert_eq!(e.args, ["oci-tpm-hook"]);
        let e = HookEntry::unchecked(Path::new("/h"), Path::new("/etc/x.toml"), &g);
        assert_eq!(e.env, ["OCI_TPM_HOOK_CONFIG=/etc/x.toml"]);
    }

    #[test]
    fn a_missing_or_plain_hook_binary_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut policy = Policy::default();
        policy.hook.path = dir.path().join("oci-tpm-hook");
        let file = Path::new(policy::DEFAULT_PATH);
        let err = HookEntry::for_grant(&policy, file, &grant())
            .unwrap_err()
            .to_string();
        assert!(err.contains("[hook] path"), "{err}");
        std::fs::write(&policy.hook.path, "").unwrap();
        assert!(HookEntry::for_grant(&policy, file, &grant()).is_err());
        std::fs::set_permissions(&policy.hook.path, std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert!(HookEntry::for_grant(&policy, file, &grant()).is_ok());
    }
}
