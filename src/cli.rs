//! The command line of both binaries: parsing, `--help`, `--version`, and
//! the shell completions and man pages generated from the same definitions
//! (`oci-tpm-hook generate`, run when packaging). The arguments of a
//! front-end with its own options (selftest, cdi, configure) live beside it
//! and are put together here, so front-ends never reach up into this module.
//!
//! The hook's own invocations (`oci-tpm-hook` and `oci-tpm-hook hook`, with
//! no options: what hooks.d and the spec-editing front-ends write) never
//! reach this module: `main` takes them straight to the hook, so a container
//! that asks for no TPM does not pay for building the parser.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::core::request;
// Each front-end defines its own arguments; this module puts them together.
pub use crate::frontend::cdi::CdiGenerateArgs;
pub use crate::frontend::configure::containerd::ConfigureContainerdArgs;
pub use crate::frontend::configure::crio::ConfigureCrioArgs;
pub use crate::frontend::configure::docker::ConfigureDockerArgs;
pub use crate::frontend::configure::{ConfigureArgs, ConfigureCommand};
pub use crate::frontend::device_plugin::args::{
    DevicePluginArgs, DevicePluginCli, DEVICE_PLUGIN_BIN,
};
use crate::frontend::nri::daemon::{Options as NriOptions, DEFAULT_SOCKET};
use crate::frontend::nri::stub::Registration;
pub use crate::frontend::selftest::{ProbeLevel, SelftestArgs};

const ABOUT: &str = "Give OCI containers verified access to the host's TPM 2.0";

const AFTER_HELP: &str = "\
Without a subcommand, oci-tpm-hook is the createRuntime hook: podman and CRI-O
run it from hooks.d, the docker runtime wrapper and the NRI plugin add it to
the spec; it reads the OCI state on stdin. A container asks for the TPM with
the annotation oci-tpm-hook/device=tpmrm0 (or auto).

Policy: /etc/oci-tpm-hook/config.toml (or --config / $OCI_TPM_HOOK_CONFIG).";

#[derive(Parser, Debug)]
#[command(name = "oci-tpm-hook", version, propagate_version = true, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the hook, when no subcommand is given.
    #[command(flatten)]
    pub hook: HookArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The createRuntime hook: reads the OCI state on stdin (what runtimes run)
    Hook(HookArgs),
    /// Prove a TPM works: a self-test on a device, one line or JSON; exit 0 when it answered
    Selftest(SelftestArgs),
    /// The NRI plugin for containerd (1.7 and later) and CRI-O (1.26 and later)
    Nri(NriArgs),
    /// The kubelet device plugin: the node's TPMs as an extended resource, health from self-tests, node labels for NFD
    DevicePlugin(DevicePluginArgs),
    /// Check this host: TPM, device nodes, group, policy, and each container engine; each failure with its fix
    Doctor(DoctorArgs),
    /// Container Device Interface: a spec of the host's TPMs for podman, docker, containerd and CRI-O
    Cdi(CdiArgs),
    /// Edit an engine's configuration so that it gives containers their TPM (docker, containerd, CRI-O)
    Configure(ConfigureArgs),
    /// Write shell completions and man pages (for packaging)
    #[command(hide = true)]
    Generate(GenerateArgs),
}

#[derive(Args, Debug, Default)]
pub struct HookArgs {
    /// Policy file [default: $OCI_TPM_HOOK_CONFIG or /etc/oci-tpm-hook/config.toml]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// A request annotation, taken as if the container carried it (over its
    /// own of the same key): how a CDI spec's hook names the TPM its device
    /// delivers, e.g. oci-tpm-hook/device=tpmrm0
    #[arg(long = "annotation", value_name = "KEY=VALUE", value_parser = request_annotation)]
    pub annotations: Vec<(String, String)>,
}

impl HookArgs {
    /// The annotations given on the command line.
    pub fn given_annotations(&self) -> BTreeMap<String, String> {
        self.annotations.iter().cloned().collect()
    }
}

