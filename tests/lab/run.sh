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
# Settings (environment): LAB_MEMORY (3G; 4G when a scenario needs the
# cluster, more when one says "# lab: memory NG"), LAB_CPUS (1), LAB_BOOT_TIMEOUT (600 s until the guest starts the
# first scenario), LAB_SCENARIO_TIMEOUT (900 s per scenario),
# LAB_FIXTURE_TIMEOUT (2400 s for a fixture to start), LAB_CACHE, LAB_MIRROR,
# LAB_THIRD_PARTY (where the CRI-O and Kubernetes source tarballs are),
# LAB_GUESTS (guests booted side by side, each with one vCPU and its own
# swtpm; default: 2 on a host with two or more cores, else 1).
#
# With two guests the scenarios are split so that both finish at about the
# same time: a scenario's header may give its usual duration in seconds
# ("# lab: cost N"; 200 when absent), the scenarios sharing a fixture stay
# in one guest (the fixture boots once), and scenarios marked run-last are
# spread over the guests. Each guest's output is printed whole at the end,
# with a progress line per scenario while they run.
#
# A scenario's header may say what it needs: "# lab: needs third-party" (the
# CRI-O and Kubernetes binaries, built on the host from pinned sources by
# build-third-party.sh and shared at /lab/third-party) or the name of a guest
# fixture (guest/fixtures/NAME.sh, e.g. "cluster"; a fixture's own "needs"
# line counts too). Without the sources such scenarios are skipped with a
# loud line saying how to provide them; under CI=true they fail instead.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

LAB_MEMORY_SET="${LAB_MEMORY:-}"
LAB_MEMORY="${LAB_MEMORY:-3G}"
# One vCPU: with two, the guest kernel sometimes oopses on an int3 left by
# live code patching (static keys) under QEMU software emulation.
LAB_CPUS="${LAB_CPUS:-1}"
LAB_BOOT_TIMEOUT="${LAB_BOOT_TIMEOUT:-600}"
LAB_SCENARIO_TIMEOUT="${LAB_SCENARIO_TIMEOUT:-900}"
LAB_FIXTURE_TIMEOUT="${LAB_FIXTURE_TIMEOUT:-2400}"
FIXTURE_DIR="$LAB_DIR/guest/fixtures"
# LAB_SCENARIO_DIR (relative to the repository) runs scripts from elsewhere,
# e.g. the benchmarks in tests/bench/lab.
LAB_SCENARIO_DIR="${LAB_SCENARIO_DIR:-tests/lab/scenarios}"
SCENARIO_DIR="$REPO_DIR/$LAB_SCENARIO_DIR"
PROJECT_BINARIES=(oci-tpm-hook oci-tpm-runtime oci-tpm-device-plugin oci-tpm-systemd)
# Cargo examples only the benchmarks run (make bench builds them): staged
# beside the binaries when built, not missed when not.
PROJECT_EXAMPLES=(device_plugin_bench)
RUNS_TO_KEEP=20

SCENARIOS=()
NOT_RUN=()          # scenarios skipped (or failed under CI=true) before the boot
NOT_RUN_REASON=""
THIRD_PARTY=""      # host directory with the CRI-O and Kubernetes binaries, when needed
RUN_DIR=""          # logs and results of this run (kept)
TPM_DIR=""          # swtpm state and socket (removed at exit)
SWTPM_PID=""
VM_PGID=""          # vng runs in its own session; this is its process group
PASSED=0
FAILED=0
SKIPPED=0
declare -A REPORTED=()
declare -A FIXTURE_REPORTED=()

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
    order_scenarios
}

# The words of a script's "# lab: needs" lines.
needs_of() { sed -n 's/^# lab: needs //p' "$1" | tr ', ' '\n\n' | grep -v '^$' || true; }

# scenario_fixtures NAME: the guest fixtures the scenario needs.
scenario_fixtures() {
    local need
    for need in $(needs_of "$SCENARIO_DIR/$1.sh"); do
        [[ -f "$FIXTURE_DIR/$need.sh" ]] && echo "$need"
    done
    return 0
}

