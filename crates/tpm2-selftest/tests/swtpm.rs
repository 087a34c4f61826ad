//! The TPM protocol code against a real software TPM (swtpm).
//!
//! Each test starts its own `swtpm socket` in a temporary directory and
//! talks raw TPM 2.0 commands to it over its unix socket. Without swtpm the
//! tests say so loudly and pass — unless `CI` is set, where swtpm is
//! installed and its absence is a failure.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tpm2_selftest::proto;
use tpm2_selftest::selftest::SelfTestFailure;
use tpm2_selftest::{
    run_self_test, RcKind, ResponseCode, SelfTestLevel, SelfTestStep, SocketTransport, Transport,
    TransportError,
};

/// Generous: swtpm on a loaded CI machine can be slow to answer a full test.
const TIMEOUT: Duration = Duration::from_secs(10);

fn find_swtpm() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("swtpm"))
        .find(|candidate| candidate.is_file())
}

/// One running swtpm, killed (by its own pid) and reaped when dropped —
/// also when a test fails.
struct Swtpm {
    child: Child,
    server: PathBuf,
    _state: tempfile::TempDir,
}

impl Swtpm {
    /// Starts swtpm with the given `--flags` value (`None`: no flags), or
    /// returns `None` if swtpm is not installed and this is not CI.
    fn start(flags: Option<&str>) -> Option<Self> {
        let Some(swtpm) = find_swtpm() else {
            if std::env::var_os("CI").is_some() {
                panic!("swtpm not found, and CI is set: CI must install swtpm");
            }
            // Written to stderr directly: the test harness hides eprintln!
            // output of passing tests, and a skip must not go unnoticed.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: swtpm not found (apt-get install swtpm)"
            );
            return None;
        };
        let state = tempfile::tempdir().expect("temporary directory");
        let server = state.path().join("server.sock");
        let ctrl = state.path().join("ctrl.sock");
        let mut command = Command::new(swtpm);
        command
            .arg("socket")
            .arg("--tpm2")
            .arg("--server")
            .arg(format!("type=unixio,path={}", server.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", ctrl.display()))
            .arg("--tpmstate")
            .arg(format!("dir={}", state.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(flags) = flags {
            command.arg("--flags").arg(flags);
        }
        let child = command.spawn().expect("starting swtpm");
        let swtpm = Swtpm {
            child,
            server,
            _state: state,
        };
        swtpm.wait_until_listening();
        Some(swtpm)
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.server.exists() {
            assert!(
                Instant::now() < deadline,
                "swtpm did not create its socket in 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn connect(&self) -> SocketTransport {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match UnixStream::connect(&self.server) {
                Ok(stream) => return SocketTransport::from_stream(stream).unwrap(),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(err) => panic!("connecting to swtpm: {err}"),
            }
        }
    }

    fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t")
    }

    /// Sends a signal to this swtpm only.
    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with the pid of our own child, which has not been
        // reaped yet (we hold its `Child`), so the pid cannot be reused.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flags that make swtpm behave like a TPM the kernel has started.
const STARTED: Option<&str> = Some("not-need-init,startup-clear");

#[test]
fn quick_and_full_self_test_pass_on_swtpm() {
    let Some(swtpm) = Swtpm::start(STARTED) else {
        return;
    };
    let mut transport = swtpm.connect();

    let quick = run_self_test(&mut transport, SelfTestLevel::Quick, TIMEOUT)
        .unwrap_or_else(|err| panic!("{err}"));
    eprintln!("{quick}");
    assert_eq!(quick.level, SelfTestLevel::Quick);
    assert_eq!(quick.family.as_deref(), Some("2.0"));
    let manufacturer = quick.manufacturer.as_deref().unwrap_or_default();
    assert!(!manufacturer.is_empty(), "manufacturer: {quick:?}");
    let firmware = quick.firmware.as_deref().unwrap_or_default();
    assert_eq!(firmware.split('.').count(), 4, "firmware: {firmware}");
    assert_eq!(quick.random_bytes, 16);
    assert_eq!(quick.full_test_result, None);

    let full = run_self_test(&mut transport, SelfTestLevel::Full, TIMEOUT)
        .unwrap_or_else(|err| panic!("{err}"));
    eprintln!("{full}");
    assert_eq!(full.full_test_result, Some(0));
    assert_eq!(full.manufacturer, quick.manufacturer);
    assert_eq!(full.random_bytes, 16);
}

#[test]
fn documented_command_bytes_get_well_formed_answers() {
    let Some(swtpm) = Swtpm::start(STARTED) else {
        return;
    };
    let mut transport = swtpm.connect();
    let deadline = || Instant::now() + TIMEOUT;

    let bytes = transport
        .transact(&proto::get_capability_tpm_properties(0x100, 1), deadline())
        .unwrap();
    let response = proto::parse_response(&bytes).unwrap();
    assert!(response.code.is_success(), "{}", response.code);
    let properties = proto::parse_tpm_properties(response.parameters().unwrap()).unwrap();
    assert_eq!(properties.get(0x100), Some(0x322E_3000), "\"2.0\\0\"");

    let bytes = transport
        .transact(&proto::get_random(16), deadline())
        .unwrap();
    let response = proto::parse_response(&bytes).unwrap();
    let random = proto::parse_get_random(response.parameters().unwrap()).unwrap();
    assert!((1..=16).contains(&random.len()), "{} bytes", random.len());

    let bytes = transport
        .transact(&proto::get_test_result(), deadline())
        .unwrap();
    let response = proto::parse_response(&bytes).unwrap();
    let result = proto::parse_get_test_result(response.parameters().unwrap()).unwrap();
    assert!(result.test_result.is_success(), "{}", result.test_result);
}

#[test]
fn unknown_command_code_is_decoded_as_unsupported() {
    let Some(swtpm) = Swtpm::start(STARTED) else {
        return;
    };
    let mut transport = swtpm.connect();
    // Command code 0x0FFF is not assigned to any TPM 2.0 command.
    let command = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x0F, 0xFF];
    let bytes = transport
        .transact(&command, Instant::now() + TIMEOUT)
        .unwrap();
    let response = proto::parse_response(&bytes).unwrap();
    assert_eq!(
        response.code.kind(),
        RcKind::CommandUnsupported,
        "{}",
        response.code
    );
    assert_eq!(response.code.layer(), 0, "answered by the TPM itself");
}

#[test]
fn tpm_without_startup_is_reported_as_not_started() {
    // Initialised but never sent TPM2_Startup.
    let Some(swtpm) = Swtpm::start(Some("not-need-init")) else {
        return;
    };
    let mut transport = swtpm.connect();
    let err = run_self_test(&mut transport, SelfTestLevel::Quick, TIMEOUT).unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.step, SelfTestStep::FamilyIndicator);
    assert_eq!(err.response_code(), Some(ResponseCode::INITIALIZE));
    assert!(err.to_string().contains("TPM2_Startup"), "{err}");
}

#[test]
fn uninitialised_tpm_is_reported_as_failure_mode() {
    // Without not-need-init, swtpm waits for an init over its control
    // channel and answers every command with TPM_RC_FAILURE meanwhile.
    let Some(swtpm) = Swtpm::start(None) else {
        return;
    };
    let mut transport = swtpm.connect();
    let err = run_self_test(&mut transport, SelfTestLevel::Quick, TIMEOUT).unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.response_code(), Some(ResponseCode::FAILURE));
    assert!(err.to_string().contains("failure mode"), "{err}");
}

#[test]
fn hung_tpm_fails_within_the_timeout() {
    let Some(swtpm) = Swtpm::start(STARTED) else {
        return;
    };
    let mut transport = swtpm.connect();
    swtpm.signal(libc::SIGSTOP);
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let result = run_self_test(&mut transport, SelfTestLevel::Quick, timeout);
    let waited = started.elapsed();
    swtpm.signal(libc::SIGCONT);
    let err = result.unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(
            err.failure,
            SelfTestFailure::Transport(TransportError::Timeout { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no response within"), "{err}");
    assert!(waited >= timeout, "{waited:?}");
    assert!(waited < timeout + Duration::from_millis(150), "{waited:?}");
}

#[test]
fn vanished_tpm_is_reported() {
    let Some(mut swtpm) = Swtpm::start(STARTED) else {
        return;
    };
    let mut transport = swtpm.connect();
    swtpm.child.kill().expect("killing our swtpm");
    swtpm.child.wait().expect("reaping our swtpm");
    let err = run_self_test(&mut transport, SelfTestLevel::Quick, TIMEOUT).unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(
            err.failure,
            SelfTestFailure::Transport(TransportError::Gone | TransportError::Closed { .. })
        ),
        "{err}"
    );
}
