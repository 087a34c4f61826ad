#!/usr/bin/env bash
# Runs inside the lab guest (as root, launched by tests/lab/run.sh through vng).
# Prepares writable state for the container engines, then runs each named
# scenario in order, writing to $LAB_OUT:
#   <name>.log     everything the scenario printed
#   <name>.result  "<exit status> <seconds>" once it has finished
# and a final "summary" file. Exit status: 0 if every scenario passed.
#
# Fixtures: a scenario whose header has "# lab: needs NAME", where
# guest/fixtures/NAME.sh exists, gets that fixture (e.g. the Kubernetes
# cluster): it is started once, before the first scenario that needs it, and
# stopped after the last one (the host runs those scenarios one after the
# other). Its progress goes to fixture.NAME.log, and "start|stop <exit
# status> <seconds>" lines to fixture.NAME.result. A scenario whose fixture
# did not start fails without running.
set -euo pipefail

LAB_REPO=/lab/repo
LAB_OUT=/lab/out
SCENARIO_DIR="$LAB_REPO/${LAB_SCENARIO_DIR:-tests/lab/scenarios}"
SCENARIO_TIMEOUT="${LAB_SCENARIO_TIMEOUT:-900}"
FIXTURE_DIR="$LAB_REPO/tests/lab/guest/fixtures"
FIXTURE_TIMEOUT="${LAB_FIXTURE_TIMEOUT:-2400}"
declare -A FIXTURE_STATE=()     # name -> up | failed

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
    # root's home, writable as on any machine (vng leaves it on the read-only
    # root): kubectl keeps its discovery cache there. Without one, every
    # kubectl call fetched the API server's whole list of APIs again.
    mkdir -p /run/lab/home/upper /run/lab/home/work
    mount -t overlay -o "lowerdir=/root,upperdir=/run/lab/home/upper,workdir=/run/lab/home/work" overlay /root
}

