//! A whole NRI session against a scripted runtime on a socket pair: the
//! runtime side below speaks the same wire format containerd does
//! (multiplexed ttrpc), written independently of the plugin's stub.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use oci_tpm_hook::core::policy::{self, Policy};
use oci_tpm_hook::frontend::nri::api::{self, Message};
use oci_tpm_hook::frontend::nri::mux::{self, Demux};
use oci_tpm_hook::frontend::nri::plugin::TpmPlugin;
use oci_tpm_hook::frontend::nri::stub::{Ended, Registration, Session, State};
use oci_tpm_hook::frontend::nri::ttrpc::{self, Decoder, Request, Response};

use oci_tpm_hook::testing::FakeHost;
use std::os::unix::fs::PermissionsExt;

/// The runtime's end of the connection.
struct FakeRuntime {
    sock: UnixStream,
    demux: Demux,
    rx: [Decoder; 2],
    next_stream: u32,
    /// Write frames one byte at a time, to exercise reassembly.
    dribble: bool,
}

impl FakeRuntime {
    fn new(sock: UnixStream) -> Self {
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            sock,
            demux: Demux::new(),
            rx: [Decoder::new(), Decoder::new()],
            next_stream: 1,
            dribble: false,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.dribble {
            for b in bytes {
                self.sock.write_all(std::slice::from_ref(b)).unwrap();
            }
        } else {
            self.sock.write_all(bytes).unwrap();
        }
    }

    fn send(&mut self, conn: u32, msg: ttrpc::Message) {
        let mut out = Vec::new();
        mux::encode(conn, &msg.encode(), &mut out);
        self.write(&out);
    }

