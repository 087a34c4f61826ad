//! `oci-tpm-hook selftest`: the hook's self-test on any TPM device, for a
//! health or liveness probe inside a container. One line (or one JSON
//! object) on stdout; exit 0 when the TPM answered, 1 when it did not.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tpm2_selftest::{self as tpm, SelfTestLevel};

use clap::{Args, ValueEnum};

/// Where the device is when `--device` is not given: the TCTI the grant put
/// into the container's environment, else the first resource manager.
fn default_device() -> PathBuf {
    ["TPM2TOOLS_TCTI", "TSS2_TCTI"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find_map(|v| v.strip_prefix("device:").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/dev/tpmrm0"))
}

pub fn main(args: &SelftestArgs) -> anyhow::Result<ExitCode> {
    let (level, timeout, json) = (
        SelfTestLevel::from(args.level),
        Duration::from_millis(args.timeout_ms),
        args.json,
    );
    let device = args.device.clone().unwrap_or_else(default_device);
    // The transport's own errors name the device already.
    let outcome = tpm::self_test_device(&device, level, timeout).map_err(anyhow::Error::from);
    match outcome {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "device": device, "report": report})
                );
            } else {
                println!("ok: {}: {report}", device.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "device": device, "error": format!("{e:#}")})
                );
            } else {
                println!("failed: {}: {e:#}", device.display());
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The levels a probe may ask for.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeLevel {
    /// GetCapability and GetRandom
    Quick,
    /// quick, then TPM2_SelfTest and GetTestResult
    Full,
}

impl From<ProbeLevel> for SelfTestLevel {
    fn from(l: ProbeLevel) -> Self {
        match l {
            ProbeLevel::Quick => SelfTestLevel::Quick,
            ProbeLevel::Full => SelfTestLevel::Full,
        }
    }
}

#[derive(Args, Debug)]
pub struct SelftestArgs {
    /// The TPM device [default: the device in $TPM2TOOLS_TCTI or $TSS2_TCTI, else /dev/tpmrm0]
    #[arg(long, value_name = "PATH")]
    pub device: Option<PathBuf>,
    /// How much to prove
    #[arg(long, value_enum, default_value_t = ProbeLevel::Quick)]
    pub level: ProbeLevel,
    /// Give up after this many milliseconds
    #[arg(long, value_name = "N", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=120_000))]
    pub timeout_ms: u64,
    /// One JSON object instead of a line
    #[arg(long)]
    pub json: bool,
}
