#!/usr/bin/env bash
# cdi: `oci-tpm-hook cdi generate` writes a CDI spec, and every engine that
# reads CDI gives user 1000 a working, self-tested TPM from
# `--device oci-tpm-hook.dev/tpm=tpmrm0`, without --group-add or an
# annotation (the hook comes with the device):
#  - podman 5.4 (crun): the spec's additionalGids give the tss group;
#  - containerd 1.7's CRI with enable_cdi, the CRI field CDI_devices;
#  - docker 26.1 with the cdi feature: it drops additionalGids, so the hook
#    refuses user 1000 with the fix; with [node] access = "process-gid" the
#    node's group is the process's own and it works;
#  - the packaged udev rule rewrites the spec on a TPM's add event.
# lab: cost 65 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

require_binaries oci-tpm-hook
install_policy "$(printf '[hook]\npath = "%s"' "$HOOK_BIN")"
gid=$(tss_gid)
numbers=$(device_numbers /dev/tpmrm0)
kind=oci-tpm-hook.dev/tpm
spec=/var/run/cdi/oci-tpm-hook.json
on_exit "rm -f $spec"
note "guest: tss gid $gid, /dev/tpmrm0 is $numbers"

# The hook's log line of the last delivery must show the self-test as uid
# 1000 with the tss group it got from the spec.
assert_self_tested_as_1000() {
    local log_lines
    log_lines=$(hook_log_new)
    printf '%s\n' "$log_lines"
    assert_contains "$log_lines" "TPM delivered" "hook log"
    assert_contains "$log_lines" 'self_test_result="passed"' "hook log"
    assert_contains "$log_lines" "self_test_as=uid=1000 gid=1000 groups=" "hook log"
    assert_contains "$log_lines" "cgroup=v2 in-spec" "hook log: the rule came with the spec"
    assert_contains "$log_lines" "node=Kept" "hook log: the runtime made the node from the spec"
    [[ "$log_lines" =~ self_test_as=uid=1000\ gid=1000\ groups=([0-9,]*) ]] \
        && [[ ",${BASH_REMATCH[1]}," == *",$gid,"* ]] \
        || fail "the self-test did not run with the tss group $gid"
}

# The container's view: node, ids, the TPM's answer.
assert_probe() {
    assert_contains "$LAB_OUTPUT" "node: character special file mode=660 gid=$gid numbers=$numbers" "the node in the container"
    assert_contains "$LAB_OUTPUT" "uid=1000 groups="
    [[ "$LAB_OUTPUT" =~ uid=1000\ groups=([0-9 ]*) ]] && [[ " ${BASH_REMATCH[1]} " == *" $gid "* ]] \
        || fail "the container's user is not in the tss group $gid"
    assert_random_hex "$LAB_OUTPUT"
}

step "cdi generate writes the spec: no device numbers, the tss group, the hook naming its device"
assert_ok "$HOOK_BIN" cdi generate
assert_contains "$LAB_OUTPUT" "wrote $spec: $kind=tpmrm0"
cat "$spec"
assert_eq 0.7.0 "$(jq -r .cdiVersion "$spec")" "cdiVersion"
assert_eq "$kind" "$(jq -r .kind "$spec")" "kind"
node=$(jq -c '.devices[] | select(.name == "tpmrm0") | .containerEdits.deviceNodes[0]' "$spec")
assert_eq '{"path":"/dev/tpmrm0","hostPath":"/dev/tpmrm0","type":"c","permissions":"rw","fileMode":432,"uid":0,"gid":'"$gid"'}' "$node" "device node"
assert_eq "[$gid]" "$(jq -c '.devices[0].containerEdits.additionalGids' "$spec")" "additionalGids"
assert_eq '["oci-tpm-hook","hook","--annotation","oci-tpm-hook/device=tpmrm0"]' \
    "$(jq -c '.devices[0].containerEdits.hooks[0].args' "$spec")" "hook arguments"
assert_ok "$HOOK_BIN" cdi generate
assert_contains "$LAB_OUTPUT" "unchanged $spec"

step "podman --device $kind=tpmrm0 --user 1000, no --group-add, no annotation"
load_image_podman
mark_hook_log
assert_ok podman run --rm --runtime crun --device "$kind=tpmrm0" --user 1000 \
    "$LAB_IMAGE" bash -c "$TPM_PROBE"$'\n''echo "tcti: $TPM2TOOLS_TCTI"'
assert_probe
assert_contains "$LAB_OUTPUT" "tcti: device:/dev/tpmrm0"
assert_self_tested_as_1000

step "the udev rule rewrites the spec on a TPM's add event"
rules=/etc/udev/rules.d/70-oci-tpm-hook-cdi.rules
sed "s|/usr/bin/oci-tpm-hook|$HOOK_BIN|" "$LAB_REPO/packaging/udev/70-oci-tpm-hook-cdi.rules" >"$rules"
on_exit "rm -f $rules; udevadm control --reload"
udevadm control --reload
grep RUN "$rules"
rm -f "$spec"
run udevadm trigger --action=add --subsystem-match=tpmrm
wait_for 60 "udev to write $spec again" test -s "$spec"
assert_eq '["tpmrm0"]' "$(jq -c '[.devices[].name]' "$spec")" "devices after the add event"

step "containerd 1.7 CRI with enable_cdi: the CRI field CDI_devices, user 1000, no supplemental group"
start_containerd --cdi
load_image_containerd
mark_hook_log
assert_ok cri_run --name cdi --user 1000 --cdi-device "$kind=tpmrm0" -- bash -c "$TPM_PROBE"
assert_probe
assert_self_tested_as_1000
stop_daemon containerd

step "docker 26.1 with the cdi feature: it drops additionalGids, so the hook refuses user 1000 with the fix"
start_dockerd '{"features": {"cdi": true}}'
load_image_docker
assert_fails docker run --rm --network none --device "$kind=tpmrm0" --user 1000 \
    "$LAB_IMAGE" tpm2_getrandom --hex 8
assert_contains "$LAB_OUTPUT" "(uid 1000, gid 1000, groups 1000) could not open the node"
assert_contains "$LAB_OUTPUT" "docker: --group-add $gid"

step "docker 26.1: with [node] access = \"process-gid\" the node is the process's own group: user 1000, no --group-add"
install_policy "$(printf '[hook]\npath = "%s"\n[node]\naccess = "process-gid"' "$HOOK_BIN")"
assert_ok "$HOOK_BIN" cdi generate
assert_eq null "$(jq -c '.devices[0].containerEdits.additionalGids' "$spec")" "additionalGids with process-gid"
mark_hook_log
assert_ok docker run --rm --network none --device "$kind=tpmrm0" --user 1000 \
    "$LAB_IMAGE" bash -c "$TPM_PROBE"
assert_contains "$LAB_OUTPUT" "node: character special file mode=660 gid=1000 numbers=$numbers" "the node in the container"
assert_random_hex "$LAB_OUTPUT"
log_lines=$(hook_log_new)
printf '%s\n' "$log_lines"
assert_contains "$log_lines" 'self_test_result="passed"' "hook log"
assert_contains "$log_lines" "self_test_as=uid=1000 gid=1000 groups=1000 " "hook log"
assert_contains "$log_lines" "cgroup=v2 in-spec" "hook log: the rule came with the spec"
