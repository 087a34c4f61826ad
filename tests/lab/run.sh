#!/usr/bin/env bash
# Boot the lab guest once and run scenarios in it.
#
#   tests/lab/run.sh [SCENARIO...]     default: every tests/lab/scenarios/*.sh
#
# Each run gets its own swtpm (fresh state) attached to the guest as a TPM-TIS
# device, and its own directory under tests/lab/out/ with the console log, the
# swtpm log and each scenario's output. Prints every scenario's output between
# BEGIN/END markers with PASS/FAIL and seconds, then "N passed, N failed".
# Exit status 0 only if every scenario passed. swtpm and the VM are always
# stopped, also on errors and Ctrl-C.
#
# Settings (environment): LAB_MEMORY (3G), LAB_CPUS (1),
# LAB_BOOT_TIMEOUT (600 s until the guest starts the first scenario),
# LAB_SCENARIO_TIMEOUT (900 s per scenario), LAB_CACHE, LAB_MIRROR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

LAB_MEMORY="${LAB_MEMORY:-3G}"
# One vCPU: with two, the guest kernel sometimes oopses on an int3 left by
# live code patching (static keys) under QEMU software emulation.
LAB_CPUS="${LAB_CPUS:-1}"
LAB_BOOT_TIMEOUT="${LAB_BOOT_TIMEOUT:-600}"
LAB_SCENARIO_TIMEOUT="${LAB_SCENARIO_TIMEOUT:-900}"
# LAB_SCENARIO_DIR (relative to the repository) runs scripts from elsewhere,
# e.g. the benchmarks in tests/bench/lab.
LAB_SCENARIO_DIR="${LAB_SCENARIO_DIR:-tests/lab/scenarios}"
SCENARIO_DIR="$REPO_DIR/$LAB_SCENARIO_DIR"
PROJECT_BINARIES=(oci-tpm-hook oci-tpm-runtime)
RUNS_TO_KEEP=20

SCENARIOS=()
RUN_DIR=""          # logs and results of this run (kept)
TPM_DIR=""          # swtpm state and socket (removed at exit)
SWTPM_PID=""
VM_PGID=""          # vng runs in its own session; this is its process group
PASSED=0
FAILED=0
declare -A REPORTED=()

# ---------------------------------------------------------------- scenarios

