#!/usr/bin/env bash
# device-plugin: the node's TPM as a Kubernetes extended resource, in the
# cluster fixture (containerd 1.7 with NRI and CDI on), with the DaemonSets
# of packaging/kubernetes (the NRI plugin and `oci-tpm-hook device-plugin`,
# here with 2 shares per TPM):
#  - the plugin registers oci-tpm-hook.dev/tpm with the kubelet; the node's
#    capacity and allocatable say 2, and the kubelet's pod-resources API
#    (GetAllocatableResources) lists both shares of tpmrm0;
#  - the NFD feature file says tpm=true with the TPM's version and maker,
#    and the CDI spec is there;
#  - a pod with resources.limits {oci-tpm-hook.dev/tpm: 1}, no annotation
#    and no supplementalGroups runs as uid 1000 with /dev/tpmrm0, the tss
#    GID (from the CDI spec), a self-test from the NRI plugin, and signs and
#    verifies with a TPM key; pod-resources lists its share;
#  - the kubelet restarts: the plugin registers again, the node offers the
#    shares again, tpm-a keeps its share, and the next pod's share is
#    allocated by the plugin after the restart;
#  - with one share held by a pod, a Deployment of 2 replicas gets one pod
#    Running and one Pending with the scheduler's "Insufficient
#    oci-tpm-hook.dev/tpm"; a static pod (no scheduler) asking for a share
#    then is not admitted, and the kubelet's error names the resource; once
#    the first pod goes, the Pending replica starts;
#  - a second TPM (vTPM proxy) is found and offered; its swtpm stopped, it
#    turns Unhealthy within the interval + the self-test timeout and the
#    node's allocatable drops while capacity stays; resumed, healthy again;
#    its swtpm ended (the device gone), Unhealthy again;
# lab: needs cluster
# lab: timeout 2400
# lab: cost 860 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"

require_binaries oci-tpm-hook oci-tpm-device-plugin
RESOURCE=oci-tpm-hook.dev/tpm
RESOURCE_JSONPATH='oci-tpm-hook\.dev/tpm'
NS=tpm-dp
FEATURES=/etc/kubernetes/node-feature-discovery/features.d/oci-tpm-hook
PODRESOURCES=(python3 "$LAB_REPO/tests/lab/guest/podresources")
gid=$(tss_gid)
note "guest tss gid $gid"

node_resource() { # capacity|allocatable
    kubectl get node "$LAB_NODE_NAME" -o jsonpath="{.status.$1.$RESOURCE_JSONPATH}"
}

plugin_log() { kubectl -n kube-system logs daemonset/oci-tpm-hook-device-plugin 2>&1 || true; }

# shares_are N: the node's allocatable count is N (the kubelet reports a
# change with its next node status, so allow a minute).
shares_are() {
    wait_for 90 "allocatable $RESOURCE = $1" bash -c "[[ \"\$(kubectl get node $LAB_NODE_NAME -o jsonpath='{.status.allocatable.$RESOURCE_JSONPATH}')\" == $1 ]]"
}

pod_spec() { # INDENT: a pod spec that asks for one share, nothing else
    # (Its process ends on SIGTERM, so that a deletion takes no grace period.)
    sed "s/^/$1/" <<YAML
securityContext: { runAsUser: 1000, runAsGroup: 1000 }
terminationGracePeriodSeconds: 5
containers:
  - name: app
    image: $LAB_IMAGE
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
    resources: { limits: { $RESOURCE: 1 } }
YAML
}

tpm_pod() { # NAME
    printf 'apiVersion: v1\nkind: Pod\nmetadata: { name: %s, namespace: %s }\nspec:\n' "$1" "$NS"
    pod_spec "  "
}

tpm_deployment() { # NAME REPLICAS
    printf 'apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: %s, namespace: %s }\n' "$1" "$NS"
    printf 'spec:\n  replicas: %s\n  selector: { matchLabels: { app: %s } }\n' "$2" "$1"
    printf '  template:\n    metadata: { labels: { app: %s } }\n    spec:\n' "$1"
    pod_spec "      "
}

# pods_in PHASE APP: how many of the Deployment's pods are in PHASE.
pods_in() {
    kubectl -n "$NS" get pods -l "app=$2" --field-selector "status.phase=$1" -o name | grep -c . || true
}

replicas_are() { [[ $(pods_in "$1" "$2") -eq $3 ]]; } # PHASE APP N

clean_slate() {
    kubectl delete namespace "$NS" --ignore-not-found --timeout=300s >/dev/null 2>&1 || true
    kubectl -n kube-system delete daemonset oci-tpm-hook-device-plugin --ignore-not-found --timeout=120s >/dev/null 2>&1 || true
    kubectl delete -k "$LAB_REPO/packaging/kubernetes" --ignore-not-found --timeout=120s >/dev/null 2>&1 || true
    kubectl label node "$LAB_NODE_NAME" feature.node.kubernetes.io/tpm- >/dev/null 2>&1 || true
    # What the plugin leaves on the node by design (it describes the node).
    rm -f "$FEATURES" /var/run/cdi/oci-tpm-hook-device-plugin.json "$LAB_STATIC_POD_DIR/tpm-static.yaml"
}

