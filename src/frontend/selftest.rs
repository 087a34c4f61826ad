//! `oci-tpm-hook selftest`: the hook's self-test on any TPM device, for a
//! health or liveness probe inside a container. One line (or one JSON
//! object) on stdout; exit 0 when the TPM answered, 1 when it did not.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use lexopt::ValueExt;

use tpm2_selftest::{self as tpm, SelfTestLevel};

/// Where the device is when `--device` is not given: the TCTI the grant put
/// into the container's environment, else the first resource manager.
fn default_device() -> PathBuf {
    ["TPM2TOOLS_TCTI", "TSS2_TCTI"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find_map(|v| v.strip_prefix("device:").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/dev/tpmrm0"))
}

pub fn main(args: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let mut device = None;
    let mut level = SelfTestLevel::Quick;
    let mut timeout = Duration::from_secs(5);
    let mut json = false;
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next()? {
        match arg {
            lexopt::Arg::Long("device") => device = Some(PathBuf::from(p.value()?)),
            lexopt::Arg::Long("level") => {
                let v = p.value()?.string()?;
                level = v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--level {v:?}: allowed quick, full"))?;
                if level == SelfTestLevel::None {
                    bail!("--level none tests nothing; use quick or full");
                }
            }
            lexopt::Arg::Long("timeout-ms") => {
                let v: u64 = p.value()?.parse().context("--timeout-ms")?;
                timeout = Duration::from_millis(v.clamp(1, 120_000));
            }
            lexopt::Arg::Long("json") => json = true,
            other => return Err(other.unexpected().into()),
        }
    }
    let device = device.unwrap_or_else(default_device);
    let outcome = tpm::DeviceTransport::open(&device)
        .with_context(|| format!("cannot open {}", device.display()))
        .and_then(|mut t| tpm::selftest::run(&mut t, level, timeout).map_err(anyhow::Error::from));
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
