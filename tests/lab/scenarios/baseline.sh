#!/usr/bin/env bash
# baseline: the lab itself works. A real kernel TPM is there, podman with crun
# and with runc can hand /dev/tpmrm0 to a non-root container user, a container
# without the device has no TPM, and a bind mount without a device cgroup rule
# is refused on open ("Operation not permitted").
# lab: cost 45 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"

step "the guest's TPM"
assert_ok ls -l /dev/tpm0 /dev/tpmrm0
assert_eq "$(cat /sys/class/tpmrm/tpmrm0/dev)" "$(device_numbers /dev/tpmrm0)" "tpmrm0 numbers match sysfs"
assert_eq 2 "$(cat /sys/class/tpm/tpm0/tpm_version_major)" "TPM version"
gid=$(tss_gid)
note "guest tss gid: $gid"

load_image_podman

# Inside the container: device numbers, owner group, manufacturer, random bytes.
probe='
set -e
echo "uid=$(id -u) groups=$(id -G)"
echo "device: $(ls -ln /dev/tpmrm0)"
echo "device numbers: $(printf "%d:%d" "0x$(stat -c %t /dev/tpmrm0)" "0x$(stat -c %T /dev/tpmrm0)")"
tpm2_getcap properties-fixed | grep -A2 TPM2_PT_MANUFACTURER
echo "random: $(tpm2_getrandom --hex 8)"
'

for runtime in crun runc; do
    step "podman --runtime $runtime: --device /dev/tpmrm0 --group-add $gid --user 1000"
    assert_ok podman run --rm --runtime "$runtime" --device /dev/tpmrm0 --group-add "$gid" --user 1000 \
        -e TPM2TOOLS_TCTI=device:/dev/tpmrm0 "$LAB_IMAGE" bash -c "$probe"
    out="$LAB_OUTPUT"
    assert_contains "$out" "uid=1000"
    assert_contains "$out" "device numbers: $(device_numbers /dev/tpmrm0)" "numbers inside = numbers in the guest"
    assert_contains "$out" "TPM2_PT_MANUFACTURER"
    assert_contains "$out" 'value: "IBM"' "manufacturer (swtpm reports IBM)"
    random=$(sed -n 's/^random: //p' <<<"$out")
    [[ "$random" =~ ^[0-9a-f]{16}$ ]] || fail "tpm2_getrandom --hex 8 gave '$random', expected 16 hex digits"
    note "random bytes from the TPM via $runtime: $random"

    step "podman --runtime $runtime without --device: no TPM in the container"
    assert_ok podman run --rm --runtime "$runtime" --user 1000 "$LAB_IMAGE" \
        bash -c 'ls /dev; if [ -e /dev/tpmrm0 ]; then echo TPM-PRESENT; else echo no-tpmrm0; fi'
    assert_contains "$LAB_OUTPUT" "no-tpmrm0"

    step "podman --runtime $runtime with a bind mount and no device cgroup rule: open is refused"
    assert_fails podman run --rm --runtime "$runtime" -v /dev/tpmrm0:/dev/tpmrm0 \
        -e TPM2TOOLS_TCTI=device:/dev/tpmrm0 "$LAB_IMAGE" \
        bash -c 'ls -l /dev/tpmrm0; exec 3<>/dev/tpmrm0 && echo OPENED'
    assert_contains "$LAB_OUTPUT" "Operation not permitted"
    assert_not_contains "$LAB_OUTPUT" "OPENED"
done
