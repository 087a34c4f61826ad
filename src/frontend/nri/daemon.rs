//! The plugin as a long-running process: options, logging, signals
//! (SIGHUP reloads the policy), and reconnecting when the runtime restarts;
//! or, pre-launched by containerd, one inherited connection.

use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tracing::{debug, error, info, warn};

use super::plugin::TpmPlugin;
use super::stub::{Ended, Registration, Session, State};
use crate::core::host::HostRoots;
use crate::core::policy::{self, Policy};

pub const DEFAULT_SOCKET: &str = "/var/run/nri/nri.sock";
pub const DEFAULT_NAME: &str = "oci-tpm-hook";
pub const DEFAULT_INDEX: &str = "10";

/// Set by containerd when it launches a plugin from its plugin directory:
/// the number of an inherited, already connected socket.
pub const SOCKET_ENV: &str = "NRI_PLUGIN_SOCKET";
pub const NAME_ENV: &str = "NRI_PLUGIN_NAME";
pub const INDEX_ENV: &str = "NRI_PLUGIN_IDX";

/// Reconnect backoff: quick at first (containerd restarts in about a
/// second), capped so a plugin is back within a few seconds of containerd.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

const USAGE: &str = "\
usage: oci-tpm-hook nri [--socket PATH] [--name NAME] [--index NN] [--config FILE]
                       [--host-root DIR] [--no-hook]

Runs the containerd NRI plugin: containers whose pod asks for a TPM
(annotation oci-tpm-hook/device) get the host's TPM device, its group and
the createRuntime hook that self-tests it.

  --socket PATH   NRI socket to connect to (default /var/run/nri/nri.sock)
  --name NAME     plugin name (default oci-tpm-hook)
  --index NN      two-digit plugin index; lower runs first (default 10)
  --config FILE   policy file (default $OCI_TPM_HOOK_CONFIG or /etc/oci-tpm-hook/config.toml)
  --host-root DIR where the host's /dev, /sys and /etc/group are mounted, when
                  the plugin runs in a container (default /)
  --no-hook       grant devices without adding the createRuntime hook (for
                  runtimes that refuse OCI hook injection: no self-test)

When containerd launches the plugin itself (from /opt/nri/plugins), it
passes NRI_PLUGIN_SOCKET, NRI_PLUGIN_NAME and NRI_PLUGIN_IDX instead.
SIGHUP reloads the policy; SIGTERM stops the plugin.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub socket: PathBuf,
    pub registration: Registration,
    pub config: Option<PathBuf>,
    pub inject_hook: bool,
    /// Where the host's /dev, /sys and /etc/group are (a DaemonSet mounts
    /// them under e.g. /host).
    pub host_root: Option<PathBuf>,
    /// An inherited, connected socket (pre-launched by containerd).
    pub inherited_fd: Option<RawFd>,
}

