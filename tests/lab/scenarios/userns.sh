#!/usr/bin/env bash
# userns: a container with its own user namespace (podman --userns=auto).
# Its /dev is nodev, so the hook bind-mounts the host node; the node keeps
# its host group, so the namespace must map that GID: without the mapping the
# hook refuses with an explanation, with it the TPM works.
# lab: cost 30 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

require_binaries oci-tpm-hook
install_hooks_dir >/dev/null
install_policy
load_image_podman
gid=$(tss_gid)

# --userns=auto takes its ranges from the "containers" entries.
cp /etc/subuid /run/lab/subuid.orig 2>/dev/null || : >/run/lab/subuid.orig
cp /etc/subgid /run/lab/subgid.orig 2>/dev/null || : >/run/lab/subgid.orig
echo "containers:200000:1000000" >>/etc/subuid
echo "containers:200000:1000000" >>/etc/subgid
on_exit "cp /run/lab/subuid.orig /etc/subuid; cp /run/lab/subgid.orig /etc/subgid"

step "--userns=auto without the tss GID mapped: refused; podman's own output has the reason and the recipe"
assert_refused "does not map the node's group $gid" --userns=auto --annotation oci-tpm-hook/device=tpmrm0 "$LAB_IMAGE" true
assert_contains "$LAB_OUTPUT" "--userns=auto:gidmapping=5000:$gid:1 --group-add 5000" "the recipe"

step "the GID mapped but the process not in it: refused, naming the mapped GID"
assert_refused "not in group 5000" --userns="auto:gidmapping=5000:$gid:1" --user 1000 \
    --annotation oci-tpm-hook/device=tpmrm0 "$LAB_IMAGE" true
assert_contains "$LAB_OUTPUT" "--group-add 5000"

step "--userns=auto with the tss GID mapped to 5000 in the container: works via a bind mount"
mark_hook_log
assert_ok podman run --rm --userns="auto:gidmapping=5000:$gid:1" --annotation oci-tpm-hook/device=tpmrm0 \
    --user 1000 --group-add 5000 "$LAB_IMAGE" bash -c "$TPM_PROBE
cat /proc/self/gid_map"
assert_contains "$LAB_OUTPUT" "node: character special file mode=660 gid=5000"
assert_random_hex "$LAB_OUTPUT"
log_lines=$(hook_log_new)
printf '%s\n' "$log_lines"
assert_contains "$log_lines" "node=BindMounted"
assert_contains "$log_lines" "self_test_as=uid=1000 gid=1000 groups=" "the self-test ran as the container's user"
assert_contains "$(sed -n 's/.*self_test_as=uid=1000 gid=1000 groups=\([0-9,]*\).*/,\1,/p' <<<"$log_lines")" ",5000," "with the mapped group"
