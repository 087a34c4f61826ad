//! The plugin against bytes containerd 1.7.24 really sent: recorded in the
//! lab (`nri` scenario, under strace; converted by
//! tests/lab/nri-wire-fixture.py). Session 1 is a fresh start with several
//! pods; session 2 is the reconnect after a containerd restart, where
//! containerd's first read joins the RegisterPlugin answer and the Configure
//! call in one buffer, and the container already carries the hook from the
//! base runtime spec.

use std::fs;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::thread;

use oci_tpm_hook::core::policy::{self, Policy};
use oci_tpm_hook::frontend::nri::api::{self, Message};
use oci_tpm_hook::frontend::nri::mux::Demux;
use oci_tpm_hook::frontend::nri::plugin::TpmPlugin;
use oci_tpm_hook::frontend::nri::stub::{Ended, Registration, Session, State};
use oci_tpm_hook::frontend::nri::ttrpc::{self, Decoder, Request, Response};
use oci_tpm_hook::testing::FakeHost;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/nri/{name}", env!("CARGO_MANIFEST_DIR"));
    fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Cuts a recorded stream into (channel, ttrpc message), in order.
fn messages(stream: &[u8]) -> Vec<(u32, ttrpc::Message)> {
    let mut demux = Demux::new();
    demux.push(stream);
    let mut decoders = [Decoder::new(), Decoder::new()];
    let mut out = Vec::new();
    while let Some(frame) = demux.next_frame().unwrap() {
        assert!(frame.conn == 1 || frame.conn == 2, "channel {}", frame.conn);
        let d = &mut decoders[frame.conn as usize - 1];
        d.push(&frame.payload);
        while let Some(m) = d.next_message().unwrap() {
            out.push((frame.conn, m));
        }
    }
    assert_eq!(demux.pending(), 0, "recording ends mid-frame");
    assert!(
        decoders.iter().all(|d| d.pending() == 0),
        "recording ends mid-message"
    );
    out
}

/// The runtime's calls: (method, payload).
fn calls(stream: &[u8]) -> Vec<(String, Vec<u8>)> {
    messages(stream)
        .into_iter()
        .filter(|(conn, m)| *conn == 1 && m.kind == ttrpc::TYPE_REQUEST)
        .map(|(_, m)| {
            let r = Request::decode(m.payload.as_slice()).unwrap();
            assert_eq!(r.service, "nri.pkg.api.v1alpha1.Plugin");
            (r.method, r.payload)
        })
        .collect()
}

/// The plugin's answers to the runtime's calls, in order.
fn answers(stream: &[u8]) -> Vec<Response> {
    messages(stream)
        .into_iter()
        .filter(|(conn, m)| *conn == 1 && m.kind == ttrpc::TYPE_RESPONSE)
        .map(|(_, m)| Response::decode(m.payload.as_slice()).unwrap())
        .collect()
}

#[test]
fn containerd_calls_decode() {
    let calls = calls(&fixture("session1-from-containerd.bin"));
    let methods: Vec<&str> = calls.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(&methods[..2], ["Configure", "Synchronize"]);
    assert!(
        methods[2..].iter().all(|m| *m == "CreateContainer"),
        "{methods:?}"
    );

    let conf = api::ConfigureRequest::decode(calls[0].1.as_slice()).unwrap();
    assert_eq!(conf.runtime_name, "containerd");
    assert!(conf.runtime_version.starts_with("1.7.24"), "{conf:?}");
    let sync = api::SynchronizeRequest::decode(calls[1].1.as_slice()).unwrap();
    assert!(!sync.more && sync.pods.is_empty() && sync.containers.is_empty());

    // The first pod of the scenario: pod lab/tpm asking for tpmrm0.
    let create = api::CreateContainerRequest::decode(calls[2].1.as_slice()).unwrap();
    let (pod, container) = (create.pod.unwrap(), create.container.unwrap());
    assert_eq!((pod.name.as_str(), pod.namespace.as_str()), ("tpm", "lab"));
    assert_eq!(pod.annotations["oci-tpm-hook/device"], "tpmrm0");
    assert_eq!(container.name, "tpm");
    assert_eq!(container.pod_sandbox_id, pod.id);
    assert_eq!(
        container.annotations["io.kubernetes.cri.container-name"],
        "tpm"
    );
    assert_eq!(
        container.annotations["io.kubernetes.cri.sandbox-namespace"],
        "lab"
    );
    // Without annotation passthrough, the request is only on the pod.
    assert!(!container.annotations.contains_key("oci-tpm-hook/device"));
    // No createRuntime hook: containerd sends no hooks message, or an
    // empty one.
    assert!(container.hooks.is_none_or(|h| h.create_runtime.is_empty()));
}