/// `oci-tpm-hook/KEY=VALUE`, checked by the request parser every front-end
/// uses, so a typo fails when the CDI spec is loaded, not per container.
fn request_annotation(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if !key.starts_with(request::PREFIX) {
        return Err(format!(
            "{key:?} is not a request annotation: the key must start with {}",
            request::PREFIX
        ));
    }
    let alone = BTreeMap::from([(key.to_owned(), value.to_owned())]);
    request::parse(&alone, None).map_err(|e| e.to_string())?;
    Ok((key.to_owned(), value.to_owned()))
}

#[derive(Args, Debug)]
pub struct NriArgs {
    /// NRI socket to connect to (when the runtime did not launch the plugin)
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Plugin name
    #[arg(long, value_name = "NAME", env = "NRI_PLUGIN_NAME", default_value = "oci-tpm-hook",
          value_parser = crate::text::non_empty)]
    pub name: String,
    /// Two-digit plugin index; lower runs first
    #[arg(long, value_name = "NN", env = "NRI_PLUGIN_IDX", default_value = "10",
          value_parser = two_digits)]
    pub index: String,
    /// Policy file [default: $OCI_TPM_HOOK_CONFIG or /etc/oci-tpm-hook/config.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the host's /dev, /sys and /etc/group are mounted, when the plugin runs in a container
    #[arg(long, value_name = "DIR")]
    pub host_root: Option<PathBuf>,
    /// Grant devices without adding the createRuntime hook (for runtimes that refuse hook injection: no self-test)
    #[arg(long)]
    pub no_hook: bool,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// One JSON object instead of the table
    #[arg(long)]
    pub json: bool,
    /// Policy file [default: $OCI_TPM_HOOK_CONFIG or /etc/oci-tpm-hook/config.toml]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CdiArgs {
    #[command(subcommand)]
    pub command: CdiCommand,
}

#[derive(Subcommand, Debug)]
pub enum CdiCommand {
    /// Write the CDI spec: one device (oci-tpm-hook.dev/tpm=tpmrmN) per TPM the policy allows
    #[command(after_help = CDI_AFTER_HELP)]
    Generate(CdiGenerateArgs),
}

const CDI_AFTER_HELP: &str = "\
Each device gives the node (mode 0660, the host's tss group), that group as an
additional GID of the container's process, TPM2TOOLS_TCTI/TSS2_TCTI and the
hook that self-tests the TPM from inside the container:

  podman run --device oci-tpm-hook.dev/tpm=tpmrm0 IMAGE tpm2_getrandom 8

A host without a TPM the policy allows gets no spec (an existing one is
removed). The packaged udev rule runs this whenever a TPM appears or goes away.";

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Directory for the man pages (section 1)
    #[arg(long, value_name = "DIR")]
    pub man: Option<PathBuf>,
    /// Directory for bash, zsh and fish completions
    #[arg(long, value_name = "DIR")]
    pub completions: Option<PathBuf>,
}

fn two_digits(s: &str) -> Result<String, String> {
    if s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_owned())
    } else {
        Err("must be two digits, e.g. 10".into())
    }
}

impl NriArgs {
    /// The plugin's options; `NRI_PLUGIN_SOCKET` (set when the runtime
    /// launched the plugin itself) is an inherited, connected socket.
    pub fn options(self, socket_env: Option<String>) -> anyhow::Result<NriOptions> {
        let inherited_fd = socket_env
            .map(|fd| {
                fd.trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|fd| *fd >= 0)
                    .with_context(|| {
                        format!("NRI_PLUGIN_SOCKET={fd:?} is not a file descriptor number")
                    })
            })
            .transpose()?;
        Ok(NriOptions {
            socket: self.socket,
            registration: Registration {
                name: self.name,
                index: self.index,
            },
            config: self.config,
            inject_hook: !self.no_hook,
            host_root: self.host_root,
            inherited_fd,
        })
    }
}

