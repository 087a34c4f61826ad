//! One NRI session over one socket: register, get configured and
//! synchronized, then answer the runtime's calls until it goes away.
//!
//! Single-threaded on purpose: the runtime sends one request at a time per
//! plugin and waits for the answer, so a poll loop that reads, dispatches and
//! writes needs no locks and has no ordering surprises. Requests may arrive
//! before the answer to our RegisterPlugin (the runtime configures us as soon
//! as it has registered us), which the loop handles naturally.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{debug, info, warn};

use super::api::{self, Message};
use super::mux::{self, Demux};
use super::ttrpc::{self, code, Decoder, Request, Response, Status};

/// What the plugin does with the runtime's calls. The stub handles the
/// protocol; an implementation only decides.
pub trait Plugin {
    /// Returns the events to subscribe to (see [`api::event_mask`]).
    fn configure(&mut self, req: &api::ConfigureRequest) -> Result<i32, Status>;
    /// `None` leaves the container unchanged.
    fn create_container(
        &mut self,
        req: &api::CreateContainerRequest,
    ) -> Result<Option<api::ContainerAdjustment>, Status>;
}

/// How the plugin introduces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    /// Two digits; plugins are called in ascending index order.
    pub index: String,
}

/// Where a session is. Logged on every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Registering,
    Registered,
    Configured,
    Synchronized,
}

/// Why [`Session::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The runtime closed the connection (it stopped or restarted, or it
    /// dropped us).
    PeerClosed,
    /// The wake descriptor became readable; the caller decides whether to
    /// call [`Session::run`] again.
    Woken,
}

/// How long we wait for the RegisterPlugin answer and for Configure before
/// giving up on a connection. The runtime's own default is 5 s; ours is a little longer
/// so the runtime, not we, is the one to time out first.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(6);

/// A stuck runtime must not block the plugin forever on a write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Stream ids we use for our calls: odd and increasing, as ttrpc requires.
const REGISTER_STREAM: u32 = 1;

pub struct Session {
    sock: UnixStream,
    reg: Registration,
    demux: Demux,
    plugin_rx: Decoder,
    runtime_rx: Decoder,
    state: State,
    deadline: Option<Instant>,
    registration_timeout: Duration,
    /// Unknown multiplexer channels already reported (report each once).
    unknown_conns: Vec<u32>,
    /// The runtime's per-request budget, from Configure.
    request_timeout: Duration,
    sync_pods: usize,
    sync_containers: usize,
}

impl Session {
    /// Starts a session on a connected socket: sends RegisterPlugin at once.
    pub fn start(sock: UnixStream, reg: Registration) -> anyhow::Result<Self> {
        sock.set_write_timeout(Some(WRITE_TIMEOUT))
            .context("cannot set a write timeout on the NRI socket")?;
        let mut s = Self {
            sock,
            reg,
            demux: Demux::new(),
            plugin_rx: Decoder::new(),
            runtime_rx: Decoder::new(),
            state: State::Registering,
            deadline: Some(Instant::now() + REGISTRATION_TIMEOUT),
            registration_timeout: REGISTRATION_TIMEOUT,
            unknown_conns: Vec::new(),
            request_timeout: Duration::from_secs(2),
            sync_pods: 0,
            sync_containers: 0,
        };
        let req = Request {
            service: api::RUNTIME_SERVICE.into(),
            method: "RegisterPlugin".into(),
            payload: api::RegisterPluginRequest {
                plugin_name: s.reg.name.clone(),
                plugin_idx: s.reg.index.clone(),
            }
            .encode_to_vec(),
            timeout_nano: REGISTRATION_TIMEOUT.as_nanos() as i64,
            metadata: Vec::new(),
        };
        s.send(
            mux::RUNTIME_CONN,
            ttrpc::Message {
                stream_id: REGISTER_STREAM,
                kind: ttrpc::TYPE_REQUEST,
                flags: ttrpc::FLAG_REMOTE_CLOSED,
                payload: req.encode_to_vec(),
            },
        )
        .context("cannot send RegisterPlugin")?;
        info!(
            plugin = %s.reg.name, index = %s.reg.index,
            "NRI: connected, registering as {}-{}", s.reg.index, s.reg.name
        );
        Ok(s)
    }

