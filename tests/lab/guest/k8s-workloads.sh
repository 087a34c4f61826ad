# Kubernetes workloads from examples/kubernetes, applied with kubectl as a
# user would, and the checks the Kubernetes scenarios run on them whatever
# the node's runtime (kubernetes: containerd + the NRI DaemonSet;
# kubernetes-crio: CRI-O + hooks.d). Sourced by a scenario after $LAB_LIB.
# shellcheck shell=bash

EX="$LAB_REPO/examples/kubernetes"
SPOOF="$LAB_REPO/tests/lab/k8s/spoof-pod.yaml"
gid=$(tss_gid)

# apply FILE...: kubectl apply, with the node's tss GID in supplementalGroups
# (the examples say 102, Debian 13's; the guest may differ).
apply() {
    local f
    for f in "$@"; do
        sed "s/supplementalGroups: \[102\]/supplementalGroups: [$gid]/" "$f"
        echo "---"
    done | kubectl apply -f -
}

# pod_outcome NS POD SECONDS: "running" once its first container runs,
# "refused: MESSAGES" once a warning event names oci-tpm-hook, "timeout".
pod_outcome() {
    local ns="$1" pod="$2" deadline started msg try
    deadline=$(( EPOCHSECONDS + $3 ))
    while :; do
        try=$EPOCHREALTIME
        started=$(kubectl -n "$ns" get pod "$pod" -o jsonpath='{.status.containerStatuses[0].state.running.startedAt}' 2>/dev/null || true)
        [[ -n "$started" ]] && { echo running; return 0; }
        msg=$(kubectl -n "$ns" get events --field-selector "involvedObject.name=$pod,type=Warning" \
            -o jsonpath='{range .items[*]}{.reason}: {.message}{"\n"}{end}' 2>/dev/null | grep oci-tpm-hook || true)
        [[ -n "$msg" ]] && { echo "refused: $msg"; return 0; }
        [[ $EPOCHSECONDS -ge $deadline ]] && { echo timeout; return 0; }
        pause_after "$try"
    done
}

# assert_refused_by_namespace NS POD WHAT: within 10 minutes a warning event
# from oci-tpm-hook refuses the pod by the policy's [kubernetes] namespaces;
# the events stay in $REFUSAL for further checks.
assert_refused_by_namespace() {
    REFUSAL=$(pod_outcome "$1" "$2" 600)
    printf '%s\n' "$REFUSAL"
    assert_contains "$REFUSAL" "refused:" "$3's outcome"
    assert_contains "$REFUSAL" 'may not ask for a TPM (policy [kubernetes] namespaces' "$3's events"
}

assert_tpm_in() {
    local ns="$1" target="$2" container="${3:-}" out random
    assert_ok kubectl -n "$ns" exec "$target" ${container:+-c "$container"} -- \
        sh -c 'echo "uid=$(id -u) groups=$(id -G)"; stat -c "device: %F %a %g" /dev/tpmrm0; echo "random: $(tpm2_getrandom --hex 8)"'
    out="$LAB_OUTPUT"
    assert_contains "$out" "uid=1000"
    assert_contains "$out" "device: character special file 660 $gid"
    random=$(sed -n 's/^random: //p' <<<"$out")
    [[ "$random" =~ ^[0-9a-f]{16}$ ]] || fail "tpm2_getrandom --hex 8 in $target gave '$random'"
}

