//! The plugin's side of the kubelet's device plugin protocol: serve the
//! `DevicePlugin` service on a socket in the kubelet's directory, register
//! it through the kubelet's `Registration` service (`kubelet.sock`), and
//! start over when the kubelet restarts.
//!
//! A restarting kubelet empties its device plugin directory (the plugin's
//! socket with it) and creates a new `kubelet.sock`. Both sockets are
//! looked at every second (two `stat` calls: cheaper and simpler than a
//! watch, and the kubelet itself takes longer to come back): when either
//! is no longer the file that was there at registration, the plugin binds
//! a new socket and registers again. The kubelet refusing the registration (another plugin has the
//! resource name, an unsupported version) is fatal, as the API asks.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{info, warn};

use super::api::device_plugin_server::DevicePluginServer;
use super::api::registration_client::RegistrationClient;
use super::api::{RegisterRequest, KUBELET_SOCKET, VERSION};
use super::service::{self, Service};
use crate::files::FileId;

/// How long the kubelet may take to answer a registration: it dials the
/// plugin back before it answers.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between attempts while the kubelet's socket does not answer.
const RETRY: Duration = Duration::from_secs(1);
/// How often the sockets are looked at.
const POLL: Duration = Duration::from_secs(1);

/// Where and as what the plugin registers.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The kubelet's device plugin directory.
    pub dir: PathBuf,
    /// The plugin's socket's name in it.
    pub endpoint: String,
    pub resource_name: String,
}

impl Registration {
    pub fn socket(&self) -> PathBuf {
        self.dir.join(&self.endpoint)
    }

    pub fn kubelet_socket(&self) -> PathBuf {
        self.dir.join(KUBELET_SOCKET)
    }
}

/// Serves and registers until a fatal error; every kubelet restart is a
/// new registration.
pub async fn serve(reg: &Registration, service: Service) -> anyhow::Result<()> {
    check_dir(&reg.dir)?;
    loop {
        session(reg, service.clone()).await?;
        info!(
            "the kubelet restarted ({} or {} was replaced): registering {} again",
            reg.kubelet_socket().display(),
            reg.socket().display(),
            reg.resource_name
        );
    }
}

/// The kubelet's directory must exist: without it there is no kubelet on
/// this node, or the directory is not mounted into the plugin's container.
pub fn check_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!(
            "the kubelet's device plugin directory {} does not exist: is a kubelet running on this node, \
             and is the directory mounted into the plugin's container (hostPath /var/lib/kubelet/device-plugins)?",
            dir.display()
        );
    }
    Ok(())
}

/// One registration: bind, serve, register, and wait until the kubelet
/// restarts. `Ok` means start over.
async fn session(reg: &Registration, service: Service) -> anyhow::Result<()> {
    wait_for_kubelet(reg).await?;
    let socket = reg.socket();
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", socket.display())),
    }
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    let ours = FileId::of(&socket).with_context(|| format!("cannot stat {}", socket.display()))?;
    // One service on its own socket: no router needed.
    let server = tonic::transport::Server::builder().serve_with_incoming(
        DevicePluginServer::new(service),
        UnixListenerStream::new(listener),
    );
    tokio::pin!(server);

    // Register while serving: the kubelet dials the plugin back before it
    // answers.
    let kubelet = loop {
        let kubelet = FileId::of(&reg.kubelet_socket());
        tokio::select! {
            r = &mut server => bail!("the plugin's gRPC server stopped: {}", describe(r)),
            outcome = register(reg) => match outcome {
                Ok(()) => break kubelet,
                Err(RegisterError::Refused(why)) => bail!(
                    "the kubelet refused to register {} ({}): {why}",
                    reg.resource_name,
                    reg.kubelet_socket().display()
                ),
                Err(RegisterError::Unreachable(why)) => {
                    warn!("cannot register with the kubelet yet: {why}; trying again");
                }
            },
        }
        tokio::select! {
            r = &mut server => bail!("the plugin's gRPC server stopped: {}", describe(r)),
            _ = tokio::time::sleep(RETRY) => {}
        }
        if FileId::of(&socket) != Some(ours) {
            return Ok(()); // the directory was emptied meanwhile
        }
    };
    info!(
        "registered {} with the kubelet ({}), serving on {}",
        reg.resource_name,
        reg.kubelet_socket().display(),
        socket.display()
    );

    loop {
        tokio::select! {
            r = &mut server => bail!("the plugin's gRPC server stopped: {}", describe(r)),
            _ = tokio::time::sleep(POLL) => {}
        }
        check_dir(&reg.dir)?;
        let socket_kept = FileId::of(&socket) == Some(ours);
        let kubelet_kept = FileId::of(&reg.kubelet_socket()) == kubelet;
        if !socket_kept || !kubelet_kept {
            return Ok(());
        }
    }
}

fn describe(r: Result<(), tonic::transport::Error>) -> String {
    match r {
        Ok(()) => "it ended".into(),
        Err(e) => format!("{e}"),
    }
}

/// Waits until the kubelet's socket exists.
async fn wait_for_kubelet(reg: &Registration) -> anyhow::Result<()> {
    let kubelet = reg.kubelet_socket();
    let mut said = false;
    while !kubelet.exists() {
        if !said {
            info!("waiting for the kubelet's socket {}", kubelet.display());
            said = true;
        }
        tokio::time::sleep(POLL).await;
        check_dir(&reg.dir)?;
    }
    Ok(())
}

#[derive(Debug)]
enum RegisterError {
    /// The kubelet answered no: fatal.
    Refused(String),
    /// No answer (the kubelet is starting, or gone): try again.
    Unreachable(String),
}

/// One `Register` call on the kubelet's socket.
async fn register(reg: &Registration) -> Result<(), RegisterError> {
    let path = reg.kubelet_socket();
    let channel = connect(path.clone())
        .await
        .map_err(|e| RegisterError::Unreachable(format!("{}: {e}", path.display())))?;
    let request = RegisterRequest {
        version: VERSION.into(),
        endpoint: reg.endpoint.clone(),
        resource_name: reg.resource_name.clone(),
        options: Some(service::options()),
    };
    let mut client = RegistrationClient::new(channel);
    let call = client.register(request);
    match tokio::time::timeout(REGISTER_TIMEOUT, call).await {
        Err(_) => Err(RegisterError::Unreachable(format!(
            "no answer within {} s",
            REGISTER_TIMEOUT.as_secs()
        ))),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
            Err(RegisterError::Unreachable(status.message().to_owned()))
        }
        Ok(Err(status)) => Err(RegisterError::Refused(status.message().to_owned())),
    }
}

/// A gRPC channel to a unix socket (tonic's client speaks to URIs; the
/// connector ignores the URI and dials the socket).
pub async fn connect(path: PathBuf) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(
                    UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
}
