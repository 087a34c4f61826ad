//! A whole NRI session, with the real TPM plugin on a stand-in host, against
//! a runtime that sends fuzzer bytes over a socket pair: registration,
//! configuration, synchronization and CreateContainer calls, in any order
//! and any shape. The session must end (the runtime closes its end after the
//! input) with an error or `PeerClosed`, never panic or hang.
//!
//! Input: the byte stream the runtime sends (seeds: recorded containerd
//! sessions).
#![no_main]

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::thread;

use libfuzzer_sys::fuzz_target;
use oci_tpm_hook::core::policy::{self, Policy};
use oci_tpm_hook::frontend::nri::plugin::TpmPlugin;
use oci_tpm_hook::frontend::nri::stub::{Ended, Registration, Session};
use oci_tpm_hook::testing::FakeHost;

static HOST: OnceLock<FakeHost> = OnceLock::new();

extern "C" fn remove_host() {
    if let Some(host) = HOST.get() {
        let _ = std::fs::remove_dir_all(host.dir());
    }
}

fn plugin() -> TpmPlugin {
    let host = HOST.get().expect("initialised");
    let mut policy = Policy::default();
    // An executable that exists, so that grants get their hook.
    policy.hook.path = std::env::current_exe().expect("own path");
    TpmPlugin::new(
        policy,
        policy::DEFAULT_PATH.into(),
        host.roots.clone(),
        true,
    )
}

fuzz_target!(
    init: {
        // As in every Rust program: a peer that went away is an error, not a signal.
        // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        HOST.get_or_init(FakeHost::with_tpm);
        // SAFETY: registers a plain function with no preconditions.
        unsafe { libc::atexit(remove_host) };
    },
    |data: &[u8]| {
        let (ours, runtime) = UnixStream::pair().expect("socket pair");
        let input = data.to_vec();
        let mut writer = runtime.try_clone().expect("clone");
        // The runtime writes the input and closes its side; what we answer
        // is read and dropped, so our writes never block.
        let send = thread::spawn(move || {
            let _ = writer.write_all(&input);
            let _ = writer.shutdown(Shutdown::Write);
        });
        let mut reader = runtime;
        let drain = thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });

        let reg = Registration {
            name: "tpm".into(),
            index: "10".into(),
        };
        let mut session = Session::start(ours, reg).expect("session start");
        let mut plugin = plugin();
        match session.run(&mut plugin, None) {
            Ok(ended) => assert_eq!(ended, Ended::PeerClosed),
            Err(e) => {
                let _ = format!("{e:#}");
            }
        }
        drop(session);
        send.join().expect("writer");
        drain.join().expect("reader");
    }
);
