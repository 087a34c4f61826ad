//! `oci-tpm-runtime`: a runc wrapper for docker, which has no hooks directory.
//!
//! docker (through containerd's shim) calls a registered runtime with runc's
//! command line. On `create` and `run` the wrapper reads the bundle's
//! config.json, and when its annotations ask for a TPM puts the grant into the
//! spec itself (device, cgroup rule, GID, env, validating hook); then, for
//! every subcommand, it execs the real runtime with the arguments unchanged.
//! Putting the device into the spec (instead of granting it behind the
//! runtime's back) keeps the rule alive when systemd re-applies a unit's
//! device list, and lets the process get the group, which a hook cannot do.
//!
//! Errors go to stderr *and* to the runtime's `--log` file in runc's format:
//! containerd reports the last "error" entry of that file to docker, while
//! stderr of `create` may be the container's own stderr stream.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context};

use crate::core::grant::HookEntry;
use crate::core::grant::{decide, Subject};
use crate::core::host::HostRoots;
use crate::core::policy::{resolve_path, Policy};
use crate::oci::spec_edit::{Changes, SpecFile};

/// Prefix of every message, so a user reading docker's error knows who spoke.
pub const PREFIX: &str = "oci-tpm-runtime";

/// runc's subcommands (1.1), plus urfave/cli's help.
const SUBCOMMANDS: &[&str] = &[
    "checkpoint",
    "create",
    "delete",
    "events",
    "exec",
    "features",
    "kill",
    "list",
    "pause",
    "ps",
    "restore",
    "resume",
    "run",
    "spec",
    "start",
    "state",
    "update",
    "help",
    "h",
];

/// Global flags that take a value: runc's, plus crun's `--cgroup-manager`
/// and `--log-level` so crun can be the real runtime too.
const GLOBAL_VALUE_FLAGS: &[&str] = &[
    "log",
    "log-format",
    "root",
    "criu",
    "rootless",
    "cgroup-manager",
    "log-level",
];
const GLOBAL_BOOL_FLAGS: &[&str] = &["debug", "systemd-cgroup", "help", "h", "version", "v"];

/// Flags of `create` and `run` that take a value (runc 1.1 and 1.2).
const CREATE_VALUE_FLAGS: &[&str] = &[
    "bundle",
    "b",
    "console-socket",
    "pid-file",
    "preserve-fds",
    "pidfd-socket",
];
const CREATE_BOOL_FLAGS: &[&str] = &[
    "detach",
    "d",
    "keep",
    "no-subreaper",
    "no-pivot",
    "no-new-keyring",
    "help",
    "h",
];

/// What the wrapper needs to know about one runtime command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    pub command: Option<String>,
    /// `--bundle`/`-b` of create/run; `None` = the working directory.
    pub bundle: Option<PathBuf>,
    /// The last positional argument of create/run.
    pub container_id: Option<String>,
    /// The runtime's `--log` file and `--log-format`, where errors must go.
    pub log: Option<PathBuf>,
    pub log_format: Option<String>,
    /// Flags the wrapper does not know. With one of these it cannot be sure
    /// where the bundle is, so it refuses to edit (see [`prepare_bundle`]).
    pub unknown_flags: Vec<String>,
}

impl Invocation {
    /// Only these two create a container from a bundle's config.json.
    pub fn edits_bundle(&self) -> bool {
        matches!(self.command.as_deref(), Some("create" | "run"))
    }

    /// The spec file the runtime will read: `<bundle>/config.json`, relative
    /// to the working directory like runc's own `chdir(bundle)`.
    pub fn config_path(&self) -> PathBuf {
        match &self.bundle {
            Some(b) if !b.as_os_str().is_empty() => b.join("config.json"),
            _ => PathBuf::from("config.json"),
        }
    }
}

enum Token<'a> {
    /// `--`: everything after it is positional.
    EndOfFlags,
    Positional,
    Flag {
        name: &'a str,
        value: Option<&'a OsStr>,
    },
}

