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

/// Set by containerd when it launches a plugin from its plugin directory:
/// the number of an inherited, already connected socket.
pub const SOCKET_ENV: &str = "NRI_PLUGIN_SOCKET";

/// Reconnect backoff: quick at first (containerd restarts in about a
/// second), capped so a plugin is back within a few seconds of containerd.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

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

/// Runs the plugin until SIGTERM (or, when containerd started it, until
/// containerd goes away).
pub fn run(opts: Options) -> anyhow::Result<()> {
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

    let host = opts
        .host_root
        .as_deref()
        .map_or_else(HostRoots::default, HostRoots::under);
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
