# CRI-O and Kubernetes in the lab guest: configuration and small helpers,
# shared by scenarios (lib.sh sources this file) and by the cluster fixture
# (guest/cluster). Defines variables and functions only; starts nothing.
#
# The binaries (crio, pinns, kubelet, kube-apiserver, kube-scheduler,
# kube-controller-manager) are built on the host from pinned sources
# (tests/lab/build-third-party.sh) and shared read-only at /lab/third-party.
# conmon, etcd and kubectl come from Debian.
# shellcheck shell=bash

LAB_THIRD_PARTY_BIN="${LAB_THIRD_PARTY_BIN:-/lab/third-party/bin}"
LAB_REPO="${LAB_REPO:-/lab/repo}"
LAB_BIN="${LAB_BIN:-/run/lab/bin}"
LAB_IMAGE_DIR="${LAB_IMAGE_DIR:-/lab/image}"
LAB_IMAGE="${LAB_IMAGE:-localhost/tpm-test:latest}"
LAB_PAUSE_IMAGE="${LAB_PAUSE_IMAGE:-localhost/pause:lab}"
CONTAINERD_SOCKET=/run/containerd/containerd.sock
CRIO_SOCKET=/run/crio/crio.sock
# Where CRI-O and podman look for hooks when told nothing else.
DEFAULT_HOOKS_DIR=/usr/share/containers/oci/hooks.d
# The node: a dummy interface with this address (the guest has no network
# interface of its own), so that the API server reaches the kubelet for
# `kubectl logs` and `kubectl exec`.
LAB_NODE_NAME=lab-node
LAB_NODE_IP=10.250.0.2
LAB_POD_SUBNET=10.244.0.0/16
LAB_SERVICE_RANGE=10.96.0.0/16
# The cluster node's kubelet also runs the static pods it finds here.
LAB_STATIC_POD_DIR=/run/lab/static-pods
# The image of the NRI plugin's DaemonSet (packaging/kubernetes), as the
# manifest names it and as containerd normalizes that name.
NRI_PLUGIN_IMAGE=oci-tpm-hook:0.1.0
NRI_PLUGIN_IMAGE_FULL=docker.io/library/oci-tpm-hook:0.1.0

# have_third_party: whether the CRI-O and Kubernetes binaries were shared with the guest.
have_third_party() { [[ -x "$LAB_THIRD_PARTY_BIN/crio" && -x "$LAB_THIRD_PARTY_BIN/kubelet" ]]; }

# cri_version SOCKET: "NAME VERSION" of the CRI runtime behind SOCKET (fails when it does not answer).
cri_version() { python3 "$LAB_REPO/tests/lab/guest/cri-run" --socket "$1" --rpc-timeout 10 --version; }

# cri_remove_all SOCKET: stop and remove every pod sandbox of that runtime.
cri_remove_all() { python3 "$LAB_REPO/tests/lab/guest/cri-run" --socket "$1" --rpc-timeout 180 --remove-all; }

# ---------------------------------------------------------------- hooks.d

# write_packaged_hook DIR: the packaged hooks.d/oci-tpm-hook.json in DIR, its
# hook.path pointing at the project's binary in the guest (like the package
# installs it, with the lab's path).
write_packaged_hook() {
    local dir="$1" src="$LAB_REPO/hooks.d/oci-tpm-hook.json"
    mkdir -p "$dir"
    jq --arg p "$LAB_BIN/oci-tpm-hook" '.hook.path = $p' "$src" >"$dir/oci-tpm-hook.json"
}

# ---------------------------------------------------------------- CNI

# cni_config: a bridge network for pods (no masquerading: the guest has no
# iptables/nftables, and pods need no way out).
cni_config() {
    cat <<JSON
{
  "cniVersion": "1.0.0",
  "name": "lab-pods",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$LAB_POD_SUBNET"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "loopback"}
  ]
}
JSON
}

# ---------------------------------------------------------------- containerd

