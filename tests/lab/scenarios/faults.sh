#!/usr/bin/env bash
# faults: every way a request can fail ends with a clear message and no
# half-made state: a missing device (required and optional), a hung TPM and a
# TPM that went away, before the start or between validation and
# self-test (bounded), a bad annotation value, the exclusive tpm0,
# a runtime whose timeout for the hook is shorter than the self-test's, the
# policy file rewritten while containers start, bpf(2) refusing the device
# program's attach, and a TPM that answers every command with an error.
# lab: cost 250 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

require_binaries oci-tpm-hook
install_hooks_dir >/dev/null
install_policy '[self-test]
timeout-ms = 2000'
load_image_podman
gid=$(tss_gid)

step "missing device tpmrm7, required (the default): the container does not start"
assert_refused "host has no TPM device tpmrm7" --annotation oci-tpm-hook/device=tpmrm7 "$LAB_IMAGE" true
assert_contains "$LAB_OUTPUT" "oci-tpm-hook/device=auto" "the message says what to do"
assert_contains "$LAB_OUTPUT" "container " "the message names the container"

step "missing device tpmrm7, required=false: the container starts without a TPM"
assert_ok podman run --rm --annotation oci-tpm-hook/device=tpmrm7 --annotation oci-tpm-hook/required=false \
    "$LAB_IMAGE" bash -c 'ls /dev; test ! -e /dev/tpmrm7 && echo started-without-tpm'
assert_contains "$LAB_OUTPUT" "started-without-tpm"

step "bad annotation value: named key, value and the allowed values"
assert_refused 'oci-tpm-hook/self-test="sometimes"' --annotation oci-tpm-hook/device=tpmrm0 \
    --annotation oci-tpm-hook/self-test=sometimes "$LAB_IMAGE" true

step "unknown key under the prefix"
assert_refused "oci-tpm-hook/devcie" --annotation oci-tpm-hook/devcie=tpmrm0 "$LAB_IMAGE" true

step "the exclusive /dev/tpm0 is refused by default, with the reason"
assert_refused "exclusive" --annotation oci-tpm-hook/device=tpm0 "$LAB_IMAGE" true
assert_contains "$LAB_OUTPUT" "tpmrm0 instead"

step "a second TPM through the vTPM proxy works first"
# Not in $(...): add_vtpm records its swtpm for cleanup in this shell.
add_vtpm >/run/lab/vtpm.out
dev=$(tail -n1 /run/lab/vtpm.out)
name=$(basename "$dev")
swtpm_pid=${LAB_DAEMON_PIDS[-1]}
note "second TPM: $dev ($(device_numbers "$dev")), its swtpm pid $swtpm_pid"
assert_ok podman run --rm --annotation "oci-tpm-hook/device=$name" --user 1000 --group-add "$gid" \
    "$LAB_IMAGE" tpm2_getrandom -T "device:/dev/$name" --hex 8

step "a hung TPM (its swtpm stopped): the start fails within the self-test timeout"
kill -STOP "$swtpm_pid"
on_exit "kill -CONT $swtpm_pid"
start=$(date +%s)
assert_fails timeout 120 podman run --rm --runtime runc --annotation "oci-tpm-hook/device=$name" "$LAB_IMAGE" true
took=$(( $(date +%s) - start ))
assert_contains "$LAB_OUTPUT" "self-test"
note "podman run failed after ${took} s (self-test timeout 2 s)"
[[ $took -lt 60 ]] || fail "a hung TPM held the container start for ${took} s"

