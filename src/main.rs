//! `oci-tpm-hook`: the createRuntime hook (default), and its subcommands.
//!
//! ```text
//! oci-tpm-hook [hook] [--config PATH]       OCI state on stdin (runtimes call this)
//! oci-tpm-hook selftest [--device PATH] [--level quick|full] [--timeout-ms N] [--json]
//! oci-tpm-hook nri [--socket PATH] [--config PATH] [--name N] [--index I] [--host-root DIR] [--no-hook]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use oci_tpm_hook::core::host::HostRoots;
use oci_tpm_hook::frontend::hook::{self, HookResult};
use oci_tpm_hook::frontend::selftest;

const USAGE: &str = "usage:
  oci-tpm-hook [hook] [--config PATH]     createRuntime hook: OCI state on stdin
  oci-tpm-hook selftest [--device PATH] [--level quick|full] [--timeout-ms N] [--json]
  oci-tpm-hook nri [--socket PATH] [--config PATH] [--name N] [--index I] [--host-root DIR] [--no-hook]
  oci-tpm-hook --version";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    let sub = args
        .peek()
        .and_then(|a| a.to_str())
        .filter(|a| !a.starts_with('-'))
        .map(str::to_owned);
    if sub.is_some() {
        args.next();
    }
    let args: Vec<_> = args.collect();
    let result = match sub.as_deref() {
        None | Some("hook") => return hook_main(args),
        Some("selftest") => selftest::main(args),
        Some("nri") => nri_main(args),
        Some(other) => Err(anyhow::anyhow!("unknown subcommand {other:?}\n{USAGE}")),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("oci-tpm-hook: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The createRuntime hook: options, then the state on stdin (`hook::run`).
fn hook_main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let mut config: Option<PathBuf> =
        std::env::var_os(oci_tpm_hook::core::policy::PATH_ENV).map(PathBuf::from);
    let mut parser = lexopt::Parser::from_args(args);
    loop {
        match parser.next() {
            Ok(None) => break,
            Ok(Some(lexopt::Arg::Long("config"))) => match parser.value() {
                Ok(v) => config = Some(v.into()),
                Err(e) => return usage_error(e),
            },
            Ok(Some(lexopt::Arg::Long("version"))) => {
                println!("oci-tpm-hook {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            Ok(Some(lexopt::Arg::Long("help") | lexopt::Arg::Short('h'))) => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Ok(Some(other)) => return usage_error(other.unexpected()),
            Err(e) => return usage_error(e),
        }
    }
    match hook::run(
        std::io::stdin().lock(),
        config.as_deref(),
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
    oci_tpm_hook::frontend::runtime_report::report_through_runtime(message);
    ExitCode::FAILURE
}

fn nri_main(args: Vec<std::ffi::OsString>) -> anyhow::Result<ExitCode> {
    let args = args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| anyhow::anyhow!("argument {a:?} is not UTF-8"))
        })
        .collect::<anyhow::Result<Vec<String>>>()?;
    oci_tpm_hook::frontend::nri::run(&args)?;
    Ok(ExitCode::SUCCESS)
}

fn usage_error(e: lexopt::Error) -> ExitCode {
    eprintln!("oci-tpm-hook: {e}\n{USAGE}");
    ExitCode::from(2)
}
