#!/usr/bin/env bash
# Runs inside the lab guest (as root, launched by tests/lab/run.sh through vng).
# Prepares writable state for the container engines, then runs each named
# scenario in order, writing to $LAB_OUT:
#   <name>.log     everything the scenario printed
#   <name>.result  "<exit status> <seconds>" once it has finished
# and a final "summary" file. Exit status: 0 if every scenario passed.
set -euo pipefail

LAB_REPO=/lab/repo
LAB_OUT=/lab/out
SCENARIO_DIR="$LAB_REPO/${LAB_SCENARIO_DIR:-tests/lab/scenarios}"
SCENARIO_TIMEOUT="${LAB_SCENARIO_TIMEOUT:-900}"

log() { printf '[lab guest] %s\n' "$*"; }

# The guest root is a read-only 9p export; vng puts overlays on /etc, /var, ...
# Container storage cannot live on an overlay, so give each engine a tmpfs.
mount_writable_state() {
    local dir
    for dir in /var/lib/containers /var/lib/docker /var/lib/containerd \
               /var/lib/cni /var/lib/nri /var/lib/kubelet /var/lib/lab \
               /etc/cdi /opt/nri /opt/cni; do
        mkdir -p "$dir"
        mount -t tmpfs -o mode=0755 tmpfs "$dir"
    done
    mkdir -p /run/lab
}

show_guest_facts() {
    log "kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB"
    log "TPM devices: $(ls /dev/tpm* 2>/dev/null | tr '\n' ' ')"
}

# Daemons a scenario started but did not stop (e.g. it was killed at its
# timeout before its exit trap ran): lib.sh lists them in /run/lab/daemons.*.
stop_leftover_daemons() {
    local f pid name
    for f in /run/lab/daemons.*; do
        [[ -f "$f" ]] || continue
        while read -r pid name; do
            if kill -0 "$pid" 2>/dev/null; then
                log "stopping leftover $name (pid $pid)"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done <"$f"
        rm -f "$f"
    done
}

run_one_scenario() {
    local name="$1" file="$SCENARIO_DIR/$1.sh" start rc secs
    start=$(date +%s)
    log "scenario $name: start"
    rc=0
    (
        cd /var/lib/lab
        export LAB_SCENARIO="$name"
        timeout --kill-after=20 "$SCENARIO_TIMEOUT" bash "$file"
    ) </dev/null >"$LAB_OUT/$name.log" 2>&1 || rc=$?
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        echo "[lab guest] scenario $name: killed after the ${SCENARIO_TIMEOUT}s timeout" >>"$LAB_OUT/$name.log"
    fi
    stop_leftover_daemons
    secs=$(( $(date +%s) - start ))
    echo "$rc $secs" >"$LAB_OUT/$name.result"
    log "scenario $name: exit $rc after ${secs}s"
    return "$rc"
}

main() {
    echo "$(date +%s)" >"$LAB_OUT/started"
    show_guest_facts
    mount_writable_state
    export LAB_REPO LAB_OUT
    export LAB_LIB="$LAB_REPO/tests/lab/guest/lib.sh"
    export LAB_BIN=/lab/bin LAB_IMAGE_DIR=/lab/image
    export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    local name failed=0 passed=0
    for name in "$@"; do
        if run_one_scenario "$name"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
        fi
    done
    echo "$passed $failed" >"$LAB_OUT/summary"
    log "done: $passed passed, $failed failed"
    [[ $failed -eq 0 ]]
}

main "$@"