/// Go's flag syntax (runc uses it through urfave/cli): `-name`, `--name`,
/// `-name=value`, `--name=value`; a lone `-` is positional.
fn classify(arg: &OsStr) -> Token<'_> {
    let bytes = arg.as_bytes();
    if bytes == b"--" {
        return Token::EndOfFlags;
    }
    if bytes.len() < 2 || bytes[0] != b'-' {
        return Token::Positional;
    }
    let body = bytes.strip_prefix(b"--").unwrap_or(&bytes[1..]);
    let (name, value) = match body.iter().position(|b| *b == b'=') {
        Some(i) => (&body[..i], Some(OsStr::from_bytes(&body[i + 1..]))),
        None => (body, None),
    };
    // A name that is not UTF-8 is no flag anyone knows; keep it as unknown.
    let name = std::str::from_utf8(name).unwrap_or("\u{fffd}");
    Token::Flag { name, value }
}

/// Reads runc's command line (without argv0). Never fails: whatever it does
/// not understand is left for the real runtime to judge.
pub fn parse_args(args: &[OsString]) -> Invocation {
    let mut inv = Invocation::default();
    let mut i = 0;
    while i < args.len() {
        match classify(&args[i]) {
            Token::EndOfFlags => {
                i += 1;
                break;
            }
            Token::Positional => break,
            Token::Flag { name, value } => {
                let value = if GLOBAL_VALUE_FLAGS.contains(&name) {
                    value.or_else(|| {
                        i += 1;
                        args.get(i).map(OsString::as_os_str)
                    })
                } else if GLOBAL_BOOL_FLAGS.contains(&name) {
                    None
                } else {
                    inv.unknown_flags.push(name.to_owned());
                    // Guess: an unknown flag without `=` takes a value unless
                    // a subcommand follows it.
                    let next_is_command = args
                        .get(i + 1)
                        .and_then(|a| a.to_str())
                        .is_some_and(|a| SUBCOMMANDS.contains(&a));
                    if value.is_none() && !next_is_command {
                        i += 1;
                    }
                    None
                };
                match name {
                    "log" => inv.log = value.map(PathBuf::from),
                    "log-format" => inv.log_format = value.map(|v| v.to_string_lossy().into()),
                    _ => {}
                }
            }
        }
        i += 1;
    }
    let Some(command) = args.get(i) else {
        return inv;
    };
    inv.command = Some(command.to_string_lossy().into_owned());
    if inv.edits_bundle() {
        parse_create_args(&args[i + 1..], &mut inv);
    }
    inv
}

/// Flags may come after positionals: runc's CLI library moves them to the
/// front before parsing, up to a `--`.
fn parse_create_args(args: &[OsString], inv: &mut Invocation) {
    let mut positional: Vec<&OsString> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match classify(&args[i]) {
            Token::EndOfFlags => {
                positional.extend(&args[i + 1..]);
                break;
            }
            Token::Positional => positional.push(&args[i]),
            Token::Flag { name, value } => {
                if CREATE_VALUE_FLAGS.contains(&name) {
                    let value = value.or_else(|| {
                        i += 1;
                        args.get(i).map(OsString::as_os_str)
                    });
                    if matches!(name, "bundle" | "b") {
                        inv.bundle = value.map(PathBuf::from);
                    }
                } else if !CREATE_BOOL_FLAGS.contains(&name) {
                    inv.unknown_flags.push(name.to_owned());
                }
            }
        }
        i += 1;
    }
    inv.container_id = positional
        .last()
        .map(|id| id.to_string_lossy().into_owned());
}

/// Where a message goes: the runtime's `--log` file, in runc's format,
/// signed by who speaks (`oci-tpm-runtime`, or the hook when it reports
/// through its runtime).
#[derive(Debug, Clone)]
pub struct RuntimeLog {
    file: Option<PathBuf>,
    json: bool,
    speaker: &'static str,
}

impl Default for RuntimeLog {
    fn default() -> Self {
        Self {
            file: None,
            json: false,
            speaker: PREFIX,
        }
    }
}

impl RuntimeLog {
    pub fn new(inv: &Invocation) -> Self {
        Self::for_speaker(inv, PREFIX)
    }

