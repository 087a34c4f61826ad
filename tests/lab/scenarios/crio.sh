#!/usr/bin/env bash
# crio: CRI-O 1.33 runs the hook from its default hooks directory
# (/usr/share/containers/oci/hooks.d, the packaged hooks.d/oci-tpm-hook.json),
# with crun and with runc, for pods made through CRI as a kubelet makes them:
# the pod annotation, the per-container annotation, the tss GID as a
# supplemental group for user 1000, nothing for a pod that asks for nothing,
# a refusal readable in the CRI error. A standalone kubelet runs an annotated
# static pod over CRI-O. Then CRI-O with NRI on and `oci-tpm-hook nri` as its
# plugin, the hooks file removed: the same pod gets its TPM through NRI.
# lab: needs third-party
# lab: timeout 1800
# lab: cost 190 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

require_binaries oci-tpm-hook
HOOK="$HOOK_BIN"
PLUGIN_LOG="$LAB_LOG_DIR/oci-tpm-nri.log"
: >"$HOOK_LOG"
gid=$(tss_gid)
rm_numbers=$(cat /sys/class/tpmrm/tpmrm0/dev)
hexnums=$(printf '%x:%x' "${rm_numbers%%:*}" "${rm_numbers##*:}")
note "guest tss gid $gid, tpmrm0 $rm_numbers"

# The node's policy: pods of namespace "lab" may ask; the hook logs to a file
# (kept with the run's logs).
HOOK_LOG_LEVEL=debug install_policy "$(printf '[hook]\npath = "%s"\n[kubernetes]\nnamespaces = ["%s"]' "$HOOK" lab)"

probe='echo "uid=$(id -u) groups=$(id -G)"
if [ -e /dev/tpmrm0 ]; then
  echo "device: $(stat -c "%F %a %g %t:%T" /dev/tpmrm0)"
  echo "random: $(tpm2_getrandom --hex 8)"
else
  echo "no-tpmrm0"
fi'

# pod NAME [cri_run options] -- CMD...: a pod "NAME" in namespace "lab" with
# one container "app" as user 1000 with the tss GID as a supplemental group.
pod() {
    local name="$1"
    shift
    cri_run --pod "$name" --name app --namespace lab --user 1000 --supplemental-group "$gid" \
        --timeout 120 --rpc-timeout 300 "$@"
}

# assert_tpm_works OUTPUT: the probe saw the node and read 8 random bytes.
assert_tpm_works() {
    local random
    assert_contains "$1" "uid=1000"
    assert_contains "$1" "device: character special file 660 $gid $hexnums" "device node (type, mode, gid, numbers)"
    random=$(sed -n 's/^random: //p' <<<"$1")
    [[ "$random" =~ ^[0-9a-f]{16}$ ]] || fail "tpm2_getrandom --hex 8 gave '$random', expected 16 hex digits"
    note "random bytes from the TPM: $random"
}

# ------------------------------------------------------------------ hooks.d

step "CRI-O with its default hooks directory holding the packaged hook file"
write_packaged_hook "$DEFAULT_HOOKS_DIR"
on_exit "rm -f $DEFAULT_HOOKS_DIR/oci-tpm-hook.json"
run jq -c . "$DEFAULT_HOOKS_DIR/oci-tpm-hook.json"
load_images_crio
start_crio
run "$LAB_THIRD_PARTY_BIN/crio" --version
assert_not_contains "$(cat /run/lab/crio/crio.conf)" "hooks_dir" "CRI-O's config (default hooks directory)"
export CRI_RUNTIME_ENDPOINT="$CRIO_SOCKET"

step "crun: a pod annotated oci-tpm-hook/device=tpmrm0 gets the TPM (user 1000, tss GID $gid)"
t0=$(date +%s%N)
assert_ok pod tpm-crun --pod-annotation oci-tpm-hook/device=tpmrm0 -- sh -c "$probe"
with_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
assert_tpm_works "$LAB_OUTPUT"

step "runc: the same pod"
assert_ok pod tpm-runc --runtime-handler runc --pod-annotation oci-tpm-hook/device=tpmrm0 -- sh -c "$probe"
assert_tpm_works "$LAB_OUTPUT"

step "per-container annotation: oci-tpm-hook/device.app reaches container app only"
assert_ok pod per-ctr --pod-annotation oci-tpm-hook/device.app=tpmrm0 -- sh -c "$probe"
assert_tpm_works "$LAB_OUTPUT"
assert_ok pod per-ctr-other --name sidecar --pod-annotation oci-tpm-hook/device.app=tpmrm0 -- sh -c "$probe"
assert_contains "$LAB_OUTPUT" "no-tpmrm0" "container sidecar of a pod that asks for app's TPM"

step "a pod that asks for nothing gets no /dev/tpmrm0"
t0=$(date +%s%N)
assert_ok pod plain -- sh -c "$probe"
without_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
assert_contains "$LAB_OUTPUT" "no-tpmrm0"

step "a refusal is readable in the CRI error (runc)"
assert_fails pod refused-runc --runtime-handler runc --pod-annotation oci-tpm-hook/device=tpmrm9 -- sh -c "$probe"
assert_contains "$LAB_OUTPUT" "CRI error"
assert_contains "$LAB_OUTPUT" "tpmrm9" "the CRI error"
assert_not_contains "$LAB_OUTPUT" "random:"
assert_fails pod bad-value-runc --runtime-handler runc --pod-annotation oci-tpm-hook/device=tpmrm0 \
    --pod-annotation oci-tpm-hook/self-test=fast -- true
