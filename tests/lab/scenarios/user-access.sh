#!/usr/bin/env bash
# user-access: the TPM counts as delivered only when the container's own
# process can use it. For podman (crun and runc), docker (the runtime
# wrapper) and containerd through CRI (the NRI plugin):
#  (a) a root container gets a working TPM;
#  (b) user 1000 with the node's GID gets it, and the hook's self-test ran as
#      uid 1000 with that GID (the hook's log says so);
#  (c) user 1000 without the GID: refused before it starts, and the output of
#      the command the user ran names the GID and the fix (docker: the
#      wrapper adds the GID itself, so it works);
#  (d) an image whose own /etc/group has tss at another GID: `--group-add tss`
#      resolves to the image's number and is refused with both numbers; the
#      host's number works;
# then with the policy's [node] access = "process-gid", (c) and (d) work
# without any extra group: the node gets the process's own GID.
# lab: cost 275 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

require_binaries oci-tpm-hook oci-tpm-runtime
install_hooks_dir >/dev/null
install_policy
load_image_podman
gid=$(tss_gid)
other_gid=4321
note "guest tss gid $gid; the odd image's tss gid $other_gid"

# ran_as LOG: the self_test_as field of the last delivery in LOG.
ran_as() { sed -n 's/.*self_test_as=\(uid=[0-9]* gid=[0-9]* groups=[0-9,]*\).*/\1/p' <<<"$1" | tail -n1; }

# assert_ran_as LOG UID GID [GROUP]: the self-test ran with these ids.
assert_ran_as() {
    local seen
    seen=$(ran_as "$1")
    [[ -n "$seen" ]] || fail "the hook's log has no self_test_as field: $1"
    note "self-test ran as: $seen"
    [[ "$seen" == "uid=$2 gid=$3 "* ]] || fail "self-test ran as '$seen', expected uid=$2 gid=$3"
    if [[ -n "${4:-}" ]]; then
        [[ ",${seen##*groups=}," == *",$4,"* ]] || fail "self-test groups '$seen' lack $4"
    fi
}

# ---------------------------------------------------------------- podman

step "an image whose /etc/group has tss at $other_gid"
podman rm -f mk-odd >/dev/null 2>&1 || true
assert_ok podman run --name mk-odd --user 0 "$LAB_IMAGE" \
    sh -c "groupmod -g $other_gid tss 2>/dev/null || groupadd -g $other_gid tss; getent group tss"
assert_contains "$LAB_OUTPUT" "tss:x:$other_gid:"
podman commit --quiet mk-odd localhost/tpm-test:odd-tss >/dev/null
podman rm mk-odd >/dev/null
ODD_IMAGE=localhost/tpm-test:odd-tss

for rt in crun runc; do
    step "podman --runtime $rt (a): root"
    mark_hook_log
    assert_ok podman run --rm --runtime "$rt" --annotation oci-tpm-hook/device=tpmrm0 \
        "$LAB_IMAGE" bash -c "$TPM_PROBE"
    assert_random_hex "$LAB_OUTPUT"
    assert_ran_as "$(hook_log_new)" 0 0

    step "podman --runtime $rt (b): --user 1000 --group-add $gid"
    mark_hook_log
    assert_ok podman run --rm --runtime "$rt" --annotation oci-tpm-hook/device=tpmrm0 \
        --user 1000 --group-add "$gid" "$LAB_IMAGE" bash -c "$TPM_PROBE"
    assert_random_hex "$LAB_OUTPUT"
    assert_ran_as "$(hook_log_new)" 1000 1000 "$gid"

    step "podman --runtime $rt (c): --user 1000 without the GID is refused, podman's output says why"
    assert_fails podman run --rm --runtime "$rt" --annotation oci-tpm-hook/device=tpmrm0 \
        --user 1000 "$LAB_IMAGE" true
    assert_contains "$LAB_OUTPUT" "uid 1000, gid 1000" "podman's output names the process"
    assert_contains "$LAB_OUTPUT" "not in group $gid" "podman's output names the GID"
    assert_contains "$LAB_OUTPUT" "--group-add $gid" "podman's output has the fix"
    assert_contains "$LAB_OUTPUT" "process-gid" "and the policy alternative"

    step "podman --runtime $rt (d): --group-add tss takes the image's $other_gid: refused with both numbers"
    assert_fails podman run --rm --runtime "$rt" --annotation oci-tpm-hook/device=tpmrm0 \
        --user 1000 --group-add tss "$ODD_IMAGE" true
    assert_contains "$LAB_OUTPUT" "groups 1000,$other_gid" "the process's groups as podman resolved them"
    assert_contains "$LAB_OUTPUT" "not in group $gid"
    mark_hook_log
    assert_ok podman run --rm --runtime "$rt" --annotation oci-tpm-hook/device=tpmrm0 \
        --user 1000 --group-add "$gid" "$ODD_IMAGE" tpm2_getrandom --hex 8
    assert_ran_as "$(hook_log_new)" 1000 1000 "$gid"
done

step "nothing was left running or half-made by the refusals"
assert_eq "" "$(podman ps -aq)" "containers left"

# ---------------------------------------------------------------- docker