    pub fn for_speaker(inv: &Invocation, speaker: &'static str) -> Self {
        Self {
            file: inv.log.clone(),
            json: inv.log_format.as_deref() == Some("json"),
            speaker,
        }
    }

    /// Errors go everywhere a user might look, as runc's own do.
    pub fn error(&self, msg: &str) {
        eprintln!("{}: {msg}", self.speaker);
        self.append("error", msg);
    }

    /// Warnings go to the log file; to stderr only when there is none, since
    /// stderr of `create` can be the container's own output.
    pub fn warn(&self, msg: &str) {
        if !self.append("warning", msg) {
            eprintln!("{}: {msg}", self.speaker);
        }
    }

    pub fn info(&self, msg: &str) {
        self.append("info", msg);
    }

    /// Appends one line; false when there is no log file or it cannot be
    /// written (a message must never fail the container).
    pub fn append(&self, level: &str, msg: &str) -> bool {
        let Some(path) = &self.file else {
            return false;
        };
        let msg = format!("{}: {msg}", self.speaker);
        let time = rfc3339(SystemTime::now());
        let line = if self.json {
            serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
        } else {
            // logrus's text format; JSON string escaping is close to Go's %q.
            format!(
                "time={} level={level} msg={}",
                serde_json::Value::from(time),
                serde_json::Value::from(msg)
            )
        };
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"))
            .is_ok()
    }
}

/// UTC timestamp as Go's `time.Time` parses it from JSON (RFC 3339).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// The identity of a file, to recognise this very program under another name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// The running executable (inode comparison also catches hard links and
    /// symlinks that canonical paths would not).
    pub fn current_exe() -> Option<Self> {
        Self::of(Path::new("/proc/self/exe"))
    }
}

