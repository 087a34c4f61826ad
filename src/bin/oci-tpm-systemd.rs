//! `oci-tpm-systemd`: tells systemd that a container's unit may use its TPM
//! ([`oci_tpm_hook::privileged::systemd`]). The hook runs it, as a bounded
//! child, for containers whose cgroup is a systemd unit; it is not meant to
//! be run by hand.
//!
//! A program of its own so that the hook binary does not carry the D-Bus
//! client (zbus and its executor): every container start pays for the
//! hook's size and start-up, and only containers in a systemd unit need
//! this. It answers on standard output with the JSON of `Result<T, String>`,
//! as the hook's bounded children do.
//!
//!     oci-tpm-systemd allow UNIT DEVICE MAJOR MINOR
//!     oci-tpm-systemd take-back OUTCOME      (the JSON `allow` answered)

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use oci_tpm_hook::privileged::child;
use oci_tpm_hook::privileged::systemd::{bus, ReloadOutcome};
use serde::Serialize;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let printed = match args.first().map(String::as_str) {
        Some("allow") => answer(allow(&args[1..])),
        Some("take-back") => answer(take_back(&args[1..])),
        _ => {
            eprintln!(
                "usage: oci-tpm-systemd allow UNIT DEVICE MAJOR MINOR | take-back OUTCOME \
                 (run by oci-tpm-hook, not by hand)"
            );
            return ExitCode::from(2);
        }
    };
    if printed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn allow(args: &[String]) -> anyhow::Result<ReloadOutcome> {
    let [unit, device, major, minor] = args else {
        bail!(
            "allow needs UNIT DEVICE MAJOR MINOR, got {} argument(s)",
            args.len()
        );
    };
    let number = |n: &str| {
        n.parse::<u32>()
            .with_context(|| format!("device number {n:?} is not a number"))
    };
    bus::allow_in_unit(
        unit.clone(),
        Path::new(device),
        number(major)?,
        number(minor)?,
    )
}

fn take_back(args: &[String]) -> anyhow::Result<()> {
    let [outcome] = args else {
        bail!(
            "take-back needs the outcome of allow, got {} argument(s)",
            args.len()
        );
    };
    let outcome: ReloadOutcome =
        serde_json::from_str(outcome).context("take-back: not an outcome of allow")?;
    bus::take_back(&outcome)
}

/// Prints the answer as the hook reads it; whether that worked.
fn answer<T: Serialize>(result: anyhow::Result<T>) -> bool {
    let written = child::encode_answer(result)
        .map_err(std::io::Error::from)
        .and_then(|json| {
            let mut out = std::io::stdout().lock();
            out.write_all(&json)?;
            out.flush()
        });
    if let Err(e) = &written {
        eprintln!("oci-tpm-systemd: cannot give the answer: {e}");
    }
    written.is_ok()
}
