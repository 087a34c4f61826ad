# The podman scenarios' body, shared by podman-crun and podman-runc: the
# hooks.d path with the annotation and no --device.
# Needs RUNTIME (crun or runc). Sourced by the scenario file.
# shellcheck shell=bash
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

: "${RUNTIME:?RUNTIME must be crun or runc}"
require_binaries oci-tpm-hook
install_hooks_dir >/dev/null
install_policy
load_image_podman
gid=$(tss_gid)
numbers=$(device_numbers /dev/tpmrm0)
note "host (guest) TPM: /dev/tpmrm0 $numbers, tss gid $gid"

step "podman --runtime $RUNTIME: annotation only, no --device, user 1000 with --group-add tss"
mark_hook_log
assert_ok podman run --rm --runtime "$RUNTIME" --annotation oci-tpm-hook/device=tpmrm0 \
    --user 1000 --group-add "$gid" "$LAB_IMAGE" bash -c "$TPM_PROBE"
out="$LAB_OUTPUT"
assert_contains "$out" "node: character special file mode=660 gid=$gid numbers=$numbers" "the node in the container"
assert_contains "$out" "uid=1000"
assert_random_hex "$out"
assert_contains "$out" 'value: "2.0"' "family indicator"
assert_contains "$out" 'value: "IBM"' "manufacturer (swtpm)"
log_lines=$(hook_log_new)
printf '%s\n' "$log_lines"
assert_contains "$log_lines" "TPM delivered" "hook log"
assert_contains "$log_lines" "major_minor=$numbers" "hook log"
assert_contains "$log_lines" "gid=$gid" "hook log"
assert_contains "$log_lines" 'self_test_result="passed"' "hook log"
assert_contains "$log_lines" 'manufacturer="IBM"' "hook log"
assert_contains "$log_lines" "node=Created" "hook log"

step "podman --runtime $RUNTIME: full self-test, and the selftest subcommand as a probe inside"
mark_hook_log
assert_ok podman run --rm --runtime "$RUNTIME" \
    --annotation oci-tpm-hook/device=auto --annotation oci-tpm-hook/self-test=full \
    --user 1000 --group-add "$gid" -v "$HOOK_BIN:/usr/local/bin/oci-tpm-hook:ro" \
    "$LAB_IMAGE" oci-tpm-hook selftest --level full
assert_contains "$LAB_OUTPUT" "ok: /dev/tpmrm0: TPM full self-test passed" "probe output"
log_lines=$(hook_log_new)
printf '%s\n' "$log_lines"
assert_contains "$log_lines" 'self_test=full' "hook log"

step "podman --runtime $RUNTIME: without --group-add the non-root user could not open the node: refused before it starts"
assert_fails podman run --rm --runtime "$RUNTIME" --annotation oci-tpm-hook/device=tpmrm0 \
    --user 1000 "$LAB_IMAGE" bash -c 'exec 3<>/dev/tpmrm0 && echo OPENED'
assert_not_contains "$LAB_OUTPUT" "OPENED"
assert_contains "$LAB_OUTPUT" "not in group $gid" "podman's output says why"
assert_contains "$LAB_OUTPUT" "--group-add $gid" "and what to do"

step "podman --runtime $RUNTIME: --device given as well: the runtime's node is kept"
mark_hook_log
assert_ok podman run --rm --runtime "$RUNTIME" --device /dev/tpmrm0 --annotation oci-tpm-hook/device=tpmrm0 \
    --user 1000 --group-add "$gid" "$LAB_IMAGE" bash -c "$TPM_PROBE"
assert_contains "$LAB_OUTPUT" "node: character special file mode=660 gid=$gid numbers=$numbers"
assert_random_hex "$LAB_OUTPUT"
log_lines=$(hook_log_new)
printf '%s\n' "$log_lines"
assert_contains "$log_lines" "TPM delivered"
assert_contains "$log_lines" "cgroup=v2 in-spec" "hook log: the spec already allowed the device"
assert_not_contains "$log_lines" "node=Created" "hook log"
