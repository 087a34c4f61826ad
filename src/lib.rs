//! oci-tpm-hook: give OCI containers verified access to the host's TPM 2.0.
//!
//! One request parser, one policy, one grant ([`core`]); the documents
//! runtimes hand over ([`oci`]); the privileged actions on a running
//! container ([`privileged`]); several front-ends ([`frontend`]) that turn a
//! [`core::grant::Grant`] into whatever their runtime understands. The TPM
//! protocol and the device-cgroup grant are libraries of their own
//! (`tpm2-selftest`, `devcgroup`).

pub mod cli;
pub mod core;
pub mod files;
pub mod frontend;
pub mod log;
pub mod oci;
pub mod privileged;
pub mod text;

#[cfg(any(test, feature = "test-support"))]
pub mod testing;