step "the cluster's node on containerd (NRI and CDI on)"
cluster_node containerd
clean_slate
on_exit clean_slate
load_nri_plugin_image

step "the NRI plugin (default policy), then the device plugin, both DaemonSets of packaging/kubernetes"
assert_ok kubectl label node "$LAB_NODE_NAME" feature.node.kubernetes.io/tpm=true --overwrite
assert_ok kubectl apply -k "$LAB_REPO/packaging/kubernetes"
# Two shares, so that the scenario can use them all. Both DaemonSets roll
# out together.
sed 's|            - --host-root=/host|            - --host-root=/host\n            - --shares=2|' \
    "$LAB_REPO/packaging/kubernetes/oci-tpm-hook-device-plugin.yaml" | kubectl apply -f -
assert_ok kubectl -n kube-system rollout status daemonset/oci-tpm-hook-nri --timeout=600s
assert_ok kubectl -n kube-system rollout status daemonset/oci-tpm-hook-device-plugin --timeout=600s

step "the plugin registers; the node's capacity and allocatable say 2"
wait_for 120 "the plugin's registration" bash -c "kubectl -n kube-system logs daemonset/oci-tpm-hook-device-plugin | grep -q 'registered $RESOURCE with the kubelet'"
shares_are 2
assert_eq 2 "$(node_resource capacity)" "capacity of $RESOURCE"
run kubectl get node "$LAB_NODE_NAME" -o jsonpath='{.status.allocatable}{"\n"}'

step "the kubelet's pod-resources API lists both shares as allocatable"
assert_ok "${PODRESOURCES[@]}" allocatable
assert_contains "$LAB_OUTPUT" "$RESOURCE tpmrm0-1"
assert_contains "$LAB_OUTPUT" "$RESOURCE tpmrm0-2"

step "NFD's feature file and the CDI spec"
wait_for 30 "$FEATURES" test -f "$FEATURES"
run cat "$FEATURES"
assert_contains "$(cat "$FEATURES")" $'\ntpm=true\n'
assert_contains "$(cat "$FEATURES")" "tpm.version=2.0"
assert_contains "$(cat "$FEATURES")" "tpm.manufacturer="
assert_ok jq -c '.devices[] | {name, edits: .containerEdits.additionalGids}' /var/run/cdi/oci-tpm-hook-device-plugin.json
assert_contains "$LAB_OUTPUT" "\"name\":\"tpmrm0\",\"edits\":[$gid]"

step "a pod asking for one share: /dev/tpmrm0, the tss GID, the self-test, a signature as uid 1000"
kubectl create namespace "$NS"
wait_for 120 "service account default in $NS" kubectl -n "$NS" get sa default
tpm_pod tpm-a | kubectl apply -f -
assert_ok kubectl -n "$NS" wait --for=condition=Ready pod/tpm-a --timeout=300s
assert_ok kubectl -n "$NS" exec tpm-a -- sh -c 'echo "uid=$(id -u) groups=$(id -G)"; stat -c "device: %F %a %g" /dev/tpmrm0; echo "tcti=$TPM2TOOLS_TCTI"; echo "random: $(tpm2_getrandom --hex 8)"'
out="$LAB_OUTPUT"
assert_contains "$out" "uid=1000"
assert_contains "$out" " $gid" "the tss GID among the groups"
assert_contains "$out" "device: character special file 660 $gid"
assert_contains "$out" "tcti=device:/dev/tpmrm0"
[[ "$(sed -n 's/^random: //p' <<<"$out")" =~ ^[0-9a-f]{16}$ ]] || fail "tpm2_getrandom in tpm-a: $out"
assert_sign_verify "$NS" tpm-a
assert_contains "$(kubectl -n kube-system logs daemonset/oci-tpm-hook-nri -c plugin)" "granted TPM tpmrm0" "the NRI plugin's log (it added the self-test)"
assert_contains "$(plugin_log)" "allocated tpmrm0-" "the device plugin's log"
assert_ok "${PODRESOURCES[@]}" list
assert_contains "$LAB_OUTPUT" "$NS/tpm-a/app $RESOURCE tpmrm0-"

step "the kubelet restarts while tpm-a holds a share: the plugin registers again"
registrations=$(plugin_log | grep -c "registered $RESOURCE with the kubelet" || true)
cluster_restart_kubelet
wait_for 180 "a new registration" bash -c "[[ \$(kubectl -n kube-system logs daemonset/oci-tpm-hook-device-plugin | grep -c 'registered $RESOURCE with the kubelet') -gt $registrations ]]"
shares_are 2
assert_ok "${PODRESOURCES[@]}" allocatable
assert_contains "$LAB_OUTPUT" "$RESOURCE tpmrm0-1"
assert_contains "$LAB_OUTPUT" "$RESOURCE tpmrm0-2"
# The kubelet kept tpm-a's share across the restart (its checkpoint).
assert_ok "${PODRESOURCES[@]}" list
assert_contains "$LAB_OUTPUT" "$NS/tpm-a/app $RESOURCE tpmrm0-"
allocations_before_restart=$(plugin_log | grep -c "allocated tpmrm0-" || true)

