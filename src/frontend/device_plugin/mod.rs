//! `oci-tpm-hook device-plugin`: the kubelet device plugin (API `v1beta1`)
//! that advertises the node's TPMs as an extended resource, so that the
//! scheduler puts TPM pods on TPM nodes, and labels the node through Node
//! Feature Discovery.
//!
//! ```text
//!  policy + host ─► monitor (discovery, self-tests) ─► Inventory ─┬─► service: ListAndWatch, Allocate
//!                                                                 ├─► cdi: the spec Allocate names
//!                                                                 └─► nfd: the node's feature file
//!  kubelet: serve the service on a socket in the kubelet's directory,
//!           register it, and again whenever the kubelet restarts
//! ```
//!
//! The plugin grants nothing itself: `Allocate` hands the kubelet the
//! device, the TCTI environment and the request as annotations, and the
//! hook (CRI-O's hooks directory) or the NRI plugin (containerd) decides
//! for the container with the pod's namespace and proves the TPM from
//! inside it, as for any annotated pod. The CDI device it names adds the
//! node's group to the container's process, which neither the device
//! plugin API nor NRI can.
//!
//! It runs as its own binary, `oci-tpm-device-plugin` (which `oci-tpm-hook
//! device-plugin` execs), the only one that links the async runtime
//! (tokio: one thread, plus blocking threads for the self-tests) and gRPC.

pub mod api;
pub mod args;
pub mod cdi;
pub mod health;
pub mod inventory;
pub mod kubelet;
pub mod monitor;
pub mod nfd;
pub mod service;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::info;

use crate::core::host::HostRoots;
use crate::core::policy::{self, Policy};
use inventory::{Inventory, SharedInventory};
use monitor::{Monitor, Outputs};

/// The extended resource the plugin registers by default.
pub const DEFAULT_RESOURCE: &str = "oci-tpm-hook.dev/tpm";
/// The plugin's socket in the kubelet's directory.
pub const ENDPOINT: &str = "oci-tpm-hook.sock";

#[derive(Debug, Clone)]
pub struct Options {
    /// The kubelet's device plugin directory.
    pub kubelet_dir: PathBuf,
    pub resource_name: String,
    /// Devices advertised per TPM: how many containers may hold it at once.
    pub shares: u32,
    /// Between self-tests of a TPM, and between looks for new TPMs.
    pub interval: Duration,
    pub config: Option<PathBuf>,
    pub host_root: Option<PathBuf>,
    pub outputs: Outputs,
}

/// Runs the plugin until SIGTERM or SIGINT (exit 0) or a fatal error.
pub fn run(opts: Options) -> anyhow::Result<()> {
    let policy_path = policy::resolve_path(opts.config.as_deref());
    let policy = Policy::load(&policy_path)?;
    crate::log::init(&policy.log, "oci-tpm-hook-device-plugin")?;
    // Before anything else: without the kubelet's directory nothing here
    // can work, and the operator should see why at once.
    kubelet::check_dir(&opts.kubelet_dir)?;
    let host = opts
        .host_root
        .as_deref()
        .map_or_else(HostRoots::default, HostRoots::under);
    info!(
        "oci-tpm-hook device plugin {} starting: resource {}, {} shares per TPM, self-test every {} s (policy {})",
        env!("CARGO_PKG_VERSION"),
        opts.resource_name,
        opts.shares,
        opts.interval.as_secs(),
        policy_path.display()
    );
    // One thread serves the kubelet; the self-tests block on their own
    // threads, at most one per TPM at a time.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(8)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(opts, policy, host))
}

async fn serve(opts: Options, policy: Policy, host: HostRoots) -> anyhow::Result<()> {
    let cdi_kind = opts.outputs.cdi_dir.is_some().then(|| cdi::KIND.to_owned());
    let inventory = SharedInventory::new(Inventory::new(opts.shares, cdi_kind));
    let (devices_tx, devices_rx) = watch::channel(Vec::new());
    let monitor = Monitor {
        policy,
        host,
        inventory: inventory.clone(),
        devices: devices_tx,
        checker: Arc::new(health::SelfTest),
        interval: opts.interval,
        outputs: opts.outputs.clone(),
    };
    let service = service::Service {
        inventory,
        devices: devices_rx,
    };
    let registration = kubelet::Registration {
        dir: opts.kubelet_dir.clone(),
        endpoint: ENDPOINT.into(),
        resource_name: opts.resource_name.clone(),
    };
    let mut terminate = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    // On a signal the socket is left as it is: the kubelet sees the
    // ListAndWatch stream end, and a newer instance (a rolling update) may
    // already have bound its own in the same place.
    tokio::select! {
        r = monitor.run() => r,
        r = kubelet::serve(&registration, service) => r,
        _ = terminate.recv() => {
            info!("SIGTERM: stopping");
            Ok(())
        }
        _ = interrupt.recv() => {
            info!("SIGINT: stopping");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
