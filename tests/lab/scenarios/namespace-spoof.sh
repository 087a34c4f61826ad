#!/usr/bin/env bash
# namespace-spoof: the policy's [kubernetes] namespaces list must hold against
# a pod that names an allowed namespace in its own annotations.
#
# Which spec annotations can a pod author not override? The engine's keys
# that it sets after copying the pod's annotations into the spec:
#  - CRI-O 1.33 copies every pod annotation into the spec of the pod's
#    containers, then sets its own io.kubernetes.cri-o.* keys, then the
#    container's labels from the kubelet (io.kubernetes.pod.namespace, .name,
#    .uid, io.kubernetes.container.name). containerd's key
#    io.kubernetes.cri.sandbox-namespace is never set by CRI-O: whatever the
#    pod says stays.
#  - containerd 1.7 copies only the annotations its runtime's
#    pod_annotations passthrough names, then sets its own
#    io.kubernetes.cri.* keys (sandbox-namespace, sandbox-name, ...).
#    io.kubernetes.pod.namespace is never set by containerd.
# For each engine this dumps the spec annotations of a spoofing pod and
# asserts that spoofing pods asking for a TPM are refused: the policy
# admits a pod only when every namespace key present is allowed (the
# engine's own key is always among them) and none is empty.
# lab: needs third-party
# lab: timeout 1800
# lab: cost 180 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

require_binaries oci-tpm-hook
HOOK="$HOOK_BIN"
PLUGIN_LOG="$LAB_LOG_DIR/oci-tpm-nri.log"
: >"$HOOK_LOG"
gid=$(tss_gid)

install_policy "$(printf '[hook]\npath = "%s"\n[kubernetes]\nnamespaces = ["%s"]' "$HOOK" tpm-demo)"

probe='if [ -e /dev/tpmrm0 ]; then echo "random: $(tpm2_getrandom --hex 8)"; else echo no-tpmrm0; fi'
NS_KEYS='io.kubernetes.cri.sandbox-namespace|io.kubernetes.pod.namespace|io.kubernetes.cri-o.Namespace|io.kubernetes.cri.container-type|io.kubernetes.cri-o.ContainerType'

# other POD [cri_run options] -- CMD: a pod in namespace tpm-other (not
# allowed), user 1000 with the tss GID; runc, so that a hook's refusal is in
# the CRI error.
other() {
    local name="$1"
    shift
    cri_run --pod "$name" --name app --namespace tpm-other --user 1000 --supplemental-group "$gid" \
        --timeout 120 --rpc-timeout 300 "$@"
}

# namespace_annotations JSON: the namespace-related annotations of a spec.
namespace_annotations() {
    jq -c --arg re "^($NS_KEYS)\$" '.annotations | with_entries(select(.key | test($re)))' <<<"$1"
}

# expect_refused ENGINE WHAT POD CRI_RUN_ARGS...: the pod must not get a
# TPM, and the output must say the policy's reason.
expect_refused() {
    local engine="$1" what="$2" rc=0 out
    shift 2
    printf '+ other %s\n' "$*"
    out=$(other "$@" 2>&1) || rc=$?
    printf '%s\n' "$out"
    if [[ $rc -ne 0 && "$out" == *"may not ask for a TPM"* && "$out" != *"random:"* ]]; then
        printf 'ok: %s: %s is refused, with the reason\n' "$engine" "$what"
    else
        fail "$engine: $what was not refused with the policy's reason (exit $rc)"
    fi
}

# ------------------------------------------------------------------ CRI-O

step "CRI-O 1.33 with the hook in its default hooks directory"
write_packaged_hook "$DEFAULT_HOOKS_DIR"
on_exit "rm -f $DEFAULT_HOOKS_DIR/oci-tpm-hook.json"
load_images_crio
start_crio
export CRI_RUNTIME_ENDPOINT="$CRIO_SOCKET"

