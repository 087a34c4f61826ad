//! A stand-in kubelet that measures the device plugin (`make bench`,
//! tests/bench/lab/device-plugin.sh):
//!
//! ```text
//! device_plugin_bench [--wait S] [--hold] DIR [CALLS]
//! ```
//!
//! It serves the kubelet's `Registration` on `DIR/kubelet.sock`, takes the
//! plugin's `Register`, dials the plugin's socket back and reads
//! `ListAndWatch` until a share is healthy, then makes CALLS (1000)
//! `Allocate` calls one after the other, one share each, as the kubelet
//! does for a container asking for one. What it prints on lines starting
//! with `BENCH` is for the benchmark's report. With `--hold` it then keeps
//! the device list stream open, as a kubelet does, until SIGTERM or SIGINT,
//! so that the plugin can be measured idle in its usual state.
//!
//! An example, not a binary of the product: nobody runs it on a node, and
//! the packages and `make build` stay as they are. It is built only for
//! the benchmark, against the same generated API as the plugin.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use oci_tpm_hook::frontend::device_plugin::api::device_plugin_client::DevicePluginClient;
use oci_tpm_hook::frontend::device_plugin::api::registration_server::{
    Registration, RegistrationServer,
};
use oci_tpm_hook::frontend::device_plugin::api::{
    AllocateRequest, ContainerAllocateRequest, Device, Empty, RegisterRequest, HEALTHY,
    KUBELET_SOCKET, VERSION,
};
use oci_tpm_hook::frontend::device_plugin::kubelet::connect;

#[derive(Parser)]
#[command(about = "A stand-in kubelet that times the device plugin's Allocate")]
struct Args {
    /// The device plugin directory: kubelet.sock is served there
    dir: PathBuf,
    /// Allocate calls to time
    #[arg(default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    calls: u32,
    /// Seconds to wait for the registration, and then for a healthy share
    #[arg(long, value_name = "S", default_value_t = 120)]
    wait: u64,
    /// After the calls, keep the device list stream open until SIGTERM or SIGINT
    #[arg(long)]
    hold: bool,
}

/// The kubelet's side of registration: each request goes to `main`.
struct Kubelet {
    requests: mpsc::UnboundedSender<RegisterRequest>,
}

#[tonic::async_trait]
impl Registration for Kubelet {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        // As the kubelet: another API version is refused (and reported by main).
        let refuse = request.version != VERSION;
        let _ = self.requests.send(request);
        if refuse {
            return Err(Status::invalid_argument(format!(
                "only {VERSION} is served"
            )));
        }
        Ok(Response::new(Empty {}))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("device_plugin_bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let wait = Duration::from_secs(args.wait);
    let socket = args.dir.join(KUBELET_SOCKET);
    // A kubelet that starts replaces the socket an earlier one left.
    match std::fs::remove_file(&socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}", socket.display()))
        }
        _ => {}
    }
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    let (tx, mut requests) = mpsc::unbounded_channel();
    tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(
        RegistrationServer::new(Kubelet { requests: tx }),
        UnixListenerStream::new(listener),
    ));
    println!(
        "serving Registration on {}; waiting up to {} s for a device plugin",
        socket.display(),
        args.wait
    );

    let request = tokio::time::timeout(wait, requests.recv())
        .await
        .map_err(|_| {
            anyhow!(
                "no device plugin registered on {} within {} s",
                socket.display(),
                args.wait
            )
        })?
        // The sender lives in the server: it is gone only if the server is.
        .context("the Registration server stopped")?;
    if request.version != VERSION {
        bail!(
            "the plugin registered for API {:?}; this stand-in speaks {VERSION}",
            request.version
        );
    }
    let endpoint = args.dir.join(&request.endpoint);
    println!(
        "registered: {} on {}",
        request.resource_name,
        endpoint.display()
    );

    // One connection for every call, as the kubelet keeps one per plugin.
    let channel = connect(endpoint.clone())
        .await
        .with_context(|| format!("cannot connect to the plugin at {}", endpoint.display()))?;
    let mut plugin = DevicePluginClient::new(channel);
    let mut list = plugin
        .list_and_watch(Empty {})
        .await
        .context("ListAndWatch")?
        .into_inner();

    // The plugin lists a TPM only once its first self-test is done, so the
    // first lists may have no healthy share yet: wait, as a kubelet would
    // before it can admit a pod.
    let started = Instant::now();
    let (listed, healthy) = loop {
        let left = wait.saturating_sub(started.elapsed());
        let response = tokio::time::timeout(left, list.message())
            .await
            .map_err(|_| {
                anyhow!(
                    "no healthy share in the plugin's list within {} s",
                    args.wait
                )
            })?
            .context("ListAndWatch failed")?
            .context("the plugin ended the ListAndWatch stream")?;
        println!("device list: {}", describe(&response.devices));
        let healthy: Vec<String> = response
            .devices
            .iter()
            .filter(|d| d.health == HEALTHY)
            .map(|d| d.id.clone())
            .collect();
        if !healthy.is_empty() {
            break (response.devices.len(), healthy);
        }
    };
    println!(
        "BENCH device-plugin devices: {listed} listed, {} healthy, {} ms after ListAndWatch began",
        healthy.len(),
        started.elapsed().as_millis()
    );

    // Each call is timed from the request to the decoded answer: the gRPC
    // round trip over the unix socket and the plugin's work, as the kubelet
    // sees it. The shares are taken in turn (the plugin keeps no state per
    // allocation, so repeating them is what the kubelet does over time).
    let mut micros = Vec::with_capacity(args.calls as usize);
    for (i, id) in healthy.iter().cycle().take(args.calls as usize).enumerate() {
        let request = AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec![id.clone()],
            }],
        };
        let t = Instant::now();
        let response = plugin.allocate(request).await;
        micros.push(t.elapsed().as_micros());
        let response = response
            .with_context(|| format!("Allocate of {id} (call {} of {})", i + 1, args.calls))?
            .into_inner();
        // An answer without a device node is no allocation.
        if response.container_responses.len() != 1
            || response.container_responses[0].devices.is_empty()
        {
            bail!("Allocate of {id} answered without a device: {response:?}");
        }
    }
    micros.sort_unstable();
    println!(
        "BENCH device-plugin allocate: p50 {} us, p99 {} us, max {} us over {} calls",
        percentile(&micros, 50),
        percentile(&micros, 99),
        percentile(&micros, 100),
        micros.len()
    );

    if !args.hold {
        return Ok(());
    }
    println!("holding the device list stream until SIGTERM or SIGINT");
    let mut terminate = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    loop {
        tokio::select! {
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
            // A change while idle is worth seeing next to the numbers.
            message = list.message() => match message {
                Ok(Some(r)) => println!("device list: {}", describe(&r.devices)),
                Ok(None) => bail!("the plugin ended the ListAndWatch stream"),
                Err(status) => bail!("ListAndWatch failed: {status}"),
            },
        }
    }
}

/// "tpmrm0-1 Healthy, tpmrm0-2 Healthy", or "(none)".
fn describe(devices: &[Device]) -> String {
    if devices.is_empty() {
        return "(none)".into();
    }
    devices
        .iter()
        .map(|d| format!("{} {}", d.id, d.health))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Nearest-rank percentile of sorted, non-empty values.
fn percentile(sorted: &[u128], p: usize) -> u128 {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}