/// Reads the command line (after `nri`) and the NRI environment.
pub fn parse_options(
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Options> {
    let mut opts = Options {
        socket: PathBuf::from(DEFAULT_SOCKET),
        registration: Registration {
            name: env(NAME_ENV).unwrap_or_else(|| DEFAULT_NAME.into()),
            index: env(INDEX_ENV).unwrap_or_else(|| DEFAULT_INDEX.into()),
        },
        config: None,
        inject_hook: true,
        host_root: None,
        inherited_fd: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag {
            "--socket" => opts.socket = PathBuf::from(value()?),
            "--name" => opts.registration.name = value()?,
            "--index" => opts.registration.index = value()?,
            "--config" => opts.config = Some(PathBuf::from(value()?)),
            "--host-root" => opts.host_root = Some(PathBuf::from(value()?)),
            "--no-hook" => opts.inject_hook = false,
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    let idx = &opts.registration.index;
    if idx.len() != 2 || !idx.bytes().all(|b| b.is_ascii_digit()) {
        bail!("plugin index {idx:?} is not two digits (e.g. 10)");
    }
    if opts.registration.name.is_empty() {
        bail!("plugin name is empty");
    }
    if let Some(fd) = env(SOCKET_ENV) {
        let fd: RawFd = fd
            .trim()
            .parse()
            .ok()
            .filter(|fd| *fd >= 0)
            .with_context(|| format!("{SOCKET_ENV}={fd:?} is not a file descriptor number"))?;
        opts.inherited_fd = Some(fd);
    }
    Ok(opts)
}

/// Runs the plugin until SIGTERM (or, when containerd started it, until
/// containerd goes away).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let opts = parse_options(args, |k| std::env::var(k).ok())?;
    let policy_path = policy::resolve_path(opts.config.as_deref());
    let policy = Policy::load(&policy_path)?;
    crate::log::init(&policy.log, "oci-tpm-hook-nri")?;

    // Signals arrive on a descriptor the session polls, so a SIGTERM in the
    // middle of a request still lets the answer go out first.
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_set_mask()
        .context("cannot block signals for the signal descriptor")?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("cannot create a signal descriptor")?;

    let host = match &opts.host_root {
        None => HostRoots::default(),
        Some(root) => HostRoots {
            dev: root.join("dev"),
            sys: root.join("sys"),
            group_file: root.join("etc/group"),
        },
    };
    let mut plugin = TpmPlugin::new(policy, policy_path.clone(), host, opts.inject_hook);
    if !opts.inject_hook {
        warn!("hook injection is off (--no-hook): TPM devices are granted without the createRuntime self-test");
    }
    info!(
        "oci-tpm-hook NRI plugin {} starting as {}-{} (policy {})",
        env!("CARGO_PKG_VERSION"),
        opts.registration.index,
        opts.registration.name,
        policy_path.display()
    );

    let result = match opts.inherited_fd {
        Some(fd) => serve_inherited(fd, &opts, &mut plugin, &signals),
        None => serve_reconnecting(&opts, &mut plugin, &signals),
    };
    // Leave the mask as it was for anything that runs after us.
    let _ = mask.thread_unblock();
    result
}

/// What to do after a signal.
enum Next {
    Continue,
    Stop,
}

fn on_signal(signals: &SignalFd, plugin: &mut TpmPlugin) -> Next {
    let mut next = Next::Continue;
    while let Ok(Some(info)) = signals.read_signal() {
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGHUP) => match Policy::load(&plugin.policy_path) {
                Ok(p) => {
                    info!("policy {} reloaded", plugin.policy_path.display());
                    plugin.policy = p;
                }
                Err(e) => error!("policy not reloaded, keeping the previous one: {e:#}"),
            },
            Ok(s) => {
                info!("{s} received: stopping the NRI plugin");
                next = Next::Stop;
            }
            Err(_) => {}
        }
    }
    next
}

/// Runs one session until the peer closes it or a stop signal arrives.
/// `Ok(true)` means stop.
fn serve_session(
    session: &mut Session,
    plugin: &mut TpmPlugin,
    signals: &SignalFd,
) -> anyhow::Result<bool> {
    loop {
        match session.run(plugin, Some(signals.as_fd()))? {
            Ended::PeerClosed => return Ok(false),
            Ended::Woken => {
                if let Next::Stop = on_signal(signals, plugin) {
                    return Ok(true);
                }
            }
        }
    }
}

/// Pre-launched by containerd: one connection; when it ends, so do we
/// (containerd launches its plugins again when it restarts).
fn serve_inherited(
    fd: RawFd,
    opts: &Options,
    plugin: &mut TpmPlugin,
    signals: &SignalFd,
) -> anyhow::Result<()> {
    let sock = inherited_socket(fd)?;
    info!("NRI: using the connection containerd passed in {SOCKET_ENV}={fd}");
    let mut session = Session::start(sock, opts.registration.clone())?;
    if !serve_session(&mut session, plugin, signals)? {
        info!("NRI: containerd closed the connection; exiting (it relaunches its plugins)");
    }
    Ok(())
}

fn inherited_socket(fd: RawFd) -> anyhow::Result<UnixStream> {
    // libc's fstat, not nix's: it takes any number and answers EBADF for
    // one that is not open, where borrowing it as a descriptor first would
    // already assume it is.
    // SAFETY: all-zero bytes are a valid `stat`; fstat only writes into it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("{SOCKET_ENV}={fd}: no such open file descriptor"));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        bail!("{SOCKET_ENV}={fd} is not a socket");
    }
    // SAFETY: the descriptor is open (fstat succeeded), is a socket, and was
    // handed to this process to own; nothing else in it uses the number.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .context("cannot mark the inherited NRI socket close-on-exec")?;
    Ok(UnixStream::from(owned))
}