# The checks both runtimes share. $1: containerd or crio.
check_workloads() {
    local runtime="$1"

    step "$runtime: namespaces, then the test pod, the Deployment, a pod that asks for nothing"
    await_namespaces_gone
    apply "$EX/namespaces.yaml"
    wait_for 120 "service account default in tpm-demo and tpm-other" \
        bash -c 'kubectl -n tpm-demo get sa default && kubectl -n tpm-other get sa default'
    # The pods that are to be refused come later, each in its own step: the
    # kubelet retries a refused container for as long as its pod exists, and
    # every retry costs the emulated node a container create.
    apply "$EX/tpm-pod.yaml" "$EX/tpm-deployment.yaml" "$EX/no-tpm-pod.yaml"

    step "$runtime: the test pod runs and has the TPM"
    assert_ok kubectl -n tpm-demo wait --for=condition=Ready pod/tpm-test --timeout=600s
    assert_tpm_in tpm-demo tpm-test
    assert_ok kubectl -n tpm-demo logs tpm-test
    assert_contains "$LAB_OUTPUT" "/dev/tpmrm0" "kubectl logs"
    assert_contains "$LAB_OUTPUT" " $gid " "kubectl logs (the node's group)"
    run kubectl -n tpm-demo get pod tpm-test -o jsonpath='{.spec.volumes}{"\n"}{.spec.containers[0].securityContext}{"\n"}'
    assert_eq "" "$(kubectl -n tpm-demo get pod tpm-test -o jsonpath='{.spec.volumes[*].hostPath}')" "hostPath volumes of the test pod"

    step "$runtime: kubectl exec: a key made, loaded and used to sign as user 1000; the signature verifies"
    assert_sign_verify tpm-demo tpm-test

    step "$runtime: the Deployment's app container has the TPM, its sidecar has none"
    assert_ok kubectl -n tpm-demo rollout status deployment/tpm-app --timeout=600s
    assert_tpm_in tpm-demo deployment/tpm-app app
    assert_ok kubectl -n tpm-demo exec deployment/tpm-app -c sidecar -- sh -c 'ls /dev/tpmrm0 2>&1 || true'
    assert_contains "$LAB_OUTPUT" "No such file" "/dev/tpmrm0 in the sidecar"

    step "$runtime: the pod that asks for nothing has no /dev/tpmrm0"
    assert_ok kubectl -n tpm-demo wait --for=condition=Ready pod/no-tpm --timeout=600s
    assert_ok kubectl -n tpm-demo exec no-tpm -- sh -c 'ls /dev/tpmrm0 2>&1; env | grep -c TCTI || true'
    assert_contains "$LAB_OUTPUT" "No such file"
    assert_contains "$LAB_OUTPUT" $'\n0' "TCTI variables"

    step "$runtime: the pod in tpm-other is refused, and kubectl describe says why"
    apply "$EX/denied-pod.yaml"
    assert_refused_by_namespace tpm-other tpm-test "the denied pod"
    # The message names the namespace and the key it came from; in events
    # its quotes may be escaped.
    assert_contains "$REFUSAL" 'Kubernetes namespace' "its events"
    assert_contains "$REFUSAL" 'tpm-other' "its events"
    assert_ok kubectl -n tpm-other describe pod tpm-test
    assert_contains "$LAB_OUTPUT" "may not ask for a TPM" "kubectl describe pod"
    drop_pod tpm-other tpm-test

    step "$runtime: a pod in tpm-other that claims tpm-demo in its own annotations"
    apply "$SPOOF"
    assert_refused_by_namespace tpm-other spoof "the spoofing pod"
    drop_pod tpm-other spoof

    step "$runtime: clean up (the namespaces go while the scenario goes on)"
    assert_ok kubectl delete namespace tpm-demo tpm-other --wait=false
}

# drop_pod NS POD: a pod whose outcome is known goes now, without its grace
# period, so that the kubelet stops retrying it.
drop_pod() {
    kubectl -n "$1" delete pod "$2" --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
}

# await_namespaces_gone: an earlier part's namespaces, deleted without
# waiting, are gone (a namespace being deleted takes no new pods).
await_namespaces_gone() {
    wait_for 600 "namespaces tpm-demo and tpm-other to be gone" \
        bash -c '! kubectl get namespace tpm-demo tpm-other -o name 2>/dev/null | grep -q .'
}

# Whatever an earlier scenario left behind.
clean_slate() {
    kubectl delete -k "$EX/nri" --ignore-not-found --timeout=120s >/dev/null 2>&1 || true
    kubectl label node "$LAB_NODE_NAME" feature.node.kubernetes.io/tpm- >/dev/null 2>&1 || true
    kubectl delete namespace tpm-demo tpm-other --ignore-not-found --wait=false || true
}
