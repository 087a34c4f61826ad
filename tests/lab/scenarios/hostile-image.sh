#!/usr/bin/env bash
# hostile-image: images that plant things where the node goes. The hook must
# create nothing and change nothing outside the container's rootfs; the result
# is a safe node inside the rootfs or a clear refusal.
#
# Part 1 calls the hook directly on bundles whose rootfs is used as is (no
# /dev tmpfs on top), so the planted files are what the hook meets. Part 2
# runs such images through podman end to end.
# lab: cost 80 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

require_binaries oci-tpm-hook
install_policy
gid=$(tss_gid)

# Host paths an attacker would aim at, with content we can check afterwards.
victim=/etc/lab-hostile-victim
victim_dir=/run/lab-hostile-hostdev
printf 'host secret\n' >"$victim"
chmod 0600 "$victim"
mkdir -p "$victim_dir"
on_exit "rm -rf $victim $victim_dir"
victim_before=$(stat -c '%F %a %u:%g %s' "$victim"; cat "$victim")

# A process for the hook to act on; it lives in the host's mount namespace,
# so the rootfs paths are the host's paths.
sleep 600 &
target_pid=$!
on_exit "kill $target_pid"

# hostile_bundle NAME SETUP: a bundle whose rootfs/dev is shaped by SETUP
# (a shell snippet run inside the rootfs dir).
hostile_bundle() {
    local dir="/run/lab/hostile/$1"
    rm -rf "$dir"
    mkdir -p "$dir/rootfs"
    printf '{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["true"],"cwd":"/"}}\n' >"$dir/config.json"
    (cd "$dir/rootfs" && eval "$2")
    echo "$dir"
}

# call_hook BUNDLE: run the hook as a runtime would at createRuntime.
call_hook() {
    printf '{"ociVersion":"1.0.2","id":"hostile-%s","status":"creating","pid":%d,"bundle":"%s","annotations":{"oci-tpm-hook/device":"tpmrm0"}}' \
        "$(basename "$1")" "$target_pid" "$1" | "$HOOK_BIN"
}

host_unchanged() {
    assert_eq "$victim_before" "$(stat -c '%F %a %u:%g %s' "$victim"; cat "$victim")" "host file $victim"
    assert_eq "" "$(ls -A "$victim_dir")" "host dir $victim_dir"
    assert_fails test -e /etc/tpmrm0
}

step "/dev/tpmrm0 is a symlink to a host file"
b=$(hostile_bundle node-symlink "mkdir dev && ln -s $victim dev/tpmrm0")
assert_fails call_hook "$b"
assert_contains "$LAB_OUTPUT" "is a symlink, not the TPM device; refusing"
host_unchanged
assert_eq "$victim" "$(readlink "$b/rootfs/dev/tpmrm0")" "the planted symlink is left as it was"

step "/dev/tpmrm0 is a symlink to the host's real TPM node"
b=$(hostile_bundle node-symlink-dev "mkdir dev && ln -s /dev/tpmrm0 dev/tpmrm0")
assert_fails call_hook "$b"
assert_contains "$LAB_OUTPUT" "refusing"
host_unchanged

step "/dev/tpmrm0 is a regular file"
b=$(hostile_bundle node-file "mkdir dev && echo planted >dev/tpmrm0")
assert_fails call_hook "$b"
assert_contains "$LAB_OUTPUT" "is a regular file"
assert_eq planted "$(cat "$b/rootfs/dev/tpmrm0")" "the planted file"

step "/dev/tpmrm0 is a directory"
b=$(hostile_bundle node-dir "mkdir -p dev/tpmrm0")
assert_fails call_hook "$b"
assert_contains "$LAB_OUTPUT" "is a directory"

step "/dev is an absolute symlink to a host directory: resolved inside the rootfs, where it does not exist"
b=$(hostile_bundle dev-symlink-abs "ln -s $victim_dir dev")
assert_fails call_hook "$b"
assert_contains "$LAB_OUTPUT" "cannot open /dev inside the container's rootfs"
host_unchanged

step "/dev is a relative symlink climbing out of the rootfs"
b=$(hostile_bundle dev-symlink-rel "ln -s ../../../../../../..$victim_dir dev")
assert_fails call_hook "$b"
host_unchanged

step "/dev is a symlink to a directory inside the rootfs: a safe node there"
b=$(hostile_bundle dev-symlink-inside "mkdir devices && ln -s /devices dev")
assert_ok call_hook "$b"
assert_eq "character special file 660 $gid" "$(stat -c '%F %a %g' "$b/rootfs/devices/tpmrm0")" "node inside the rootfs"
host_unchanged

step "podman: an image shipping /dev/tpmrm0 as a symlink to a host file, and one whose /dev is a symlink"
load_image_podman
install_hooks_dir >/dev/null
img=/run/lab/hostile/img
for variant in node-symlink dev-symlink; do
    rm -rf "$img" && mkdir -p "$img"
    tar -xf "$LAB_IMAGE_DIR/rootfs.tar" -C "$img"
    if [[ $variant == node-symlink ]]; then
        mkdir -p "$img/dev" && ln -s "$victim" "$img/dev/tpmrm0"
    else
        rm -rf "$img/dev" && mkdir -p "$img/devices" && ln -s /devices "$img/dev"
    fi
    tar -C "$img" -cf "/run/lab/hostile/$variant.tar" .
    podman import --quiet "/run/lab/hostile/$variant.tar" "localhost/hostile:$variant" >/dev/null
    rc=0
    LAB_OUTPUT=$(podman run --rm --annotation oci-tpm-hook/device=tpmrm0 --user 1000 --group-add "$gid" \
        "localhost/hostile:$variant" bash -c "$TPM_PROBE" 2>&1) || rc=$?
    printf '%s\n(exit status %d)\n' "$LAB_OUTPUT" "$rc"
    if [[ $rc -eq 0 ]]; then
        # The runtime's /dev tmpfs hid what the image planted: a real node.
        assert_contains "$LAB_OUTPUT" "node: character special file mode=660 gid=$gid"
        assert_random_hex "$LAB_OUTPUT"
    else
        # Refused by the runtime itself (crun will not mount /dev through a
        # symlink) or by the hook: either way a message, and nothing changed.
        [[ -n "$LAB_OUTPUT" ]] || fail "the refusal came without a message"
        note "refused: $LAB_OUTPUT"
    fi
    host_unchanged
    podman rmi -f "localhost/hostile:$variant" >/dev/null
done