/// `oci-tpm-runtime`'s command line, for its man page and completions only:
/// the wrapper itself passes every argument on to the real runtime.
pub fn runtime_command() -> clap::Command {
    clap::Command::new("oci-tpm-runtime")
        .version(env!("CARGO_PKG_VERSION"))
        .about("An OCI runtime wrapper for docker: grants annotated containers the host's TPM, then runs runc")
        .long_about(
            "Register it as a docker runtime (daemon.json: {\"runtimes\": {\"tpm\": {\"path\": \
             \"/usr/bin/oci-tpm-runtime\"}}}) and run containers with --runtime tpm --annotation \
             oci-tpm-hook/device=tpmrm0. On create and run it puts the TPM device, its cgroup rule, \
             the group, the TCTI environment and the self-testing hook into the bundle's \
             config.json; every command line is then passed unchanged to the real runtime \
             ([runtime] path in /etc/oci-tpm-hook/config.toml, runc by default). --version prints \
             its own version, then the real runtime's.",
        )
        .arg(
            clap::Arg::new("runtime-arguments")
                .num_args(0..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true)
                .value_name("RUNC-ARGUMENTS")
                .help("runc's command line, passed on unchanged"),
        )
}

/// Writes man pages and completions for both binaries.
pub fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    let commands = [
        Cli::command(),
        runtime_command(),
        DevicePluginCli::command(),
    ];
    if let Some(dir) = &args.man {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for cmd in &commands {
            write_man_pages(cmd, dir)?;
        }
    }
    if let Some(dir) = &args.completions {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for mut cmd in commands {
            let name = cmd.get_name().to_owned();
            for shell in [
                clap_complete::Shell::Bash,
                clap_complete::Shell::Zsh,
                clap_complete::Shell::Fish,
            ] {
                clap_complete::generate_to(shell, &mut cmd, &name, dir)
                    .with_context(|| format!("cannot write {shell} completions for {name}"))?;
            }
        }
    }
    Ok(())
}

/// One page for the command and one per visible subcommand
/// (`oci-tpm-hook-selftest.1`, as git names its pages).
fn write_man_pages(cmd: &clap::Command, dir: &Path) -> anyhow::Result<()> {
    let mut cmd = cmd.clone();
    cmd.build();
    let name = cmd.get_name().to_owned();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    let file = dir.join(format!("{name}.1"));
    std::fs::write(&file, page).with_context(|| format!("cannot write {}", file.display()))?;
    // clap's own `help` subcommand gets no page: each page has its help.
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let sub = sub
            .clone()
            .name(format!("{name}-{}", sub.get_name()))
            .display_name(format!("{name}-{}", sub.get_name()));
        write_man_pages(&sub, dir)?;
    }
    Ok(())
}

