//! `oci-tpm-hook nri`: the NRI plugin for containerd (1.7 and later) and
//! CRI-O (1.26 and later).
//!
//! NRI lets a plugin adjust every CRI container before it is created. This
//! plugin adds the requested TPM device (with its group and mode; the
//! runtime adds the cgroup allow rule), the TCTI environment, the request as
//! annotations and the createRuntime hook that self-tests the TPM.
//!
//! Layout: [`mux`] and [`ttrpc`] are the transport, [`api`] the NRI
//! messages, [`stub`] one session of the protocol, [`plugin`] the TPM logic
//! (a thin layer over [`crate::core::decision::decide`]), [`daemon`] the
//! process around them.
//!
//! The messages, NRI's and ttrpc's own (but [`ttrpc::Status`], whose
//! `.proto` file is not among those sources), are prost types generated from
//! the upstream `.proto` files of the pinned CRI-O source (NRI v0.9.1, ttrpc
//! v1.2.7) by `tools/protogen` (`make proto`). The generated code is
//! checked in under `generated/` so that building needs neither the sources
//! nor a protobuf compiler; `make proto-check` fails when it is stale. The
//! multiplexer and the ttrpc framing are written here, small, because no
//! crate offers them without a transport of its own (see [`ttrpc`]).

pub mod api;
pub mod daemon;
pub mod mux;
pub mod plugin;
pub mod stub;
pub mod ttrpc;

pub use daemon::run;
