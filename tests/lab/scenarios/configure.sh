#!/usr/bin/env bash
# configure: `oci-tpm-hook configure` edits each real daemon's own
# configuration, the daemon is restarted on it, and then a container that
# asks for the TPM with the annotation gets it:
#  - docker: daemon.json gains the runtime "tpm" and the cdi feature, keeps
#    every other key in order and the file's mode; --dry-run writes nothing;
#    a second run changes nothing; a malformed file is refused untouched;
#  - containerd 1.7 (config version 2): NRI on through the drop-in the main
#    config now imports, CDI on; the NRI plugin gives a pod the TPM;
#  - CRI-O 1.33: NRI on through a drop-in in crio.conf.d (the lab's main
#    config has it off); the NRI plugin gives a pod the TPM.
# lab: needs third-party
# lab: cost 120 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

require_binaries oci-tpm-hook oci-tpm-runtime
install_policy "$(printf '[hook]\npath = "%s"' "$HOOK_BIN")"
gid=$(tss_gid)
configure() { "$HOOK_BIN" configure "$@"; }

# ---------------------------------------------------------------- docker

step "docker: the lab's daemon.json, then configure docker --dry-run shows the diff and writes nothing"
start_dockerd
conf=$LAB_DOCKERD_CONFIG
chmod 0640 "$conf"
cp -p "$conf" /run/lab/daemon.json.before
stop_daemon dockerd
assert_ok configure docker --config "$conf" --runtime-path "$LAB_BIN/oci-tpm-runtime" --cdi --dry-run
assert_contains "$LAB_OUTPUT" "+++ $conf"
assert_contains "$LAB_OUTPUT" "\"path\": \"$LAB_BIN/oci-tpm-runtime\""
cmp "$conf" /run/lab/daemon.json.before || fail "--dry-run changed $conf"

step "docker: configure docker writes it: every key kept in order, mode kept, then nothing more to do"
assert_ok configure docker --config "$conf" --runtime-path "$LAB_BIN/oci-tpm-runtime" --cdi
assert_contains "$LAB_OUTPUT" "wrote $conf"
assert_contains "$LAB_OUTPUT" "restart docker"
jq . "$conf"
assert_eq "$(jq -c 'keys_unsorted' /run/lab/daemon.json.before | sed 's/]$//'),\"runtimes\",\"features\"]" \
    "$(jq -c 'keys_unsorted' "$conf")" "keys, in order"
assert_eq "$(jq -cS . /run/lab/daemon.json.before)" "$(jq -cS 'del(.runtimes, .features)' "$conf")" "the other keys' values"
assert_eq "$LAB_BIN/oci-tpm-runtime" "$(jq -r .runtimes.tpm.path "$conf")" "runtimes.tpm.path"
assert_eq true "$(jq -r .features.cdi "$conf")" "features.cdi"
assert_eq 640 "$(stat -c %a "$conf")" "mode"
inode=$(stat -c %i "$conf")
assert_ok configure docker --config "$conf" --runtime-path "$LAB_BIN/oci-tpm-runtime" --cdi
assert_contains "$LAB_OUTPUT" "already configured"
assert_eq "$inode" "$(stat -c %i "$conf")" "inode after a second run"

step "docker: a malformed daemon.json is refused, named, and left as it is"
printf '{"debug": true,,}\n' >/run/lab/bad.json
assert_fails configure docker --config /run/lab/bad.json
assert_contains "$LAB_OUTPUT" "/run/lab/bad.json"
assert_contains "$LAB_OUTPUT" "nothing was changed"
assert_eq '{"debug": true,,}' "$(cat /run/lab/bad.json)" "the malformed file"

step "docker restarted on the edited file: --runtime tpm and the annotation give user 1000 its TPM"
restart_dockerd
assert_ok docker info --format '{{range $k, $v := .Runtimes}}{{$k}} {{end}}'
assert_contains "$LAB_OUTPUT" "tpm"
load_image_docker
mark_hook_log
assert_ok docker run --rm --network none --runtime tpm --annotation oci-tpm-hook/device=tpmrm0 \
    --user 1000 "$LAB_IMAGE" tpm2_getrandom --hex 8
[[ "$(tail -n1 <<<"$LAB_OUTPUT")" =~ ^[0-9a-f]{16}$ ]] || fail "no random bytes from the TPM"
log_lines=$(hook_log_new)
printf '%s\n' "$log_lines"
assert_contains "$log_lines" 'self_test_result="passed"' "hook log"
assert_contains "$log_lines" "self_test_as=uid=1000" "hook log"

stop_daemon dockerd-restarted

# ---------------------------------------------------------------- containerd

