# Helpers for the hook's scenarios: policy, the hook's log, runc bundles.
# Source after lib.sh:
#     source "$LAB_LIB"; source "$LAB_REPO/tests/lab/guest/hook.sh"
# shellcheck shell=bash

HOOK_BIN="$LAB_BIN/oci-tpm-hook"
HOOK_LOG="$LAB_LOG_DIR/oci-tpm-hook.log"
HOOK_POLICY=/etc/oci-tpm-hook/config.toml

# install_policy [TOML]: the host policy, logging to $HOOK_LOG (at
# $HOOK_LOG_LEVEL, default info), plus TOML (other tables than [log]). Removed when the scenario exits.
install_policy() {
    mkdir -p "$(dirname "$HOOK_POLICY")"
    {
        printf '[log]\ntarget = "file"\nfile = "%s"\nlevel = "%s"\n' "$HOOK_LOG" "${HOOK_LOG_LEVEL:-info}"
        printf '%s\n' "${1:-}"
    } >"$HOOK_POLICY"
    touch "$HOOK_LOG"
    on_exit "rm -f $HOOK_POLICY"
    note "policy: $(tr '\n' ' ' <"$HOOK_POLICY")"
}

# mark_hook_log: remember where the hook's log ends; hook_log_new prints
# what was added since.
mark_hook_log() { HOOK_LOG_MARK=$(wc -l <"$HOOK_LOG"); }
hook_log_new() { tail -n +"$((HOOK_LOG_MARK + 1))" "$HOOK_LOG"; }

# make_bundle DIR: an OCI bundle at DIR with the test image as rootfs and
# runc's default spec, changed to run without a terminal, as uid 1000,
# without network namespace changes. Edit further with bundle_jq.
make_bundle() {
    local dir="$1"
    rm -rf "$dir"
    mkdir -p "$dir/rootfs"
    tar -xf "$LAB_IMAGE_DIR/rootfs.tar" -C "$dir/rootfs"
    (cd "$dir" && runc spec)
    bundle_jq "$dir" '.process.terminal = false
        | .process.user = {"uid": 1000, "gid": 1000}
        | .root.readonly = false'
}

# bundle_jq DIR FILTER [jq args...]: edit DIR/config.json with jq.
bundle_jq() {
    local dir="$1" filter="$2"
    shift 2
    jq "$@" "$filter" "$dir/config.json" >"$dir/config.json.new"
    mv "$dir/config.json.new" "$dir/config.json"
}

# bundle_add_hook DIR: run the project's hook at createRuntime (as hooks.d
# would for podman).
bundle_add_hook() {
    bundle_jq "$1" '.hooks.createRuntime += [{"path": $p, "args": ["oci-tpm-hook"], "timeout": 30}]' \
        --arg p "$HOOK_BIN"
}

# container_cgroup_of PID: the cgroup v2 directory of PID.
container_cgroup_of() {
    printf '/sys/fs/cgroup%s\n' "$(sed -n 's/^0:://p' "/proc/$1/cgroup")"
}

# random_hex OUTPUT: the "random: <hex>" line a probe printed must be 16 hex digits.
assert_random_hex() {
    local random
    random=$(sed -n 's/^random: //p' <<<"$1" | head -n1)
    [[ "$random" =~ ^[0-9a-f]{16}$ ]] || fail "tpm2_getrandom --hex 8 gave '$random', expected 16 hex digits"
    note "random bytes from the TPM: $random"
}

# The probe run inside containers: node facts, ids, the TPM's answers.
# shellcheck disable=SC2016
TPM_PROBE='
set -e
echo "node: $(stat -c "%F mode=%a gid=%g" /dev/tpmrm0) numbers=$(printf "%d:%d" 0x$(stat -c %t /dev/tpmrm0) 0x$(stat -c %T /dev/tpmrm0))"
echo "uid=$(id -u) groups=$(id -G)"
echo "random: $(tpm2_getrandom --hex 8)"
tpm2_getcap properties-fixed | grep -A2 -E "TPM2_PT_FAMILY_INDICATOR|TPM2_PT_MANUFACTURER"
'

# assert_refused EXPECTED PODMAN-RUN-ARGS...: the container must not start,
# with EXPECTED in the output of `podman run`, with runc and with crun (runc
# shows a failing hook's stderr; under crun the hook reports through crun).
# Leaves the crun run's output in $LAB_OUTPUT.
assert_refused() {
    local expected="$1" rt
    shift
    for rt in runc crun; do
        assert_fails podman run --rm --runtime "$rt" "$@"
        assert_contains "$LAB_OUTPUT" "$expected" "podman ($rt) output"
    done
}

# hook_under_strace [STRACE-ARGS...]: the hooks.d entry (install_hooks_dir)
# runs the hook under strace with these options (-f to follow the hook's
# helpers too); with no arguments, the hook itself again. The entry is put
# back when the scenario exits.
HOOK_ENTRY_SAVED=/run/lab/hook-entry.json
HOOK_ENTRY_KEPT=""
hook_under_strace() {
    local entry="$LAB_HOOKS_DIR/oci-tpm-hook.json"
    if [[ -z "$HOOK_ENTRY_KEPT" ]]; then
        cp "$entry" "$HOOK_ENTRY_SAVED"
        on_exit "cp $HOOK_ENTRY_SAVED $entry"
        HOOK_ENTRY_KEPT=1
    fi
    if [[ $# -eq 0 ]]; then
        cp "$HOOK_ENTRY_SAVED" "$entry"
        return 0
    fi
    # (Not jq --args: it would read strace's options as its own.)
    jq --arg hook "$HOOK_BIN" --argjson extra "$(printf '%s\n' "$@" | jq -R . | jq -sc .)" \
        '.hook.path = "/usr/bin/strace" | .hook.args = (["strace"] + $extra + [$hook])' \
        "$HOOK_ENTRY_SAVED" >"$entry.new"
    mv "$entry.new" "$entry"
}
