#!/usr/bin/env bash
# What oci-tpm-runtime costs a container that asks for no TPM: `create` +
# `delete` of the same bundle through the wrapper and through plain runc,
# interleaved, repeated; prints the medians and their ratio.
#
#   tests/bench/runtime_overhead.sh [ROUNDS]        (default 30)
#
# Needs root and runc. Settings (environment):
#   WRAPPER  the wrapper binary (default: target/release/oci-tpm-runtime)
#   RUNC     the real runtime (default: runc on PATH)
#   BUSYBOX  a static busybox for the bundle's rootfs (default: busybox on PATH)
set -euo pipefail

ROUNDS="${1:-30}"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WRAPPER="${WRAPPER:-$REPO_DIR/target/release/oci-tpm-runtime}"
RUNC="${RUNC:-$(command -v runc || true)}"
BUSYBOX="${BUSYBOX:-$(command -v busybox || true)}"

die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "needs root (runc create)"
[[ -x "$RUNC" ]] || die "runc not found (set RUNC)"
[[ -x "$WRAPPER" ]] || die "$WRAPPER not built (cargo build --release, or set WRAPPER)"
[[ -x "$BUSYBOX" ]] || die "busybox not found (set BUSYBOX to a static busybox)"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked; set BUSYBOX to a static one"
fi

WORK=$(mktemp -d -t oci-tpm-bench.XXXXXX)   # honours TMPDIR
STATE="$WORK/state"
BUNDLE="$WORK/bundle"
ID="oci-tpm-bench-$$"
KEEPER="oci-tpm-bench-keeper-$$"
cleanup() {
    "$RUNC" --root "$STATE" delete --force "$ID" >/dev/null 2>&1 || true
    "$RUNC" --root "$STATE" delete --force "$KEEPER" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# A minimal bundle: runc's default spec, a static busybox as /bin/sh, no
# terminal (create then needs no console socket), and no annotations: the
# wrapper's path for every container that does not ask for a TPM.
mkdir -p "$BUNDLE/rootfs/bin" "$STATE"
cp "$BUSYBOX" "$BUNDLE/rootfs/bin/sh"
(cd "$BUNDLE" && "$RUNC" spec)
sed -i -e 's/"terminal": true/"terminal": false/' "$BUNDLE/config.json"
grep -q '"terminal": false' "$BUNDLE/config.json" || die "could not turn off the terminal in runc's spec"
printf '[runtime]\npath = "%s"\n' "$RUNC" >"$WORK/config.toml"
export OCI_TPM_HOOK_CONFIG="$WORK/config.toml"

# One create + delete; prints nanoseconds.
cycle() {
    local t0 t1
    t0=$(date +%s%N)
    "$@" --root "$STATE" create --bundle "$BUNDLE" "$ID" </dev/null >/dev/null 2>"$WORK/err" \
        || die "create via $1 failed: $(cat "$WORK/err")"
    "$@" --root "$STATE" delete --force "$ID" >/dev/null 2>"$WORK/err" \
        || die "delete via $1 failed: $(cat "$WORK/err")"
    t1=$(date +%s%N)
    echo $((t1 - t0))
}

sum_before=$(sha256sum <"$BUNDLE/config.json")
# One container stays for the whole run, as on any host that runs containers:
# otherwise every cycle would also time the kernel switching its cgroup BPF
# hooks on and off (patching kernel text), which is not what is measured here.
"$RUNC" --root "$STATE" create --bundle "$BUNDLE" "$KEEPER" </dev/null >/dev/null 2>"$WORK/err" \
    || die "create of the long-lived container failed: $(cat "$WORK/err")"
cycle "$RUNC" >/dev/null      # warm-up: page cache, cgroup hierarchy
cycle "$WRAPPER" >/dev/null
: >"$WORK/plain"
: >"$WORK/wrapped"
for ((i = 1; i <= ROUNDS; i++)); do
    # Alternate the order so drift (caches, cgroup cleanup) hits both alike.
    if ((i % 2)); then
        cycle "$RUNC" >>"$WORK/plain"
        cycle "$WRAPPER" >>"$WORK/wrapped"
    else
        cycle "$WRAPPER" >>"$WORK/wrapped"
        cycle "$RUNC" >>"$WORK/plain"
    fi
done
[[ "$(sha256sum <"$BUNDLE/config.json")" == "$sum_before" ]] \
    || die "config.json changed although the bundle asks for no TPM"

# The wrapper's own cost, without runc's noise: its full create path (policy,
# config.json, annotations, exec) into `true` instead of runc, vs `true` alone.
TRUE_BIN=$(command -v true)
printf '[runtime]\npath = "%s"\n' "$TRUE_BIN" >"$WORK/config-true.toml"
: >"$WORK/true-plain"
: >"$WORK/true-wrapped"
for ((i = 1; i <= ROUNDS * 10; i++)); do
    t0=$(date +%s%N)
    "$TRUE_BIN" --root "$STATE" create --bundle "$BUNDLE" "$ID"
    t1=$(date +%s%N)
    OCI_TPM_HOOK_CONFIG="$WORK/config-true.toml" "$WRAPPER" --root "$STATE" create --bundle "$BUNDLE" "$ID"
    t2=$(date +%s%N)
    echo $((t1 - t0)) >>"$WORK/true-plain"
    echo $((t2 - t1)) >>"$WORK/true-wrapped"
done

# Nearest-rank percentile of a file of nanosecond values, in ms.
pct_ms() { sort -n "$1" | awk -v p="$2" '{v[NR] = $1} END {i = int((NR - 1) * p + 0.5) + 1; printf "%.2f", v[i] / 1e6}'; }
spread() { echo "median $(pct_ms "$1" 0.5) ms (p25 $(pct_ms "$1" 0.25), p75 $(pct_ms "$1" 0.75))"; }
plain=$(pct_ms "$WORK/plain" 0.5)
wrapped=$(pct_ms "$WORK/wrapped" 0.5)
echo "runtime overhead ($ROUNDS rounds of create+delete, no TPM requested, $("$RUNC" --version | head -n1)):"
echo "  plain runc:       $(spread "$WORK/plain")"
echo "  oci-tpm-runtime:  $(spread "$WORK/wrapped")"
awk -v p="$plain" -v w="$wrapped" 'BEGIN {printf "  ratio of medians wrapper/plain: %.3f (difference %.2f ms per create+delete)\n", w / p, w - p}'
echo "the wrapper alone ($((ROUNDS * 10)) runs of its create path, exec'ing \`true\` instead of runc):"
echo "  true:                  $(spread "$WORK/true-plain")"
echo "  oci-tpm-runtime->true: $(spread "$WORK/true-wrapped")"
awk -v p="$(pct_ms "$WORK/true-plain" 0.5)" -v w="$(pct_ms "$WORK/true-wrapped" 0.5)" \
    'BEGIN {printf "  cost of the wrapper per runtime call: %.2f ms (median)\n", w - p}'