/// Parses the command line, or prints help, version or a usage error and
/// exits (0 on stdout for help and version, 2 on stderr for errors).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Cli {
    Cli::parse_from(std::iter::once(OsString::from("oci-tpm-hook")).chain(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn try_parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("oci-tpm-hook").chain(args.iter().copied()))
    }

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
        runtime_command().debug_assert();
    }

    #[test]
    fn subcommands_and_options() {
        let cli = try_parse(&["--config", "/p.toml"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.hook.config.as_deref(), Some(Path::new("/p.toml")));
        let Some(Command::Selftest(s)) = try_parse(&["selftest", "--level", "full", "--json"])
            .unwrap()
            .command
        else {
            panic!("selftest");
        };
        assert_eq!(
            (s.level, s.json, s.timeout_ms),
            (ProbeLevel::Full, true, 5000)
        );
        let Some(Command::Cdi(CdiArgs {
            command: CdiCommand::Generate(g),
        })) = try_parse(&["cdi", "generate"]).unwrap().command
        else {
            panic!("cdi generate");
        };
        assert_eq!(g.output, PathBuf::from("/var/run/cdi/oci-tpm-hook.json"));
        let Some(Command::Configure(c)) = try_parse(&["configure", "docker", "--dry-run", "--cdi"])
            .unwrap()
            .command
        else {
            panic!("configure");
        };
        let ConfigureCommand::Docker(d) = &c.command else {
            panic!("configure docker");
        };
        assert!(c.dry_run && d.cdi && !d.set_as_default);
        assert_eq!(d.config, PathBuf::from("/etc/docker/daemon.json"));
        assert_eq!(d.runtime_path, PathBuf::from("/usr/bin/oci-tpm-runtime"));
        let Some(Command::Nri(n)) = try_parse(&["nri", "--index=20", "--no-hook"])
            .unwrap()
            .command
        else {
            panic!("nri");
        };
        let o = n.options(Some("3".into())).unwrap();
        assert_eq!(
            (o.registration.index.as_str(), o.inject_hook, o.inherited_fd),
            ("20", false, Some(3))
        );
        assert_eq!(o.socket, PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn the_hook_takes_request_annotations() {
        let cli = try_parse(&[
            "hook",
            "--annotation",
            "oci-tpm-hook/device=tpmrm1",
            "--annotation=oci-tpm-hook/self-test=full",
        ])
        .unwrap();
        let Some(Command::Hook(h)) = cli.command else {
            panic!("hook");
        };
        let given = h.given_annotations();
        assert_eq!(given["oci-tpm-hook/device"], "tpmrm1");
        assert_eq!(given["oci-tpm-hook/self-test"], "full");
        for bad in [
            "oci-tpm-hook/device",
            "io.example/x=1",
            "oci-tpm-hook/device=/dev/tpmrm0",
            "oci-tpm-hook/devcie=tpmrm0",
        ] {
            let err = try_parse(&["hook", "--annotation", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
        }
    }

    #[test]
    fn usage_errors_and_help() {
        for bad in [
            &["frobnicate"][..],
            &["selftest", "--level", "none"],
            &["selftest", "--timeout-ms", "0"],
            &["nri", "--index", "7"],
            &["nri", "--name", ""],
            &["nri", "--socket"],
            &["configure"],
            &["configure", "podman"],
            &["configure", "containerd", "--config-version", "1"],
            &["--frob"],
        ] {
            let err = try_parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}: {err}");
        }
        for help in [
            &["--help"][..],
            &["selftest", "--help"],
            &["nri", "--help"],
            &["--version"],
        ] {
            let err = try_parse(help).unwrap_err();
            assert_eq!(err.exit_code(), 0, "{help:?}");
            assert!(!err.use_stderr(), "{help:?} goes to stdout");
        }
        let bad_fd = try_parse(&["nri"]).unwrap();
        let Some(Command::Nri(n)) = bad_fd.command else {
            panic!("nri");
        };
        assert!(n.options(Some("three".into())).is_err());
    }

    #[test]
    fn man_pages_and_completions_are_written() {
        let dir = tempfile::tempdir().unwrap();
        generate(&GenerateArgs {
            man: Some(dir.path().join("man")),
            completions: Some(dir.path().join("completions")),
        })
        .unwrap();
        for page in [
            "oci-tpm-hook.1",
            "oci-tpm-hook-selftest.1",
            "oci-tpm-hook-nri.1",
            "oci-tpm-hook-doctor.1",
            "oci-tpm-hook-cdi.1",
            "oci-tpm-hook-cdi-generate.1",
            "oci-tpm-hook-configure.1",
            "oci-tpm-hook-configure-docker.1",
            "oci-tpm-hook-configure-containerd.1",
            "oci-tpm-hook-configure-crio.1",
            "oci-tpm-runtime.1",
        ] {
            let text = std::fs::read_to_string(dir.path().join("man").join(page)).unwrap();
            assert!(text.contains(".TH"), "{page}");
        }
        let pages: Vec<String> = std::fs::read_dir(dir.path().join("man"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !pages
                .iter()
                .any(|p| p.contains("-help") || p.contains("-generate.1") && !p.contains("cdi")),
            "no pages for `help` or the hidden `generate`: {pages:?}"
        );
        for f in [
            "oci-tpm-hook.bash",
            "_oci-tpm-hook",
            "oci-tpm-hook.fish",
            "oci-tpm-runtime.bash",
        ] {
            assert!(dir.path().join("completions").join(f).exists(), "{f}");
        }
    }
}
