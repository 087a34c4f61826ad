#!/usr/bin/env bash
# lab: run-last (it leaves cgroup v1 controllers bound until the guest powers off)
# runc-cgroupv1: the hook on a cgroup v1 devices hierarchy. The guest boots
# with cgroup v2 only; this scenario shadows /sys/fs/cgroup with a v1 layout
# (devices and freezer hierarchies: controllers cgroup v2 does not own), runs
# a runc bundle there, and restores the v2 view when it ends.
# lab: cost 25 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

require_binaries oci-tpm-hook
install_policy
gid=$(tss_gid)
numbers=$(device_numbers /dev/tpmrm0)

step "cgroup v1 layout for runc"
mount -t tmpfs -o mode=0755 cgroup-v1 /sys/fs/cgroup
on_exit "umount -l /sys/fs/cgroup"
for c in devices freezer; do
    mkdir -p "/sys/fs/cgroup/$c"
    mount -t cgroup -o "$c" "$c" "/sys/fs/cgroup/$c"
    on_exit "umount -l /sys/fs/cgroup/$c"
done
assert_ok stat -f -c %T /sys/fs/cgroup
assert_eq tmpfs "$LAB_OUTPUT" "the filesystem at /sys/fs/cgroup (runc's test for v1)"

bundle=/run/lab/bundles/cgroupv1
make_bundle "$bundle"
bundle_add_hook "$bundle"
bundle_jq "$bundle" '.annotations["oci-tpm-hook/device"] = "tpmrm0"
    | .process.user.additionalGids = [($gid | tonumber)]
    | .linux.cgroupsPath = "/lab/cgroupv1"
    | .process.args = ["bash", "-c", $probe]' --arg gid "$gid" --arg probe "$TPM_PROBE"

step "runc run: annotation, hook, user 1000 in the tss group"
mark_hook_log
assert_ok runc run --bundle "$bundle" cgroupv1
assert_contains "$LAB_OUTPUT" "node: character special file mode=660 gid=$gid numbers=$numbers"
assert_random_hex "$LAB_OUTPUT"
assert_contains "$LAB_OUTPUT" 'value: "IBM"'
log_lines=$(hook_log_new)
printf '%s\n' "$log_lines"
assert_contains "$log_lines" "cgroup=v1 added" "hook log"

step "the rule the hook wrote, seen in a second container's devices.list while it runs"
bundle_jq "$bundle" '.process.args = ["sleep", "600"]'
run runc create --bundle "$bundle" cgroupv1-b
on_exit "runc delete --force cgroupv1-b"
assert_ok cat /sys/fs/cgroup/devices/lab/cgroupv1/devices.list
assert_contains "$LAB_OUTPUT" "c $numbers rw"

step "a self-test that fails, with required=false: the container is created without the rule"
# A 1 ms self-test budget cannot be met: the hook gives up and takes the
# grant back (devices.deny of the exact rule) before runc goes on.
install_policy '[self-test]
timeout-ms = 1'
bundle_jq "$bundle" '.annotations["oci-tpm-hook/required"] = "false"
    | .linux.cgroupsPath = "/lab/cgroupv1-c"'
mark_hook_log
run runc create --bundle "$bundle" cgroupv1-c
on_exit "runc delete --force cgroupv1-c"
log_lines=$(hook_log_new)
printf '%s\n' "$log_lines"
assert_contains "$log_lines" "required=false" "hook log: gave up, optional"
assert_ok cat /sys/fs/cgroup/devices/lab/cgroupv1-c/devices.list
assert_not_contains "$LAB_OUTPUT" "c $numbers rw" "the rule was taken back"
pid=$(runc state cgroupv1-c | jq .pid)
assert_ok nsenter -t "$pid" -m ls -l /dev/
assert_not_contains "$LAB_OUTPUT" "tpmrm0" "the node was taken back"