    /// The next ttrpc message on `conn` (1 or 2).
    fn recv(&mut self, conn: u32) -> ttrpc::Message {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = self.rx[conn as usize - 1].next_message().unwrap() {
                return m;
            }
            if let Some(f) = self.demux.next_frame().unwrap() {
                assert!(
                    f.conn == 1 || f.conn == 2,
                    "plugin wrote to channel {}",
                    f.conn
                );
                self.rx[f.conn as usize - 1].push(&f.payload);
                continue;
            }
            let n = self.sock.read(&mut buf).expect("plugin went silent");
            assert!(n > 0, "plugin closed the connection");
            self.demux.push(&buf[..n]);
        }
    }

    /// Expects RegisterPlugin on the Runtime channel and answers it.
    fn accept_registration(&mut self, refuse: Option<&str>) -> api::RegisterPluginRequest {
        let msg = self.recv(mux::RUNTIME_CONN);
        assert_eq!(msg.kind, ttrpc::TYPE_REQUEST);
        assert_eq!(msg.stream_id % 2, 1, "client streams are odd");
        let req = Request::decode(msg.payload.as_slice()).unwrap();
        assert_eq!(
            (req.service.as_str(), req.method.as_str()),
            ("nri.pkg.api.v1alpha1.Runtime", "RegisterPlugin")
        );
        let resp = match refuse {
            None => Response::ok(api::Empty {}.encode_to_vec()),
            Some(why) => Response::error(ttrpc::Status::new(3, why)),
        };
        self.send(
            mux::RUNTIME_CONN,
            ttrpc::Message {
                stream_id: msg.stream_id,
                kind: ttrpc::TYPE_RESPONSE,
                flags: 0,
                payload: resp.encode_to_vec(),
            },
        );
        api::RegisterPluginRequest::decode(req.payload.as_slice()).unwrap()
    }

    /// Calls a Plugin-service method and returns the plugin's answer.
    fn call(&mut self, method: &str, payload: Vec<u8>) -> Response {
        let id = self.next_stream;
        self.next_stream += 2;
        let req = Request {
            service: "nri.pkg.api.v1alpha1.Plugin".into(),
            method: method.into(),
            payload,
            timeout_nano: 2_000_000_000,
            metadata: vec![],
        };
        self.send(
            mux::PLUGIN_CONN,
            ttrpc::Message {
                stream_id: id,
                kind: ttrpc::TYPE_REQUEST,
                flags: ttrpc::FLAG_REMOTE_CLOSED,
                payload: req.encode_to_vec(),
            },
        );
        let msg = self.recv(mux::PLUGIN_CONN);
        assert_eq!((msg.kind, msg.stream_id), (ttrpc::TYPE_RESPONSE, id));
        Response::decode(msg.payload.as_slice()).unwrap()
    }

    fn configure_and_sync(&mut self) {
        let resp = self.call(
            "Configure",
            api::ConfigureRequest {
                runtime_name: "containerd".into(),
                runtime_version: "v1.7.24".into(),
                registration_timeout: 5000,
                request_timeout: 2000,
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let events = api::ConfigureResponse::decode(resp.result().unwrap().as_slice()).unwrap();
        assert_eq!(events.events, 8, "CreateContainer only");

        // Synchronize in two parts, as the runtime does for many pods.
        for more in [true, false] {
            let resp = self.call(
                "Synchronize",
                api::SynchronizeRequest {
                    pods: vec![api::PodSandbox {
                        id: "old".into(),
                        ..Default::default()
                    }],
                    containers: vec![],
                    more,
                }
                .encode_to_vec(),
            );
            let sync = api::SynchronizeResponse::decode(resp.result().unwrap().as_slice()).unwrap();
            assert_eq!(sync.more, more);
        }
    }

    fn create(&mut self, pod_annotations: &[(&str, &str)]) -> Response {
        let req = api::CreateContainerRequest {
            pod: Some(api::PodSandbox {
                id: "pod1".into(),
                name: "licence".into(),
                namespace: "attest".into(),
                annotations: pod_annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
                ..Default::default()
            }),
            container: Some(api::Container {
                id: "c0ffee0123456789".into(),
                pod_sandbox_id: "pod1".into(),
                name: "app".into(),
                ..Default::default()
            }),
        };
        self.call("CreateContainer", req.encode_to_vec())
    }
}

struct Host {
    _host: FakeHost,
    plugin: TpmPlugin,
}

fn host() -> Host {
    let host = FakeHost::with_tpm();
    let hook = host.dir().join("hook");
    fs::write(&hook, "").unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    let mut p = Policy::default();
    p.hook.path = hook;
    Host {
        plugin: TpmPlugin::new(p, policy::DEFAULT_PATH.into(), host.roots.clone(), true),
        _host: host,
    }
}

fn registration() -> Registration {
    Registration {
        name: "oci-tpm-hook".into(),
        index: "10".into(),
    }
}

#[test]
fn full_session() {
    let (plugin_end, runtime_end) = UnixStream::pair().unwrap();
    let runtime = thread::spawn(move || {
        let mut rt = FakeRuntime::new(runtime_end);
        let reg = rt.accept_registration(None);
        assert_eq!(
            (reg.plugin_name.as_str(), reg.plugin_idx.as_str()),
            ("oci-tpm-hook", "10")
        );
        rt.configure_and_sync();

        // Nothing asked: an empty response.
        let resp = rt.create(&[("io.kubernetes.pod.namespace", "attest")]);
        let empty =
            api::CreateContainerResponse::decode(resp.result().unwrap().as_slice()).unwrap();
        assert_eq!(empty.adjust, None);

        // Garbage on a channel nobody opened is dropped, the session goes on.
        let mut junk = Vec::new();
        mux::encode(9, b"\x00\x01junk", &mut junk);
        rt.write(&junk);

        // A request, written one byte at a time.
        rt.dribble = true;
        let resp = rt.create(&[("oci-tpm-hook/device", "auto")]);
        rt.dribble = false;
        let got = api::CreateContainerResponse::decode(resp.result().unwrap().as_slice()).unwrap();
        let adjust = got.adjust.expect("an adjustment");
        let dev = &adjust.linux.unwrap().devices[0];
        assert_eq!(
            (dev.path.as_str(), dev.r#type.as_str(), dev.major, dev.minor),
            ("/dev/tpmrm0", "c", 1, 3)
        );
        assert_eq!(
            (
                dev.file_mode.map(|m| m.value),
                dev.uid.map(|u| u.value),
                dev.gid.map(|g| g.value)
            ),
            (Some(0o660), Some(0), Some(102))
        );
        assert_eq!(adjust.env.len(), 2);
        assert_eq!(
            adjust.hooks.unwrap().create_runtime[0].args,
            ["oci-tpm-hook"]
        );

        // A refusal fails the call with the reason.
        let resp = rt.create(&[("oci-tpm-hook/device", "tpmrm3")]);
        let status = resp.result().unwrap_err();
        assert_eq!(status.code, ttrpc::code::FAILED_PRECONDITION);
        assert!(status.message.contains("tpmrm3"), "{}", status.message);

        // Methods we do not implement are refused, not fatal.
        let resp = rt.call("StateChange", vec![]);
        assert_eq!(resp.result().unwrap_err().code, ttrpc::code::UNIMPLEMENTED);

        // The runtime announces shutdown, then goes away.
        assert!(rt.call("Shutdown", vec![]).result().is_ok());
    });

    let mut h = host();
    let mut session = Session::start(plugin_end, registration()).unwrap();
    let ended = session.run(&mut h.plugin, None).unwrap();
    runtime.join().unwrap();
    assert_eq!(ended, Ended::PeerClosed);
    assert_eq!(session.state(), State::Synchronized);
}

#[test]
fn refused_registration_is_an_error() {
    let (plugin_end, runtime_end) = UnixStream::pair().unwrap();
    let runtime = thread::spawn(move || {
        let mut rt = FakeRuntime::new(runtime_end);
        rt.accept_registration(Some("plugin 10-oci-tpm-hook already registered"));
        // Keep the socket open until the plugin has read the answer.
        let mut b = [0u8; 1];
        let _ = rt.sock.read(&mut b);
    });
    let mut h = host();
    let mut session = Session::start(plugin_end, registration()).unwrap();
    let err = session.run(&mut h.plugin, None).unwrap_err();
    drop(session);
    runtime.join().unwrap();
    assert!(format!("{err:#}").contains("already registered"), "{err:#}");
}

#[test]
fn silent_runtime_times_out() {
    let (plugin_end, runtime_end) = UnixStream::pair().unwrap();
    let mut h = host();
    let mut session = Session::start(plugin_end, registration()).unwrap();
    session.set_registration_timeout(Duration::from_millis(200));
    let err = session.run(&mut h.plugin, None).unwrap_err();
    assert!(format!("{err}").contains("RegisterPlugin"), "{err}");
    drop(runtime_end);
}

#[test]
fn oversize_frame_ends_the_session() {
    let (plugin_end, mut runtime_end) = UnixStream::pair().unwrap();
    let mut h = host();
    let mut session = Session::start(plugin_end, registration()).unwrap();
    let mut hdr = 1u32.to_be_bytes().to_vec();
    hdr.extend_from_slice(&u32::MAX.to_be_bytes());
    runtime_end.write_all(&hdr).unwrap();
    let err = session.run(&mut h.plugin, None).unwrap_err();
    assert!(format!("{err}").contains("limit"), "{err}");
}

#[test]
fn wake_descriptor_interrupts_and_session_resumes() {
    let (plugin_end, runtime_end) = UnixStream::pair().unwrap();
    let (wake_rx, mut wake_tx) = UnixStream::pair().unwrap();
    let mut h = host();
    let mut session = Session::start(plugin_end, registration()).unwrap();
    wake_tx.write_all(b"x").unwrap();
    use std::os::fd::AsFd;
    assert_eq!(
        session.run(&mut h.plugin, Some(wake_rx.as_fd())).unwrap(),
        Ended::Woken
    );
    // The same session carries on: the runtime registers and configures it.
    let runtime = thread::spawn(move || {
        let mut rt = FakeRuntime::new(runtime_end);
        rt.accept_registration(None);
        rt.configure_and_sync();
    });
    assert_eq!(session.run(&mut h.plugin, None).unwrap(), Ended::PeerClosed);
    runtime.join().unwrap();
    assert_eq!(session.state(), State::Synchronized);
}

#[test]
fn synchronize_may_come_late() {
    // containerd configures the plugins it starts itself at once, but
    // synchronizes them only when its CRI service is up.
    let (plugin_end, runtime_end) = UnixStream::pair().unwrap();
    let mut h = host();
    let mut session = Session::start(plugin_end, registration()).unwrap();
    session.set_registration_timeout(Duration::from_millis(300));
    let runtime = thread::spawn(move || {
        let mut rt = FakeRuntime::new(runtime_end);
        rt.accept_registration(None);
        let resp = rt.call(
            "Configure",
            api::ConfigureRequest::default().encode_to_vec(),
        );
        assert!(resp.result().is_ok());
        thread::sleep(Duration::from_millis(900));
        let resp = rt.call(
            "Synchronize",
            api::SynchronizeRequest::default().encode_to_vec(),
        );
        assert!(resp.result().is_ok());
    });
    assert_eq!(session.run(&mut h.plugin, None).unwrap(), Ended::PeerClosed);
    runtime.join().unwrap();
    assert_eq!(session.state(), State::Synchronized);
}