step "the same with required=false: it starts without the TPM, and nothing of the grant is left"
# Inside: no node; mknod of the TPM's numbers works (mknod is allowed) but
# opening it is refused by the device cgroup, so the rule was taken back;
# /dev/null's numbers open (the check itself works); no process from
# outside the container (shown as pid 0) sits in its cgroup.
vnumbers=$(device_numbers "$dev")
probe_rollback="test ! -e /dev/$name && echo no-node
mknod /tmp/tpm c ${vnumbers%:*} ${vnumbers#*:} && echo made
if (exec 3<>/tmp/tpm) 2>/dev/null; then echo TPM-OPENED; else echo tpm-open-refused; fi
mknod /tmp/null c 1 3 && if (exec 3<>/tmp/null); then echo null-opened; fi
grep -qx 0 /sys/fs/cgroup/cgroup.procs && echo FOREIGN-PROCESS || echo cgroup-clean"
# assert_started_without_grant RUNTIME WHAT: a required=false container
# asking for the TPM starts, and $probe_rollback finds nothing of the grant.
assert_started_without_grant() {
    local rt="$1" what="$2" want
    assert_ok timeout 120 podman run --rm --runtime "$rt" --cap-add MKNOD \
        --annotation "oci-tpm-hook/device=$name" --annotation oci-tpm-hook/required=false \
        "$LAB_IMAGE" bash -c "$probe_rollback"
    for want in no-node made tpm-open-refused null-opened cgroup-clean; do
        assert_contains "$LAB_OUTPUT" "$want" "$what"
    done
    assert_not_contains "$LAB_OUTPUT" "TPM-OPENED" "$what: the rule was not taken back"
}
for rt in runc crun; do
    assert_started_without_grant "$rt" "podman ($rt)"
done

# set_hook_timeout SECONDS: the "timeout" of the hooks.d entry, which podman
# copies into the spec and the runtime enforces by killing the hook.
set_hook_timeout() {
    local f="$LAB_HOOKS_DIR/oci-tpm-hook.json"
    jq --argjson t "$1" '.hook.timeout = $t' "$f" >"$f.new" && mv "$f.new" "$f"
    note "hooks.d: $(jq -c .hook "$f")"
}

step "the runtime's timeout for the hook (10 s) is shorter than the policy's self-test (30 s): a hung TPM fails the start by the hook's own hand, in time to take the grant back"
install_policy '[self-test]
timeout-ms = 30000'
set_hook_timeout 10
for rt in runc crun; do
    start=$(date +%s)
    assert_fails timeout 120 podman run --rm --runtime "$rt" --annotation "oci-tpm-hook/device=$name" "$LAB_IMAGE" true
    took=$(( $(date +%s) - start ))
    note "podman ($rt) failed after ${took} s"
    # Either the self-test ran out of the time left, or the hook found too
    # little left for one: both are the hook's own clear refusal.
    if [[ "$LAB_OUTPUT" != *"self-test"* && "$LAB_OUTPUT" != *"raise that timeout"* ]]; then
        fail "podman ($rt): no refusal from the hook in its output"
    fi
    assert_not_contains "$LAB_OUTPUT" "killed" "podman ($rt): the runtime did not have to kill the hook"
done
assert_started_without_grant runc "required=false under the runtime's timeout"

step "the runtime's timeout for the hook (3 s) leaves no time for a self-test: refused at once, saying which timeout to raise"
set_hook_timeout 3
assert_refused "raise that timeout" --annotation "oci-tpm-hook/device=$name" "$LAB_IMAGE" true
assert_contains "$LAB_OUTPUT" "hooks.d"
set_hook_timeout 30
install_policy '[self-test]
timeout-ms = 2000'
kill -CONT "$swtpm_pid"

step "the policy file rewritten while containers start: each container gets the TPM or a clear refusal, nothing in between"
# Two policies, written in place (truncate, then write: a hook can read a
# half-written file) as fast as the shell can, while 6 containers start.
allow_all=$(cat "$HOOK_POLICY")
deny_all="$allow_all
[devices]
allow = [\"tpmrm9*\"]"
( while [[ ! -e /run/lab/policy-flip.stop ]]; do
      printf '%s\n' "$deny_all" >"$HOOK_POLICY"
      printf '%s\n' "$allow_all" >"$HOOK_POLICY"
  done ) &
flipper=$!
on_exit "touch /run/lab/policy-flip.stop; kill $flipper 2>/dev/null || true"
pids=()
for i in 1 2 3 4 5 6; do
    podman run --rm --name "flip-$i" --user 1000 --group-add "$gid" --annotation oci-tpm-hook/device=tpmrm0 \
        "$LAB_IMAGE" tpm2_getrandom --hex 8 >"/run/lab/flip-$i.out" 2>&1 &
    pids+=($!)
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" && echo ok >"/run/lab/flip-$((i + 1)).rc" || echo failed >"/run/lab/flip-$((i + 1)).rc"
done
touch /run/lab/policy-flip.stop
wait "$flipper" || true
printf '%s\n' "$allow_all" >"$HOOK_POLICY"
granted=0 refused=0
for i in 1 2 3 4 5 6; do
    out=$(cat "/run/lab/flip-$i.out")
    note "flip-$i ($(cat "/run/lab/flip-$i.rc")): $(tail -n 2 <<<"$out" | tr '\n' ' ')"
    if [[ $(cat "/run/lab/flip-$i.rc") == ok ]]; then
        [[ "$(tail -n1 <<<"$out")" =~ ^[0-9a-f]{16}$ ]] || fail "flip-$i started but did not read the TPM"
        granted=$((granted + 1))
    else
        # The deny policy's refusal, or a half-written file's: both name
        # the policy file, and neither is a crash.
        [[ "$out" == *"$HOOK_POLICY"* || "$out" == *"not allowed by policy"* ]] \
            || fail "flip-$i failed without a clear refusal: $out"
        assert_not_contains "$out" "panicked" "flip-$i"
        refused=$((refused + 1))
    fi
done
note "$granted granted, $refused refused"
assert_eq "" "$(podman ps -aq --filter name=flip-)" "flip containers left"


step "bpf(2) refuses to attach the device program (as a security module would): refused, saying why; with required=false nothing of the grant is left"
# strace's fault injection makes the hook's BPF_PROG_ATTACH fail with EPERM:
# a traced run finds which of the hook's bpf(2) calls the attach is.
declare -A attach_call=()
for rt in runc crun; do
    hook_under_strace -qq -e trace=bpf -o "/run/lab/hook-bpf-$rt.trace"
    assert_ok timeout 120 podman run --rm --runtime "$rt" --annotation "oci-tpm-hook/device=$name" "$LAB_IMAGE" true
    attach_at=$(grep '^bpf(' "/run/lab/hook-bpf-$rt.trace" | grep -n 'BPF_PROG_ATTACH' | head -n1 | cut -d: -f1)
    [[ -n "$attach_at" ]] || fail "$rt: no BPF_PROG_ATTACH among the hook's bpf(2) calls: $(cat "/run/lab/hook-bpf-$rt.trace")"
    attach_call[$rt]=$attach_at
    note "$rt: the hook's bpf(2) calls: $(grep -o '^bpf(BPF_[A-Z_]*' "/run/lab/hook-bpf-$rt.trace" | cut -c5- | tr '\n' ' ')(the attach is call $attach_at)"
    hook_under_strace -qq -e trace=bpf -e "inject=bpf:error=EPERM:when=$attach_at" -o "/run/lab/hook-bpf-$rt-refused.trace"
    mark_hook_log
    assert_fails timeout 120 podman run --rm --runtime "$rt" --annotation "oci-tpm-hook/device=$name" "$LAB_IMAGE" true
    # crun passes a hook's reason on only from a hook it runs itself (the
    # hook writes it to its parent's stderr), and here strace is between
    # them: under crun the reason is read from the hook's log.
    reason="$LAB_OUTPUT"
    [[ $rt == crun ]] && reason=$(hook_log_new)
    for want in "BPF_PROG_ATTACH" "Operation not permitted" "$name" "--device"; do
        assert_contains "$reason" "$want" "the refusal ($rt)"
    done
    grep -q 'BPF_PROG_ATTACH.*INJECTED' "/run/lab/hook-bpf-$rt-refused.trace" \
        || fail "$rt: strace did not refuse the attach: $(cat "/run/lab/hook-bpf-$rt-refused.trace")"
    assert_started_without_grant "$rt" "podman ($rt), attach refused, required=false"
done
hook_under_strace

step "the TPM answers every command with an error (reset behind the kernel's back, it awaits TPM2_Startup): refused, with the TPM's answer"
swtpm_ioctl --unix "$LAB_VTPM_CTRL" -i
assert_refused "$name" --annotation "oci-tpm-hook/device=$name" "$LAB_IMAGE" true
assert_contains "$LAB_OUTPUT" "self-test" "the refusal names the self-test"
assert_contains "$LAB_OUTPUT" "TPM_RC_INITIALIZE" "the refusal names the TPM's answer"
note "the refusal: $(grep -o 'oci-tpm-hook: .*' <<<"$LAB_OUTPUT" | tail -n1)"
assert_started_without_grant runc "an erring TPM, required=false"

step "the TPM goes away between validation and self-test: the self-test refuses at once, saying so, and nothing is left"
# The TPM answers again first (TPM2_Startup through its raw device), so that
# a refusal below can only come from the TPM being gone.
assert_ok tpm2_startup -c -T "device:/dev/tpm${name#tpmrm}"
assert_ok tpm2_getrandom -T "device:$dev" --hex 8
# strace holds the hook at its BPF_PROG_ATTACH (the cgroup rule: after the
# device was validated and the node made, before the self-test) for 20 s
# (the delay is in microseconds: under the hooks.d entry's 30 s, at which
# runc would kill the hook); meanwhile the swtpm ends and the kernel
# removes the TPM (about a second; the check below is cheap, so that it
# sees the hold within it even beside another guest). (The node is made by a helper the hook bounds to 2 s:
# held there, the node step would fail instead.)
hook_under_strace -qq -e trace=bpf -e "inject=bpf:delay_enter=20000000:when=${attach_call[runc]}" -o /run/lab/hook-vanish.trace
# hook_held_at_attach: a hook process sits in bpf(BPF_PROG_ATTACH) (x86_64
# syscall 321, command 8). Cheap enough to poll within the hold: one pgrep,
# then only shell builtins (a cat per process of the guest took seconds
# beside another guest, longer than the hold).
hook_held_at_attach() {
    local p nr cmd
    for p in $(pgrep -x oci-tpm-hook); do
        read -r nr cmd _ <"/proc/$p/syscall" 2>/dev/null || continue
        [[ "$nr $cmd" == "321 0x8" ]] && return 0
    done
    return 1
}
start=$(date +%s)
timeout 120 podman run --rm --runtime runc --annotation "oci-tpm-hook/device=$name" "$LAB_IMAGE" true \
    >/run/lab/vanish.out 2>&1 &
run_pid=$!
poll_until 60 hook_held_at_attach \
    || fail "the hook was not held at its BPF_PROG_ATTACH within 60 s; podman run said: $(cat /run/lab/vanish.out); strace: $(cat /run/lab/hook-vanish.trace 2>/dev/null)"
held_at=$(date +%s)
kill -TERM "$swtpm_pid"
wait_for 30 "$dev to disappear" bash -c "! test -e $dev"
gone_after=$(( $(date +%s) - held_at ))
hook_held_at_attach || fail "the hook went on before the TPM was gone (${gone_after} s after it was held): the test proves nothing; raise the delay"
note "$dev is gone ${gone_after} s after the hook was held, while it still waits to attach the device program"
if wait "$run_pid"; then fail "the container started on a TPM that went away: $(cat /run/lab/vanish.out)"; fi
took=$(( $(date +%s) - start ))
hook_under_strace
out=$(cat /run/lab/vanish.out)
note "podman run failed after ${took} s: $(grep -o 'oci-tpm-hook: .*' <<<"$out" | tail -n1)"
grep -q 'BPF_PROG_ATTACH.*DELAYED' /run/lab/hook-vanish.trace \
    || fail "strace did not hold the hook's attach: $(cat /run/lab/hook-vanish.trace)"
assert_contains "$out" "self-test" "the refusal names the self-test"
assert_contains "$out" "$name" "the refusal names the device"
assert_contains "$out" "went away from the host" "the refusal says what happened"
assert_not_contains "$out" "no answer within" "the refusal is not a timeout"
assert_not_contains "$out" "TPM_RC_INITIALIZE" "the refusal is not the earlier erring TPM's"
assert_not_contains "$out" "panicked" "the refusal"

step "a TPM that went away before the start: refused by the validation"
assert_refused "host has no TPM device $name" --annotation "oci-tpm-hook/device=$name" "$LAB_IMAGE" true

step "nothing half-made: no container is left behind by the failures"
assert_eq "" "$(podman ps -aq)" "containers left"