# containerd_config [--nri] [--cdi] [--cni-dir DIR] [--pod-annotations TOML_LIST]:
# containerd 1.7's config with the CRI plugin (sandbox image
# localhost/pause:lab, runc, cgroupfs); with --nri also
# packaging/containerd/nri.toml (NRI on, socket /var/run/nri/nri.sock);
# --cdi turns on CDI in the CRI plugin (specs in /etc/cdi and /var/run/cdi);
# --pod-annotations '["*"]' sets the runc runtime's pod annotation passthrough.
# --device-plugin: what the device plugin's pods need: CDI on (Allocate names
# a CDI device, which adds the node's group as an additional GID), and the
# oci-tpm-hook/* container annotations (Allocate's request) passed into the
# spec, where the NRI plugin and the hook read them.
containerd_config() {
    local nri=0 cni_dir=/etc/cni/net.d passthrough="" cdi="" container_passthrough=""
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --nri) nri=1 ;;
            --cdi) cdi="enable_cdi = true" ;;
            --cni-dir) cni_dir="$2"; shift ;;
            --pod-annotations) passthrough="pod_annotations = $2"; shift ;;
            --device-plugin)
                cdi=$'enable_cdi = true\n  cdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"]'
                container_passthrough='      container_annotations = ["oci-tpm-hook/*"]'
                ;;
            *) echo "containerd_config: unknown option $1" >&2; return 2 ;;
        esac
        shift
    done
    cat <<TOML
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "$CONTAINERD_SOCKET"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$LAB_PAUSE_IMAGE"
  enable_selinux = false
  $cdi
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
$container_passthrough
      $passthrough
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$cni_dir"
TOML
    [[ $nri -eq 1 ]] && cat "$LAB_REPO/packaging/containerd/nri.toml"
    return 0
}

# ---------------------------------------------------------------- CRI-O

# crio_config [--nri] [--hooks-dir DIR] [--cni-dir DIR] [--runtime crun|runc]:
# CRI-O's config for the lab. Storage is podman's (overlay in
# /var/lib/containers/storage), so images imported with podman are CRI-O's
# too; cgroupfs, conmon in the pod's cgroup, runtimes crun (default) and runc,
# the pause image localhost/pause:lab run with its own entrypoint. Without
# --hooks-dir CRI-O reads its default hooks directory,
# /usr/share/containers/oci/hooks.d. NRI is off unless --nri.
crio_config() {
    local nri=false hooks="" cni_dir=/etc/cni/net.d runtime=crun
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --nri) nri=true ;;
            --hooks-dir) hooks="hooks_dir = [\"$2\"]"; shift ;;
            --cni-dir) cni_dir="$2"; shift ;;
            --runtime) runtime="$2"; shift ;;
            *) echo "crio_config: unknown option $1" >&2; return 2 ;;
        esac
        shift
    done
    cat <<TOML
[crio]
root = "/var/lib/containers/storage"
runroot = "/run/containers/storage"
storage_driver = "overlay"
log_dir = "/var/log/crio/pods"

[crio.api]
listen = "$CRIO_SOCKET"

[crio.runtime]
default_runtime = "$runtime"
cgroup_manager = "cgroupfs"
conmon_cgroup = "pod"
pinns_path = "$LAB_THIRD_PARTY_BIN/pinns"
default_ulimits = []
$hooks

[crio.runtime.runtimes.crun]
runtime_path = "/usr/bin/crun"
runtime_type = "oci"
runtime_root = "/run/crun"
monitor_path = "/usr/bin/conmon"

[crio.runtime.runtimes.runc]
runtime_path = "/usr/bin/runc"
runtime_type = "oci"
runtime_root = "/run/runc"
monitor_path = "/usr/bin/conmon"

[crio.image]
pause_image = "$LAB_PAUSE_IMAGE"
# Run the pause image's own entrypoint (it has no /pause binary).
pause_command = ""

[crio.network]
network_dir = "$cni_dir"
plugin_dirs = ["/usr/lib/cni"]

