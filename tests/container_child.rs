//! The child that acts as the container: answers, errors, deadlines, its
//! standard descriptors, taking on the container process's credentials,
//! and helper programs run the same way.
//!
//! Runs without the test harness (see Cargo.toml): forking needs a
//! single-threaded process. Needs root (entering a mount namespace, taking
//! other ids); without it every case is skipped loudly, and under CI that
//! is a failure.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use oci_tpm_hook::core::identity::ProcessIdentity;
use oci_tpm_hook::privileged::child;
use oci_tpm_hook::privileged::container::ContainerProcess;
use oci_tpm_hook::privileged::credentials::{self, RanAs};

fn me() -> ContainerProcess {
    ContainerProcess::open(std::process::id() as i32).unwrap()
}

fn answer_comes_back() {
    let v: Vec<u32> = me()
        .run(Duration::from_secs(5), |p| {
            p.enter_mount_namespace()?;
            Ok(vec![1, 2, 3])
        })
        .unwrap();
    assert_eq!(v, vec![1, 2, 3]);
}

fn errors_come_back_with_context() {
    let err = me()
        .run::<u8, _>(Duration::from_secs(5), |_| {
            Err(anyhow!("inner").context("outer"))
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "outer: inner");
}

fn a_hung_child_is_killed_at_the_deadline() {
    let started = Instant::now();
    let err = me()
        .run::<u8, _>(Duration::from_millis(300), |_| {
            std::thread::sleep(Duration::from_secs(30));
            Ok(1)
        })
        .unwrap_err();
    assert!(err.to_string().contains("no answer"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// The child must not hold the runtime's pipes: its 0, 1 and 2 are
/// /dev/null (1:3), whatever the parent's were.
fn the_child_holds_no_inherited_stdio() {
    let rdevs: Vec<(u32, u32)> = me()
        .run(Duration::from_secs(5), |_| {
            Ok((0..=2)
                .map(|fd| {
                    let m = std::fs::metadata(format!("/proc/self/fd/{fd}")).unwrap();
                    (
                        nix::sys::stat::major(m.rdev()) as u32,
                        nix::sys::stat::minor(m.rdev()) as u32,
                    )
                })
                .collect())
        })
        .unwrap();
    assert_eq!(rdevs, vec![(1, 3); 3]);
}

/// A helper program answers on its standard output; one that cannot be
/// run, says nothing or hangs gives a clear error in time.
fn a_program_answers_or_is_refused_in_time() {
    let sh = std::path::Path::new("/bin/sh");
    let five: u32 =
        child::run_program(Duration::from_secs(5), sh, &["-c", r#"echo '{"Ok":5}'"#]).unwrap();
    assert_eq!(five, 5);
    let err = child::run_program::<u32, _>(
        Duration::from_secs(5),
        sh,
        &["-c", r#"echo '{"Err":"no unit"}'"#],
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "no unit");
    let missing = std::path::Path::new("/nonexistent/oci-tpm-systemd");
    let err = child::run_program::<u32, &str>(Duration::from_secs(5), missing, &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot run /nonexistent/oci-tpm-systemd"),
        "{err}"
    );
    let err =
        child::run_program::<u32, _>(Duration::from_secs(5), sh, &["-c", "exit 1"]).unwrap_err();
    assert!(err.to_string().contains("without an answer"), "{err}");
    let started = Instant::now();
    let err = child::run_program::<u32, _>(Duration::from_millis(300), sh, &["-c", "sleep 30"])
        .unwrap_err();
    assert!(err.to_string().contains("no answer"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

fn user(uid: u32, gid: u32, extra: &[u32], effective: &[&str]) -> ProcessIdentity {
    ProcessIdentity {
        uid,
        gid,
        additional_gids: extra.to_vec(),
        umask: Some(0o027),
        effective_caps: effective.iter().map(|c| c.to_string()).collect(),
        permitted_caps: effective.iter().map(|c| c.to_string()).collect(),
    }
}

/// After `assume`, the child is that user: its ids, its groups, only the
/// spec's capabilities, and a root-owned 0600 file is closed to it.
fn assume_takes_ids_groups_and_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "x").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let probe = secret.clone();
    let (ran, opened, caps, umask): (RanAs, bool, BTreeSet<String>, u32) = me()
        .run(Duration::from_secs(5), move |_| {
            let ran = credentials::assume(&user(1000, 1001, &[102, 5000], &[]), None)?;
            let opened = std::fs::File::open(&probe).is_ok();
            let caps = caps::read(None, caps::CapSet::Effective)?
                .into_iter()
                .map(|c| c.to_string())
                .collect();
            let umask = nix::sys::stat::umask(nix::sys::stat::Mode::empty()).bits();
            Ok((ran, opened, caps, umask))
        })
        .unwrap();
    assert_eq!(
        ran,
        RanAs {
            uid: 1000,
            gid: 1001,
            groups: vec![102, 5000]
        }
    );
    assert_eq!(ran.to_string(), "uid=1000 gid=1001 groups=102,5000");
    assert!(
        !opened,
        "uid 1000 without CAP_DAC_OVERRIDE opened a 0600 root file"
    );
    assert!(caps.is_empty(), "{caps:?}");
    assert_eq!(umask, 0o027);

    // Root in the spec without CAP_DAC_OVERRIDE: only what the spec grants.
    let (root_caps, root_opened): (BTreeSet<String>, bool) = me()
        .run(Duration::from_secs(5), move |_| {
            credentials::assume(&user(0, 0, &[], &["CAP_CHOWN", "CAP_NO_SUCH_THING"]), None)?;
            let caps = caps::read(None, caps::CapSet::Effective)?
                .into_iter()
                .map(|c| c.to_string())
                .collect();
            Ok((caps, std::fs::File::open(&secret).is_ok()))
        })
        .unwrap();
    assert_eq!(
        root_caps,
        BTreeSet::from(["CAP_CHOWN".to_string()]),
        "unknown names are skipped, nothing else is kept"
    );
    assert!(root_opened, "root owns the file");
}

fn main() -> ExitCode {
    let tests: [(&str, fn()); 6] = [
        ("answer_comes_back", answer_comes_back),
        (
            "errors_come_back_with_context",
            errors_come_back_with_context,
        ),
        (
            "a_hung_child_is_killed_at_the_deadline",
            a_hung_child_is_killed_at_the_deadline,
        ),
        (
            "the_child_holds_no_inherited_stdio",
            the_child_holds_no_inherited_stdio,
        ),
        (
            "a_program_answers_or_is_refused_in_time",
            a_program_answers_or_is_refused_in_time,
        ),
        (
            "assume_takes_ids_groups_and_capabilities",
            assume_takes_ids_groups_and_capabilities,
        ),
    ];
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: container_child needs root (mount namespaces, other ids)");
        return if std::env::var_os("CI").is_some() {
            eprintln!("error: CI runs as root; these tests must run there");
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let mut failed = 0;
    for (name, test) in tests {
        match std::panic::catch_unwind(test) {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!(
        "container_child: {} passed, {failed} failed",
        tests.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
