#!/usr/bin/env bash
# no-request: with the hook installed, a container that asks for nothing gets
# nothing: no node, no log entry, no change to its cgroup's device program;
# and the hook called without a request returns at once.
# lab: cost 25 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

require_binaries oci-tpm-hook
install_hooks_dir >/dev/null
install_policy
load_image_podman

step "podman, hooks dir installed, no annotation"
mark_hook_log
assert_ok podman run --rm --user 1000 "$LAB_IMAGE" \
    bash -c 'if [ -e /dev/tpmrm0 ]; then echo TPM-PRESENT; else echo no-tpmrm0; fi'
assert_contains "$LAB_OUTPUT" "no-tpmrm0"
assert_eq "" "$(hook_log_new)" "hook log entries"

step "runc bundle that always runs the hook, without the annotation"
bundle=/run/lab/bundles/no-request
make_bundle "$bundle"
bundle_add_hook "$bundle"
bundle_jq "$bundle" '.process.args = ["sleep", "600"]'
mark_hook_log
run runc create --bundle "$bundle" no-request
on_exit "runc delete --force no-request"
pid=$(runc state no-request | jq -r .pid)
cg=$(container_cgroup_of "$pid")
note "container pid $pid, cgroup $cg"
assert_eq "" "$(hook_log_new)" "hook log entries"
assert_fails test -e "$bundle/rootfs/dev/tpmrm0"
run runc start no-request
assert_fails runc exec no-request bash -c 'test -e /dev/tpmrm0'

step "the hook itself, on a state without our annotations: exit 0, no output"
state='{"ociVersion":"1.0.2","id":"x","status":"creating","pid":1,"bundle":"/nonexistent","annotations":{"a":"b"}}'
start=$(date +%s%N)
out=$("$HOOK_BIN" <<<"$state" 2>&1)
took_us=$(( ($(date +%s%N) - start) / 1000 ))
assert_eq "" "$out" "hook output"
note "one no-request run took ${took_us} us wall time in the guest (software emulation; see make bench for numbers)"