/// A plugin started by systemd or a DaemonSet: connect, serve, and when
/// containerd goes away, keep trying until it is back.
fn serve_reconnecting(
    opts: &Options,
    plugin: &mut TpmPlugin,
    signals: &SignalFd,
) -> anyhow::Result<()> {
    let mut backoff = BACKOFF_MIN;
    // The last connection failure reported, to log changes and not repeats.
    let mut last_failure: Option<String> = None;
    loop {
        match UnixStream::connect(&opts.socket) {
            Err(e) => {
                let why = e.to_string();
                if last_failure.as_deref() != Some(why.as_str()) {
                    warn!(
                        "NRI: cannot connect to {}: {why}; retrying (is containerd running with NRI enabled?)",
                        opts.socket.display()
                    );
                    last_failure = Some(why);
                } else {
                    debug!("NRI: still cannot connect to {}", opts.socket.display());
                }
            }
            Ok(sock) => {
                last_failure = None;
                let mut reached = State::Registering;
                let outcome = Session::start(sock, opts.registration.clone()).and_then(|mut s| {
                    let r = serve_session(&mut s, plugin, signals);
                    reached = s.state();
                    r
                });
                match outcome {
                    Ok(true) => return Ok(()),
                    Ok(false) => info!("NRI: containerd closed the connection; reconnecting"),
                    Err(e) => warn!("NRI: connection failed: {e:#}; reconnecting"),
                }
                if reached >= State::Configured {
                    backoff = BACKOFF_MIN;
                }
            }
        }
        if wait(signals, backoff, plugin) {
            return Ok(());
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Sleeps for `d` unless a stop signal comes first (then returns true).
fn wait(signals: &SignalFd, d: Duration, plugin: &mut TpmPlugin) -> bool {
    let deadline = std::time::Instant::now() + d;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::from((left.as_millis() + 1).min(60_000) as u16);
        match poll(&mut fds, timeout) {
            Ok(0) => return false,
            Ok(_) => {
                if let Next::Stop = on_signal(signals, plugin) {
                    return true;
                }
            }
            Err(_) => {} // EINTR: go round
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults() {
        let o = parse_options(&[], env(&[])).unwrap();
        assert_eq!(o.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(o.registration.name, "oci-tpm-hook");
        assert_eq!(o.registration.index, "10");
        assert!(o.inject_hook);
        assert_eq!(o.inherited_fd, None);
    }

    #[test]
    fn flags_and_prelaunch_environment() {
        let o = parse_options(
            &args(&[
                "--socket",
                "/run/x.sock",
                "--index=20",
                "--no-hook",
                "--config",
                "/etc/p.toml",
                "--host-root",
                "/host",
            ]),
            env(&[]),
        )
        .unwrap();
        assert_eq!(o.socket, PathBuf::from("/run/x.sock"));
        assert_eq!(o.registration.index, "20");
        assert_eq!(o.config, Some(PathBuf::from("/etc/p.toml")));
        assert_eq!(o.host_root, Some(PathBuf::from("/host")));
        assert!(!o.inject_hook);

        let o = parse_options(
            &[],
            env(&[
                (SOCKET_ENV, "3"),
                (NAME_ENV, "oci-tpm-hook"),
                (INDEX_ENV, "05"),
            ]),
        )
        .unwrap();
        assert_eq!(o.inherited_fd, Some(3));
        assert_eq!(o.registration.index, "05");
    }

    #[test]
    fn bad_options_are_errors() {
        for (a, e) in [
            (&["--index", "7"][..], &[][..]),
            (&["--index", "ab"], &[]),
            (&["--socket"], &[]),
            (&["--frobnicate"], &[]),
            (&["--name", ""], &[]),
            (&[], &[(SOCKET_ENV, "three")]),
            (&[], &[(SOCKET_ENV, "-1")]),
        ] {
            assert!(
                parse_options(&args(a), env(e)).is_err(),
                "accepted {a:?} {e:?}"
            );
        }
    }
}
