#!/usr/bin/env bash
# nri: the containerd NRI plugin (`oci-tpm-hook nri`) with containerd 1.7 and
# pods made through the CRI API, as the kubelet makes them.
#
#  1. NRI on, plugin running: a pod annotated oci-tpm-hook/device gets the
#     TPM (device, group, env, hook) and reads random numbers as user 1000;
#     a pod without it gets nothing; a bad request fails the container with a
#     clear message; required=false starts it without a TPM.
#  2. containerd restarts (now with the fail-closed setup of docs/NRI.md):
#     the plugin reconnects by itself and the next pod still gets its TPM.
#  3. The plugin dies: pods without the annotation still start, and the
#     request and the hook still reach the runtime.
#  4. SIGTERM stops the plugin cleanly; the pre-launched layout
#     (/opt/nri/plugins/10-oci-tpm-hook) works too.
#  5. No plugin at all: a pod asking for a TPM does not start without one
#     (the hook alone delivers it or fails the container).
# lab: cost 160 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"

require_binaries oci-tpm-hook

HOOK="$LAB_BIN/oci-tpm-hook"
NRI_SOCKET=/var/run/nri/nri.sock
BASE_SPEC=/etc/containerd/oci-tpm-hook-base-spec.json   # as in fail-closed.toml
CONF=/run/lab/containerd/config.toml
PLUGIN_LOG="$LAB_LOG_DIR/oci-tpm-nri.log"
gid=$(tss_gid)
rm_numbers=$(cat /sys/class/tpmrm/tpmrm0/dev)
note "guest tss gid $gid, tpmrm0 $rm_numbers"

# ------------------------------------------------------------------ helpers

# The policy: the hook binary is the lab's copy; log to stderr, with timings.
mkdir -p /etc/oci-tpm-hook
cat >/etc/oci-tpm-hook/config.toml <<TOML
[hook]
path = "$HOOK"
[log]
target = "stderr"
level = "debug"
TOML

# write_containerd_config [fail-closed]: the lab's containerd config plus the
# packaged snippets docs/NRI.md tells users to add: NRI enabled, and with
# "fail-closed" also the base runtime spec and the annotation passthrough.
write_containerd_config() {
    local runc_extra="" pkg="$LAB_REPO/packaging/containerd"
    if [[ "${1:-}" == fail-closed ]]; then
        # The keys of fail-closed.toml, inside the lab's runc table.
        runc_extra=$(sed -n '/^\[plugins/,$p' "$pkg/fail-closed.toml" | tail -n +2)
    fi
    mkdir -p /run/lab/containerd /etc/nri/conf.d /opt/nri/plugins
    {
        cat <<TOML
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
TOML
        cat "$pkg/nri.toml"
        cat <<TOML
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$LAB_PAUSE_IMAGE"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
$runc_extra
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
TOML
    } >"$CONF"
}

CONTAINERD_PID=""
start_containerd_nri() {
    containerd --config "$CONF" >>"$LAB_LOG_DIR/containerd.log" 2>&1 </dev/null &
    CONTAINERD_PID=$!
    on_exit "kill $CONTAINERD_PID"
    note "containerd started (pid $CONTAINERD_PID)"
    wait_for "$LAB_WAIT" "containerd to answer" ctr version
}

stop_containerd() {
    stop_pid "$CONTAINERD_PID" containerd
    CONTAINERD_PID=""
}

