#!/usr/bin/env bash
# Benchmark, run in the lab guest by tests/bench/run.sh (not a test: it
# measures and reports, and fails only when something does not work).
# Times, on the lab's kernel TPM under software emulation:
#   - the self-test alone (`oci-tpm-hook selftest`), quick and full;
#   - the hook's whole delivery (cgroup rule, node, self-test), from its log;
#   - `podman run … true` with the annotation against without it.
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

RUNS=${BENCH_RUNS:-20}
require_binaries oci-tpm-hook
install_hooks_dir >/dev/null
install_policy
load_image_podman

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) {print "n/a"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; print m}'; }

for level in quick full; do
    for _ in $(seq "$RUNS"); do
        "$HOOK_BIN" selftest --level "$level" --json | jq -er .report.duration_ms
    done >"/run/lab/bench-$level"
    echo "BENCH self-test $level on /dev/tpmrm0: median $(median <"/run/lab/bench-$level") ms over $RUNS runs"
done

ms_now() { echo $(( $(date +%s%N) / 1000000 )); }
mark_hook_log
for _ in $(seq "$RUNS"); do
    t=$(ms_now); podman run --rm "$LAB_IMAGE" true; echo $(( $(ms_now) - t )) >>/run/lab/bench-plain
    t=$(ms_now); podman run --rm --annotation oci-tpm-hook/device=tpmrm0 "$LAB_IMAGE" true
    echo $(( $(ms_now) - t )) >>/run/lab/bench-tpm
done
hook_log_new | sed -n 's/.*TPM delivered.* duration_ms=\([0-9]*\).*/\1/p' >/run/lab/bench-delivery
[[ -s /run/lab/bench-delivery ]] || fail "no deliveries in the hook log"
echo "BENCH hook delivery (state to self-tested node, from the hook's log): median $(median </run/lab/bench-delivery) ms over $(wc -l </run/lab/bench-delivery) containers"
echo "BENCH podman run true: median $(median </run/lab/bench-plain) ms without the annotation, $(median </run/lab/bench-tpm) ms with it ($RUNS runs each)"
