//! The gRPC side against the generated clients and servers, over real unix
//! sockets in a temporary directory: the `DevicePlugin` service as the
//! kubelet calls it, and the registration with a stand-in kubelet that
//! dials the plugin back as the real one does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Code, Request, Response, Status};

use super::api::device_plugin_client::DevicePluginClient;
use super::api::device_plugin_server::DevicePluginServer;
use super::api::registration_server::{Registration as KubeletRegistration, RegistrationServer};
use super::api::*;
use super::health::TpmInfo;
use super::inventory::tests_support::grant;
use super::inventory::{Inventory, SharedInventory};
use super::kubelet::{self, connect, Registration};
use super::service::Service;
use crate::testing::FakeHost;

const WAIT: Duration = Duration::from_secs(20);

fn info() -> TpmInfo {
    TpmInfo {
        family: "2.0".into(),
        manufacturer: "IBM".into(),
        firmware: "1.2".into(),
    }
}

/// A service over one healthy TPM `tpmrm0` with two shares, and the sender
/// that publishes its device list (the monitor's part).
fn service() -> (Service, watch::Sender<Vec<Device>>) {
    let host = FakeHost::with_tpm();
    let mut inventory = Inventory::new(2, Some(super::cdi::KIND.into()));
    inventory.granted(grant(&host, "tpmrm0"));
    inventory.checked("tpmrm0", Ok(info()));
    let (tx, rx) = watch::channel(inventory.devices());
    let service = Service {
        inventory: SharedInventory::new(inventory),
        devices: rx,
    };
    (service, tx)
}

/// Serves `service` on `path` until the test ends.
fn serve_plugin(path: &Path, service: Service) {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(
        DevicePluginServer::new(service),
        UnixListenerStream::new(listener),
    ));
}

async fn client(path: PathBuf) -> DevicePluginClient<tonic::transport::Channel> {
    DevicePluginClient::new(connect(path).await.unwrap())
}

