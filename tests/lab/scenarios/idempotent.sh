#!/usr/bin/env bash
# idempotent: the hook run twice, and the hook meeting a device that is
# already in the spec (as `--device` or the spec-editing front-ends put it),
# end in the same correct state: one working node, one rule.
# lab: cost 30 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

require_binaries oci-tpm-hook
install_policy
gid=$(tss_gid)
numbers=$(device_numbers /dev/tpmrm0)
major=${numbers%%:*}
minor=${numbers##*:}

bundle=/run/lab/bundles/idempotent
base_bundle() {
    make_bundle "$bundle"
    bundle_jq "$bundle" '.annotations["oci-tpm-hook/device"] = "tpmrm0"
        | .process.user.additionalGids = [($gid | tonumber)]
        | .process.args = ["bash", "-c", $probe]' --arg gid "$gid" --arg probe "$TPM_PROBE"
}

step "the hook listed twice at createRuntime"
base_bundle
bundle_add_hook "$bundle"
bundle_add_hook "$bundle"
mark_hook_log
assert_ok runc run --bundle "$bundle" twice
assert_contains "$LAB_OUTPUT" "node: character special file mode=660 gid=$gid numbers=$numbers"
assert_random_hex "$LAB_OUTPUT"
log_lines=$(hook_log_new)
printf '%s\n' "$log_lines"
assert_eq 2 "$(grep -c 'TPM delivered' <<<"$log_lines")" "deliveries logged"
assert_contains "$(sed -n 1p <<<"$log_lines")" "cgroup=v2 added"
assert_contains "$(sed -n 1p <<<"$log_lines")" "node=Created"
assert_contains "$(sed -n 2p <<<"$log_lines")" "cgroup=v2 already-allowed"
assert_contains "$(sed -n 2p <<<"$log_lines")" "node=Kept"

step "the device already in the spec with the right group: nothing to do but the self-test"
base_bundle
bundle_add_hook "$bundle"
bundle_jq "$bundle" '.linux.devices += [{"path":"/dev/tpmrm0","type":"c","major":$ma,"minor":$mi,"fileMode":432,"uid":0,"gid":$g}]
    | .linux.resources.devices += [{"allow":true,"type":"c","major":$ma,"minor":$mi,"access":"rw"}]' \
    --argjson ma "$major" --argjson mi "$minor" --argjson g "$gid"
mark_hook_log
assert_ok runc run --bundle "$bundle" in-spec
assert_random_hex "$LAB_OUTPUT"
log_lines=$(hook_log_new)
printf '%s\n' "$log_lines"
assert_contains "$log_lines" "cgroup=v2 in-spec"
assert_contains "$log_lines" "node=Kept"

step "the device in the spec with root's group and mode 0600: group and mode put right"
base_bundle
bundle_add_hook "$bundle"
bundle_jq "$bundle" '.linux.devices += [{"path":"/dev/tpmrm0","type":"c","major":$ma,"minor":$mi,"fileMode":384,"uid":0,"gid":0}]
    | .linux.resources.devices += [{"allow":true,"type":"c","major":$ma,"minor":$mi,"access":"rw"}]' \
    --argjson ma "$major" --argjson mi "$minor"
mark_hook_log
assert_ok runc run --bundle "$bundle" adjusted
assert_contains "$LAB_OUTPUT" "node: character special file mode=660 gid=$gid"
assert_random_hex "$LAB_OUTPUT"
assert_contains "$(hook_log_new)" "node=Adjusted"