/// Used when PATH is unset, as execvp does.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds the real runtime: `name` as a path when it has a slash, else the
/// first executable of that name on `path_var`. Never this program itself:
/// a wrapper installed as `runc` early on PATH would exec itself forever.
pub fn resolve_runtime(
    name: &str,
    path_var: Option<&OsStr>,
    me: Option<FileId>,
) -> anyhow::Result<PathBuf> {
    let is_me = |p: &Path| me.is_some() && FileId::of(p) == me;
    if name.contains('/') {
        let path = PathBuf::from(name);
        if !is_executable(&path) {
            bail!("the OCI runtime {name} (policy [runtime] path) is not an executable file; install it or set [runtime] path to the real runtime");
        }
        if is_me(&path) {
            bail!("the OCI runtime {name} (policy [runtime] path) is {PREFIX} itself; set [runtime] path to the real runtime, e.g. /usr/bin/runc");
        }
        return Ok(path);
    }
    let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut skipped_self = None;
    // An empty PATH entry means the working directory, which here is the
    // container's bundle: never look there.
    for dir in std::env::split_paths(path_var).filter(|d| d.is_absolute()) {
        let candidate = dir.join(name);
        if !is_executable(&candidate) {
            continue;
        }
        if is_me(&candidate) {
            skipped_self.get_or_insert(candidate);
            continue;
        }
        return Ok(candidate);
    }
    let also = skipped_self
        .map(|p| format!(" (only {PREFIX} itself, at {})", p.display()))
        .unwrap_or_default();
    Err(anyhow!(
        "the OCI runtime {name:?} (policy [runtime] path) is not on PATH {}{also}; install runc or set [runtime] path",
        path_var.to_string_lossy()
    ))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What the wrapper did to a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleOutcome {
    /// Nothing asked for, or the command line had no container id.
    Untouched,
    /// A TPM was refused but not required: the container starts without one.
    Skipped,
    /// The grant is in the spec; empty changes = it already was.
    Granted(Changes),
}

/// The `create`/`run` part: decide, and put the grant into config.json. On
/// error the file is exactly as it was.
pub fn prepare_bundle(
    inv: &Invocation,
    policy: &Policy,
    host: &HostRoots,
    log: &RuntimeLog,
) -> anyhow::Result<BundleOutcome> {
    let Some(id) = &inv.container_id else {
        // The runtime itself will reject a create without an id.
        return Ok(BundleOutcome::Untouched);
    };
    let config = inv.config_path();
    let where_ = || format!("container {id}, bundle {}", bundle_display(inv));
    let mut file = match SpecFile::read(&config) {
        Ok(f) => f,
        // Unsure where the bundle is: leave judging it to the runtime.
        Err(_) if !inv.unknown_flags.is_empty() => return Ok(BundleOutcome::Untouched),
        Err(e) => return Err(e.context(where_())),
    };
    let subject = Subject {
        id: id.clone(),
        annotations: file.annotations().with_context(where_)?,
        ..Default::default()
    };
    let grant = match decide(&subject, policy, host) {
        Ok(None) => return Ok(BundleOutcome::Untouched),
        Ok(Some(grant)) => grant,
        Err(refusal) if !refusal.required => {
            log.warn(&format!(
                "{refusal}; starting it without a TPM as oci-tpm-hook/required=false allows"
            ));
            return Ok(BundleOutcome::Skipped);
        }
        Err(refusal) => return Err(refusal.error),
    };
    let who = subject.describe();
    if !inv.unknown_flags.is_empty() {
        bail!(
            "{who} asks for a TPM, but the runtime command line has flags {PREFIX} does not know ({}), so it cannot be sure which config.json the runtime will read; refusing to start the container without its TPM",
            inv.unknown_flags.join(", ")
        );
    }
    if !is_executable(&policy.hook.path) {
        bail!(
            "{who} asks for a TPM, but the hook {} (policy [hook] path) that checks it is not an executable file; install oci-tpm-hook there or set [hook] path",
            policy.hook.path.display()
        );
    }
    let hook = HookEntry::for_grant(
        &policy.hook.path,
        &grant,
        HookEntry::policy_env(&resolve_path(None)),
    );
    let changes = file
        .apply_and_write(&grant, &hook)
        .with_context(|| format!("{who}: bundle {}", bundle_display(inv)))?;
    log.info(&format!(
        "{who}: host {} (c {}:{}) at {}; added {changes}",
        grant.device.name,
        grant.device.major,
        grant.device.minor,
        grant.container_path.display(),
    ));
    Ok(BundleOutcome::Granted(changes))
}

fn bundle_display(inv: &Invocation) -> String {
    match &inv.bundle {
        Some(b) if !b.as_os_str().is_empty() => b.display().to_string(),
        _ => std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| ".".into()),
    }
}

/// Everything before the exec: policy, runtime, bundle. The runtime is found
/// first so that a missing runtime leaves config.json untouched.
fn prepare(inv: &Invocation, log: &RuntimeLog) -> anyhow::Result<PathBuf> {
    let policy = Policy::load(&resolve_path(None))?;
    let runtime = resolve_runtime(
        &policy.runtime.path,
        std::env::var_os("PATH").as_deref(),
        FileId::current_exe(),
    )?;
    if inv.edits_bundle() {
        prepare_bundle(inv, &policy, &HostRoots::default(), log)?;
    }
    Ok(runtime)
}