all_scenarios() {
    local f
    for f in "$SCENARIO_DIR"/*.sh; do
        [[ -f "$f" ]] && basename "$f" .sh
    done
}

choose_scenarios() {
    local name
    if [[ $# -eq 0 ]]; then
        mapfile -t SCENARIOS < <(all_scenarios)
    else
        # Arguments may also be space-separated lists ("a b").
        read -r -a SCENARIOS <<<"$*"
    fi
    [[ ${#SCENARIOS[@]} -gt 0 ]] || die "no scenarios found in $SCENARIO_DIR"
    for name in "${SCENARIOS[@]}"; do
        [[ -f "$SCENARIO_DIR/$name.sh" ]] \
            || die "unknown scenario '$name' (have: $(all_scenarios | paste -sd' ' -))"
    done
    move_run_last_scenarios_to_the_end
}

# A scenario that changes the guest for good (e.g. mounts cgroup v1
# controllers) says so with a line "# lab: run-last"; it runs after the others.
move_run_last_scenarios_to_the_end() {
    local name first=() last=()
    for name in "${SCENARIOS[@]}"; do
        if grep -q '^# lab: run-last' "$SCENARIO_DIR/$name.sh"; then
            last+=("$name")
        else
            first+=("$name")
        fi
    done
    SCENARIOS=("${first[@]}" "${last[@]}")
}

# ---------------------------------------------------------------- run dir

make_run_dir() {
    local base="${LAB_OUT_DIR:-$LAB_DIR/out}"
    mkdir -p "$base"
    RUN_DIR="$base/run-$(date +%Y%m%d-%H%M%S)-$$"
    mkdir -p "$RUN_DIR/results" "$RUN_DIR/bin"
    # Keep only the newest runs.
    ls -1dt "$base"/run-* 2>/dev/null | tail -n +$((RUNS_TO_KEEP + 1)) | xargs -r rm -rf
}

# Copy the repository's files (scenarios, helpers, packaging) as they are
# now, so edits made while the VM runs change nothing in this run.
stage_repository() {
    mkdir -p "$RUN_DIR/repo"
    if git -C "$REPO_DIR" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$REPO_DIR" && git ls-files -coz --exclude-standard \
            | tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$RUN_DIR/repo"
    else
        tar -C "$REPO_DIR" --exclude=./target --exclude=./tests/lab/out -cf - . \
            | tar -xf - -C "$RUN_DIR/repo"
    fi
}

# Copy the project's release binaries, so a rebuild during the run changes nothing.
stage_project_binaries() {
    local b found=0
    for b in "${PROJECT_BINARIES[@]}"; do
        if [[ -x "$REPO_DIR/target/release/$b" ]]; then
            cp "$REPO_DIR/target/release/$b" "$RUN_DIR/bin/"
            found=1
        else
            say "warning: target/release/$b not built (make build); scenarios that need it will fail"
        fi
    done
    [[ $found -eq 1 ]] && say "project binaries: $(ls "$RUN_DIR/bin" | paste -sd' ' -) (in the guest: /lab/bin)"
    return 0
}

# ---------------------------------------------------------------- processes

start_swtpm() {
    TPM_DIR=$(mktemp -d /tmp/oci-tpm-lab.XXXXXX)
    swtpm socket --tpm2 --tpmstate "dir=$TPM_DIR" \
        --ctrl "type=unixio,path=$TPM_DIR/ctrl.sock" \
        --log "file=$RUN_DIR/swtpm.log" --terminate </dev/null >>"$RUN_DIR/swtpm.log" 2>&1 &
    SWTPM_PID=$!
    local i
    for i in $(seq 100); do
        [[ -S "$TPM_DIR/ctrl.sock" ]] && break
        kill -0 "$SWTPM_PID" 2>/dev/null || die "swtpm exited at start; see $RUN_DIR/swtpm.log"
        sleep 0.1
    done
    [[ -S "$TPM_DIR/ctrl.sock" ]] || die "swtpm did not create its socket in 10 s; see $RUN_DIR/swtpm.log"
    say "swtpm started (pid $SWTPM_PID, state $TPM_DIR)"
}

start_vm() {
    local root="$1" image="$2" kernel guest_cmd
    kernel=$(ls "$root"/boot/vmlinuz-* | head -n1)
    guest_cmd="LAB_SCENARIO_TIMEOUT=$LAB_SCENARIO_TIMEOUT LAB_SCENARIO_DIR=$LAB_SCENARIO_DIR /lab/repo/tests/lab/guest/run-scenarios.sh ${SCENARIOS[*]}"
    # setsid: vng and its qemu get their own process group, which we stop as a whole.
    setsid vng --run "$kernel" --root "$root" \
        --disable-kvm --disable-microvm --verbose \
        --memory "$LAB_MEMORY" --cpus "$LAB_CPUS" \
        --name "oci-tpm-lab-$$" \
        --rodir="/lab/repo=$RUN_DIR/repo" \
        --rodir="/lab/bin=$RUN_DIR/bin" \
        --rodir="/lab/image=$image" \
        --rwdir="/lab/out=$RUN_DIR/results" \
        --qemu-opts="-chardev socket,id=chrtpm,path=$TPM_DIR/ctrl.sock -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0" \
        --exec "$guest_cmd" </dev/null >"$RUN_DIR/console.log" 2>&1 &
    VM_PGID=$!
    say "VM booting (vng pid $VM_PGID, $LAB_CPUS cpus, $LAB_MEMORY, software emulation); console log: $RUN_DIR/console.log"
}

vm_running() { [[ -n "$VM_PGID" ]] && kill -0 "$VM_PGID" 2>/dev/null; }

group_alive() { [[ -n "$1" ]] && pgrep -g "$1" >/dev/null 2>&1; }

stop_vm() {
    [[ -n "$VM_PGID" ]] || return 0
    if group_alive "$VM_PGID"; then
        say "stopping the VM (process group $VM_PGID)"
        kill -TERM -- "-$VM_PGID" 2>/dev/null || true
        local i
        for i in $(seq 50); do
            group_alive "$VM_PGID" || break
            sleep 0.2
        done
        group_alive "$VM_PGID" && kill -KILL -- "-$VM_PGID" 2>/dev/null || true
    fi
    wait "$VM_PGID" 2>/dev/null || true
}

stop_swtpm() {
    [[ -n "$SWTPM_PID" ]] || return 0
    if kill -0 "$SWTPM_PID" 2>/dev/null; then
        kill -TERM "$SWTPM_PID" 2>/dev/null || true
        local i
        for i in $(seq 50); do
            kill -0 "$SWTPM_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SWTPM_PID" 2>/dev/null || true
    fi
    wait "$SWTPM_PID" 2>/dev/null || true
}

# Processes of this run: the VM's process group, swtpm, and anything whose
# command line names this run's private TPM directory (qemu and swtpm do).
leftover_processes() {
    {
        [[ -n "$VM_PGID" ]] && pgrep -g "$VM_PGID" 2>/dev/null
        [[ -n "$SWTPM_PID" ]] && kill -0 "$SWTPM_PID" 2>/dev/null && echo "$SWTPM_PID"
        [[ -n "$TPM_DIR" ]] && pgrep -f -- "$TPM_DIR" 2>/dev/null
    } | grep -v "^$$\$" | sort -u || true
}

verify_nothing_left() {
    local left
    left=$(leftover_processes)
    if [[ -n "$left" ]]; then
        say "error: processes of this run are still there:"
        # shellcheck disable=SC2086
        ps -o pid,pgid,args -p $(echo $left | tr ' ' ',') >&2 || true
        return 1
    fi
    say "checked: no swtpm or VM process of this run is left"
}

# Stop everything this run started and check that it is gone; idempotent.
STOPPED=0
stop_everything() {
    [[ $STOPPED -eq 1 ]] && return 0
    STOPPED=1
    local ok=0
    stop_vm
    stop_swtpm
    verify_nothing_left || ok=1
    [[ -n "$TPM_DIR" ]] && rm -rf "$TPM_DIR"
    return "$ok"
}

cleanup() {
    local rc=$?
    set +e
    stop_everything || rc=1
    exit "$rc"
}

on_signal() {
    say "interrupted; stopping"
    exit 130
}

# ---------------------------------------------------------------- results

print_scenario_block() {
    local name="$1" verdict="$2" secs="$3" log="$RUN_DIR/results/$name.log"
    echo "======== BEGIN $name ========"
    if [[ -f "$log" ]]; then cat "$log"; else echo "(no output)"; fi
    echo "======== END $name: $verdict (${secs} s) ========"
    echo
}

report_finished_scenarios() {
    local name rc secs
    for name in "${SCENARIOS[@]}"; do
        [[ -n "${REPORTED[$name]:-}" ]] && continue
        [[ -f "$RUN_DIR/results/$name.result" ]] || continue
        read -r rc secs <"$RUN_DIR/results/$name.result"
        if [[ "$rc" == 0 ]]; then
            PASSED=$((PASSED + 1)); print_scenario_block "$name" PASS "$secs"
        else
            FAILED=$((FAILED + 1)); print_scenario_block "$name" "FAIL (exit $rc)" "$secs"
        fi
        REPORTED[$name]=1
    done
}

report_missing_scenarios() {
    local name
    for name in "${SCENARIOS[@]}"; do
        [[ -n "${REPORTED[$name]:-}" ]] && continue
        FAILED=$((FAILED + 1))
        print_scenario_block "$name" "FAIL (no result: the VM stopped or timed out)" "-"
        REPORTED[$name]=1
    done
}

boot_failed() {
    say "error: $1"
    say "console log: $RUN_DIR/console.log (last lines below)"
    tail -n 40 "$RUN_DIR/console.log" >&2 || true
}

# Wait for the guest, printing each scenario as it finishes; every wait is bounded.
follow_vm() {
    local started boot_deadline deadline booted=0
    started=$(now)
    boot_deadline=$(( started + LAB_BOOT_TIMEOUT ))
    deadline=$(( boot_deadline + ${#SCENARIOS[@]} * (LAB_SCENARIO_TIMEOUT + 60) ))
    while vm_running; do
        if [[ $booted -eq 0 && -f "$RUN_DIR/results/started" ]]; then
            booted=1
            say "guest up after $(( $(now) - started )) s; running: ${SCENARIOS[*]}"
        fi
        report_finished_scenarios
        if [[ $booted -eq 0 && $(now) -ge $boot_deadline ]]; then
            boot_failed "the guest did not start the scenarios within ${LAB_BOOT_TIMEOUT} s"
            stop_vm
            break
        fi
        if [[ $(now) -ge $deadline ]]; then
            say "error: the run exceeded its time limit; stopping the VM"
            stop_vm
            break
        fi
        sleep 2
    done
    wait "$VM_PGID" 2>/dev/null || true
    report_finished_scenarios
    if [[ $booted -eq 0 && ! -f "$RUN_DIR/results/started" ]]; then
        boot_failed "the VM stopped before the guest started the scenarios"
    fi
    say "VM finished after $(( $(now) - started )) s"
}

# ---------------------------------------------------------------- main

main() {
    require_root
    choose_scenarios "$@"
    trap cleanup EXIT
    trap on_signal INT TERM HUP

    local root image
    root=$("$LAB_DIR/build-guest-root.sh")
    image=$("$LAB_DIR/build-image.sh")
    # Shared locks: the cache pruner leaves the root and image alone while we run.
    exec 8>>"$root.lock" 7>>"$image.lock"
    flock -s 8
    flock -s 7

    make_run_dir
    stage_repository
    stage_project_binaries
    say "run directory: $RUN_DIR"
    start_swtpm
    start_vm "$root" "$image"
    follow_vm
    report_missing_scenarios
    local left=0
    stop_everything || left=1
    say "logs of this run: $RUN_DIR"
    echo "$PASSED passed, $FAILED failed"
    [[ $FAILED -eq 0 && $left -eq 0 ]]
}

main "$@"