#[test]
fn plugin_answers_decode() {
    let stream = fixture("session1-from-plugin.bin");
    let all = messages(&stream);
    let (conn, register) = &all[0];
    assert_eq!(
        (*conn, register.kind, register.stream_id),
        (2, ttrpc::TYPE_REQUEST, 1)
    );
    let r = Request::decode(register.payload.as_slice()).unwrap();
    assert_eq!(r.method, "RegisterPlugin");
    let reg = api::RegisterPluginRequest::decode(r.payload.as_slice()).unwrap();
    assert_eq!(
        (reg.plugin_name.as_str(), reg.plugin_idx.as_str()),
        ("oci-tpm-hook", "10")
    );

    let answers = answers(&stream);
    let conf =
        api::ConfigureResponse::decode(answers[0].clone().result().unwrap().as_slice()).unwrap();
    assert_eq!(conf.events, 8);
    let grant =
        api::CreateContainerResponse::decode(answers[2].clone().result().unwrap().as_slice())
            .unwrap()
            .adjust
            .unwrap();
    let dev = &grant.linux.as_ref().unwrap().devices[0];
    assert_eq!(
        (dev.major, dev.minor, dev.gid.map(|g| g.value)),
        (253, 65536, Some(102))
    );
    // Refusals travel as a status, with the message containerd shows.
    assert!(answers
        .iter()
        .any(|a| a.status.as_ref().is_some_and(
            |s| s.code == ttrpc::code::FAILED_PRECONDITION && s.message.contains("tpmrm7")
        )));
}

/// A host like the lab guest's, except that /dev/null (1:3) stands in for
/// the TPM node (tests cannot make device nodes).
fn lab_like_host(host: &FakeHost) -> TpmPlugin {
    let mut p = Policy::default();
    // The lab's hook path: the recorded container already has this hook.
    p.hook.path = "/lab/bin/oci-tpm-hook".into();
    TpmPlugin::new(p, policy::DEFAULT_PATH.into(), host.roots.clone(), true)
}

#[test]
fn replaying_a_reconnect_gives_the_recorded_answers() {
    let recorded_in = fixture("session2-from-containerd.bin");
    let recorded_out = fixture("session2-from-plugin.bin");

    let (plugin_end, mut runtime_end) = UnixStream::pair().unwrap();
    let feeder = thread::spawn(move || {
        runtime_end.write_all(&recorded_in).unwrap();
        runtime_end.shutdown(Shutdown::Write).unwrap();
        let mut out = Vec::new();
        runtime_end.read_to_end(&mut out).unwrap();
        out
    });
    let host = FakeHost::with_tpm();
    let mut plugin = lab_like_host(&host);
    let mut session = Session::start(
        plugin_end,
        Registration {
            name: "oci-tpm-hook".into(),
            index: "10".into(),
        },
    )
    .unwrap();
    assert_eq!(session.run(&mut plugin, None).unwrap(), Ended::PeerClosed);
    assert_eq!(session.state(), State::Synchronized);
    drop(session);
    let replayed = feeder.join().unwrap();

    // Same messages, same order; the grant differs only in the stand-in
    // device numbers and in the request annotations the plugin now adds for
    // the hook (the recording predates them).
    let (want, got) = (answers(&recorded_out), answers(&replayed));
    assert_eq!(want.len(), got.len());
    for (w, g) in want.into_iter().zip(got) {
        let (w, g) = (w.result().unwrap(), g.result().unwrap());
        match api::CreateContainerResponse::decode(w.as_slice()) {
            Ok(api::CreateContainerResponse {
                adjust: Some(mut a),
                update,
                evict,
            }) => {
                assert!(update.is_empty() && evict.is_empty(), "never updates");
                let dev = &mut a.linux.as_mut().unwrap().devices[0];
                assert_eq!((dev.major, dev.minor), (253, 65536));
                (dev.major, dev.minor) = (1, 3);
                assert_eq!(a.hooks, None, "the base spec already had the hook");
                assert!(a.annotations.is_empty(), "the recording has none");
                a.annotations = [
                    ("oci-tpm-hook/device", "tpmrm0"),
                    ("oci-tpm-hook/required", "true"),
                    ("oci-tpm-hook/self-test", "quick"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
                let g = api::CreateContainerResponse::decode(g.as_slice()).unwrap();
                assert_eq!(g.adjust, Some(a));
                assert!(g.update.is_empty() && g.evict.is_empty());
            }
            _ => assert_eq!(w, g),
        }
    }
    // And the first thing the plugin said is the same RegisterPlugin call.
    let first = |s: &[u8]| messages(s).into_iter().next().unwrap();
    assert_eq!(first(&recorded_out), first(&replayed));
}

#[test]
fn fail_closed_setup_is_visible_to_the_plugin() {
    // Session 2 ran with the base runtime spec and annotation passthrough.
    let calls = calls(&fixture("session2-from-containerd.bin"));
    let create = calls
        .iter()
        .find(|(m, _)| m == "CreateContainer")
        .map(|(_, p)| api::CreateContainerRequest::decode(p.as_slice()).unwrap())
        .unwrap();
    let container = create.container.unwrap();
    assert_eq!(
        container.annotations["oci-tpm-hook/device"], "tpmrm0",
        "pod annotation passed through to the container"
    );
    let hooks = &container.hooks.unwrap().create_runtime;
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].path, "/lab/bin/oci-tpm-hook");
    assert_eq!(hooks[0].args, ["oci-tpm-hook"]);
    assert_eq!(hooks[0].timeout.map(|t| t.value), Some(15));
}