/// The whole wrapper: returns only on error (the exit code), else it has
/// become the real runtime with the original arguments.
pub fn run(args: Vec<OsString>) -> i32 {
    let inv = parse_args(&args);
    let log = RuntimeLog::new(&inv);
    let runtime = match prepare(&inv, &log) {
        Ok(r) => r,
        Err(e) => {
            log.error(&format!("{e:#}"));
            return 1;
        }
    };
    let err = std::process::Command::new(&runtime).args(&args).exec();
    log.error(&format!("cannot execute {}: {err}", runtime.display()));
    // 127/126 as a shell would: not found / not executable.
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    fn parse(s: &[&str]) -> Invocation {
        parse_args(&args(s))
    }

    #[test]
    fn containerd_shim_command_lines() {
        // What containerd's runc shim sends for docker.
        let inv = parse(&[
            "--root",
            "/run/containerd/runc/moby",
            "--log",
            "/run/containerd/io.containerd.runtime.v2.task/moby/abc/log.json",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "create",
            "--bundle",
            "/run/containerd/io.containerd.runtime.v2.task/moby/abc",
            "--pid-file",
            "/run/containerd/io.containerd.runtime.v2.task/moby/abc/init.pid",
            "abc",
        ]);
        assert_eq!(inv.command.as_deref(), Some("create"));
        assert_eq!(
            inv.bundle.as_deref(),
            Some(Path::new(
                "/run/containerd/io.containerd.runtime.v2.task/moby/abc"
            ))
        );
        assert_eq!(inv.container_id.as_deref(), Some("abc"));
        assert_eq!(inv.log_format.as_deref(), Some("json"));
        assert!(inv.log.unwrap().ends_with("abc/log.json"));
        assert!(inv.unknown_flags.is_empty());
    }

    #[test]
    fn bundle_flag_forms() {
        for form in [
            &["--bundle", "/b"][..],
            &["--bundle=/b"],
            &["-bundle", "/b"],
            &["-bundle=/b"],
            &["-b", "/b"],
            &["-b=/b"],
            &["--b", "/b"],
            &["--b=/b"],
        ] {
            for command in ["create", "run"] {
                let mut a = vec![command];
                a.extend_from_slice(form);
                a.push("id1");
                let inv = parse(&a);
                assert_eq!(inv.bundle.as_deref(), Some(Path::new("/b")), "{a:?}");
                assert_eq!(inv.container_id.as_deref(), Some("id1"), "{a:?}");
                assert_eq!(inv.config_path(), Path::new("/b/config.json"));
                // Flags after the id work too: runc moves them to the front.
                let mut after = vec![command, "id1"];
                after.extend_from_slice(form);
                let inv = parse(&after);
                assert_eq!(inv.bundle.as_deref(), Some(Path::new("/b")), "{after:?}");
                assert_eq!(inv.container_id.as_deref(), Some("id1"), "{after:?}");
            }
        }
    }

    #[test]
    fn default_bundle_is_the_working_directory() {
        let inv = parse(&["run", "-d", "--console-socket", "/s", "c1"]);
        assert_eq!(inv.bundle, None);
        assert_eq!(inv.config_path(), Path::new("config.json"));
        assert_eq!(inv.container_id.as_deref(), Some("c1"));
        assert_eq!(
            parse(&["create", "--bundle=", "c1"]).config_path(),
            Path::new("config.json")
        );
    }

    #[test]
    fn global_flags_with_and_without_values() {
        let inv = parse(&[
            "--debug",
            "--log=/l",
            "--log-format",
            "text",
            "-root",
            "/r",
            "--criu",
            "create",
            "--rootless=false",
            "--systemd-cgroup",
            "run",
            "-b",
            "/b",
            "x",
        ]);
        // `--criu create` is criu's value, not the subcommand.
        assert_eq!(inv.command.as_deref(), Some("run"));
        assert_eq!(inv.log.as_deref(), Some(Path::new("/l")));
        assert_eq!(inv.log_format.as_deref(), Some("text"));
        assert_eq!(inv.bundle.as_deref(), Some(Path::new("/b")));
        assert!(inv.unknown_flags.is_empty());

        // crun's global flags.
        let inv = parse(&[
            "--cgroup-manager",
            "systemd",
            "--log-level=debug",
            "create",
            "c",
        ]);
        assert_eq!(inv.command.as_deref(), Some("create"));
        assert!(inv.unknown_flags.is_empty());
    }

    #[test]
    fn values_that_look_like_flags_or_commands() {
        // A value flag takes the next word whatever it looks like, as Go's does.
        let inv = parse(&["--root", "run", "create", "--pid-file", "--bundle", "c"]);
        assert_eq!(inv.command.as_deref(), Some("create"));
        assert_eq!(inv.bundle, None);
        assert_eq!(inv.container_id.as_deref(), Some("c"));
    }

    #[test]
    fn double_dash() {
        // After `--` everything is positional; the id is the last one.
        let inv = parse(&["create", "-b", "/b", "--", "--bundle"]);
        assert_eq!(inv.bundle.as_deref(), Some(Path::new("/b")));
        assert_eq!(inv.container_id.as_deref(), Some("--bundle"));
        // A global `--` ends global flags; the next word is the subcommand.
        let inv = parse(&["--debug", "--", "run", "c"]);
        assert_eq!(inv.command.as_deref(), Some("run"));
        assert_eq!(inv.container_id.as_deref(), Some("c"));
        let inv = parse(&["--", "--debug"]);
        assert_eq!(inv.command.as_deref(), Some("--debug"));
        assert!(!inv.edits_bundle());
    }

    #[test]
    fn other_subcommands_pass_through() {
        for a in [
            &["start", "c"][..],
            &["--root", "/r", "delete", "--force", "c"],
            &["state", "c"],
            &["kill", "c", "9"],
            &["exec", "--process", "/p.json", "-d", "c"],
            &["features"],
            &["--version"],
            &["restore", "--bundle", "/b", "c"],
            &["frobnicate", "--bundle", "/b", "c"],
            &[],
        ] {
            let inv = parse(a);
            assert!(!inv.edits_bundle(), "{a:?}");
            assert_eq!(inv.bundle, None, "{a:?}");
        }
        assert_eq!(parse(&[]).command, None);
    }

    #[test]
    fn unknown_flags_are_noted() {
        let inv = parse(&["--frob", "create", "c"]);
        assert_eq!(inv.command.as_deref(), Some("create"));
        assert_eq!(inv.unknown_flags, vec!["frob"]);
        let inv = parse(&["--frob", "v", "create", "c"]);
        assert_eq!(inv.command.as_deref(), Some("create"));
        let inv = parse(&["create", "--config", "/x.json", "-b", "/b", "c"]);
        assert_eq!(inv.unknown_flags, vec!["config"]);
        assert!(parse(&[
            "create",
            "--no-pivot",
            "--keep",
            "-d",
            "--preserve-fds=2",
            "c"
        ])
        .unknown_flags
        .is_empty());
    }

    #[test]
    fn non_utf8_arguments() {
        let bundle = OsString::from_vec(b"/b\xff".to_vec());
        let inv = parse_args(&[
            OsString::from("create"),
            OsString::from("-b"),
            bundle.clone(),
            OsString::from("c"),
        ]);
        assert_eq!(inv.bundle.as_deref(), Some(Path::new(&bundle)));
    }

    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(0, 5);
        assert_eq!(rfc3339(t), "1970-01-01T00:00:00.000000005Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_251_199); // leap year
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.000000000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn runtime_resolution_never_picks_itself() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a");
        let second = dir.path().join("b");
        for d in [&first, &second] {
            std::fs::create_dir(d).unwrap();
            let f = d.join("runc");
            std::fs::write(&f, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = std::env::join_paths([&first, &second]).unwrap();
        let me = FileId::of(&first.join("runc"));
        assert_eq!(
            resolve_runtime("runc", Some(&path), None).unwrap(),
            first.join("runc")
        );
        assert_eq!(
            resolve_runtime("runc", Some(&path), me).unwrap(),
            second.join("runc")
        );
        // A symlink to itself is still itself.
        std::fs::remove_file(second.join("runc")).unwrap();
        std::os::unix::fs::symlink(first.join("runc"), second.join("runc")).unwrap();
        let err = resolve_runtime("runc", Some(&path), me)
            .unwrap_err()
            .to_string();
        assert!(err.contains("itself"), "{err}");
        let explicit = second.join("runc");
        let err = resolve_runtime(explicit.to_str().unwrap(), Some(&path), me)
            .unwrap_err()
            .to_string();
        assert!(err.contains("itself"), "{err}");

        // Missing, not executable, relative PATH entries.
        let err = resolve_runtime("nope", Some(&path), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"nope\"") && err.contains("[runtime] path"),
            "{err}"
        );
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        assert!(resolve_runtime(plain.to_str().unwrap(), None, None).is_err());
        assert!(resolve_runtime("runc", Some(OsStr::new("a:b")), None).is_err());
    }
}
