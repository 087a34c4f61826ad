#!/usr/bin/env bash
# Builds the fuzz targets with coverage instrumentation (stable rustc, no
# sanitizer) and runs each under libFuzzer for FUZZ_SECONDS.
#
#   fuzz/run.sh                    every target, FUZZ_SECONDS (60) each
#   fuzz/run.sh bpf policy         only these
#   FUZZ_SECONDS=5 fuzz/run.sh     a smoke run (make fuzz-smoke)
#
# Bounds (docs/FUZZING.md): RSS 1024 MiB per process, 64 MiB per allocation
# (fuzz/src/lib.rs), 10 s per input, inputs up to -max_len bytes.
# A crash, hang, timeout or allocation above the bound fails the run; the
# input that caused it is kept under target/fuzz/artifacts/ and its path
# printed, with the command that replays it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
RSS_LIMIT_MB=1024
INPUT_TIMEOUT_S=10
CARGO=${CARGO:-cargo}

ALL_TARGETS=(
    oci_state request policy spec_edit spec_query
    tpm_response tpm_selftest
    nri_frames nri_messages nri_session
    runtime_cli cgroup_text bpf small_text
)
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")

# The longest input a target is given: its seeds fit, and larger inputs
# only slow the search down.
max_len() {
    case $1 in
        nri_session | nri_frames) echo 32768 ;;
        oci_state | spec_edit | spec_query | nri_messages) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

# Tokens the parser compares against, so the search need not guess them.
dict_for() {
    case $1 in
        oci_state | spec_edit | spec_query) echo fuzz/dict/json.dict ;;
        small_text | request | policy | runtime_cli | cgroup_text) echo "fuzz/dict/$1.dict" ;;
    esac
}

# The instrumentation cargo-fuzz adds, without its nightly-only sanitizer
# flag: libFuzzer's coverage counters, comparison tracing, and `cfg(fuzzing)`.
host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-target/fuzz}
export RUSTFLAGS="${RUSTFLAGS:-} --cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares"
# `--target` keeps these flags away from build scripts and proc macros.
echo "[fuzz] building the fuzz targets (profile fuzz, $host)"
"$CARGO" build --profile fuzz --target "$host" -p oci-tpm-hook-fuzz --bins
bin_dir=$CARGO_TARGET_DIR/$host/fuzz

work=$CARGO_TARGET_DIR/work
mkdir -p "$work/logs"
failed=()
total_runs=0
summary=()
for t in "${targets[@]}"; do
    [[ -x $bin_dir/$t ]] || { echo "[fuzz] error: no target $t (have: ${ALL_TARGETS[*]})" >&2; exit 2; }
    seeds=fuzz/corpus/$t
    [[ -d $seeds ]] || { echo "[fuzz] error: no seed corpus $seeds" >&2; exit 2; }
    # New inputs go to the working corpus (kept between runs, not committed);
    # the committed seeds are only read.
    corpus=$work/corpus/$t
    artifacts=$work/artifacts/$t
    log=$work/logs/$t.log
    mkdir -p "$corpus" "$artifacts"
    echo "[fuzz] $t: ${SECONDS_PER_TARGET}s"
    dict=()
    [[ -z $(dict_for "$t") ]] || dict=(-dict="$(dict_for "$t")")
    rc=0
    started=$SECONDS
    RUST_BACKTRACE=1 "$bin_dir/$t" "${dict[@]}" \
        -max_total_time="$SECONDS_PER_TARGET" \
        -rss_limit_mb="$RSS_LIMIT_MB" \
        -timeout="$INPUT_TIMEOUT_S" \
        -max_len="$(max_len "$t")" \
        -print_final_stats=1 \
        -artifact_prefix="$artifacts/" \
        "$corpus" "$seeds" >"$log" 2>&1 || rc=$?
    took=$((SECONDS - started))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    runs=${runs:-0}
    total_runs=$((total_runs + runs))
    summary+=("$(printf '%-14s %12s runs %6ss' "$t" "$runs" "$took")")
    if [[ $rc -ne 0 ]]; then
        failed+=("$t")
        echo "[fuzz] $t FAILED (exit $rc); the end of $log:" >&2
        tail -n 40 "$log" >&2
        input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        if [[ -n $input ]]; then
            echo "[fuzz] reproducer: $input" >&2
            echo "[fuzz] replay it:  $bin_dir/$t $input" >&2
        fi
    fi
done

echo "[fuzz] executions per target:"
printf '  %s\n' "${summary[@]}"
echo "[fuzz] total: $total_runs executions"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "[fuzz] failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} passed, 0 failed"
