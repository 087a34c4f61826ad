#!/usr/bin/env bash
# engines: the lab's helpers work for every front-end the project serves.
# docker and containerd (k8s.io namespace, the one CRI uses) get the test
# image and pass /dev/tpmrm0 with --device; a second TPM from the vTPM proxy
# works in a podman container; a hooks dir is installed with the paths of the
# project's binaries.
# lab: cost 60 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"

gid=$(tss_gid)
probe='echo "uid=$(id -u) groups=$(id -G)"; tpm2_getcap properties-fixed | grep -A2 TPM2_PT_MANUFACTURER; echo "random: $(tpm2_getrandom --hex 8)"'

step "docker: --device /dev/tpmrm0 --group-add $gid --user 1000"
start_dockerd
load_image_docker
assert_ok docker run --rm --network none --device /dev/tpmrm0 --group-add "$gid" --user 1000 \
    -e TPM2TOOLS_TCTI=device:/dev/tpmrm0 "$LAB_IMAGE" bash -c "$probe"
assert_contains "$LAB_OUTPUT" 'value: "IBM"'
assert_contains "$LAB_OUTPUT" "random: "

step "containerd (k8s.io namespace): ctr run --device /dev/tpmrm0"
start_containerd
load_image_containerd
assert_ok ctr -n k8s.io images ls -q
assert_contains "$LAB_OUTPUT" "$LAB_IMAGE"
assert_contains "$LAB_OUTPUT" "$LAB_PAUSE_IMAGE"
assert_ok ctr -n k8s.io run --rm --device /dev/tpmrm0 \
    --env TPM2TOOLS_TCTI=device:/dev/tpmrm0 "$LAB_IMAGE" lab-engines-ctr bash -c "$probe"
assert_contains "$LAB_OUTPUT" 'value: "IBM"'

step "containerd CRI (a pod, as a kubelet makes it): --device /dev/tpmrm0, user 1000, group $gid"
assert_ok cri_run --pod lab-engines --device /dev/tpmrm0 --user 1000 --supplemental-group "$gid" \
    --env TPM2TOOLS_TCTI=device:/dev/tpmrm0 -- bash -c "$probe"
assert_contains "$LAB_OUTPUT" "uid=1000"
assert_contains "$LAB_OUTPUT" 'value: "IBM"'

step "a second TPM through the vTPM proxy"
dev=$(add_vtpm)
assert_eq /dev/tpmrm1 "$dev" "new TPM device"
assert_ok ls -l /dev/tpmrm0 /dev/tpmrm1
load_image_podman
assert_ok podman run --rm --device "$dev" --group-add "$gid" --user 1000 \
    -e TPM2TOOLS_TCTI="device:$dev" "$LAB_IMAGE" bash -c "$probe"
assert_contains "$LAB_OUTPUT" "random: "

step "install_hooks_dir rewrites hook.path to the binaries in $LAB_BIN"
src=$(mktemp -d)
cat >"$src/lab-probe.json" <<'JSON'
{"version": "1.0.0",
 "hook": {"path": "/usr/libexec/oci-tpm-hook/oci-tpm-hook"},
 "when": {"annotations": {"^oci-tpm-hook/device$": ".*"}},
 "stages": ["createRuntime"]}
JSON
if [[ -x "$LAB_BIN/oci-tpm-hook" ]]; then
    hooks=$(install_hooks_dir "$src")
    assert_eq "$LAB_BIN/oci-tpm-hook" "$(jq -r .hook.path "$hooks/lab-probe.json")" "rewritten hook.path"
    assert_ok podman --log-level=debug run --rm "$LAB_IMAGE" true
    assert_contains "$LAB_OUTPUT" "$hooks" "podman's debug log (hooks dir in use)"
else
    note "skipped: $LAB_BIN/oci-tpm-hook is not built"
fi
