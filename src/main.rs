//! `oci-tpm-hook`: the createRuntime hook (the default), and its
//! subcommands (see `oci-tpm-hook --help`, or [`oci_tpm_hook::cli`]).
//!
//! The hook as runtimes run it (`oci-tpm-hook` or `oci-tpm-hook hook`, no
//! options) goes straight to [`hook::run`]: every container pays for that
//! path, so it skips building the command-line parser.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use oci_tpm_hook::cli::{self, CdiCommand, Command, HookArgs};
use oci_tpm_hook::core::host::HostRoots;
use oci_tpm_hook::frontend::hook::{self, HookResult};
use oci_tpm_hook::frontend::{cdi, configure, doctor, nri, runtime_report, selftest};

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if args.is_empty() || (args.len() == 1 && args[0] == "hook") {
        return hook_main(&HookArgs::default());
    }
    let cli = cli::parse(args.clone());
    let result = match cli.command {
        None => return hook_main(&cli.hook),
        Some(Command::Hook(a)) => return hook_main(&a),
        Some(Command::Selftest(a)) => selftest::main(&a),
        Some(Command::Nri(a)) => a
            .options(std::env::var(nri::daemon::SOCKET_ENV).ok())
            .and_then(nri::run)
            .map(|()| ExitCode::SUCCESS),
        // Parsed here for --help and usage errors; run by its own binary.
        Some(Command::DevicePlugin(_)) => exec_device_plugin(&args),
        Some(Command::Cdi(a)) => match a.command {
            CdiCommand::Generate(g) => cdi::main(&g),
        },
        Some(Command::Configure(a)) => configure::main(&a),
        Some(Command::Doctor(a)) => doctor::main(a.json, a.config),
        Some(Command::Generate(a)) => cli::generate(&a).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("oci-tpm-hook: {e:#}");
        ExitCode::FAILURE
    })
}

/// Becomes `oci-tpm-device-plugin` (beside this binary) with the arguments
/// after `device-plugin`: the gRPC stack lives there, not in the hook.
fn exec_device_plugin(args: &[OsString]) -> anyhow::Result<ExitCode> {
    let rest = args
        .iter()
        .position(|a| a == "device-plugin")
        .map_or(&[][..], |i| &args[i + 1..]);
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    let plugin = exe.with_file_name(cli::DEVICE_PLUGIN_BIN);
    let error = std::process::Command::new(&plugin).args(rest).exec();
    Err(error).with_context(|| {
        format!(
            "cannot run {} (the device plugin's binary, installed beside {})",
            plugin.display(),
            exe.display()
        )
    })
}

/// The createRuntime hook: the OCI state on stdin.
fn hook_main(args: &HookArgs) -> ExitCode {
    if std::io::stdin().is_terminal() {
        eprintln!(
            "oci-tpm-hook: the hook reads a container's OCI state on stdin, as OCI runtimes pass it; \
             see oci-tpm-hook --help for the subcommands"
        );
        return ExitCode::from(2);
    }
    match hook::run(
        std::io::stdin().lock(),
        args.config.as_deref().map(Path::new),
        &args.given_annotations(),
        &HostRoots::default(),
    ) {
        Ok(HookResult::NotRequested | HookResult::Delivered(_)) => ExitCode::SUCCESS,
        Ok(HookResult::StartedWithout(warning)) => {
            // In the log already; said once more on stderr unless that is
            // where the log went.
            if oci_tpm_hook::log::goes_elsewhere() {
                eprintln!("oci-tpm-hook: warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Ok(HookResult::Refused(message)) => refuse(&message),
        Err(e) => {
            let message = format!("{e:#}");
            oci_tpm_hook::log::error_also_to_log(&message);
            refuse(&message)
        }
    }
}

/// runc shows a failing hook's stderr to the user (podman, docker, the
/// kubelet); crun discards it, so the reason also goes through crun itself.
fn refuse(message: &str) -> ExitCode {
    eprintln!("oci-tpm-hook: {message}");
    runtime_report::report_through_runtime(message);
    ExitCode::FAILURE
}
