#!/usr/bin/env bash
# kubernetes: pods that ask for the TPM by annotation in a real single-node
# cluster (the "cluster" fixture: etcd, kube-apiserver, controller manager,
# scheduler, kubelet) on containerd 1.7 + the NRI plugin, running as the
# DaemonSet of packaging/kubernetes (its image built here from the release
# binary and imported into containerd; nothing pulled), with the policy of
# examples/kubernetes/nri (only namespace tpm-demo may ask). The same pods
# over CRI-O: kubernetes-crio.
# Applied with kubectl from examples/kubernetes/ as a user would: a test pod
# and a Deployment get a working TPM (kubectl exec: tpm2_getrandom, and a key
# created, loaded, used to sign, the signature verified, as user 1000 with
# the tss GID as a supplemental group); a pod that asks for nothing gets
# nothing; a pod in tpm-other is refused and `kubectl describe pod` says why;
# a pod in tpm-other that claims tpm-demo in every namespace key is refused
# (namespace-spoof tries each key alone, for both engines, through CRI). A pod
# whose refusal is seen is deleted at once: a refused pod is retried by the
# kubelet as long as it exists, and on an emulated node every retry adds
# minutes.
# lab: needs cluster
# lab: timeout 3000
# lab: cost 355 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/k8s-workloads.sh"

require_binaries oci-tpm-hook
note "guest tss gid $gid"

step "the cluster's node on containerd (NRI on)"
cluster_node containerd
clean_slate
run kubectl get nodes -o wide
assert_contains "$(kubectl get node "$LAB_NODE_NAME" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}')" "containerd://"

step "the NRI plugin's image, built from packaging/kubernetes/Containerfile"
load_nri_plugin_image

step "the NRI plugin as the DaemonSet of packaging/kubernetes, with examples/kubernetes/nri's policy"
assert_ok kubectl label node "$LAB_NODE_NAME" feature.node.kubernetes.io/tpm=true --overwrite
assert_ok kubectl apply -k "$EX/nri"
assert_ok kubectl -n kube-system rollout status daemonset/oci-tpm-hook-nri --timeout=600s
wait_for 300 "the plugin to be synchronized by containerd" \
    bash -c "kubectl -n kube-system logs daemonset/oci-tpm-hook-nri -c plugin | grep -q 'NRI: synchronized'"
run kubectl -n kube-system logs daemonset/oci-tpm-hook-nri -c plugin
assert_eq "$NRI_PLUGIN_IMAGE" "$(kubectl -n kube-system get daemonset oci-tpm-hook-nri -o jsonpath='{.spec.template.spec.containers[0].image}')" "the DaemonSet's image"
assert_contains "$(cat /opt/oci-tpm-hook/config.toml)" 'namespaces = ["tpm-demo"]' "the policy the init container installed"
test -x /opt/oci-tpm-hook/bin/oci-tpm-hook || fail "the init container did not install the hook"
test -x /opt/oci-tpm-hook/bin/oci-tpm-systemd || fail "the init container did not install the hook's systemd helper"

check_workloads containerd
assert_contains "$(kubectl -n kube-system logs daemonset/oci-tpm-hook-nri -c plugin)" "granted TPM tpmrm0" "the plugin's log"

step "containerd: remove the DaemonSet"
assert_ok kubectl delete -k "$EX/nri" --timeout=300s
assert_ok kubectl label node "$LAB_NODE_NAME" feature.node.kubernetes.io/tpm-