step "CRI-O: the spec annotations of a pod in tpm-other that claims tpm-demo (asks for no TPM)"
assert_ok other probe --keep --runtime-handler runc \
    --pod-annotation io.kubernetes.cri.sandbox-namespace=tpm-demo \
    --pod-annotation io.kubernetes.pod.namespace=tpm-demo \
    --pod-annotation io.kubernetes.cri-o.Namespace=tpm-demo -- true
ctr_id=$(sed -n 's/^cri-run: container app (\([0-9a-f]*\)) created$/\1/p' <<<"$LAB_OUTPUT")
pod_id=$(sed -n 's/^cri-run: pod probe (\([0-9a-f]*\))$/\1/p' <<<"$LAB_OUTPUT")
spec=$(crio_userdata_config "$ctr_id")
sandbox_spec=$(crio_userdata_config "$pod_id")
note "container $ctr_id: $(namespace_annotations "$spec")"
note "infra container $pod_id: $(namespace_annotations "$sandbox_spec")"
assert_eq tpm-other "$(jq -r '.annotations["io.kubernetes.pod.namespace"]' <<<"$spec")" \
    "CRI-O container spec: io.kubernetes.pod.namespace (the kubelet's label, set after the pod's annotations)"
assert_eq tpm-demo "$(jq -r '.annotations["io.kubernetes.cri.sandbox-namespace"]' <<<"$spec")" \
    "CRI-O container spec: io.kubernetes.cri.sandbox-namespace (the pod's own annotation, kept)"
assert_eq tpm-other "$(jq -r '.annotations["io.kubernetes.pod.namespace"]' <<<"$sandbox_spec")" \
    "CRI-O infra container spec: io.kubernetes.pod.namespace"
assert_eq tpm-demo "$(jq -r '.annotations["io.kubernetes.cri-o.Namespace"]' <<<"$sandbox_spec")" \
    "CRI-O infra container spec: io.kubernetes.cri-o.Namespace (pod annotations are copied after CRI-O's own keys there)"
cri_remove_all "$CRIO_SOCKET" >/dev/null 2>&1 || true

step "CRI-O: an honest pod in tpm-other asking for the TPM is refused"
expect_refused CRI-O "an honest pod in tpm-other" honest --runtime-handler runc \
    --pod-annotation oci-tpm-hook/device=tpmrm0 -- sh -c "$probe"

step "CRI-O: a pod that sets io.kubernetes.pod.namespace=tpm-demo is refused (CRI-O overwrites that key)"
expect_refused CRI-O "a pod claiming io.kubernetes.pod.namespace=tpm-demo" spoof-pod-key --runtime-handler runc \
    --pod-annotation oci-tpm-hook/device=tpmrm0 --pod-annotation io.kubernetes.pod.namespace=tpm-demo -- sh -c "$probe"

step "CRI-O: a pod that sets io.kubernetes.cri.sandbox-namespace=tpm-demo is refused (CRI-O leaves that key as the pod set it; the policy reads every key)"
expect_refused CRI-O "a pod claiming io.kubernetes.cri.sandbox-namespace=tpm-demo" spoof-cri-key --runtime-handler runc \
    --pod-annotation oci-tpm-hook/device=tpmrm0 --pod-annotation io.kubernetes.cri.sandbox-namespace=tpm-demo -- sh -c "$probe"

step "CRI-O: a pod that sets io.kubernetes.cri.sandbox-namespace to empty is refused (CRI-O leaves that key as the pod set it; the policy reads every key)"
expect_refused CRI-O "a pod with an empty io.kubernetes.cri.sandbox-namespace" spoof-empty-cri-key --runtime-handler runc \
    --pod-annotation oci-tpm-hook/device=tpmrm0 --pod-annotation io.kubernetes.cri.sandbox-namespace= -- sh -c "$probe"

stop_daemon crio
rm -f "$DEFAULT_HOOKS_DIR/oci-tpm-hook.json"

