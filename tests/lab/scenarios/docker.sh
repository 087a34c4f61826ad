#!/usr/bin/env bash
# docker: the oci-tpm-runtime wrapper registered as docker runtime "tpm".
#  - `docker run --runtime tpm --annotation oci-tpm-hook/device=tpmrm0 --user 1000`
#    gets a working TPM without --group-add;
#  - the spec gains exactly the intended additions, nothing else changes;
#  - without the annotation there is no TPM and config.json reaches runc
#    byte-identical (same bytes, same inode: not rewritten);
#  - a bad annotation or a missing TPM fails `docker run` with the message shown;
#  - the hook in the spec validates and self-tests, finding the device granted;
#  - with "default-runtime": "tpm" the annotation alone suffices.
# lab: cost 115 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

require_binaries oci-tpm-runtime oci-tpm-hook
gid=$(tss_gid)
numbers=$(device_numbers /dev/tpmrm0)
major=${numbers%:*}
minor=${numbers#*:}
runc_path=$(command -v runc)
note "guest: tss gid $gid, /dev/tpmrm0 is $numbers, runc $(runc --version | head -n1)"

# The host policy at its default place: the real runtime and the lab's hook.
install_policy "$(printf '[runtime]\npath = "runc"\n[hook]\npath = "%s"' "$HOOK_BIN")"

# A traced variant, runtime "tpm-traced": docker -> trace(before) ->
# oci-tpm-runtime -> trace(after) -> runc. Each trace keeps a copy of
# config.json and its inode/mtime, so the scenario can compare what docker
# handed over with what runc received.
trace=/run/lab/docker-trace
mkdir -p "$trace"
make_trace() {
    local stage="$1" next="$2" extra_env="${3:-}"
    cat >"$trace/$stage" <<EOF
#!/bin/sh
cmd=""; bundle=""; prev=""; id=""
for a in "\$@"; do
    case "\$prev" in --bundle|-b) bundle="\$a" ;; esac
    case "\$a" in
        create|run) [ -z "\$cmd" ] && cmd="\$a" ;;
        --bundle=*) bundle="\${a#--bundle=}" ;;
    esac
    prev="\$a"; id="\$a"
done
if [ -n "\$cmd" ] && [ -n "\$bundle" ]; then
    cp -p "\$bundle/config.json" "$trace/\$id.$stage.json"
    stat -c '%i %s %y' "\$bundle/config.json" >"$trace/\$id.$stage.stat"
fi
$extra_env exec "$next" "\$@"
EOF
    chmod 0755 "$trace/$stage"
}
sed -e "s|^path = \"runc\"|path = \"$trace/after\"|" "$HOOK_POLICY" >"$trace/config.toml"
make_trace after "$runc_path"
make_trace before "$LAB_BIN/oci-tpm-runtime" "OCI_TPM_HOOK_CONFIG=$trace/config.toml"

step "dockerd with the project's daemon.json (runtime tpm) and a traced copy"
runtimes=$(jq --arg p "$LAB_BIN/oci-tpm-runtime" --arg t "$trace/before" \
    '.runtimes.tpm.path = $p | .runtimes["tpm-traced"] = {path: $t}' \
    "$LAB_REPO/packaging/docker/daemon.json")
start_dockerd "$runtimes"
assert_ok docker info --format '{{range $k, $v := .Runtimes}}{{$k}} {{end}}'
assert_contains "$LAB_OUTPUT" "tpm-traced"
load_image_docker

step "docker run --runtime tpm --annotation oci-tpm-hook/device=tpmrm0 --user 1000 (no --group-add)"
mark_hook_log
assert_ok docker run --rm --network none --runtime tpm \
    --annotation oci-tpm-hook/device=tpmrm0 --user 1000 "$LAB_IMAGE" tpm2_getrandom --hex 8
random=$(tail -n1 <<<"$LAB_OUTPUT")
[[ "$random" =~ ^[0-9a-f]{16}$ ]] || fail "tpm2_getrandom --hex 8 gave '$random', expected 16 hex digits"
note "random bytes from the TPM through docker: $random"
log_lines=$(hook_log_new)
printf '%s\n' "$log_lines"
assert_contains "$log_lines" "TPM delivered" "hook log"
assert_contains "$log_lines" "cgroup=v2 in-spec" "hook log: the rule came with the spec"
assert_contains "$log_lines" "node=Kept" "hook log: runc made the node from the spec"
assert_contains "$log_lines" 'self_test_result="passed"' "hook log"

