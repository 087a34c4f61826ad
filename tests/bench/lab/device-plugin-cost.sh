#!/usr/bin/env bash
# Benchmark, run in the lab guest by tests/bench/run.sh (not a test: it
# measures and reports, and fails only when something does not work).
# The device plugin on the lab's kernel TPM, registered with a stand-in
# kubelet (the cargo example device_plugin_bench, which make bench builds
# and tests/lab/run.sh stages in /lab/bin):
#   - Allocate's latency as the kubelet sees it: BENCH_CALLS (1000) calls
#     one after the other, one share each; p50, p99 and max;
#   - the plugin left alone for BENCH_IDLE_SECONDS (60): registered, the
#     kubelet's ListAndWatch stream open, the TPM self-tested every 10 s.
#     Its CPU time (utime + stime of all its threads, /proc/PID/stat) in ms
#     and as a share of one core, and its memory (/proc/PID/status: VmRSS
#     when the minute begins and ends, VmHWM the peak since it started).
# lab: cost 100 (seconds; 86 s beside another lab guest)
# lab: timeout 900
set -euo pipefail
# shellcheck source=tests/lab/guest/lib.sh
source "$LAB_LIB"

CALLS=${BENCH_CALLS:-1000}
IDLE_SECONDS=${BENCH_IDLE_SECONDS:-60}
INTERVAL=10
PLUGIN_BIN="$LAB_BIN/oci-tpm-device-plugin"
KUBELET_BIN="$LAB_BIN/device_plugin_bench"
KUBELET_LOG="$LAB_LOG_DIR/bench-kubelet.log"
PLUGIN_LOG="$LAB_LOG_DIR/oci-tpm-device-plugin.log"

require_binaries oci-tpm-device-plugin
[[ -x "$KUBELET_BIN" ]] || fail "$KUBELET_BIN is missing: build the stand-in kubelet \
(cargo rustc --release --example device_plugin_bench, as make bench does)"

WORK=$(mktemp -d /run/lab/device-plugin-bench.XXXXXX)
on_exit "rm -rf '$WORK'"
KUBELET_DIR="$WORK/device-plugins"
mkdir -p "$KUBELET_DIR"
# The default policy (every tpmrm*), its events on stderr, i.e. in the
# daemon's log: whatever /etc/oci-tpm-hook holds, and with or without journald.
printf '[log]\ntarget = "stderr"\n' >"$WORK/policy.toml"

# proc_stat PID: the fields of /proc/PID/stat after the command name (which
# may hold spaces) in STAT: STAT[0] is the state (field 3), STAT[11] and
# STAT[12] utime and stime (fields 14 and 15, in clock ticks).
proc_stat() {
    local line
    read -r line <"/proc/$1/stat" || return 1
    read -r -a STAT <<<"${line##*) }"
}

# running PID: the process is there and not a zombie.
running() { proc_stat "$1" 2>/dev/null && [[ "${STAT[0]}" != Z ]]; }

# cpu_ticks PID: its user and system time so far, in clock ticks.
cpu_ticks() {
    proc_stat "$1" || return 1
    echo $(( STAT[11] + STAT[12] ))
}

# status_kib PID FIELD: VmRSS or VmHWM of /proc/PID/status, in KiB.
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

ns_now() { date +%s%N; }

step "a stand-in kubelet on $KUBELET_DIR, then the device plugin (default policy, self-test every $INTERVAL s)"
start_daemon bench-kubelet "$KUBELET_BIN" --hold --wait 300 "$KUBELET_DIR" "$CALLS"
KUBELET_PID=${LAB_DAEMON_PIDS[-1]}
wait_for_daemon bench-kubelet 60 test -S "$KUBELET_DIR/kubelet.sock"
start_daemon oci-tpm-device-plugin "$PLUGIN_BIN" --kubelet-dir "$KUBELET_DIR" --no-nfd \
    --cdi-dir "$WORK/cdi" --health-interval "$INTERVAL" --config "$WORK/policy.toml"
PLUGIN_PID=${LAB_DAEMON_PIDS[-1]}
# Stopped before $WORK goes: without its directory the plugin would end
# with an error that says nothing about what failed.
on_exit "stop_daemon oci-tpm-device-plugin; stop_daemon bench-kubelet"

step "registration, a healthy share, $CALLS Allocate calls"
wait_for_daemon bench-kubelet 600 grep -q '^BENCH device-plugin allocate:' "$KUBELET_LOG"
running "$PLUGIN_PID" || fail "the device plugin exited (log: $PLUGIN_LOG)"
# The pid start_daemon gave is the plugin itself (bash execs a simple
# command in the child it forks): what is measured below is the plugin.
[[ "$(readlink "/proc/$PLUGIN_PID/exe")" == "$PLUGIN_BIN" ]] \
    || fail "pid $PLUGIN_PID is $(readlink "/proc/$PLUGIN_PID/exe"), not $PLUGIN_BIN"
sed -n '/^BENCH/!s/^/    kubelet: /p' "$KUBELET_LOG" >&2
grep '^BENCH' "$KUBELET_LOG"
allocated=$(grep -c 'allocated tpmrm' "$PLUGIN_LOG" || true)
assert_eq "$CALLS" "$allocated" "allocations in the plugin's log"

step "the plugin idle for $IDLE_SECONDS s: registered, the stream open, a self-test every $INTERVAL s"
HZ=$(getconf CLK_TCK)
t0=$(ns_now)
c0=$(cpu_ticks "$PLUGIN_PID")
rss0=$(status_kib "$PLUGIN_PID" VmRSS)
elapsed=0
while [[ $elapsed -lt $IDLE_SECONDS ]]; do
    pause=$(( IDLE_SECONDS - elapsed < 10 ? IDLE_SECONDS - elapsed : 10 ))
    sleep "$pause"
    elapsed=$(( elapsed + pause ))
    running "$PLUGIN_PID" || fail "the device plugin exited while idle (log: $PLUGIN_LOG)"
    running "$KUBELET_PID" || fail "the stand-in kubelet exited while the plugin was idle (log: $KUBELET_LOG)"
    note "after $elapsed s: cpu $(( ($(cpu_ticks "$PLUGIN_PID") - c0) * 1000 / HZ )) ms, VmRSS $(status_kib "$PLUGIN_PID" VmRSS) KiB"
done
c1=$(cpu_ticks "$PLUGIN_PID")
t1=$(ns_now)
rss1=$(status_kib "$PLUGIN_PID" VmRSS)
hwm=$(status_kib "$PLUGIN_PID" VmHWM)
cpu_ms=$(( (c1 - c0) * 1000 / HZ ))
wall_ms=$(( (t1 - t0) / 1000000 ))
share=$(awk -v c="$cpu_ms" -v w="$wall_ms" 'BEGIN { printf "%.2f", 100 * c / w }')
echo "BENCH device-plugin idle: cpu $cpu_ms ms over $(( wall_ms / 1000 )) s ($share% of one core; clock tick $(( 1000 / HZ )) ms; self-test every $INTERVAL s)"
echo "BENCH device-plugin idle: memory VmRSS $rss1 KiB at the end ($rss0 KiB at the start), VmHWM $hwm KiB (peak since start, the Allocate calls included)"

step "stop the plugin and the stand-in kubelet"
stop_daemon oci-tpm-device-plugin
stop_daemon bench-kubelet
grep -q 'SIGTERM: stopping' "$PLUGIN_LOG" || note "the plugin's log does not say it stopped on SIGTERM"