[crio.nri]
enable_nri = $nri
nri_listen = "/var/run/nri/nri.sock"
TOML
}

# crio_command CONFIG: the command line that runs CRI-O with CONFIG.
crio_command() {
    echo "$LAB_THIRD_PARTY_BIN/crio --config $1 --log-level info"
}

# load_images_crio: the test image and the pause image in podman's storage,
# which CRI-O shares. The pause container's entrypoint exits on SIGTERM
# (a plain `sleep` as PID 1 ignores it, and every pod stop would then wait
# for the runtime's kill timeout).
load_images_crio() {
    if ! podman image exists "$LAB_IMAGE"; then
        podman import --quiet --change 'CMD ["/bin/bash"]' "$LAB_IMAGE_DIR/rootfs.tar" "$LAB_IMAGE" >/dev/null
    fi
    if ! podman image exists "$LAB_PAUSE_IMAGE"; then
        # The test image with another entrypoint: no new layer, no second import.
        local ctx
        ctx=$(mktemp -d /run/lab/pause-build.XXXXXX)
        cat >"$ctx/Containerfile" <<EOF
FROM $LAB_IMAGE
ENTRYPOINT ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait \$!; done"]
CMD []
EOF
        podman build --quiet --pull=never -t "$LAB_PAUSE_IMAGE" "$ctx" >/dev/null
        rm -rf "$ctx"
    fi
}

# crio_userdata_config ID_PREFIX: the OCI config.json CRI-O wrote for the
# container (or pod sandbox) whose id starts with ID_PREFIX.
crio_userdata_config() {
    local f
    for f in /run/containers/storage/overlay-containers/"$1"*/userdata/config.json; do
        [[ -f "$f" ]] && { cat "$f"; return 0; }
    done
    echo "no CRI-O config.json for container $1" >&2
    return 1
}

# containerd_bundle_config ID_PREFIX: the OCI config.json in the runc bundle of
# the CRI container (k8s.io namespace) whose id starts with ID_PREFIX.
containerd_bundle_config() {
    local f
    for f in /run/containerd/io.containerd.runtime.v2.task/k8s.io/"$1"*/config.json; do
        [[ -f "$f" ]] && { cat "$f"; return 0; }
    done
    echo "no containerd bundle config.json for container $1" >&2
    return 1
}

# ---------------------------------------------------------------- node

# setup_node_network: give the guest an addressed interface (a dummy link,
# LAB_NODE_IP/24, default route through it) once per boot.
setup_node_network() {
    ip link set lo up
    if ! ip link show lab0 >/dev/null 2>&1; then
        modprobe dummy 2>/dev/null || true
        ip link add lab0 type dummy
        ip addr add "$LAB_NODE_IP/24" dev lab0
        ip link set lab0 up
    fi
    ip route show default | grep -q . || ip route add default dev lab0
}

# kubelet_config RUNTIME_SOCKET [STATIC_POD_DIR]: a KubeletConfiguration for
# the lab node: cgroupfs, no QoS cgroups, no swap check, no eviction or image
# garbage collection (the image stores are small tmpfs mounts), anonymous
# access with AlwaysAllow (the API server calls it for logs and exec).
kubelet_config() {
    local socket="$1" static="${2:-}"
    cat <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$socket
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
resolvConf: ""
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
readOnlyPort: 0
evictionHard: {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
runtimeRequestTimeout: "10m"
serializeImagePulls: false
YAML
    [[ -n "$static" ]] && echo "staticPodPath: $static"
    return 0
}

# kubelet_command CONFIG [KUBECONFIG]: the kubelet's command line, for the lab node.
kubelet_command() {
    local config="$1" kubeconfig="${2:-}"
    echo "$LAB_THIRD_PARTY_BIN/kubelet --config=$config --hostname-override=$LAB_NODE_NAME --node-ip=$LAB_NODE_IP --root-dir=/var/lib/kubelet --v=1${kubeconfig:+ --kubeconfig=$kubeconfig}"
}