step "inside: the user has the tss group, the node is group tss 0660, the TCTI is set"
assert_ok docker run --rm --network none --runtime tpm \
    --annotation oci-tpm-hook/device=tpmrm0 --user 1000 "$LAB_IMAGE" bash -c '
        echo "uid=$(id -u) groups=$(id -G)"
        echo "node: $(stat -c "%F %a %g %t:%T" /dev/tpmrm0)"
        echo "TPM2TOOLS_TCTI=$TPM2TOOLS_TCTI TSS2_TCTI=$TSS2_TCTI"
        tpm2_getcap properties-fixed | grep -A2 TPM2_PT_MANUFACTURER'
out="$LAB_OUTPUT"
assert_contains "$out" "uid=1000"
grep -Eq "groups=.*\\b$gid\\b" <<<"$out" || fail "tss gid $gid is not among the user's groups"
note "ok: tss gid $gid is a supplementary group of uid 1000"
assert_contains "$out" "node: character special file 660 $gid $(printf '%x:%x' "$major" "$minor")"
assert_contains "$out" "TPM2TOOLS_TCTI=device:/dev/tpmrm0 TSS2_TCTI=device:/dev/tpmrm0"
assert_contains "$out" 'value: "IBM"' "manufacturer (swtpm reports IBM)"

# Remove exactly what the wrapper adds, then drop empty arrays/objects (which
# the wrapper may have had to create); what remains must equal the original.
strip_additions='
  def prune: walk(if type == "object" then with_entries(select(.value != [] and .value != {})) else . end);
  def drop(p; f): if p != null then p |= map(select(f | not)) else . end;
  drop(.hooks.createRuntime; .path == $hook)
  | drop(.linux.devices; .path == "/dev/tpmrm0")
  | drop(.linux.resources.devices; . == {allow: true, type: "c", major: $maj, minor: $min, access: "rw"})
  | drop(.process.user.additionalGids; . == $gid)
  | drop(.process.env; startswith("TPM2TOOLS_TCTI=") or startswith("TSS2_TCTI="))
  | prune'
strip() {
    jq -S --arg hook "$LAB_BIN/oci-tpm-hook" --argjson maj "$major" --argjson min "$minor" \
        --argjson gid "$gid" "$strip_additions" "$1"
}

step "the spec change, traced: only the intended additions"
assert_ok docker run --name tpm-traced-1 --network none --runtime tpm-traced \
    --annotation oci-tpm-hook/device=tpmrm0 --user 1000 "$LAB_IMAGE" tpm2_getrandom --hex 8
id=$(docker inspect -f '{{.Id}}' tpm-traced-1)
docker rm tpm-traced-1 >/dev/null
before="$trace/$id.before.json" after="$trace/$id.after.json"
[[ -f "$before" && -f "$after" ]] || fail "no trace of container $id"
note "config.json: $(stat -c %s "$before") bytes from docker, $(stat -c %s "$after") bytes to runc"
note "added: $(jq -c --slurpfile b "$before" '{
    device: [.linux.devices[] | select(.path == "/dev/tpmrm0")],
    rule: .linux.resources.devices[-1],
    additionalGids: .process.user.additionalGids,
    env: [.process.env[] | select(test("TCTI"))],
    hook: .hooks.createRuntime[-1]}' "$after")"
if ! diff <(strip "$before") <(strip "$after"); then
    fail "the spec docker wrote and the one runc got differ in more than the additions (diff above)"
fi
note "ok: without the additions, the spec runc got equals the one docker wrote"
assert_eq "$(jq -c '.linux.devices[] | select(.path == "/dev/tpmrm0") | [.type, .major, .minor, .fileMode, .gid]' "$after")" \
    "[\"c\",$major,$minor,432,$gid]" "device node"
assert_eq "$(jq -c '.linux.resources.devices[-1]' "$after")" \
    "{\"allow\":true,\"type\":\"c\",\"major\":$major,\"minor\":$minor,\"access\":\"rw\"}" "cgroup rule"
assert_eq "$(jq -c '.hooks.createRuntime[-1] | [.path, .args]' "$after")" \
    "[\"$LAB_BIN/oci-tpm-hook\",[\"oci-tpm-hook\"]]" "createRuntime hook"

