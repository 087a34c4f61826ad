#!/usr/bin/env bash
# kubernetes-crio: the pods and checks of the kubernetes scenario (see
# there) in a real single-node cluster whose node runs on CRI-O 1.33 from
# the start (the "cluster-crio" fixture), with the hook from CRI-O's default
# hooks directory (the packaged hooks.d/oci-tpm-hook.json) and the policy of
# examples/kubernetes/node-policy.toml in the node's
# /etc/oci-tpm-hook/config.toml (only namespace tpm-demo may ask).
# lab: needs cluster-crio
# lab: timeout 3000
# lab: cost 330 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/k8s-workloads.sh"

require_binaries oci-tpm-hook
note "guest tss gid $gid"
on_exit "rm -f /etc/oci-tpm-hook/config.toml"

step "the node on CRI-O, the hook in its default hooks directory, the policy in /etc/oci-tpm-hook"
mkdir -p /etc/oci-tpm-hook
cp "$EX/node-policy.toml" /etc/oci-tpm-hook/config.toml
clean_slate
cluster_node crio
run kubectl get nodes -o wide
assert_contains "$(kubectl get node "$LAB_NODE_NAME" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion}')" "cri-o://"
test -f "$DEFAULT_HOOKS_DIR/oci-tpm-hook.json" || fail "no hooks file in $DEFAULT_HOOKS_DIR"

check_workloads crio