# runc quotes the hook's stderr in its own message: \"fast\".
assert_contains "$LAB_OUTPUT" 'annotation oci-tpm-hook/self-test=' "the CRI error"
assert_contains "$LAB_OUTPUT" 'fast' "the CRI error"
assert_contains "$LAB_OUTPUT" 'is not valid' "the CRI error"

step "a refusal under crun"
assert_fails pod refused-crun --pod-annotation oci-tpm-hook/device=tpmrm9 -- sh -c "$probe"
assert_contains "$LAB_OUTPUT" "CRI error"
assert_not_contains "$LAB_OUTPUT" "random:"
# crun discards a hook's stderr; the hook reports through crun's own
# stderr and log, which CRI-O passes on.
assert_contains "$LAB_OUTPUT" "host has no TPM device tpmrm9" "the CRI error, under crun"

step "the pod's infra container: what CRI-O gives it"
assert_ok pod infra --keep --pod-annotation oci-tpm-hook/device=tpmrm0 -- true
sandbox=$(sed -n 's/^cri-run: pod infra (\([0-9a-f]*\))$/\1/p' <<<"$LAB_OUTPUT")
sandbox_spec=$(crio_userdata_config "$sandbox" | jq -c .)
note "infra container annotations: $(jq -c '.annotations | with_entries(select(.key | test("oci-tpm-hook|namespace|ContainerType")))' <<<"$sandbox_spec")"
assert_eq 0 "$(grep -c "${sandbox:0:12}" "$HOOK_LOG" || true)" "hook log lines naming the infra container (it gets no TPM)"
cri_remove_all "$CRIO_SOCKET" >/dev/null 2>&1 || true

step "a standalone kubelet runs an annotated static pod over CRI-O"
static=/run/lab/static-pods
mkdir -p "$static"
cat >"$static/tpm-static.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: tpm-static
  namespace: lab
  annotations:
    oci-tpm-hook/device: tpmrm0
spec:
  hostNetwork: true
  restartPolicy: Never
  securityContext: {runAsUser: 1000, supplementalGroups: [$gid]}
  containers:
  - name: app
    image: $LAB_IMAGE
    imagePullPolicy: Never
    command: ["sh", "-c", "echo random: \$(tpm2_getrandom --hex 8); trap 'exit 0' TERM; sleep infinity & wait"]
YAML
start_kubelet "$static" "$CRIO_SOCKET"
wait_for 300 "the static pod's log" bash -c "grep -rhs 'random: [0-9a-f]\{16\}' /var/log/pods/lab_tpm-static-*/app/"
assert_contains "$(cat /var/log/pods/lab_tpm-static-*/app/*.log)" "random: "
stop_daemon kubelet
# The kubelet leaves its pod running. It goes now, in seconds: its process
# ends on SIGTERM (a shell as PID 1 would ignore it, and the stop would wait
# out CRI's deadline), and a pod left here would be restored by the next
# CRI-O on this guest, the cluster's.
assert_ok cri_remove_all "$CRIO_SOCKET"

# ------------------------------------------------------------------ NRI

step "CRI-O with NRI on, the hooks file removed, oci-tpm-hook nri as its plugin"
stop_daemon crio
rm -f "$DEFAULT_HOOKS_DIR/oci-tpm-hook.json"
# The plugin's policy logs to stderr (its log); it hands the same file to the
# hook it adds.
sed 's/^target = "file"/target = "stderr"/; /^file = /d' /etc/oci-tpm-hook/config.toml >/run/lab/nri-policy.toml
start_crio --nri
start_daemon oci-tpm-nri "$HOOK" nri --config /run/lab/nri-policy.toml
wait_for 120 "the plugin to be synchronized by CRI-O" grep -q "NRI: synchronized" "$PLUGIN_LOG"
run cat "$PLUGIN_LOG"

step "the same pod gets its TPM through NRI"
assert_ok pod tpm-nri --keep --pod-annotation oci-tpm-hook/device=tpmrm0 -- sh -c "$probe"
out="$LAB_OUTPUT"
assert_tpm_works "$out"
assert_contains "$(cat "$PLUGIN_LOG")" "granted TPM tpmrm0 ($rm_numbers)"
ctr_id=$(sed -n 's/^cri-run: container app (\([0-9a-f]*\)) created$/\1/p' <<<"$out")
spec=$(crio_userdata_config "$ctr_id" | jq -c .)
major=${rm_numbers%%:*} minor=${rm_numbers##*:}
assert_eq 1 "$(jq "[.linux.devices[]? | select(.path==\"/dev/tpmrm0\" and .major==$major and .minor==$minor and .gid==$gid)] | length" <<<"$spec")" "the device in the container's spec (from the plugin)"
assert_eq "$HOOK" "$(jq -r '.hooks.createRuntime[0].path' <<<"$spec")" "createRuntime hook (from the plugin)"
cri_remove_all "$CRIO_SOCKET" >/dev/null 2>&1 || true

step "NRI: a refusal is readable in the CRI error"
assert_fails pod refused-nri --pod-annotation oci-tpm-hook/device=tpmrm9 -- sh -c "$probe"
assert_contains "$LAB_OUTPUT" "CRI error"
assert_contains "$LAB_OUTPUT" "tpmrm9" "the CRI error"

step "numbers"
note "a whole pod through CRI-O (sandbox, create, start, run, remove), crun: ${with_ms} ms with a TPM request, ${without_ms} ms without"
