//! The kubelet's device plugin API, `v1beta1` (messages, the plugin's
//! `DevicePlugin` server trait and the kubelet's `Registration` client),
//! generated with prost and tonic from the kubelet's own `api.proto` (see
//! `generated/deviceplugin_v1beta1.rs` for the source and the command).
//!
//! Checked in, so a build needs neither the `.proto` file nor a protobuf
//! compiler; `make proto-check` proves it is what the generator writes.
//! Decoding skips fields it does not know, so newer kubelets are understood.

mod generated {
    include!("generated/deviceplugin_v1beta1.rs");
}

pub use generated::*;

/// The API version this plugin speaks, as it registers.
pub const VERSION: &str = "v1beta1";
/// A device's health, as the kubelet spells it.
pub const HEALTHY: &str = "Healthy";
pub const UNHEALTHY: &str = "Unhealthy";
/// The kubelet's registration socket inside its device plugin directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// The kubelet's device plugin directory.
pub const DEFAULT_DIR: &str = "/var/lib/kubelet/device-plugins";