# The project's binaries, as an installation has them: on a local file
# system. Executed from the 9p share, each exec read the whole binary from
# the host again (about 0.25 s for the hook under emulation, against 15 ms
# from memory), which no user pays and which hid the hook's own cost. The
# packages (.deb, .rpm) stay on the share for the packages scenario.
install_project_binaries() {
    local dir=/run/lab/bin f
    mkdir -p "$dir"
    mount -t tmpfs -o mode=0755 tmpfs "$dir"
    for f in /lab/bin/*; do
        [[ -f "$f" && -x "$f" ]] && cp -p "$f" "$dir/"
    done
    mount -o remount,ro "$dir"
    LAB_BIN="$dir"
}

# The host's read-only shares that scenarios read again and again, mounted
# again with 9p's page cache: the CRI-O and Kubernetes binaries (crio and the
# kubelet are started many times; from vng's uncached mount each start read
# the binary from the host again, 8 to 15 s under emulation against about
# 1 s from memory) and the test image (imported by many scenarios). Nothing
# changes these directories while the guest runs. A virtio 9p share can be
# mounted only once, so the uncached mount goes first.
cache_readonly_shares() {
    local dir source
    for dir in /lab/third-party /lab/image; do
        mountpoint -q "$dir" || continue
        source=$(findmnt -n -o SOURCE --mountpoint "$dir")
        umount "$dir"
        mount -t 9p -o ro,version=9p2000.L,trans=virtio,access=any,msize=524288,cache=loose "$source" "$dir"
    done
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

# ---------------------------------------------------------------- fixtures

# scenario_fixtures NAME: the fixtures the scenario's "# lab: needs" line names.
scenario_fixtures() {
    local need
    for need in $(sed -n 's/^# lab: needs //p' "$SCENARIO_DIR/$1.sh" | tr ',' ' '); do
        [[ -f "$FIXTURE_DIR/$need.sh" ]] && echo "$need"
    done
    return 0
}

fixture_run() {
    local name="$1" what="$2" limit="$3" start rc=0
    start=$(date +%s)
    log "fixture $name: $what"
    timeout --kill-after=20 "$limit" bash "$FIXTURE_DIR/$name.sh" "$what" \
        </dev/null >>"$LAB_OUT/fixture.$name.log" 2>&1 || rc=$?
    echo "$what $rc $(( $(date +%s) - start ))" >>"$LAB_OUT/fixture.$name.result"
    log "fixture $name: $what: exit $rc after $(( $(date +%s) - start ))s"
    return "$rc"
}

fixture_up() {
    local name="$1"
    case "${FIXTURE_STATE[$name]:-}" in
        up) return 0 ;;
        failed) return 1 ;;
    esac
    if fixture_run "$name" start "$FIXTURE_TIMEOUT"; then
        FIXTURE_STATE[$name]=up
    else
        FIXTURE_STATE[$name]=failed
        fixture_run "$name" stop 600 || true
        return 1
    fi
}

fixture_down() {
    [[ "${FIXTURE_STATE[$1]:-}" == up ]] || return 0
    fixture_run "$1" stop 600 || true
    FIXTURE_STATE[$1]=stopped
}

# Stop the fixtures no scenario after index $1 of "$@" (after the index) needs.
stop_unneeded_fixtures() {
    local index="$1" name later=()
    shift
    later=("${@:index+2}")
    for name in "${!FIXTURE_STATE[@]}"; do
        [[ "${FIXTURE_STATE[$name]}" == up ]] || continue
        local needed=0 s
        for s in "${later[@]}"; do
            scenario_fixtures "$s" | grep -qx "$name" && needed=1
        done
        [[ $needed -eq 1 ]] || fixture_down "$name"
    done
}

# ---------------------------------------------------------------- scenarios

run_one_scenario() {
    local name="$1" file="$SCENARIO_DIR/$1.sh" start rc secs fixture limit
    start=$(date +%s)
    for fixture in $(scenario_fixtures "$name"); do
        if ! fixture_up "$fixture"; then
            {
                echo "[lab guest] scenario $name not run: the fixture '$fixture' did not start"
                echo "[lab guest] its log (fixture.$fixture.log in the run directory) ends with:"
                tail -n 40 "$LAB_OUT/fixture.$fixture.log"
            } >"$LAB_OUT/$name.log" 2>&1
            echo "1 0" >"$LAB_OUT/$name.result"
            log "scenario $name: not run (fixture $fixture failed)"
            return 1
        fi
    done
    # "# lab: timeout SECONDS" in the header raises the limit for one scenario.
    limit=$(sed -n 's/^# lab: timeout \([0-9][0-9]*\)$/\1/p' "$file" | head -n1)
    limit="${limit:-$SCENARIO_TIMEOUT}"
    start=$(date +%s)
    log "scenario $name: start"
    rc=0
    (
        cd /var/lib/lab
        export LAB_SCENARIO="$name"
        timeout --kill-after=20 "$limit" bash "$file"
    ) </dev/null >"$LAB_OUT/$name.log" 2>&1 || rc=$?
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        echo "[lab guest] scenario $name: killed after the ${limit}s timeout" >>"$LAB_OUT/$name.log"
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
    install_project_binaries
    cache_readonly_shares
    export LAB_BIN LAB_IMAGE_DIR=/lab/image LAB_THIRD_PARTY_BIN=/lab/third-party/bin
    export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    local name failed=0 passed=0 i=0
    for name in "$@"; do
        if run_one_scenario "$name"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
        fi
        stop_unneeded_fixtures "$i" "$@"
        i=$((i + 1))
    done
    for name in "${!FIXTURE_STATE[@]}"; do
        fixture_down "$name"
    done
    echo "$passed $failed" >"$LAB_OUT/summary"
    log "done: $passed passed, $failed failed"
    [[ $failed -eq 0 ]]
}

main "$@"