step "without the annotation: no TPM, and runc gets config.json untouched"
assert_ok docker run --name tpm-traced-2 --network none --runtime tpm-traced --user 1000 "$LAB_IMAGE" \
    bash -c 'if [ -e /dev/tpmrm0 ]; then echo TPM-PRESENT; else echo no-tpmrm0; fi; echo "TCTI=${TPM2TOOLS_TCTI:-unset}"; id -G'
assert_contains "$LAB_OUTPUT" "no-tpmrm0"
assert_contains "$LAB_OUTPUT" "TCTI=unset"
id=$(docker inspect -f '{{.Id}}' tpm-traced-2)
docker rm tpm-traced-2 >/dev/null
assert_eq "$(sha256sum <"$trace/$id.before.json")" "$(sha256sum <"$trace/$id.after.json")" "config.json sha256 before/after the wrapper"
assert_eq "$(cat "$trace/$id.before.stat")" "$(cat "$trace/$id.after.stat")" "config.json inode, size, mtime before/after the wrapper"

step "a bad annotation fails docker run, and says why"
assert_fails docker run --rm --network none --runtime tpm \
    --annotation oci-tpm-hook/device=tpmrm0 --annotation oci-tpm-hook/self-test=fast "$LAB_IMAGE" true
assert_contains "$LAB_OUTPUT" "oci-tpm-runtime: "
assert_contains "$LAB_OUTPUT" 'oci-tpm-hook/self-test="fast" is not valid'

step "a TPM the host does not have fails docker run, and says why"
assert_fails docker run --rm --network none --runtime tpm \
    --annotation oci-tpm-hook/device=tpmrm7 "$LAB_IMAGE" true
assert_contains "$LAB_OUTPUT" "oci-tpm-runtime: "
assert_contains "$LAB_OUTPUT" "tpmrm7"

step "the same, optional: the container starts without a TPM"
assert_ok docker run --rm --network none --runtime tpm \
    --annotation oci-tpm-hook/device=tpmrm7 --annotation oci-tpm-hook/required=false "$LAB_IMAGE" \
    bash -c 'if [ -e /dev/tpmrm0 ]; then echo TPM-PRESENT; else echo no-tpmrm0; fi'
assert_contains "$LAB_OUTPUT" "no-tpmrm0"

step "default-runtime tpm (packaging/docker/daemon.default-runtime.json), reloaded with SIGHUP"
conf=/run/lab/docker/daemon.json
jq --arg p "$LAB_BIN/oci-tpm-runtime" '.runtimes.tpm.path = $p' \
    "$LAB_REPO/packaging/docker/daemon.default-runtime.json" >"$conf.default"
jq -s '.[0] * .[1]' "$conf" "$conf.default" >"$conf.new" && mv "$conf.new" "$conf"
note "dockerd config: $(jq -c . "$conf")"
for i in "${!LAB_DAEMON_NAMES[@]}"; do
    [[ ${LAB_DAEMON_NAMES[$i]} == dockerd ]] && kill -HUP "${LAB_DAEMON_PIDS[$i]}"
done
wait_for 30 "dockerd to take default-runtime tpm" \
    bash -c '[[ $(docker info --format "{{.DefaultRuntime}}") == tpm ]]'
assert_ok docker info --format '{{.DefaultRuntime}}'

step "docker run --annotation oci-tpm-hook/device=tpmrm0 --user 1000 (no --runtime)"
assert_ok docker run --rm --network none --annotation oci-tpm-hook/device=tpmrm0 --user 1000 \
    "$LAB_IMAGE" tpm2_getrandom --hex 8
random=$(tail -n1 <<<"$LAB_OUTPUT")
[[ "$random" =~ ^[0-9a-f]{16}$ ]] || fail "tpm2_getrandom --hex 8 gave '$random', expected 16 hex digits"
note "random bytes: $random"

step "and a container that asks for nothing still runs, without a TPM"
assert_ok docker run --rm --network none --user 1000 "$LAB_IMAGE" \
    bash -c 'if [ -e /dev/tpmrm0 ]; then echo TPM-PRESENT; else echo no-tpmrm0; fi'
assert_contains "$LAB_OUTPUT" "no-tpmrm0"
