//! `oci-tpm-hook nri`: the NRI plugin for containerd (1.7 and later) and
//! CRI-O (1.26 and later).
//!
//! NRI lets a plugin adjust every CRI container before it is created. This
//! plugin adds the requested TPM device (with its group and mode; the
//! runtime adds the cgroup allow rule), the TCTI environment, the request as
//! annotations and the createRuntime hook that self-tests the TPM.
//!
//! Layout: [`mux`], [`ttrpc`] and [`proto`] are the transport, [`api`] the
//! NRI messages, [`stub`] one session of the protocol, [`plugin`] the TPM
//! logic (a thin layer over [`crate::core::decision::decide`]), [`daemon`] the
//! process around them.

pub mod api;
pub mod daemon;
pub mod mux;
pub mod plugin;
pub mod proto;
pub mod stub;
pub mod ttrpc;

pub use daemon::run;
