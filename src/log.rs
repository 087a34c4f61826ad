//! Where events go: journald when the host has it, else stderr, or a file.
//!
//! Errors that fail a container are *also* printed to stderr by the
//! front-ends, because that is what podman, docker and kubelet show the user;
//! the structured events here are for the host's operators.

use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::core::policy::{LogPolicy, LogTarget};

const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";

/// Set once events go somewhere other than stderr.
static LOGS_ELSEWHERE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Records an error that the front-end also prints to stderr, in the log
/// too when the log is not stderr: some runtimes (crun) do not show a hook's
/// stderr to the user, so the host's log must have it.
pub fn error_also_to_log(message: &str) {
    if LOGS_ELSEWHERE.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::error!("{message}");
    }
}

/// Installs the global subscriber. Call once, early; a second call is a no-op.
pub fn init(policy: &LogPolicy, syslog_identifier: &str) -> anyhow::Result<()> {
    let level = LevelFilter::from_str(&policy.level).unwrap_or(LevelFilter::INFO);
    let target = match policy.target {
        LogTarget::Auto if Path::new(JOURNALD_SOCKET).exists() => LogTarget::Journald,
        LogTarget::Auto => LogTarget::Stderr,
        t => t,
    };
    let (layer, elsewhere): (Box<dyn Layer<_> + Send + Sync>, bool) = match target {
        LogTarget::Journald => match tracing_journald::layer() {
            Ok(l) => (
                l.with_syslog_identifier(syslog_identifier.to_owned())
                    .boxed(),
                true,
            ),
            // journald configured but not reachable: stderr beats silence.
            Err(_) => (stderr_layer().boxed(), false),
        },
        LogTarget::File => {
            let path = policy.file.as_deref().context("[log] file is not set")?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_target(false)
                .with_writer(std::sync::Mutex::new(file))
                .boxed();
            (layer, true)
        }
        LogTarget::Stderr | LogTarget::Auto => (stderr_layer().boxed(), false),
    };
    if tracing_subscriber::registry()
        .with(layer.with_filter(level))
        .try_init()
        .is_ok()
    {
        LOGS_ELSEWHERE.store(elsewhere, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

fn stderr_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .with_writer(std::io::stderr)
}
