//! oci-tpm-hook: give OCI containers verified access to the host's TPM 2.0.
//!
//! One request parser, one policy, one grant; several front-ends
//! (createRuntime hook, docker runtime wrapper, containerd NRI plugin) turn
//! a [`grant::Grant`] into whatever their runtime understands.

pub mod container;
pub mod credentials;
pub mod device_rules;
pub mod grant;
pub mod hook;
pub mod host;
pub mod identity;
pub mod log;
pub mod node;
pub mod nri;
pub mod policy;
pub mod request;
pub mod runtime_report;
pub mod runtime_shim;
pub mod selftest_cli;
pub mod spec_edit;
pub mod state;
pub mod text;
pub mod userns;
