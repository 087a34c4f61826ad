#!/usr/bin/env bash
# demo: one annotation gives a non-root container the host's TPM. The hook
# (installed in podman's hooks dir) validates the device, grants it, makes the
# node and self-tests it from inside the container; then the container reads
# the TPM's identity, draws random bytes, and signs and verifies a message
# with a key that never leaves the TPM.
# lab: cost 15 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

require_binaries oci-tpm-hook
install_hooks_dir >/dev/null
install_policy
load_image_podman
gid=$(tss_gid)

step "podman run --annotation oci-tpm-hook/device=tpmrm0 --group-add $gid --user 1000 $LAB_IMAGE  (no --device)"
mark_hook_log
assert_ok podman run --rm --annotation oci-tpm-hook/device=tpmrm0 --group-add "$gid" --user 1000 \
    "$LAB_IMAGE" bash -euc '
cd "$(mktemp -d)"
echo "inside the container: $(id)"
ls -l /dev/tpmrm0
echo "TPM manufacturer: $(tpm2_getcap properties-fixed | grep -A2 TPM2_PT_MANUFACTURER | sed -n "s/.*value: //p")"
echo "random bytes: $(tpm2_getrandom --hex 16)"
tpm2_createprimary -Q -C o -c primary.ctx
tpm2_create -Q -C primary.ctx -G ecc -u key.pub -r key.priv
tpm2_load -Q -C primary.ctx -u key.pub -r key.priv -c key.ctx
echo "hello from a container" > msg
tpm2_sign -Q -c key.ctx -g sha256 -o msg.sig msg
tpm2_verifysignature -Q -c key.ctx -g sha256 -s msg.sig -m msg
echo "signed and verified a message with a TPM-resident ECC key"
'
assert_contains "$LAB_OUTPUT" "signed and verified"

step "what the hook logged for that container"
hook_log_new
assert_contains "$(hook_log_new)" "TPM delivered"
