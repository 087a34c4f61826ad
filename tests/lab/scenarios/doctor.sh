#!/usr/bin/env bash
# doctor: `oci-tpm-hook doctor` on a healthy host reports every check passed
# (exit 0, table and JSON); then one thing at a time is broken — the hooks.d
# file removed, docker's runtime unregistered, containerd's NRI off, the tss
# group gone, /dev/tpm0 held open, the TPM's driver unbound — and each is
# reported with its fix (exit 1 for failures), and healthy again once mended.
# lab: run-last 2 (after the other run-last ones: it unbinds and rebinds the guest's TPM driver)
# lab: cost 15 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

require_binaries oci-tpm-hook oci-tpm-runtime
DOCTOR=("$HOOK_BIN" doctor)

# check_status JSON NAME: the status of one check in doctor --json output.
check_status() { jq -r --arg n "$2" '.checks[] | select(.name == $n) | .status' <<<"$1"; }
check_fix() { jq -r --arg n "$2" '.checks[] | select(.name == $n) | .fix // ""' <<<"$1"; }

# expect NAME STATUS FIX-TEXT: run the doctor; NAME must have STATUS and a fix
# containing FIX-TEXT; the exit status must match (1 only when a check failed).
expect() {
    local name="$1" want="$2" fix_text="$3" rc=0 json
    json=$("${DOCTOR[@]}" --json) || rc=$?
    printf '%s\n' "$json" | jq -c '.checks[] | select(.status != "pass" and .status != "skip")'
    assert_eq "$want" "$(check_status "$json" "$name")" "status of check '$name'"
    [[ -z "$fix_text" ]] || assert_contains "$(check_fix "$json" "$name")" "$fix_text" "fix of check '$name'"
    if [[ "$want" == fail ]]; then assert_eq 1 "$rc" "exit status"; else assert_eq 0 "$rc" "exit status"; fi
}

step "a healthy host: the hooks.d file, docker's runtime, containerd with NRI and the plugin"
mkdir -p /usr/share/containers/oci/hooks.d /etc/docker /etc/containerd
jq --arg p "$HOOK_BIN" '.hook.path = $p' "$LAB_REPO/hooks.d/oci-tpm-hook.json" \
    >/usr/share/containers/oci/hooks.d/oci-tpm-hook.json
on_exit "rm -f /usr/share/containers/oci/hooks.d/oci-tpm-hook.json"
jq -n --arg p "$LAB_BIN/oci-tpm-runtime" '{runtimes: {tpm: {path: $p}}}' >/etc/docker/daemon.json
on_exit "rm -f /etc/docker/daemon.json"
{ echo 'version = 2'; cat "$LAB_REPO/packaging/containerd/nri.toml"; } >/etc/containerd/config.toml
on_exit "rm -f /etc/containerd/config.toml"
# The plugin as a service would run it (it retries until containerd is up).
start_daemon oci-tpm-nri "$HOOK_BIN" nri

assert_ok "${DOCTOR[@]}"
assert_contains "$LAB_OUTPUT" "all checks passed"
assert_contains "$LAB_OUTPUT" "self-test tpmrm0"
json=$("${DOCTOR[@]}" --json)
assert_eq true "$(jq .ok <<<"$json")" "doctor --json ok"
assert_eq "" "$(jq -r '.checks[] | select(.status == "fail") | .name' <<<"$json")" "failed checks"
for name in tpm /dev/tpmrm0 group "self-test tpmrm0" "podman/CRI-O hooks.d" "docker runtime" "containerd NRI"; do
    assert_eq pass "$(check_status "$json" "$name")" "check '$name'"
done

step "the hooks.d file removed"
mv /usr/share/containers/oci/hooks.d/oci-tpm-hook.json /run/lab/hook.json
expect "podman/CRI-O hooks.d" fail "hooks.d/oci-tpm-hook.json"
mv /run/lab/hook.json /usr/share/containers/oci/hooks.d/oci-tpm-hook.json

step "docker's runtime unregistered"
echo '{"log-level": "warn"}' >/etc/docker/daemon.json
expect "docker runtime" fail "oci-tpm-hook configure docker"
jq -n --arg p "$LAB_BIN/oci-tpm-runtime" '{runtimes: {tpm: {path: $p}}}' >/etc/docker/daemon.json

step "containerd's NRI turned off"
sed -i 's/disable = false/disable = true/' /etc/containerd/config.toml
expect "containerd NRI" fail "oci-tpm-hook configure containerd"
sed -i 's/disable = true/disable = false/' /etc/containerd/config.toml

step "the tss group missing"
cp /etc/group /run/lab/group.orig
on_exit "cp /run/lab/group.orig /etc/group"
sed -i '/^tss:/d' /etc/group
expect group fail "tpm-udev"
cp /run/lab/group.orig /etc/group

step "/dev/tpm0 held open by another process"
sleep 600 9<>/dev/tpm0 &
holder=$!
on_exit "kill $holder"
expect "exclusive device" warn "tpmrm"
kill "$holder"; wait "$holder" 2>/dev/null || true

step "the TPM's driver unbound"
dev_dir=$(readlink -f /sys/class/tpm/tpm0/device)
driver_dir=$(readlink -f /sys/class/tpm/tpm0/device/driver)
dev_name=$(basename "$dev_dir")
note "TPM device $dev_name, driver $(basename "$driver_dir")"
echo "$dev_name" >"$driver_dir/unbind"
on_exit "[ -e /sys/class/tpm/tpm0 ] || echo $dev_name >$driver_dir/bind"
wait_for 30 "/sys/class/tpm/tpm0 to go" bash -c '! test -e /sys/class/tpm/tpm0'
expect tpm fail "/bind"
assert_contains "$("${DOCTOR[@]}" || true)" "no driver is bound to it: $dev_name" "the table names the device"
echo "$dev_name" >"$driver_dir/bind"
wait_for 120 "the TPM's resource manager to come back" bash -c 'ls /sys/class/tpmrm/ | grep -q .'
# The chip may come back under a new index (tpmrm1) while anything still
# holds the old one; the doctor judges whichever TPM the kernel now has.
rm_name=$(ls /sys/class/tpmrm/ | head -n1)
note "after the rebind: $(ls /sys/class/tpm /sys/class/tpmrm | tr '\n' ' ')"
wait_for 60 "/dev/$rm_name to appear" test -c "/dev/$rm_name"
# As the host's udev rules (tpm2-tss) would, should udev be slower than us.
chgrp tss "/dev/$rm_name" && chmod 0660 "/dev/$rm_name"

step "mended: healthy again"
assert_ok "${DOCTOR[@]}"
assert_contains "$LAB_OUTPUT" "all checks passed"