step "a Deployment of 2 while tpm-a holds one of 2 shares: one replica Running, one Pending with Insufficient $RESOURCE"
tpm_deployment tpm-many 2 | kubectl apply -f -
wait_for 300 "one tpm-many replica Running" replicas_are Running tpm-many 1
[[ $(plugin_log | grep -c "allocated tpmrm0-" || true) -gt $allocations_before_restart ]] \
    || fail "the running tpm-many replica got no share from the plugin after the kubelet's restart"
wait_for 120 "the scheduler's FailedScheduling event for a tpm-many replica" bash -c \
    "kubectl -n $NS get events --field-selector reason=FailedScheduling -o jsonpath='{.items[*].message}' | grep -q 'Insufficient $RESOURCE'"
run kubectl -n "$NS" get events --field-selector reason=FailedScheduling -o jsonpath='{.items[-1:].message}{"\n"}'
assert_eq 1 "$(pods_in Pending tpm-many)" "tpm-many replicas Pending"

step "a static pod asking for a share with none free: the kubelet does not admit it, naming the resource"
{
    printf 'apiVersion: v1\nkind: Pod\nmetadata: { name: tpm-static, namespace: %s }\nspec:\n' "$NS"
    pod_spec "  "
} >"$LAB_STATIC_POD_DIR/tpm-static.yaml"
# A rejected static pod gets no mirror pod in the API; the kubelet's
# Warning event about it (named like the mirror pod) carries the verdict.
static_events() {
    kubectl -n "$NS" get events --field-selector "involvedObject.name=tpm-static-$LAB_NODE_NAME,type=Warning" \
        -o jsonpath='{range .items[*]}{.reason}: {.message}{"\n"}{end}'
}
static_refused() { static_events | grep -q "$RESOURCE"; }
wait_for 180 "the kubelet's admission verdict on tpm-static" static_refused
verdict=$(static_events)
note "the kubelet on tpm-static: $verdict"
assert_contains "$verdict" "$RESOURCE" "the kubelet's admission error names the resource"
assert_ok ctr -n k8s.io containers list -q "labels.\"io.kubernetes.pod.name\"==tpm-static-$LAB_NODE_NAME"
[[ -z "$LAB_OUTPUT" ]] || fail "the refused static pod has containers: $LAB_OUTPUT"
rm -f "$LAB_STATIC_POD_DIR/tpm-static.yaml"

step "tpm-a goes: the Pending replica starts"
assert_ok kubectl -n "$NS" delete pod tpm-a --timeout=120s
wait_for 300 "both tpm-many replicas Running" replicas_are Running tpm-many 2
assert_ok kubectl -n "$NS" wait --for=condition=Ready pod -l app=tpm-many --timeout=300s
assert_ok kubectl -n "$NS" delete deployment tpm-many --timeout=120s
wait_for 120 "tpm-many's pods gone" bash -c "! kubectl -n $NS get pods -l app=tpm-many -o name | grep -q ."

step "a second TPM (vTPM proxy) is found and offered"
# Not in $(...): add_vtpm records its swtpm for cleanup in this shell.
add_vtpm >/run/lab/vtpm.out
dev=$(tail -n1 /run/lab/vtpm.out)
swtpm_pid=${LAB_DAEMON_PIDS[-1]}
name=$(basename "$dev")
note "second TPM: $dev ($(device_numbers "$dev")), its swtpm pid $swtpm_pid"
shares_are 4
assert_eq 4 "$(node_resource capacity)" "capacity with two TPMs"

step "its swtpm stopped: $name turns Unhealthy within 10 s + the 5 s self-test timeout; allocatable drops, capacity stays"
t0=$(date +%s)
kill -STOP "$swtpm_pid"
on_exit "kill -CONT $swtpm_pid 2>/dev/null || true"
wait_for 60 "the plugin to report $name Unhealthy" bash -c "kubectl -n kube-system logs daemonset/oci-tpm-hook-device-plugin | grep -q 'TPM $name is Unhealthy'"
took=$(( $(date +%s) - t0 ))
note "reported Unhealthy after ${took} s"
[[ $took -le 25 ]] || fail "$name was reported Unhealthy after $took s, more than the interval + the timeout (15.5 s) and a margin"
shares_are 2
assert_eq 4 "$(node_resource capacity)" "capacity with an unhealthy TPM"
assert_ok "${PODRESOURCES[@]}" allocatable
note "pod-resources with $name unhealthy: $(tr '\n' ' ' <<<"$LAB_OUTPUT")"

step "resumed: healthy again"
kill -CONT "$swtpm_pid"
shares_are 4

step "its swtpm ended (the device goes away): Unhealthy again, allocatable drops"
kill -TERM "$swtpm_pid"
shares_are 2
run bash -c "kubectl -n kube-system logs daemonset/oci-tpm-hook-device-plugin | grep '$name' | tail -n 5"

step "the plugin's log"
plugin_log | tail -n 40