PLUGIN_PID=""
# The first plugin runs under strace, keeping the bytes containerd sent it
# (the source of the unit tests' wire fixtures).
start_plugin() {
    local trace=()
    if [[ ! -e "$LAB_OUT/nri-wire.strace" ]] && command -v strace >/dev/null; then
        trace=(strace -o "$LAB_OUT/nri-wire.strace" -e trace=recvfrom,sendto -xx -s 1000000)
    fi
    "${trace[@]}" "$HOOK" nri "$@" >>"$PLUGIN_LOG" 2>&1 </dev/null &
    PLUGIN_PID=$!
    if [[ ${#trace[@]} -gt 0 ]]; then
        # Signals go to the plugin, not to strace (which would only detach).
        wait_for 30 "the traced plugin to start" pgrep -P "$PLUGIN_PID"
        PLUGIN_PID=$(pgrep -P "$PLUGIN_PID" | head -n1)
    fi
    on_exit "kill $PLUGIN_PID"
    note "plugin started: $HOOK nri $* (pid $PLUGIN_PID)"
}

# wait_synced N: until the plugin has been synchronized N times in total.
wait_synced() {
    wait_for 60 "the plugin to register and synchronize (#$1)" \
        bash -c "[[ \$(grep -c 'NRI: synchronized' '$PLUGIN_LOG') -ge $1 ]]"
}

# pod NAME [cri_run options...] -- CMD...: one pod, one container (both named
# NAME, pod namespace "lab"), as user 1000 with the tss group as a
# supplementary group (NRI cannot add groups).
pod() {
    local name="$1"
    shift
    cri_run --pod "$name" --name "$name" --namespace lab --user 1000 \
        --supplemental-group "$gid" --timeout 60 "$@"
}

# full_id SHORT: the full containerd id of a container or sandbox that
# cri_run named by its first 12 characters.
full_id() { ctr -n k8s.io containers ls -q | grep "^$1" | head -n1; }

probe='echo "uid=$(id -u) groups=$(id -G)"
if [ -e /dev/tpmrm0 ]; then
  echo "device: $(stat -c "%F %a %g %t:%T" /dev/tpmrm0)"
  echo "tcti: $TPM2TOOLS_TCTI"
  echo "random: $(tpm2_getrandom --hex 16)"
else
  echo "no-tpmrm0 tcti=${TPM2TOOLS_TCTI:-unset}"
fi'

# assert_tpm_works OUTPUT: the probe saw the TPM and read 16 random bytes.
assert_tpm_works() {
    local out="$1" random hexnums
    hexnums=$(printf '%x:%x' "${rm_numbers%%:*}" "${rm_numbers##*:}")
    assert_contains "$out" "device: character special file 660 $gid $hexnums" "device node (type, mode, gid, numbers)"
    assert_contains "$out" "tcti: device:/dev/tpmrm0"
    random=$(sed -n 's/^random: //p' <<<"$out")
    [[ "$random" =~ ^[0-9a-f]{32}$ ]] || fail "tpm2_getrandom --hex 16 gave '$random', expected 32 hex digits"
    note "random bytes from the TPM: $random"
}


# ------------------------------------------------------------------ 1. plugin up

step "containerd 1.7 with NRI enabled"
write_containerd_config
start_containerd_nri
run containerd --version
load_image_containerd
run ls -l "$NRI_SOCKET"

step "the plugin registers and subscribes to CreateContainer only"
start_plugin
wait_synced 1
plog=$(cat "$PLUGIN_LOG")
assert_contains "$plog" "registering as 10-oci-tpm-hook"
assert_contains "$plog" "configured by containerd"
assert_contains "$plog" "events 0x8"

step "a pod annotated oci-tpm-hook/device=tpmrm0 gets the TPM"
t0=$(date +%s%N)
assert_ok pod tpm --pod-annotation oci-tpm-hook/device=tpmrm0 -- bash -c "$probe"
with_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
out="$LAB_OUTPUT"
assert_contains "$out" "uid=1000"
assert_tpm_works "$out"
assert_contains "$(cat "$PLUGIN_LOG")" "granted TPM tpmrm0 ($rm_numbers) as /dev/tpmrm0: device with group $gid, hook, self-test quick"

step "the container's spec has the device, its allow rule, the env and the hook"
assert_ok pod spec --keep --pod-annotation oci-tpm-hook/device=auto -- true
short=$(sed -n 's/^cri-run: container spec (\([0-9a-f]*\)) created$/\1/p' <<<"$LAB_OUTPUT")
spec=$(ctr -n k8s.io containers info --spec "$(full_id "$short")" | jq -c .)
major=${rm_numbers%%:*} minor=${rm_numbers##*:}
assert_eq "1" "$(jq "[.linux.devices[] | select(.path==\"/dev/tpmrm0\" and .type==\"c\" and .major==$major and .minor==$minor and .fileMode==432 and .gid==$gid)] | length" <<<"$spec")" "device entries for /dev/tpmrm0"
assert_eq "1" "$(jq "[.linux.resources.devices[] | select(.allow and .type==\"c\" and .major==$major and .minor==$minor and .access==\"rw\")] | length" <<<"$spec")" "cgroup allow rules for $rm_numbers"
assert_eq "1" "$(jq '[.process.env[] | select(. == "TSS2_TCTI=device:/dev/tpmrm0" or . == "TPM2TOOLS_TCTI=device:/dev/tpmrm0")] | length / 2' <<<"$spec")" "TCTI env (both variables)"
assert_eq "$HOOK" "$(jq -r '.hooks.createRuntime[0].path' <<<"$spec")" "createRuntime hook"
assert_eq '["oci-tpm-hook"]' "$(jq -c '.hooks.createRuntime[0].args' <<<"$spec")" "hook args"

step "a pod without the annotation gets no TPM"
t0=$(date +%s%N)
assert_ok pod plain -- bash -c "$probe"
without_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
assert_contains "$LAB_OUTPUT" "no-tpmrm0 tcti=unset"

step "a request that cannot be met fails the container with a clear message"
assert_fails pod missing --pod-annotation oci-tpm-hook/device=tpmrm7 -- bash -c "$probe"
assert_contains "$LAB_OUTPUT" "CRI error"
assert_contains "$LAB_OUTPUT" "oci-tpm-hook:"
assert_contains "$LAB_OUTPUT" "tpmrm7"
assert_not_contains "$LAB_OUTPUT" "random:"

step "a bad annotation value is named in the message"
assert_fails pod typo --pod-annotation oci-tpm-hook/device=tpmrm0 --pod-annotation oci-tpm-hook/self-test=fast \
    -- true
assert_contains "$LAB_OUTPUT" 'oci-tpm-hook/self-test="fast"'

step "required=false: the container starts without a TPM"
assert_ok pod optional --pod-annotation oci-tpm-hook/device=tpmrm7 --pod-annotation oci-tpm-hook/required=false \
    -- bash -c "$probe"
assert_contains "$LAB_OUTPUT" "no-tpmrm0"

# ------------------------------------------------------------------ 2. restart

step "fail-closed setup: base runtime spec with the hook, annotation passthrough"
mkdir -p /etc/containerd
HOOK="$HOOK" "$LAB_REPO/packaging/containerd/make-base-spec.sh" >"$BASE_SPEC"
run jq -c .hooks "$BASE_SPEC"
write_containerd_config fail-closed

step "containerd restarts: the plugin reconnects by itself"
stop_containerd
t0=$(date +%s.%N)
start_containerd_nri
wait_synced 2
t1=$(date +%s.%N)
reconnect_s=$(awk "BEGIN {printf \"%.1f\", $t1 - $t0}")
note "plugin synchronized again ${reconnect_s}s after containerd was started"
plog=$(cat "$PLUGIN_LOG")
assert_contains "$plog" "containerd closed the connection; reconnecting"
kill -0 "$PLUGIN_PID" || fail "the plugin exited when containerd restarted"

step "the next pod still gets its TPM (hook from the base spec, device from the plugin)"
assert_ok pod again --pod-annotation oci-tpm-hook/device=tpmrm0 -- bash -c "$probe"
assert_tpm_works "$LAB_OUTPUT"

# ------------------------------------------------------------------ 3. plugin down

step "the plugin dies (SIGKILL)"
kill -KILL "$PLUGIN_PID"
wait_for 10 "the plugin to be gone" bash -c "! kill -0 $PLUGIN_PID"
sleep 1

step "pods without the annotation still start"
assert_ok pod plain2 -- bash -c "$probe"
assert_contains "$LAB_OUTPUT" "no-tpmrm0"

step "plugin down: containerd still hands the request and the hook to the runtime"
# required=false: whatever the hook alone makes of it, the container exists.
out=$(pod spec2 --keep --pod-annotation oci-tpm-hook/device=tpmrm0 \
    --pod-annotation oci-tpm-hook/required=false -- true 2>&1) || true
printf '%s\n' "$out"
short=$(sed -n 's/^cri-run: container spec2 (\([0-9a-f]*\)) created$/\1/p' <<<"$out")
sandbox=$(sed -n 's/^cri-run: pod spec2 (\([0-9a-f]*\))$/\1/p' <<<"$out")
spec=$(ctr -n k8s.io containers info --spec "$(full_id "$short")" | jq -c .)
sandbox_spec=$(ctr -n k8s.io containers info --spec "$(full_id "$sandbox")" | jq -c .)
assert_eq "tpmrm0" "$(jq -r '.annotations["oci-tpm-hook/device"]' <<<"$spec")" "request annotation in the container's spec"
assert_eq "$HOOK" "$(jq -r '.hooks.createRuntime[0].path' <<<"$spec")" "createRuntime hook from the base spec"
assert_eq "0" "$(jq '[.linux.devices[]? | select(.path=="/dev/tpmrm0")] | length' <<<"$spec")" "TPM devices in the spec (plugin down)"
note "the pod sandbox's spec: annotation $(jq -r '.annotations["oci-tpm-hook/device"] // "absent"' <<<"$sandbox_spec"), type $(jq -r '.annotations["io.kubernetes.cri.container-type"]' <<<"$sandbox_spec"), hook $(jq -r '.hooks.createRuntime[0].path // "none"' <<<"$sandbox_spec")"

# ------------------------------------------------------------------ 4. stop, pre-launch

step "SIGTERM stops the plugin cleanly"
start_plugin
wait_synced 3
kill -TERM "$PLUGIN_PID"
rc=0
wait "$PLUGIN_PID" || rc=$?
assert_eq 0 "$rc" "plugin exit status after SIGTERM"
assert_contains "$(tail -n 3 "$PLUGIN_LOG")" "SIGTERM received: stopping the NRI plugin"

step "pre-launched by containerd from /opt/nri/plugins"
cat >/opt/nri/plugins/10-oci-tpm-hook <<SH
#!/bin/sh
# containerd starts this with only NRI_PLUGIN_* in the environment.
exec $HOOK nri "\$@" 2>>$LAB_LOG_DIR/oci-tpm-nri-prelaunched.log
SH
chmod 0755 /opt/nri/plugins/10-oci-tpm-hook
stop_containerd
start_containerd_nri
# containerd 1.7.24 (NRI 0.6) configures the plugins it starts but never
# calls Synchronize for them; from then on they get events.
wait_for 60 "the pre-launched plugin to be configured" \
    grep -q "NRI: configured by containerd" "$LAB_LOG_DIR/oci-tpm-nri-prelaunched.log"
assert_contains "$(cat "$LAB_LOG_DIR/oci-tpm-nri-prelaunched.log")" "using the connection containerd passed in NRI_PLUGIN_SOCKET"
assert_ok pod prelaunched --pod-annotation oci-tpm-hook/device=tpmrm0 -- bash -c "$probe"
assert_tpm_works "$LAB_OUTPUT"
stop_containerd
# Anchored, so that the pattern does not find the bash -c running it.
wait_for 30 "the pre-launched plugin to exit with containerd" \
    bash -c "! pgrep -f '^$HOOK nri' >/dev/null"

step "plugin gone again: containerd with the fail-closed setup and no plugin"
rm -f /opt/nri/plugins/10-oci-tpm-hook
start_containerd_nri

step "a pod asking for a TPM does not start without one"
rc=0
out=$(pod down --pod-annotation oci-tpm-hook/device=tpmrm0 -- bash -c "$probe" 2>&1) || rc=$?
printf '%s\n' "$out"
if [[ $rc -eq 0 ]]; then
    # Allowed: the hook alone delivered a working TPM (without the plugin's
    # TCTI variables; tpm2-tools then finds /dev/tpmrm0 by itself).
    assert_contains "$out" "device: character special file 660 $gid"
    [[ "$(sed -n 's/^random: //p' <<<"$out")" =~ ^[0-9a-f]{32}$ ]] \
        || fail "the container has a node but read no random numbers from it"
    note "plugin down: the hook alone delivered the TPM"
else
    assert_contains "$out" "oci-tpm-hook"
    assert_not_contains "$out" "no-tpmrm0"
    note "plugin down: the container failed with the hook's message"
fi

step "numbers"
note "a whole pod through CRI (sandbox, create, start, run, remove): ${with_ms} ms with a TPM request, ${without_ms} ms without"
note "plugin's own time per CreateContainer: $(grep -o 'CreateContainer answered in [^ ]*' "$PLUGIN_LOG" | awk '{print $4}' | paste -sd' ' -)"
note "reconnect after containerd restart: ${reconnect_s}s"
