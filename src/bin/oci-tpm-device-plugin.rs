//! `oci-tpm-device-plugin`: the kubelet device plugin
//! ([`oci_tpm_hook::frontend::device_plugin`]); `oci-tpm-hook device-plugin`
//! runs this binary.
//!
//! A binary of its own because the hook runs at every container start: with
//! the gRPC stack (tonic, hyper, tokio) linked in, the hook binary had twice
//! the relocations for the dynamic loader to process on each exec, and its
//! no-request path took a fifth more instructions. Here it costs nothing.

use std::process::ExitCode;

use clap::Parser;
use oci_tpm_hook::cli::DevicePluginCli;
use oci_tpm_hook::frontend::device_plugin;

fn main() -> ExitCode {
    let cli = DevicePluginCli::parse();
    match device_plugin::run(cli.plugin.options()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oci-tpm-device-plugin: {e:#}");
            ExitCode::FAILURE
        }
    }
}
