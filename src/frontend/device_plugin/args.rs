//! The device plugin's command line: `oci-tpm-device-plugin`, and the same
//! options under `oci-tpm-hook device-plugin`, which execs it.

use std::path::PathBuf;

use clap::{Args, Parser};

use super::{api, cdi, monitor::Outputs, nfd, Options, DEFAULT_RESOURCE};

#[derive(Args, Debug)]
pub struct DevicePluginArgs {
    /// The kubelet's device plugin directory (its registration socket kubelet.sock is there)
    #[arg(long, value_name = "DIR", default_value = api::DEFAULT_DIR)]
    pub kubelet_dir: PathBuf,
    /// The extended resource to register, domain-qualified
    #[arg(long, value_name = "DOMAIN/NAME", default_value = DEFAULT_RESOURCE,
          value_parser = resource_name)]
    pub resource_name: String,
    /// Devices advertised per TPM: how many containers may use one TPM at once
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub shares: u32,
    /// Seconds between self-tests of each TPM (and looks for new ones)
    #[arg(long, value_name = "S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub health_interval: u64,
    /// Node Feature Discovery's local feature directory, for the node's TPM labels
    #[arg(long, value_name = "DIR", default_value = nfd::DEFAULT_DIR)]
    pub nfd_dir: PathBuf,
    /// Write no NFD feature file
    #[arg(long)]
    pub no_nfd: bool,
    /// Where to write the CDI spec whose device names Allocate returns
    #[arg(long, value_name = "DIR", default_value = cdi::DEFAULT_DIR)]
    pub cdi_dir: PathBuf,
    /// Name no CDI devices (the container's process then needs the node's group by other means)
    #[arg(long)]
    pub no_cdi: bool,
    /// Policy file [default: $OCI_TPM_HOOK_CONFIG or /etc/oci-tpm-hook/config.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the host's /dev, /sys and /etc/group are mounted, when the plugin runs in a container
    #[arg(long, value_name = "DIR")]
    pub host_root: Option<PathBuf>,
}

impl DevicePluginArgs {
    pub fn options(self) -> Options {
        Options {
            kubelet_dir: self.kubelet_dir,
            resource_name: self.resource_name,
            shares: self.shares,
            interval: std::time::Duration::from_secs(self.health_interval),
            config: self.config,
            host_root: self.host_root,
            outputs: Outputs {
                nfd_dir: (!self.no_nfd).then_some(self.nfd_dir),
                cdi_dir: (!self.no_cdi).then_some(self.cdi_dir),
            },
        }
    }
}

/// `oci-tpm-device-plugin`'s command line: the options of `oci-tpm-hook
/// device-plugin`, which runs it.
#[derive(Parser, Debug)]
#[command(name = "oci-tpm-device-plugin", version, about = DEVICE_PLUGIN_ABOUT)]
pub struct DevicePluginCli {
    #[command(flatten)]
    pub plugin: DevicePluginArgs,
}

const DEVICE_PLUGIN_ABOUT: &str = "The kubelet device plugin of oci-tpm-hook: the node's TPMs as an extended resource, health from self-tests, node labels for NFD";

/// The device plugin's binary, beside `oci-tpm-hook`.
pub const DEVICE_PLUGIN_BIN: &str = "oci-tpm-device-plugin";

/// An extended resource name as the kubelet accepts it: `DOMAIN/NAME`, the
/// domain a DNS name with a dot and not Kubernetes' own.
fn resource_name(s: &str) -> Result<String, String> {
    let ok = s.split_once('/').is_some_and(|(domain, name)| {
        domain.contains('.')
            && !domain.ends_with("kubernetes.io")
            && domain.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
            && !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    if ok {
        Ok(s.to_owned())
    } else {
        Err("must be DOMAIN/NAME with a DNS domain outside kubernetes.io, e.g. oci-tpm-hook.dev/tpm".into())
    }
}
