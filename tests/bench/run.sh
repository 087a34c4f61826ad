#!/usr/bin/env bash
# make bench: what the project costs, measured (never asserted in tests).
#   1. the hook's no-request fast path (every container pays it): median
#      spawn-to-exit time and peak RSS, on this host;
#   2. the docker wrapper's overhead for a container that asks for no TPM:
#      create+delete through the wrapper vs plain runc, on this host;
#   3. in the lab (kernel TPM under software emulation): the self-test's
#      time, the hook's whole delivery, and podman run with and without it;
#   4. in the lab: many containers asking for the TPM at once;
#   5. in the lab: the device plugin's Allocate latency against a stand-in
#      kubelet (examples/device_plugin_bench.rs), and its CPU time and
#      memory over an idle minute.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export DEBIAN_FRONTEND=noninteractive

need_pkg() {
    local cmd="$1" pkg="$2"
    command -v "$cmd" >/dev/null 2>&1 && return 0
    echo "[bench] installing $pkg (for $cmd)"
    apt-get install -y -qq "$pkg" </dev/null >/dev/null
}

echo "== 1. hook fast path"
tests/bench/hook_fast_path.sh

echo
echo "== 2. docker wrapper overhead"
need_pkg runc runc
need_pkg busybox busybox-static
tests/bench/runtime_overhead.sh "${BENCH_ROUNDS:-30}"

echo
echo "== 3. self-test and delivery on a kernel TPM (lab)"
LAB_SCENARIO_DIR=tests/bench/lab tests/lab/run.sh selftest-timing | tee /tmp/oci-tpm-bench-lab.$$ | grep -E '^BENCH|passed|FAIL' || true
grep -q '^1 passed, 0 failed' /tmp/oci-tpm-bench-lab.$$ || { echo "[bench] the lab benchmark failed; full output above in the run directory"; rm -f /tmp/oci-tpm-bench-lab.$$; exit 1; }
rm -f /tmp/oci-tpm-bench-lab.$$

echo
echo "== 4. load: ${LAB_LOAD_CONTAINERS:-64} containers asking for the TPM at once (lab; podman and containerd/NRI)"
LAB_LOAD_CONTAINERS=${LAB_LOAD_CONTAINERS:-64} LAB_GUESTS=1 LAB_SCENARIO_DIR=tests/bench/lab tests/lab/run.sh load | tee /tmp/oci-tpm-bench-load.$$ | grep -E '^BENCH|passed|FAIL' || true
grep -q '^1 passed, 0 failed' /tmp/oci-tpm-bench-load.$$ || { echo "[bench] the load scenario failed; see its run directory"; rm -f /tmp/oci-tpm-bench-load.$$; exit 1; }
rm -f /tmp/oci-tpm-bench-load.$$

echo
echo "== 5. device plugin: Allocate's latency, and a minute idle (lab)"
LAB_SCENARIO_DIR=tests/bench/lab tests/lab/run.sh device-plugin-cost | tee /tmp/oci-tpm-bench-dp.$$ | grep -E '^BENCH|passed|FAIL' || true
grep -q '^1 passed, 0 failed' /tmp/oci-tpm-bench-dp.$$ || { echo "[bench] the device plugin benchmark failed; see its run directory"; rm -f /tmp/oci-tpm-bench-dp.$$; exit 1; }
rm -f /tmp/oci-tpm-bench-dp.$$