    /// Overrides how long registration and configuration may take
    /// (counted from now).
    pub fn set_registration_timeout(&mut self, timeout: Duration) {
        if self.state < State::Configured {
            self.registration_timeout = timeout;
            self.deadline = Some(Instant::now() + timeout);
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Serves until the runtime closes the connection or `wake` becomes
    /// readable. Protocol errors and timeouts are errors: the caller drops
    /// the connection and reconnects.
    pub fn run(
        &mut self,
        plugin: &mut dyn Plugin,
        wake: Option<BorrowedFd<'_>>,
    ) -> anyhow::Result<Ended> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let timeout = match self.deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        bail!(
                            "the runtime did not {} within {:?}",
                            if self.state == State::Registering {
                                "answer RegisterPlugin"
                            } else {
                                "configure the plugin"
                            },
                            self.registration_timeout
                        );
                    }
                    // Round up so we do not spin just before the deadline.
                    PollTimeout::from((left.as_millis() + 1).min(60_000) as u16)
                }
            };
            let (sock_ready, woken) = {
                let mut fds = vec![PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
                if let Some(w) = wake {
                    fds.push(PollFd::new(w, PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e).context("poll on the NRI socket failed"),
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), fds.get(1).is_some_and(ready))
            };
            if woken {
                return Ok(Ended::Woken);
            }
            if !sock_ready {
                continue;
            }
            let n = match self.sock.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
                Err(e) => return Err(e).context("cannot read from the NRI socket"),
            };
            if n == 0 {
                if self.demux.pending() > 0 {
                    warn!(
                        "NRI: the runtime closed the connection in the middle of a frame ({} bytes unread)",
                        self.demux.pending()
                    );
                }
                return Ok(Ended::PeerClosed);
            }
            self.demux.push(&buf[..n]);
            while let Some(frame) = self.demux.next_frame()? {
                self.on_frame(frame, plugin)?;
            }
        }
    }

    fn on_frame(&mut self, frame: mux::Frame, plugin: &mut dyn Plugin) -> anyhow::Result<()> {
        match frame.conn {
            mux::PLUGIN_CONN => {
                self.plugin_rx.push(&frame.payload);
                while let Some(msg) = self.plugin_rx.next_message()? {
                    self.on_plugin_message(msg, plugin)?;
                }
            }
            mux::RUNTIME_CONN => {
                self.runtime_rx.push(&frame.payload);
                while let Some(msg) = self.runtime_rx.next_message()? {
                    self.on_runtime_message(msg)?;
                }
            }
            other => {
                // The runtime's own multiplexer drops frames for channels
                // nobody opened; do the same, but say so once.
                if !self.unknown_conns.contains(&other) {
                    self.unknown_conns.push(other);
                    warn!(
                        "NRI: ignoring data for unknown multiplexer channel {other} ({} bytes)",
                        frame.payload.len()
                    );
                }
            }
        }
        Ok(())
    }

    /// Our client side: the only call we make is RegisterPlugin.
    fn on_runtime_message(&mut self, msg: ttrpc::Message) -> anyhow::Result<()> {
        if msg.kind != ttrpc::TYPE_RESPONSE || msg.stream_id != REGISTER_STREAM {
            warn!(
                "NRI: unexpected ttrpc message type {} on stream {} of the runtime channel; ignored",
                msg.kind, msg.stream_id
            );
            return Ok(());
        }
        let resp =
            Response::decode(msg.payload.as_slice()).context("bad RegisterPlugin response")?;
        match resp.result() {
            Ok(_) => {
                if self.state == State::Registering {
                    info!("NRI: registered");
                    self.set_state(State::Registered);
                }
                Ok(())
            }
            Err(status) => Err(anyhow!(
                "the runtime refused to register plugin {}-{}: {}",
                self.reg.index,
                self.reg.name,
                status.message
            )),
        }
    }

    fn on_plugin_message(
        &mut self,
        msg: ttrpc::Message,
        plugin: &mut dyn Plugin,
    ) -> anyhow::Result<()> {
        let id = msg.stream_id;
        let response = if msg.kind != ttrpc::TYPE_REQUEST {
            // Data messages belong to streaming calls, which NRI does not use.
            debug!(
                "NRI: ignoring ttrpc message type {} on stream {id}",
                msg.kind
            );
            return Ok(());
        } else if msg.flags & ttrpc::FLAG_REMOTE_OPEN != 0 {
            Response::error(Status::new(
                code::UNIMPLEMENTED,
                "streaming calls are not supported",
            ))
        } else {
            match Request::decode(msg.payload.as_slice()) {
                Ok(req) => self.dispatch(&req, plugin),
                Err(e) => Response::error(Status::new(code::INVALID_ARGUMENT, e.to_string())),
            }
        };
        self.send(
            mux::PLUGIN_CONN,
            ttrpc::Message {
                stream_id: id,
                kind: ttrpc::TYPE_RESPONSE,
                flags: 0,
                payload: response.encode_to_vec(),
            },
        )
        .context("cannot answer the runtime")
    }

    fn dispatch(&mut self, req: &Request, plugin: &mut dyn Plugin) -> Response {
        if req.service != api::PLUGIN_SERVICE {
            return unimplemented(req);
        }
        let result = match req.method.as_str() {
            "Configure" => decode(req).and_then(|r: api::ConfigureRequest| {
                self.on_configure(&r, plugin)
                    .map(|events| api::ConfigureResponse { events }.encode_to_vec())
            }),
            "Synchronize" => decode(req).map(|r: api::SynchronizeRequest| {
                self.on_synchronize(&r);
                api::SynchronizeResponse {
                    more: r.more,
                    ..Default::default()
                }
                .encode_to_vec()
            }),
            "CreateContainer" => decode(req).and_then(|r: api::CreateContainerRequest| {
                let started = Instant::now();
                let result = plugin.create_container(&r);
                let took = started.elapsed();
                let id = r.container.as_ref().map_or("", |c| c.id.as_str());
                debug!(container = %id, "NRI: CreateContainer answered in {took:?}");
                if took > self.request_timeout / 2 {
                    warn!(
                        "NRI: CreateContainer for {id} took {took:?}, the runtime allows {:?}",
                        self.request_timeout
                    );
                }
                result.map(|adjust| {
                    api::CreateContainerResponse {
                        adjust,
                        ..Default::default()
                    }
                    .encode_to_vec()
                })
            }),
            "Shutdown" => {
                info!("NRI: the runtime is shutting down");
                Ok(api::Empty {}.encode_to_vec())
            }
            _ => return unimplemented(req),
        };
        match result {
            Ok(payload) => Response::ok(payload),
            Err(status) => Response::error(status),
        }
    }

    fn on_configure(
        &mut self,
        req: &api::ConfigureRequest,
        plugin: &mut dyn Plugin,
    ) -> Result<i32, Status> {
        if req.request_timeout > 0 {
            self.request_timeout = Duration::from_millis(req.request_timeout as u64);
        }
        let events = plugin.configure(req)?;
        // Being configured proves registration worked even if its answer
        // has not been read yet.
        self.set_state(State::Configured);
        // No deadline for Synchronize: a runtime that starts its plugins
        // itself configures them at once but synchronizes them only when its
        // CRI service is up, which takes as long as it takes.
        self.deadline = None;
        // Older runtimes do not send their timeouts (0 here).
        let timeout = if req.request_timeout > 0 {
            format!("request timeout {} ms, ", req.request_timeout)
        } else {
            String::new()
        };
        info!(
            runtime = %req.runtime_name, version = %req.runtime_version,
            "NRI: configured by {} {} ({timeout}events 0x{events:x})",
            req.runtime_name, req.runtime_version
        );
        Ok(events)
    }

    fn on_synchronize(&mut self, req: &api::SynchronizeRequest) {
        self.sync_pods += req.pods.len();
        self.sync_containers += req.containers.len();
        if !req.more {
            info!(
                "NRI: synchronized ({} pods, {} containers already running)",
                self.sync_pods, self.sync_containers
            );
            self.set_state(State::Synchronized);
        }
    }

    fn set_state(&mut self, state: State) {
        if state > self.state {
            debug!("NRI: {:?} -> {:?}", self.state, state);
            self.state = state;
        }
    }

    fn send(&mut self, conn: u32, msg: ttrpc::Message) -> io::Result<()> {
        let mut out = Vec::new();
        mux::encode(conn, &msg.encode(), &mut out);
        self.sock.write_all(&out)
    }
}

fn decode<M: Message + Default>(req: &Request) -> Result<M, Status> {
    M::decode(req.payload.as_slice()).map_err(|e| {
        Status::new(
            code::INVALID_ARGUMENT,
            format!("{}.{}: {e}", req.service, req.method),
        )
    })
}

fn unimplemented(req: &Request) -> Response {
    debug!("NRI: call to unimplemented {}/{}", req.service, req.method);
    Response::error(Status::new(
        code::UNIMPLEMENTED,
        format!("{}/{} is not implemented", req.service, req.method),
    ))
}