step "docker with the runtime wrapper"
install_policy "$(printf '[runtime]\npath = "runc"\n[hook]\npath = "%s"' "$HOOK_BIN")"
start_dockerd "$(jq -nc --arg p "$LAB_BIN/oci-tpm-runtime" '{runtimes: {tpm: {path: $p}}}')"
load_image_docker
docker rm -f mk-odd >/dev/null 2>&1 || true
assert_ok docker run --name mk-odd --network none --user 0 "$LAB_IMAGE" \
    sh -c "groupmod -g $other_gid tss 2>/dev/null || groupadd -g $other_gid tss"
docker commit mk-odd "$ODD_IMAGE" >/dev/null
docker rm mk-odd >/dev/null

step "docker (a): root"
mark_hook_log
assert_ok docker run --rm --network none --runtime tpm --annotation oci-tpm-hook/device=tpmrm0 \
    "$LAB_IMAGE" tpm2_getrandom --hex 8
assert_ran_as "$(hook_log_new)" 0 0 "$gid"

step "docker (b) and (c): --user 1000, with and without --group-add: the wrapper adds the GID"
for extra in "--group-add $gid" ""; do
    mark_hook_log
    # shellcheck disable=SC2086
    assert_ok docker run --rm --network none --runtime tpm --annotation oci-tpm-hook/device=tpmrm0 \
        --user 1000 $extra "$LAB_IMAGE" bash -c 'id -G; tpm2_getrandom --hex 8'
    assert_ran_as "$(hook_log_new)" 1000 1000 "$gid"
done

step "docker (d): the odd image with --group-add tss still works (the wrapper adds the host's number)"
mark_hook_log
assert_ok docker run --rm --network none --runtime tpm --annotation oci-tpm-hook/device=tpmrm0 \
    --user 1000 --group-add tss "$ODD_IMAGE" bash -c 'id -G; tpm2_getrandom --hex 8'
assert_contains "$LAB_OUTPUT" "$other_gid"
assert_ran_as "$(hook_log_new)" 1000 1000 "$gid"

# ---------------------------------------------------------------- containerd

step "containerd with NRI and the plugin"
start_containerd "$(cat "$LAB_REPO/packaging/containerd/nri.toml")"
load_image_containerd
start_daemon oci-tpm-nri "$HOOK_BIN" nri
wait_for 60 "the NRI plugin to synchronize" grep -q 'NRI: synchronized' "$HOOK_LOG"

step "CRI (a): root"
mark_hook_log
assert_ok cri_run --pod root --name root --namespace lab --timeout 90 \
    --pod-annotation oci-tpm-hook/device=tpmrm0 -- tpm2_getrandom --hex 8
assert_ran_as "$(hook_log_new)" 0 0

step "CRI (b): runAsUser 1000 with supplementalGroups [$gid]"
mark_hook_log
assert_ok cri_run --pod sup --name sup --namespace lab --timeout 90 --user 1000 \
    --supplemental-group "$gid" --pod-annotation oci-tpm-hook/device=tpmrm0 -- tpm2_getrandom --hex 8
assert_ran_as "$(hook_log_new)" 1000 1000 "$gid"

step "CRI (c): runAsUser 1000 without the group: the CRI error says supplementalGroups: [$gid]"
assert_fails cri_run --pod nosup --name nosup --namespace lab --timeout 90 --user 1000 \
    --pod-annotation oci-tpm-hook/device=tpmrm0 -- tpm2_getrandom --hex 8
assert_contains "$LAB_OUTPUT" "CRI error"
assert_contains "$LAB_OUTPUT" "not in group $gid"
assert_contains "$LAB_OUTPUT" "supplementalGroups: [$gid]"
assert_not_contains "$LAB_OUTPUT" "--group-add" "the fix is the pod's, not a CLI flag"
note "(d) does not apply to CRI: supplementalGroups are numbers, not names"

# ---------------------------------------------------------------- process-gid

step "policy [node] access = \"process-gid\": no extra group needed anywhere"
install_policy "$(printf '[node]\naccess = "process-gid"\n[runtime]\npath = "runc"\n[hook]\npath = "%s"' "$HOOK_BIN")"
for rt in crun runc; do
    for image in "$LAB_IMAGE" "$ODD_IMAGE"; do
        mark_hook_log
        assert_ok podman run --rm --runtime "$rt" --annotation oci-tpm-hook/device=tpmrm0 \
            --user 1000 "$image" bash -c "$TPM_PROBE"
        assert_contains "$LAB_OUTPUT" "node: character special file mode=660 gid=1000" "node group is the process's"
        assert_random_hex "$LAB_OUTPUT"
        assert_ran_as "$(hook_log_new)" 1000 1000
    done
done
mark_hook_log
assert_ok docker run --rm --network none --runtime tpm --annotation oci-tpm-hook/device=tpmrm0 \
    --user 1000 "$LAB_IMAGE" bash -c 'stat -c "node gid=%g" /dev/tpmrm0; tpm2_getrandom --hex 8'
assert_contains "$LAB_OUTPUT" "node gid=1000"
assert_ran_as "$(hook_log_new)" 1000 1000
mark_hook_log
assert_ok cri_run --pod pg --name pg --namespace lab --timeout 90 --user 1000 \
    --pod-annotation oci-tpm-hook/device=tpmrm0 -- bash -c 'stat -c "node gid=%g" /dev/tpmrm0; tpm2_getrandom --hex 8'
assert_contains "$LAB_OUTPUT" "node gid=1000" "the hook adjusted the node the NRI plugin asked for"
assert_ran_as "$(hook_log_new)" 1000 1000
