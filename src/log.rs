//! Where events go: journald when the host has it, else stderr, or a file;
//! and the events every front-end reports, with the same fields.
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

use crate::core::decision::Refusal;
use crate::core::grant::Grant;
use crate::core::policy::{LogPolicy, LogTarget};
use crate::core::subject::Subject;
use crate::text::untrusted;

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

/// As [`init`], except that events that would go to stderr are dropped:
/// for the docker runtime wrapper, whose stderr during `create` can be the
/// container's own output stream (its messages reach the runtime's log).
pub fn init_unless_stderr(policy: &LogPolicy, syslog_identifier: &str) -> anyhow::Result<()> {
    let to_stderr = match policy.target {
        LogTarget::Stderr => true,
        LogTarget::Auto => !Path::new(JOURNALD_SOCKET).exists(),
        LogTarget::Journald | LogTarget::File => false,
    };
    if to_stderr {
        return Ok(());
    }
    init(policy, syslog_identifier)
}

/// Whether events go somewhere other than stderr (journald, a file).
pub fn goes_elsewhere() -> bool {
    LOGS_ELSEWHERE.load(std::sync::atomic::Ordering::Relaxed)
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

/// The fields every front-end's events carry about a container, escaped.
struct Named {
    container_id: String,
    pod_namespace: String,
    pod: String,
    container: String,
}

fn named(subject: &Subject) -> Named {
    let r = subject.requester();
    let shown = |v: Option<String>| v.map(|s| untrusted(&s).into_owned()).unwrap_or_default();
    Named {
        container_id: subject.id_for_log(),
        pod_namespace: shown(r.pod_namespace),
        pod: shown(r.pod_name),
        container: shown(r.container_name),
    }
}

/// One event about a container, at `$level`, with the fields every
/// front-end's events share, then the event's own fields and message.
macro_rules! container_event {
    ($level:ident, $front_end:expr, $subject:expr, $($rest:tt)*) => {{
        let n = named($subject);
        tracing::$level!(
            front_end = $front_end,
            container_id = %n.container_id,
            pod_namespace = %n.pod_namespace,
            pod = %n.pod,
            container = %n.container,
            $($rest)*
        );
    }};
}

/// A spec-editing front-end (docker wrapper, NRI plugin) put `grant` into
/// the container's spec; `details` says what it added.
pub fn granted(front_end: &str, subject: &Subject, grant: &Grant, details: &str) {
    container_event!(
        info,
        front_end,
        subject,
        device = %grant.container_path.display(),
        major_minor = %format!("{}:{}", grant.device.major, grant.device.minor),
        details,
        "{}: granted TPM {} ({}:{}) as {}: {details}",
        subject.describe(),
        grant.device.name,
        grant.device.major,
        grant.device.minor,
        grant.container_path.display(),
    );
}

/// A refusal that fails the container.
pub fn refused(front_end: &str, subject: &Subject, refusal: &Refusal) {
    container_event!(error, front_end, subject, "{}", refusal.message());
}

/// A refusal with `required=false`: the container starts without a TPM.
pub fn started_without(front_end: &str, subject: &Subject, refusal: &Refusal) {
    container_event!(warn, front_end, subject, "{}", refusal.warning());
}
