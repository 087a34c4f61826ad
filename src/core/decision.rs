//! What the core answers a front-end, and the one wording of a refusal.
//!
//! Every front-end renders the same outcomes in its own terms: nothing to
//! do; a grant to express; a refusal, which fails the container unless the
//! request said `oci-tpm-hook/required=false`, in which case the container
//! starts without a TPM and the reason is a warning.

use std::fmt;

use crate::core::grant::Grant;

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
}