# ------------------------------------------------------------------ containerd

step "containerd 1.7 with NRI, the plugin running, every pod annotation passed through"
sed 's/^target = "file"/target = "stderr"/; /^file = /d' /etc/oci-tpm-hook/config.toml >/run/lab/nri-policy.toml
mkdir -p /run/lab/containerd /etc/nri/conf.d /opt/nri/plugins
containerd_config --nri --pod-annotations '["*"]' >/run/lab/containerd/config.toml
start_daemon containerd containerd --config /run/lab/containerd/config.toml
wait_for_daemon containerd "$LAB_WAIT" ctr version
load_image_containerd
start_daemon oci-tpm-nri "$HOOK" nri --config /run/lab/nri-policy.toml
wait_for 120 "the plugin to be synchronized" grep -q "NRI: synchronized" "$PLUGIN_LOG"
export CRI_RUNTIME_ENDPOINT="$CONTAINERD_SOCKET"

step "containerd: the spec annotations of a pod in tpm-other that claims tpm-demo (asks for no TPM)"
assert_ok other probe --keep \
    --pod-annotation io.kubernetes.cri.sandbox-namespace=tpm-demo \
    --pod-annotation io.kubernetes.pod.namespace=tpm-demo -- true
ctr_id=$(sed -n 's/^cri-run: container app (\([0-9a-f]*\)) created$/\1/p' <<<"$LAB_OUTPUT")
pod_id=$(sed -n 's/^cri-run: pod probe (\([0-9a-f]*\))$/\1/p' <<<"$LAB_OUTPUT")
spec=$(ctr -n k8s.io containers info --spec "$(ctr -n k8s.io containers ls -q | grep "^$ctr_id" | head -n1)")
sandbox_spec=$(containerd_bundle_config "$pod_id")
note "container $ctr_id: $(namespace_annotations "$spec")"
note "sandbox $pod_id (bundle config.json): $(namespace_annotations "$sandbox_spec")"
assert_eq tpm-other "$(jq -r '.annotations["io.kubernetes.cri.sandbox-namespace"]' <<<"$spec")" \
    "containerd container spec: io.kubernetes.cri.sandbox-namespace (containerd's, set after the passthrough)"
assert_eq tpm-demo "$(jq -r '.annotations["io.kubernetes.pod.namespace"]' <<<"$spec")" \
    "containerd container spec: io.kubernetes.pod.namespace (the pod's own annotation, passed through)"
assert_eq tpm-other "$(jq -r '.annotations["io.kubernetes.cri.sandbox-namespace"]' <<<"$sandbox_spec")" \
    "containerd sandbox spec: io.kubernetes.cri.sandbox-namespace"
cri_remove_all "$CONTAINERD_SOCKET" >/dev/null 2>&1 || true

step "containerd + NRI: spoofing pods asking for the TPM are refused"
expect_refused containerd "an honest pod in tpm-other" honest \
    --pod-annotation oci-tpm-hook/device=tpmrm0 -- sh -c "$probe"
expect_refused containerd "a pod claiming io.kubernetes.cri.sandbox-namespace=tpm-demo" spoof-cri-key \
    --pod-annotation oci-tpm-hook/device=tpmrm0 --pod-annotation io.kubernetes.cri.sandbox-namespace=tpm-demo -- sh -c "$probe"
expect_refused containerd "a pod with an empty io.kubernetes.cri.sandbox-namespace" spoof-empty-cri-key \
    --pod-annotation oci-tpm-hook/device=tpmrm0 --pod-annotation io.kubernetes.cri.sandbox-namespace= -- sh -c "$probe"
expect_refused containerd "a pod claiming io.kubernetes.pod.namespace=tpm-demo" spoof-pod-key \
    --pod-annotation oci-tpm-hook/device=tpmrm0 --pod-annotation io.kubernetes.pod.namespace=tpm-demo -- sh -c "$probe"
