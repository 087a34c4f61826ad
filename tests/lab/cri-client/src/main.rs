//! lab-cri: run one container in its own pod through containerd's CRI API,
//! the way the kubelet would, and report what happened.
//!
//!   lab-cri [--socket PATH] version
//!   lab-cri [--socket PATH] run [OPTIONS] IMAGE -- CMD [ARG...]
//!
//! run options:
//!   --name NAME               pod and container name (default lab)
//!   --namespace NS            pod namespace (default default)
//!   --pod-annotation K=V      pod annotation (repeatable)
//!   --annotation K=V          container annotation (repeatable)
//!   --user UID                run as this user
//!   --group GID               supplementary group (repeatable)
//!   --timeout SECS            how long the container may run (default 60)
//!
//! `run` prints the container's output, then "exit code: N" (or, when the
//! runtime refuses to create the container, "create failed: <message>") on
//! stderr, always removes the pod, and exits with the container's exit code
//! (2 when the container could not be created or started).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
const LOG_ROOT: &str = "/var/log/lab-cri";

#[derive(Default)]
struct RunOptions {
    name: String,
    namespace: String,
    pod_annotations: HashMap<String, String>,
    annotations: HashMap<String, String>,
    user: Option<i64>,
    groups: Vec<i64>,
    timeout: Duration,
    image: String,
    command: Vec<String>,
}

fn key_value(s: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("{s:?} is not KEY=VALUE"))?;
    Ok((k.to_string(), v.to_string()))
}

fn parse_run(args: &[String]) -> anyhow::Result<RunOptions> {
    let mut o = RunOptions {
        name: "lab".into(),
        namespace: "default".into(),
        timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--name" => o.name = value()?.clone(),
            "--namespace" => o.namespace = value()?.clone(),
            "--pod-annotation" => {
                let (k, v) = key_value(value()?)?;
                o.pod_annotations.insert(k, v);
            }
            "--annotation" => {
                let (k, v) = key_value(value()?)?;
                o.annotations.insert(k, v);
            }
            "--user" => o.user = Some(value()?.parse()?),
            "--group" => o.groups.push(value()?.parse()?),
            "--timeout" => o.timeout = Duration::from_secs(value()?.parse()?),
            "--" => {
                o.command = it.by_ref().cloned().collect();
            }
            s if s.starts_with("--") => bail!("unknown option {s}"),
            s => {
                if !o.image.is_empty() {
                    bail!("unexpected argument {s:?} (put the command after --)");
                }
                o.image = s.to_string();
            }
        }
    }
    if o.image.is_empty() || o.command.is_empty() {
        bail!("usage: lab-cri run [OPTIONS] IMAGE -- CMD [ARG...]");
    }
    Ok(o)
}

async fn connect(socket: String) -> anyhow::Result<RuntimeServiceClient<Channel>> {
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .context("cannot connect to the CRI socket")?;
    Ok(RuntimeServiceClient::new(channel))
}

/// Only the message of a gRPC error: what the runtime said, as a user sees it.
fn grpc_message(e: tonic::Status) -> String {
    e.message().to_string()
}

async fn run(client: &mut RuntimeServiceClient<Channel>, o: RunOptions) -> anyhow::Result<i32> {
    let uid = format!(
        "{}-{}",
        o.name,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    let log_dir = format!("{LOG_ROOT}/{uid}");
    std::fs::create_dir_all(&log_dir)?;
    let pod_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: o.name.clone(),
            uid: uid.clone(),
            namespace: o.namespace.clone(),
            attempt: 0,
        }),
        // No hostname: with the node's network there is no UTS namespace
        // to set it in (runc refuses).
        log_directory: log_dir.clone(),
        annotations: o.pod_annotations.clone(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                // The node's network: the lab guest has no CNI network.
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let started = Instant::now();
    let pod_id = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("RunPodSandbox failed: {}", grpc_message(e)))?
        .into_inner()
        .pod_sandbox_id;
    eprintln!("pod {pod_id} ready in {} ms", started.elapsed().as_millis());

    let result = run_container(client, &o, &pod_id, &pod_config, &log_dir).await;

    let _ = client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await;
    let _ = client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod_id,
        })
        .await;
    let _ = std::fs::remove_dir_all(&log_dir);
    result
}

async fn run_container(
    client: &mut RuntimeServiceClient<Channel>,
    o: &RunOptions,
    pod_id: &str,
    pod_config: &PodSandboxConfig,
    log_dir: &str,
) -> anyhow::Result<i32> {
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: o.name.clone(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: o.image.clone(),
            ..Default::default()
        }),
        command: o.command.clone(),
        annotations: o.annotations.clone(),
        log_path: "container.log".into(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                run_as_user: o.user.map(|value| Int64Value { value }),
                supplemental_groups: o.groups.clone(),
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let started = Instant::now();
    let created = client
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await;
    let id = match created {
        Ok(r) => r.into_inner().container_id,
        Err(e) => {
            eprintln!("create failed: {}", grpc_message(e));
            return Ok(2);
        }
    };
    eprintln!(
        "container {id} created in {} ms",
        started.elapsed().as_millis()
    );
    if let Err(e) = client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
    {
        eprintln!("start failed: {}", grpc_message(e));
        return Ok(2);
    }
    let deadline = Instant::now() + o.timeout;
    let exit_code = loop {
        let status = client
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .map_err(|e| anyhow::anyhow!("ContainerStatus failed: {}", grpc_message(e)))?
            .into_inner()
            .status
            .context("no container status")?;
        if status.state == ContainerState::ContainerExited as i32 {
            break status.exit_code;
        }
        if Instant::now() > deadline {
            eprintln!("container still running after {:?}; stopping it", o.timeout);
            let _ = client
                .stop_container(StopContainerRequest {
                    container_id: id.clone(),
                    timeout: 1,
                })
                .await;
            break 124;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The CRI log format: "<time> <stream> <P|F> <text>" per line.
    let log = std::fs::read_to_string(format!("{log_dir}/container.log")).unwrap_or_default();
    for line in log.lines() {
        let text = line.splitn(4, ' ').nth(3).unwrap_or("");
        println!("{text}");
    }
    eprintln!("exit code: {exit_code}");
    Ok(exit_code)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut socket = DEFAULT_SOCKET.to_string();
    if args.first().map(String::as_str) == Some("--socket") && args.len() > 1 {
        socket = args.remove(1);
        args.remove(0);
    }
    let code = match real_main(socket, args).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lab-cri: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

async fn real_main(socket: String, args: Vec<String>) -> anyhow::Result<i32> {
    let mut client = connect(socket).await?;
    match args.first().map(String::as_str) {
        Some("version") => {
            let v = client
                .version(VersionRequest {
                    version: "v1".into(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("Version failed: {}", grpc_message(e)))?
                .into_inner();
            println!("{} {} (CRI {})", v.runtime_name, v.runtime_version, v.runtime_api_version);
            Ok(0)
        }
        Some("run") => run(&mut client, parse_run(&args[1..])?).await,
        _ => bail!("usage: lab-cri [--socket PATH] version | run [OPTIONS] IMAGE -- CMD [ARG...]"),
    }
}
