//! The `DevicePlugin` gRPC service the kubelet calls: the device list as a
//! stream, and the answers of [`Inventory`] to `Allocate` and
//! `GetPreferredAllocation`.

use std::pin::Pin;

use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::api::device_plugin_server::DevicePlugin;
use super::api::{
    AllocateRequest, AllocateResponse, ContainerPreferredAllocationResponse, Device,
    DevicePluginOptions, Empty, ListAndWatchResponse, PreStartContainerRequest,
    PreStartContainerResponse, PreferredAllocationRequest, PreferredAllocationResponse,
};
use super::inventory::SharedInventory;

/// What the service reads: the inventory (for `Allocate`) and the device
/// list the monitor publishes (for `ListAndWatch`).
#[derive(Clone)]
pub struct Service {
    pub inventory: SharedInventory,
    pub devices: watch::Receiver<Vec<Device>>,
}

/// The options the plugin registers with, and answers with.
pub fn options() -> DevicePluginOptions {
    DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    }
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Service {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
    }

    type ListAndWatchStream = DeviceStream;

    /// The current list at once, then every change.
    async fn list_and_watch(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        info!("the kubelet watches the device list");
        let stream = WatchStream::new(self.devices.clone())
            .map(|devices| Ok(ListAndWatchResponse { devices }));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let inventory = self.inventory.lock();
        let container_responses = request
            .get_ref()
            .container_requests
            .iter()
            .map(|r| ContainerPreferredAllocationResponse {
                device_i_ds: inventory.preferred(r),
            })
            .collect();
        Ok(Response::new(PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let inventory = self.inventory.lock();
        let mut container_responses = Vec::new();
        for r in &request.get_ref().container_requests {
            match inventory.allocate(r) {
                Ok(response) => {
                    info!(
                        "allocated {} to a container: {} with its group, the TCTI environment, {} and the self-test request",
                        r.devices_ids.join(", "),
                        response
                            .devices
                            .first()
                            .map(|d| d.host_path.as_str())
                            .unwrap_or_default(),
                        match response.cdi_devices.first() {
                            Some(d) => format!("CDI device {}", d.name),
                            None => "no CDI device".to_owned(),
                        }
                    );
                    container_responses.push(response);
                }
                Err(reason) => {
                    warn!("refused to allocate {}: {reason}", r.devices_ids.join(", "));
                    return Err(Status::invalid_argument(format!(
                        "oci-tpm-hook device plugin: {reason}"
                    )));
                }
            }
        }
        Ok(Response::new(AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}