#[tokio::test(flavor = "current_thread")]
async fn the_kubelets_calls_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("plugin.sock");
    let (service, publish) = service();
    let inventory = service.inventory.clone();
    serve_plugin(&socket, service);
    let mut kubelet = client(socket).await;

    let options = kubelet
        .get_device_plugin_options(Empty {})
        .await
        .unwrap()
        .into_inner();
    assert!(options.get_preferred_allocation_available);
    assert!(!options.pre_start_required);

    // ListAndWatch: the list at once, then each change.
    let mut list = kubelet.list_and_watch(Empty {}).await.unwrap().into_inner();
    let first = list.message().await.unwrap().unwrap();
    let health = |r: &ListAndWatchResponse| {
        r.devices
            .iter()
            .map(|d| format!("{} {}", d.id, d.health))
            .collect::<Vec<_>>()
    };
    assert_eq!(health(&first), ["tpmrm0-1 Healthy", "tpmrm0-2 Healthy"]);
    let devices = {
        let mut inv = inventory.lock();
        inv.checked("tpmrm0", Err("no answer within 5000 ms".into()));
        inv.devices()
    };
    publish.send(devices).unwrap();
    let second = tokio::time::timeout(WAIT, list.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        health(&second),
        ["tpmrm0-1 Unhealthy", "tpmrm0-2 Unhealthy"]
    );

    // An unhealthy TPM is not handed out, with the reason.
    let refused = kubelet
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec!["tpmrm0-1".into()],
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("TPM tpmrm0 is unhealthy: no answer"),
        "{}",
        refused.message()
    );

    inventory.lock().checked("tpmrm0", Ok(info()));
    let allocated = kubelet
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec!["tpmrm0-2".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let [r] = allocated.container_responses.as_slice() else {
        panic!("{allocated:?}");
    };
    assert_eq!(r.devices[0].host_path, "/dev/tpmrm0");
    assert_eq!(r.devices[0].container_path, "/dev/tpmrm0");
    assert_eq!(r.devices[0].permissions, "rw");
    assert_eq!(r.envs["TSS2_TCTI"], "device:/dev/tpmrm0");
    assert_eq!(r.annotations["oci-tpm-hook/device"], "tpmrm0");
    assert_eq!(r.cdi_devices[0].name, "oci-tpm-hook.dev/kubelet=tpmrm0");

    let preferred = kubelet
        .get_preferred_allocation(PreferredAllocationRequest {
            container_requests: vec![ContainerPreferredAllocationRequest {
                available_device_i_ds: vec!["tpmrm0-1".into(), "tpmrm0-2".into()],
                must_include_device_i_ds: vec![],
                allocation_size: 1,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(preferred.container_responses[0].device_i_ds, ["tpmrm0-1"]);

    kubelet
        .pre_start_container(PreStartContainerRequest::default())
        .await
        .unwrap();
}

/// A kubelet's `Registration` service: records each request and, like the
/// kubelet, dials the plugin's endpoint before it answers.
struct FakeKubelet {
    dir: PathBuf,
    requests: mpsc::UnboundedSender<RegisterRequest>,
    refuse: Option<String>,
}

#[tonic::async_trait]
impl KubeletRegistration for FakeKubelet {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        if let Some(why) = &self.refuse {
            return Err(Status::invalid_argument(why.clone()));
        }
        let mut plugin = DevicePluginClient::new(
            connect(self.dir.join(&request.endpoint))
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?,
        );
        plugin.get_device_plugin_options(Empty {}).await?;
        let _ = self.requests.send(request);
        Ok(Response::new(Empty {}))
    }
}

/// Starts a fake kubelet on `dir/kubelet.sock`; its task.
fn start_kubelet(
    dir: &Path,
    refuse: Option<String>,
) -> (
    tokio::task::JoinHandle<()>,
    mpsc::UnboundedReceiver<RegisterRequest>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = UnixListener::bind(dir.join(KUBELET_SOCKET)).unwrap();
    let fake = FakeKubelet {
        dir: dir.to_owned(),
        requests: tx,
        refuse,
    };
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .serve_with_incoming(
                RegistrationServer::new(fake),
                UnixListenerStream::new(listener),
            )
            .await;
    });
    (task, rx)
}

fn registration(dir: &Path) -> Registration {
    Registration {
        dir: dir.to_owned(),
        endpoint: "oci-tpm-hook.sock".into(),
        resource_name: "oci-tpm-hook.dev/tpm".into(),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn registers_and_registers_again_when_the_kubelet_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (kubelet_task, mut requests) = start_kubelet(dir.path(), None);
    let reg = registration(dir.path());
    let (service, _publish) = service();
    let plugin = tokio::spawn({
        let reg = reg.clone();
        async move { kubelet::serve(&reg, service).await }
    });

    let first = tokio::time::timeout(WAIT, requests.recv())
        .await
        .expect("no registration")
        .unwrap();
    assert_eq!(first.version, "v1beta1");
    assert_eq!(first.endpoint, "oci-tpm-hook.sock");
    assert_eq!(first.resource_name, "oci-tpm-hook.dev/tpm");
    assert!(first.options.unwrap().get_preferred_allocation_available);

    // A kubelet restart: it goes away, empties its directory and comes
    // back on a new socket.
    kubelet_task.abort();
    drop(requests);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_kubelet_task, mut requests) = start_kubelet(dir.path(), None);
    let again = tokio::time::timeout(WAIT, requests.recv())
        .await
        .expect("no registration after the kubelet restarted")
        .unwrap();
    assert_eq!(again.endpoint, "oci-tpm-hook.sock");
    assert!(reg.socket().exists(), "the plugin serves on a new socket");
    assert!(!plugin.is_finished());
    plugin.abort();
}

#[tokio::test(flavor = "current_thread")]
async fn a_refused_registration_is_fatal_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (_kubelet, _requests) = start_kubelet(
        dir.path(),
        Some("resource oci-tpm-hook.dev/tpm is already registered".into()),
    );
    let (service, _publish) = service();
    let err = tokio::time::timeout(WAIT, kubelet::serve(&registration(dir.path()), service))
        .await
        .expect("serve kept going")
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("the kubelet refused to register oci-tpm-hook.dev/tpm")
            && msg.contains("already registered"),
        "{msg}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_missing_kubelet_directory_is_an_error_that_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let (service, _publish) = service();
    let missing = dir.path().join("device-plugins");
    let err = kubelet::serve(&registration(&missing), service)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!("{} does not exist", missing.display()))
            && msg.contains("hostPath /var/lib/kubelet/device-plugins"),
        "{msg}"
    );
}