step "containerd 1.7: the lab's config (version 2, no NRI), then configure containerd --cdi"
start_containerd
ctd_conf=$LAB_CONTAINERD_CONFIG
dropins=/run/lab/containerd/conf.d
cp "$ctd_conf" /run/lab/containerd.before
assert_ok configure containerd --config "$ctd_conf" --drop-in-dir "$dropins" --cdi --dry-run
assert_contains "$LAB_OUTPUT" "+++ $dropins/oci-tpm-hook.toml"
[[ ! -e "$dropins" ]] || fail "--dry-run made $dropins"
assert_ok configure containerd --config "$ctd_conf" --drop-in-dir "$dropins" --cdi
assert_contains "$LAB_OUTPUT" "wrote $dropins/oci-tpm-hook.toml"
diff -u /run/lab/containerd.before "$ctd_conf" || true
assert_contains "$(cat "$ctd_conf")" "imports = [\"$dropins/*.toml\"]"
assert_contains "$(cat "$ctd_conf")" "enable_cdi = true"
# Only those two lines are new; everything else is as it was.
assert_eq "$(cat /run/lab/containerd.before)" "$(grep -v -e '^imports = ' -e '^enable_cdi = true$' "$ctd_conf")" "the rest of the config"
assert_ok configure containerd --config "$ctd_conf" --drop-in-dir "$dropins" --cdi
assert_contains "$LAB_OUTPUT" "already configured"

step "containerd restarted: its merged config has NRI on (from the drop-in) and CDI on"
restart_containerd
assert_ok containerd --config "$ctd_conf" config dump
dump="$LAB_OUTPUT"
assert_contains "$(grep -A3 'io.containerd.nri.v1.nri' <<<"$dump")" "disable = false" "NRI in the merged config"
assert_contains "$dump" "enable_cdi = true" "CDI in the merged config"
assert_contains "$dump" "sandbox_image = \"$LAB_PAUSE_IMAGE\"" "the CRI settings kept"

step "containerd: the NRI plugin connects, and a pod that asks gets the TPM"
load_image_containerd
start_daemon nri-plugin "$HOOK_BIN" nri
wait_for_daemon nri-plugin "$LAB_WAIT" grep -q "NRI: synchronized" "$HOOK_LOG"
mark_hook_log
assert_ok cri_run --name nri --pod-annotation oci-tpm-hook/device=tpmrm0 --user 1000 \
    --supplemental-group "$gid" -- tpm2_getrandom --hex 8
log_lines=$(hook_log_new)
printf '%s\n' "$log_lines"
assert_contains "$log_lines" 'self_test_result="passed"' "hook log"
assert_contains "$log_lines" "self_test_as=uid=1000" "hook log"

stop_daemon nri-plugin
stop_daemon containerd-restarted
# Its NRI socket, should it be left, is CRI-O's to make next.
rm -f /var/run/nri/nri.sock

# ---------------------------------------------------------------- CRI-O

step "CRI-O: configure crio writes its drop-in (NRI on), then nothing more to do"
crio_dir=/etc/crio/crio.conf.d
crio_dropin=$crio_dir/50-oci-tpm-hook.conf
on_exit "rm -f $crio_dropin"
assert_ok configure crio --dry-run
assert_contains "$LAB_OUTPUT" "+++ $crio_dropin"
[[ ! -e "$crio_dropin" ]] || fail "--dry-run wrote $crio_dropin"
assert_ok configure crio
assert_contains "$LAB_OUTPUT" "wrote $crio_dropin"
assert_contains "$LAB_OUTPUT" "restart CRI-O"
cat "$crio_dropin"
assert_ok configure crio
assert_contains "$LAB_OUTPUT" "already configured"

step "CRI-O on the lab's config (NRI off there) and the drop-in: NRI on in its merged config"
mkdir -p /run/lab/crio
crio_config >/run/lab/crio/crio.conf
assert_contains "$(cat /run/lab/crio/crio.conf)" "enable_nri = false" "the lab's main config"
# `crio config` prints the merged config (700 lines: only the NRI lines shown).
# shellcheck disable=SC2046
merged=$($(crio_command /run/lab/crio/crio.conf) --config-dir "$crio_dir" config 2>&1) \
    || { printf '%s\n' "$merged" | tail -n 20; fail "crio config failed"; }
grep -e 'drop-in' -e 'enable_nri' <<<"$merged"
assert_contains "$merged" "Updating config from drop-in file: $crio_dropin" "CRI-O reads the drop-in"
assert_not_contains "$(grep enable_nri <<<"$merged")" "enable_nri = false" "CRI-O's merged config"
load_images_crio
# shellcheck disable=SC2046
start_daemon crio $(crio_command /run/lab/crio/crio.conf) --config-dir "$crio_dir"
wait_for_daemon crio "$LAB_WAIT" cri_version "$CRIO_SOCKET"
on_exit "cri_remove_all $CRIO_SOCKET >/dev/null 2>&1 || true"

step "CRI-O: the NRI plugin connects, and a pod that asks gets the TPM"
mark_hook_log
start_daemon nri-plugin-crio "$HOOK_BIN" nri
wait_for_daemon nri-plugin-crio "$LAB_WAIT" \
    bash -c "tail -n +$((HOOK_LOG_MARK + 1)) $HOOK_LOG | grep -q 'NRI: synchronized'"
mark_hook_log
assert_ok cri_run --socket "$CRIO_SOCKET" --name crio --pod-annotation oci-tpm-hook/device=tpmrm0 --user 1000 \
    --supplemental-group "$gid" --timeout 120 --rpc-timeout 300 -- tpm2_getrandom --hex 8
log_lines=$(hook_log_new)
printf '%s\n' "$log_lines"
assert_contains "$log_lines" 'front_end="NRI plugin"' "hook log: the grant came from the plugin"
assert_contains "$log_lines" 'self_test_result="passed"' "hook log"
assert_contains "$log_lines" "self_test_as=uid=1000" "hook log"
