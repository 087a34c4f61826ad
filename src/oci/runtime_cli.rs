//! An OCI runtime's command line, as runc (and crun) take it: which
//! subcommand, which bundle, which `--log` file.
//!
//! The docker runtime wrapper reads it to find the bundle it must edit; the
//! hook reads its runtime's to report through the runtime's log. Pure.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

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

/// Flags of `exec` that take a value (runc 1.1 and 1.2).
const EXEC_VALUE_FLAGS: &[&str] = &[
    "process",
    "p",
    "console-socket",
    "pidfd-socket",
    "cwd",
    "env",
    "e",
    "user",
    "u",
    "additional-gids",
    "g",
    "process-label",
    "apparmor",
    "cap",
    "c",
    "preserve-fds",
    "pid-file",
    "cgroup",
];

/// Flags of `exec` that take none.
const EXEC_BOOL_FLAGS: &[&str] = &[
    "tty",
    "t",
    "detach",
    "d",
    "no-new-privs",
    "ignore-paused",
    "help",
    "h",
];

/// What the wrapper needs to know about one runtime command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    pub command: Option<String>,
    /// `--bundle`/`-b` of create/run; `None` = the working directory.
    pub bundle: Option<PathBuf>,
    /// The last positional argument of create/run; the first of exec.
    pub container_id: Option<String>,
    /// The runtime's `--log` file and `--log-format`, where errors must go.
    pub log: Option<PathBuf>,
    pub log_format: Option<String>,
    /// `--process`/`-p` of exec: the JSON file with the process to start.
    pub process: Option<PathBuf>,
    /// The arguments before the subcommand (`--root`, `--log`, ...), for a
    /// `state` query that must see the same containers.
    pub global_args: Vec<OsString>,
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
    inv.global_args = args[..i].to_vec();
    if inv.edits_bundle() {
        parse_create_args(&args[i + 1..], &mut inv);
    } else if inv.command.as_deref() == Some("exec") {
        parse_exec_args(&args[i + 1..], &mut inv);
    }
    inv
}

/// The flags a subcommand takes, and whether runc reads flags that come
/// after its positionals.
struct SubcommandFlags {
    value: &'static [&'static str],
    boolean: &'static [&'static str],
    /// create/run: runc's CLI library moves flags to the front (up to a
    /// `--`). exec: it does not (the command's own arguments follow the id),
    /// so flags end at the first positional.
    flags_after_positionals: bool,
}

const CREATE_FLAGS: SubcommandFlags = SubcommandFlags {
    value: CREATE_VALUE_FLAGS,
    boolean: CREATE_BOOL_FLAGS,
    flags_after_positionals: true,
};

const EXEC_FLAGS: SubcommandFlags = SubcommandFlags {
    value: EXEC_VALUE_FLAGS,
    boolean: EXEC_BOOL_FLAGS,
    flags_after_positionals: false,
};

/// A subcommand's arguments, read by its flags.
#[derive(Default)]
struct SubcommandArgs<'a> {
    /// (flag name, value) of every known flag that takes one.
    values: Vec<(&'a str, Option<&'a OsStr>)>,
    positional: Vec<&'a OsString>,
    unknown: Vec<String>,
}

impl<'a> SubcommandArgs<'a> {
    fn value(&self, names: &[&str]) -> Option<PathBuf> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| names.contains(n))
            .and_then(|(_, v)| v.map(PathBuf::from))
    }
}

/// Reads a subcommand's arguments. An unknown flag without flags after the
/// positionals leaves the parse uncertain (does it take a value?): the scan
/// stops there, with no positional.
fn scan<'a>(args: &'a [OsString], flags: &SubcommandFlags) -> SubcommandArgs<'a> {
    let mut out = SubcommandArgs::default();
    let mut i = 0;
    while i < args.len() {
        match classify(&args[i]) {
            Token::EndOfFlags => {
                out.positional.extend(&args[i + 1..]);
                break;
            }
            Token::Positional if !flags.flags_after_positionals => {
                out.positional.extend(&args[i..]);
                break;
            }
            Token::Positional => out.positional.push(&args[i]),
            Token::Flag { name, value } => {
                if flags.value.contains(&name) {
                    let value = value.or_else(|| {
                        i += 1;
                        args.get(i).map(OsString::as_os_str)
                    });
                    out.values.push((name, value));
                } else if !flags.boolean.contains(&name) {
                    out.unknown.push(name.to_owned());
                    if !flags.flags_after_positionals {
                        return out;
                    }
                }
            }
        }
        i += 1;
    }
    out
}

/// `create`/`run`: the bundle, and the container id (the last positional).
fn parse_create_args(args: &[OsString], inv: &mut Invocation) {
    let scanned = scan(args, &CREATE_FLAGS);
    inv.bundle = scanned.value(&["bundle", "b"]);
    inv.container_id = scanned
        .positional
        .last()
        .map(|id| id.to_string_lossy().into_owned());
    inv.unknown_flags.extend(scanned.unknown);
}

/// `exec [flags] <container-id> [command...]`: the process file, and the
/// id (the first positional).
fn parse_exec_args(args: &[OsString], inv: &mut Invocation) {
    let scanned = scan(args, &EXEC_FLAGS);
    inv.process = scanned.value(&["process", "p"]);
    inv.container_id = scanned
        .positional
        .first()
        .map(|id| id.to_string_lossy().into_owned());
    inv.unknown_flags.extend(scanned.unknown);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;
    use std::path::Path;

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
    fn exec_command_lines() {
        // What containerd's runc shim sends for `docker exec` and health checks.
        let inv = parse(&[
            "--root",
            "/run/docker/runtime-runc/moby",
            "--log",
            "/run/containerd/io.containerd.runtime.v2.task/moby/abc/log.json",
            "--log-format",
            "json",
            "exec",
            "--process",
            "/tmp/runc-process123",
            "--detach",
            "--pid-file",
            "/run/containerd/io.containerd.runtime.v2.task/moby/abc/e1.pid",
            "abc",
        ]);
        assert_eq!(inv.command.as_deref(), Some("exec"));
        assert_eq!(
            inv.process.as_deref(),
            Some(Path::new("/tmp/runc-process123"))
        );
        assert_eq!(inv.container_id.as_deref(), Some("abc"));
        assert_eq!(inv.global_args.len(), 6);
        assert_eq!(
            inv.global_args[1],
            OsString::from("/run/docker/runtime-runc/moby")
        );
        assert!(!inv.edits_bundle());

        let inv = parse(&["exec", "-p=/p.json", "-t", "c1", "sh", "-c", "x"]);
        assert_eq!(inv.process.as_deref(), Some(Path::new("/p.json")));
        assert_eq!(inv.container_id.as_deref(), Some("c1"));

        // A flag it does not know: unsure what is the id, so none.
        let inv = parse(&["exec", "--frobnicate", "--process", "/p.json", "c1"]);
        assert_eq!(inv.container_id, None);
        assert_eq!(inv.unknown_flags, vec!["frobnicate".to_string()]);
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
}
