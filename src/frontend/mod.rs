//! The ways in: each front-end reads its runtime's input, asks the core
//! ([`crate::core::decision::decide`]) and expresses the answer in its
//! runtime's terms.
//!
//! - [`hook`]: the createRuntime hook (podman, CRI-O through hooks.d; the
//!   other front-ends add it to the spec for the self-test);
//! - [`runtime_wrapper`]: `oci-tpm-runtime`, a runc wrapper for docker;
//! - [`nri`]: the containerd/CRI-O NRI plugin;
//! - [`device_plugin`]: the kubelet device plugin and the node's NFD labels;
//! - [`selftest`]: a TPM health probe;
//! - [`doctor`]: the host checked, each failure with its fix;
//! - [`cdi`]: a Container Device Interface spec of the host's TPMs, whose
//!   devices bring the hook along;
//! - [`configure`]: the engines' configuration files edited to use the
//!   above (docker's runtime, containerd's and CRI-O's NRI).

pub mod cdi;
pub mod configure;
pub mod device_plugin;
pub mod doctor;
pub mod hook;
pub mod nri;
pub mod runtime_report;
pub mod runtime_wrapper;
pub mod selftest;