# scenario_needs_third_party NAME: directly, or through one of its fixtures.
scenario_needs_third_party() {
    local fixture
    needs_of "$SCENARIO_DIR/$1.sh" | grep -qx third-party && return 0
    for fixture in $(scenario_fixtures "$1"); do
        needs_of "$FIXTURE_DIR/$fixture.sh" | grep -qx third-party && return 0
    done
    return 1
}

# run_last_rank NAME: 0 for a plain scenario; N for "# lab: run-last N"
# (1 when N is absent). Among run-last scenarios the higher rank runs later:
# one that unbinds the TPM's driver goes after one that only mounts cgroup v1.
run_last_rank() {
    local line
    line=$(grep -m1 '^# lab: run-last' "$SCENARIO_DIR/$1.sh" || true)
    [[ -n "$line" ]] || { echo 0; return; }
    line=${line#\# lab: run-last}
    [[ "$line" =~ ^[[:space:]]+([0-9]+) ]] && { echo "${BASH_REMATCH[1]}"; return; }
    echo 1
}

# cost_of FILE: its "# lab: cost N" (seconds), 200 when it says nothing.
cost_of() {
    local n
    n=$(sed -n 's/^# lab: cost \([0-9][0-9]*\).*/\1/p' "$1" | head -n1)
    echo "${n:-200}"
}

# Order: plain scenarios; then those that need a fixture, grouped by fixture
# (so each fixture is up once, and gone before the scenarios after it); then
# those marked "# lab: run-last" (they change the guest for good, e.g. mount
# cgroup v1 controllers), by rank.
order_scenarios() {
    local name fixtures first=() last=() with_fixture=()
    for name in "${SCENARIOS[@]}"; do
        fixtures=$(scenario_fixtures "$name" | paste -sd' ' -)
        if [[ $(run_last_rank "$name") -gt 0 ]]; then
            last+=("$(run_last_rank "$name")|$name")
        elif [[ -n "$fixtures" ]]; then
            with_fixture+=("$fixtures|$name")
        else
            first+=("$name")
        fi
    done
    if [[ ${#with_fixture[@]} -gt 0 ]]; then
        mapfile -t with_fixture < <(printf '%s\n' "${with_fixture[@]}" | sort -s -t'|' -k1,1 | cut -d'|' -f2)
    fi
    if [[ ${#last[@]} -gt 0 ]]; then
        mapfile -t last < <(printf '%s\n' "${last[@]}" | sort -s -t'|' -k1,1n | cut -d'|' -f2)
    fi
    SCENARIOS=("${first[@]}" "${with_fixture[@]}" "${last[@]}")
}

# Build (or reuse) the CRI-O and Kubernetes binaries when a chosen scenario
# needs them. Without the sources: skip those scenarios loudly, or under
# CI=true fail them.
prepare_third_party() {
    local name needing=() keep=() rc=0 out
    for name in "${SCENARIOS[@]}"; do
        scenario_needs_third_party "$name" && needing+=("$name")
    done
    [[ ${#needing[@]} -gt 0 ]] || return 0
    out=$("$LAB_DIR/build-third-party.sh") || rc=$?
    if [[ $rc -eq 0 ]]; then
        THIRD_PARTY="$out"
        say "CRI-O and Kubernetes binaries: $THIRD_PARTY/bin (in the guest: /lab/third-party/bin)"
        return 0
    fi
    if [[ $rc -eq 3 ]]; then
        NOT_RUN_REASON="the CRI-O and Kubernetes sources are absent ($(third_party_missing)); to run: $(third_party_howto)"
    else
        NOT_RUN_REASON="building CRI-O and Kubernetes failed (exit $rc; see the messages above)"
    fi
    for name in "${SCENARIOS[@]}"; do
        if printf '%s\n' "${needing[@]}" | grep -qx "$name"; then
            NOT_RUN+=("$name")
        else
            keep+=("$name")
        fi
    done
    SCENARIOS=("${keep[@]}")
    if [[ $rc -eq 3 && "${CI:-}" != true ]]; then
        say "SKIPPING ${NOT_RUN[*]}: $NOT_RUN_REASON"
    else
        say "FAILING ${NOT_RUN[*]}: $NOT_RUN_REASON${CI:+ (CI=$CI: lab scenarios are never skipped)}"
    fi
}

# The cluster needs more memory than the other scenarios (API server, etcd,
# kubelet, two image stores on tmpfs); a scenario may ask for more with
# "# lab: memory NG" (e.g. many containers at once). The largest wins.
choose_memory() {
    local name want gib=3
    [[ -z "$LAB_MEMORY_SET" ]] || return 0
    for name in "${SCENARIOS[@]}"; do
        if scenario_fixtures "$name" | grep -q "^cluster"; then
            [[ $gib -ge 4 ]] || gib=4
        fi
        want=$(sed -n 's/^# lab: memory \([0-9][0-9]*\)G.*/\1/p' "$SCENARIO_DIR/$name.sh" | head -n1)
        if [[ -n "$want" && $want -gt $gib ]]; then gib=$want; fi
    done
    LAB_MEMORY="${gib}G"
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

# Copy the project's release binaries (and the examples that are built), so
# a rebuild during the run changes nothing.
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
    for b in "${PROJECT_EXAMPLES[@]}"; do
        if [[ -x "$REPO_DIR/target/release/examples/$b" ]]; then
            cp "$REPO_DIR/target/release/examples/$b" "$RUN_DIR/bin/"
        fi
    done
    [[ $found -eq 1 ]] && say "project binaries: $(ls "$RUN_DIR/bin" | paste -sd' ' -) (in the guest: /lab/bin, run from a copy in /run/lab/bin)"
    stage_project_packages
    return 0
}

# The .deb and the rpm (make deb, make rpm) beside the binaries, for the
# packages scenario; one older than the binaries it should hold is left out,
# so that the scenario fails saying so instead of testing an old build.
stage_project_packages() {
    local pkg
    for pkg in "$REPO_DIR"/target/deb/oci-tpm-hook_*.deb "$REPO_DIR"/target/rpm/oci-tpm-hook-*.rpm; do
        [[ -f "$pkg" ]] || continue
        if [[ "$pkg" -ot "$REPO_DIR/target/release/oci-tpm-hook" ]]; then
            say "warning: $(basename "$pkg") is older than target/release/oci-tpm-hook (make deb rpm); not staged"
        else
            cp "$pkg" "$RUN_DIR/bin/"
            say "package: $(basename "$pkg") (in the guest: /lab/bin)"
        fi
    done
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
    guest_cmd="LAB_SCENARIO_TIMEOUT=$LAB_SCENARIO_TIMEOUT LAB_FIXTURE_TIMEOUT=$LAB_FIXTURE_TIMEOUT ${LAB_LOAD_CONTAINERS:+LAB_LOAD_CONTAINERS=$LAB_LOAD_CONTAINERS }${LAB_LOAD_ENGINES:+LAB_LOAD_ENGINES=$LAB_LOAD_ENGINES }LAB_SCENARIO_DIR=$LAB_SCENARIO_DIR /lab/repo/tests/lab/guest/run-scenarios.sh ${SCENARIOS[*]}"
    # setsid: vng and its qemu get their own process group, which we stop as a whole.
    setsid vng --run "$kernel" --root "$root" \
        --disable-kvm --disable-microvm --verbose \
        --memory "$LAB_MEMORY" --cpus "$LAB_CPUS" \
        --name "oci-tpm-lab-$$" \
        --rodir="/lab/repo=$RUN_DIR/repo" \
        --rodir="/lab/bin=$RUN_DIR/bin" \
        --rodir="/lab/image=$image" \
        --rwdir="/lab/out=$RUN_DIR/results" \
        ${THIRD_PARTY:+--rodir="/lab/third-party=$THIRD_PARTY"} \
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

# Scenarios that did not run: SKIP, or FAIL under CI=true or when the build failed.
report_not_run_scenarios() {
    local name verdict
    for name in "${NOT_RUN[@]}"; do
        echo "======== BEGIN $name ========"
        if [[ "$NOT_RUN_REASON" == *absent* && "${CI:-}" != true ]]; then
            echo "SKIPPED (not run): $NOT_RUN_REASON"
            verdict=SKIP
            SKIPPED=$((SKIPPED + 1))
        else
            echo "NOT RUN, counted as failed: $NOT_RUN_REASON"
            [[ "${CI:-}" == true ]] && echo "(CI=true: lab scenarios must not be skipped)"
            verdict=FAIL
            FAILED=$((FAILED + 1))
        fi
        echo "======== END $name: $verdict (0 s) ========"
        echo
    done
}

# Fixtures: one line when one is up, its whole log once it has stopped.
report_fixtures() {
    local result name verb rc secs up
    for result in "$RUN_DIR"/results/fixture.*.result; do
        [[ -f "$result" ]] || continue
        name=$(basename "$result" .result)
        name=${name#fixture.}
        while read -r verb rc secs; do
            [[ -z "${FIXTURE_REPORTED[$name.$verb]:-}" ]] || continue
            FIXTURE_REPORTED[$name.$verb]=1
            case "$verb" in
                start)
                    if [[ "$rc" == 0 ]]; then
                        say "fixture $name: up after $secs s"
                    else
                        say "fixture $name: FAILED to start (exit $rc after $secs s)"
                    fi
                    ;;
                stop)
                    up=$(awk '$1 == "start" {print "exit " $2 " after " $3 " s"}' "$result" | tail -n1)
                    echo "======== BEGIN fixture $name ========"
                    cat "$RUN_DIR/results/fixture.$name.log" 2>/dev/null || true
                    echo "======== END fixture $name: start $up, stop exit $rc after $secs s ========"
                    echo
                    ;;
            esac
        done <"$result"
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

# The guest's kernel can stop under software emulation (a double fault in
# the slab allocator, seen in a long run), which is no scenario's verdict.
# The scenarios it left without a result then run once more in a
# new guest, saying so; a second stop, a timeout or a hang is a failure.
# Whether it ran them again (their verdicts are then counted).
retry_after_guest_panic() {
    local name missing=() panic
    [[ -z "${LAB_RETRIED:-}" ]] || return 1
    panic=$(grep -m1 -a 'Kernel panic' "$RUN_DIR/console.log" 2>/dev/null) || return 1
    for name in "${SCENARIOS[@]}"; do
        [[ -n "${REPORTED[$name]:-}" ]] || missing+=("$name")
    done
    [[ ${#missing[@]} -gt 0 ]] || return 1
    say "the guest's kernel stopped (${panic#*] }; $RUN_DIR/console.log), which is not a scenario's verdict"
    say "running again, once, in a new guest: ${missing[*]}"
    stop_everything || true
    local out
    out=$(mktemp)
    LAB_RETRIED=1 LAB_GUESTS=1 "${BASH_SOURCE[0]}" "${missing[@]}" 2>&1 | tee "$out"
    count_summary "$out" "the second guest" "${#missing[@]}" || true
    rm -f "$out"
    for name in "${missing[@]}"; do REPORTED[$name]=1; done
    return 0
}

# count_summary LOG WHO N: adds the last "P passed, F failed, S skipped" line
# of another run's LOG to this run's counts; without one, WHO's N scenarios
# count as failed (and it returns 1).
count_summary() {
    local summary p f s
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$1" | tail -n1)
    if [[ -z "$summary" ]]; then
        say "error: $2 printed no summary; its scenarios count as failed"
        FAILED=$(( FAILED + $3 ))
        return 1
    fi
    read -r p _ f _ s _ <<<"$summary"
    PASSED=$(( PASSED + p )); FAILED=$(( FAILED + f )); SKIPPED=$(( SKIPPED + s ))
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
    deadline=$boot_deadline
    local name limit
    for name in "${SCENARIOS[@]}"; do
        limit=$(sed -n 's/^# lab: timeout \([0-9][0-9]*\)$/\1/p' "$SCENARIO_DIR/$name.sh" | head -n1)
        deadline=$(( deadline + ${limit:-$LAB_SCENARIO_TIMEOUT} + 60 ))
    done
    local fixtures
    fixtures=$(for name in "${SCENARIOS[@]}"; do scenario_fixtures "$name"; done | sort -u | wc -l)
    deadline=$(( deadline + fixtures * (LAB_FIXTURE_TIMEOUT + 600) ))
    while vm_running; do
        if [[ $booted -eq 0 && -f "$RUN_DIR/results/started" ]]; then
            booted=1
            say "guest up after $(( $(now) - started )) s; running: ${SCENARIOS[*]}"
        fi
        report_finished_scenarios
        report_fixtures
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
    report_fixtures
    if [[ $booted -eq 0 && ! -f "$RUN_DIR/results/started" ]]; then
        boot_failed "the VM stopped before the guest started the scenarios"
    fi
    say "VM finished after $(( $(now) - started )) s"
}

# ---------------------------------------------------------------- guests side by side

LANE_PIDS=()
LANE_LOGS=()

guests_wanted() {
    local n="${LAB_GUESTS:-}"
    if [[ -z "$n" ]]; then
        n=1
        [[ $(nproc) -ge 2 ]] && n=2
    fi
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "LAB_GUESTS must be a positive number, not '$n'"
    [[ $n -gt ${#SCENARIOS[@]} ]] && n=${#SCENARIOS[@]}
    echo "$n"
}

# split_scenarios N: N lines, the scenarios of each guest (space-separated).
# Units are placed largest first on the guest with the least work: a plain
# scenario, or every scenario of one fixture together (its cost counted
# once); run-last scenarios go last, one per guest before any gets two.
split_scenarios() {
    local guests="$1" name fixtures key cost i best units=() last_units=()
    declare -A group_cost=() group_members=()
    for name in "${SCENARIOS[@]}"; do
        cost=$(cost_of "$SCENARIO_DIR/$name.sh")
        fixtures=$(scenario_fixtures "$name" | paste -sd' ' -)
        if [[ $(run_last_rank "$name") -gt 0 ]]; then
            last_units+=("$cost|$name")
        elif [[ -n "$fixtures" ]]; then
            key="fixture:$fixtures"
            if [[ -z "${group_cost[$key]:-}" ]]; then
                group_cost[$key]=0
                for i in $fixtures; do
                    group_cost[$key]=$(( group_cost[$key] + $(cost_of "$FIXTURE_DIR/$i.sh") ))
                done
            fi
            group_cost[$key]=$(( group_cost[$key] + cost ))
            group_members[$key]="${group_members[$key]:-} $name"
        else
            units+=("$cost|$name")
        fi
    done
    for key in "${!group_cost[@]}"; do
        units+=("${group_cost[$key]}|${group_members[$key]# }")
    done
    local load=() lanes=() counts=()
    for ((i = 0; i < guests; i++)); do load[i]=0; lanes[i]=""; counts[i]=0; done
    place() {  # place UNIT [by-count]
        local c="${1%%|*}" names="${1#*|}" j
        best=0
        for ((j = 1; j < guests; j++)); do
            if [[ -n "${2:-}" && ${counts[j]} -ne ${counts[best]} ]]; then
                [[ ${counts[j]} -lt ${counts[best]} ]] && best=$j
            elif [[ ${load[j]} -lt ${load[best]} ]]; then
                best=$j
            fi
        done
        load[best]=$(( load[best] + c ))
        lanes[best]="${lanes[best]} $names"
        counts[best]=$(( counts[best] + 1 ))
    }
    while read -r key; do [[ -n "$key" ]] && place "$key"; done \
        < <(printf '%s\n' "${units[@]}" | sort -t'|' -k1,1nr)
    for ((i = 0; i < guests; i++)); do counts[i]=0; done
    while read -r key; do [[ -n "$key" ]] && place "$key" by-count; done \
        < <(printf '%s\n' "${last_units[@]}" | sort -t'|' -k1,1nr)
    for ((i = 0; i < guests; i++)); do
        say "guest $((i + 1)): about ${load[i]} s:${lanes[i]}"
        echo "${lanes[i]# }"
    done
}

stop_lanes() {
    local pid
    for pid in "${LANE_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${LANE_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    LANE_PIDS=()
}

# Run the scenarios in N guests at once: this script again per guest, each
# with its own swtpm, VM and run directory; their outputs go to files that
# are printed whole at the end.
run_lanes() {
    local guests="$1" base="${LAB_OUT_DIR:-$LAB_DIR/out}" i line lists=() shown=() pid rc=0
    mkdir -p "$base"
    mapfile -t lists < <(split_scenarios "$guests")
    trap 'stop_lanes' EXIT
    for ((i = 0; i < guests; i++)); do
        [[ -n "${lists[i]}" ]] || continue
        LANE_LOGS[i]=$(mktemp "$base/guest-$((i + 1)).XXXXXX.log")
        shown[i]=0
        # shellcheck disable=SC2086
        LAB_GUESTS=1 "${BASH_SOURCE[0]}" ${lists[i]} >"${LANE_LOGS[i]}" 2>&1 &
        LANE_PIDS[i]=$!
    done
    # Progress: the lab's own lines and each scenario's verdict, as they come.
    progress() {
        local k n
        for k in "${!LANE_LOGS[@]}"; do
            n=$(wc -l <"${LANE_LOGS[k]}")
            [[ $n -gt ${shown[k]} ]] || continue
            sed -n "$(( shown[k] + 1 )),${n}p" "${LANE_LOGS[k]}" \
                | grep -E '^\[lab\]|^======== END' | sed "s/^/[guest $((k + 1))] /" >&2 || true
            shown[k]=$n
        done
    }
    while :; do
        progress
        local alive=0
        for pid in "${LANE_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ $alive -eq 1 ]] || break
        sleep 5
    done
    for i in "${!LANE_PIDS[@]}"; do
        wait "${LANE_PIDS[i]}" || rc=1
    done
    LANE_PIDS=()
    progress
    for i in "${!LANE_LOGS[@]}"; do
        echo "################ guest $((i + 1)) of $guests: ${lists[i]}"
        cat "${LANE_LOGS[i]}"
        count_summary "${LANE_LOGS[i]}" "guest $((i + 1))" "$(wc -w <<<"${lists[i]}")" \
            && rm -f "${LANE_LOGS[i]}"
    done
    report_not_run_scenarios
    echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
    [[ $FAILED -eq 0 && $rc -eq 0 ]]
}

# ---------------------------------------------------------------- main

main() {
    require_root
    choose_scenarios "$@"
    trap cleanup EXIT
    trap on_signal INT TERM HUP

    prepare_third_party
    if [[ ${#SCENARIOS[@]} -eq 0 ]]; then
        report_not_run_scenarios
        echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
        [[ $FAILED -eq 0 ]]
        return
    fi
    choose_memory

    local root image guests
    root=$("$LAB_DIR/build-guest-root.sh")
    image=$("$LAB_DIR/build-image.sh")
    guests=$(guests_wanted)
    if [[ $guests -gt 1 ]]; then
        run_lanes "$guests"
        return
    fi
    # Shared locks: the cache pruner leaves the root and image alone while we run.
    exec 8>>"$root.lock" 7>>"$image.lock"
    flock -s 8
    flock -s 7
    if [[ -n "$THIRD_PARTY" ]]; then
        exec 6>>"$THIRD_PARTY.lock"
        flock -s 6
    fi

    make_run_dir
    stage_repository
    stage_project_binaries
    say "run directory: $RUN_DIR"
    start_swtpm
    start_vm "$root" "$image"
    follow_vm
    local left=0
    if ! retry_after_guest_panic; then
        report_missing_scenarios
    fi
    report_not_run_scenarios
    stop_everything || left=1
    say "logs of this run: $RUN_DIR"
    echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
    [[ $FAILED -eq 0 && $left -eq 0 ]]
}

main "$@"
