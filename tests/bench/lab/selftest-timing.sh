#!/usr/bin/env bash
# Benchmark, run in the lab guest by tests/bench/run.sh (not a test: it
# measures and reports, and fails only when something does not work).
# Times, on the lab's kernel TPM under software emulation:
#   - the self-test alone (`oci-tpm-hook selftest`), quick and full;
#   - the hook's whole delivery (cgroup rule, node, self-test), from its log;
#   - `podman run … true` with the annotation against without it, and
#     against what users write by hand instead (`--device /dev/tpmrm0
#     --group-add <tss gid>`): interleaved, ratio of the medians;
#   - the same for docker: `--runtime tpm` with the annotation (the wrapper)
#     against runc with `--device` and `--group-add` (60 pairs, each pair's
#     ratio too), and the wrapper with nothing asked against plain runc;
#   - docker's runtime calls (create, start, delete) for an annotated
#     container, through runc and through the wrapper, each call timed;
#   - where the hook's delivery goes, phase by phase (medians from its log),
#     from the runtime's fork of the hook (startup) to the self-test.
# (60 podman and 200 docker runs, seconds each in the emulated guest:)
# lab: timeout 3600
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

RUNS=${BENCH_RUNS:-20}
DOCKER_PAIRS=${BENCH_DOCKER_PAIRS:-60}
require_binaries oci-tpm-hook oci-tpm-runtime
install_hooks_dir >/dev/null
# The docker wrapper puts the hook's packaged path into each spec: here,
# the lab's binary instead.
install_policy "$(printf '[runtime]\npath = "runc"\n[hook]\npath = "%s"' "$HOOK_BIN")"
load_image_podman

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) {print "n/a"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; print m}'; }

for level in quick full; do
    for _ in $(seq "$RUNS"); do
        "$HOOK_BIN" selftest --level "$level" --json | jq -er .report.duration_ms
    done >"/run/lab/bench-$level"
    echo "BENCH self-test $level on /dev/tpmrm0: median $(median <"/run/lab/bench-$level") ms over $RUNS runs"
done

ms_now() { echo $(( $(date +%s%N) / 1000000 )); }
# timed FILE CMD...: run CMD (it must succeed), append its wall time in ms.
timed() {
    local file="$1" t
    shift
    t=$(ms_now)
    "$@" >/dev/null || fail "benchmark command failed: $*"
    echo $(( $(ms_now) - t )) >>"$file"
}
# ratio A B: median(A) / median(B), two decimals.
ratio() { awk -v a="$(median <"$1")" -v b="$(median <"$2")" 'BEGIN { printf "%.2f", a / b }'; }

gid=$(tss_gid)
mark_hook_log
# One round runs each variant once, in turn, so that a slow spell of the
# emulated guest falls on all of them alike.
for _ in $(seq "$RUNS"); do
    timed /run/lab/bench-plain podman run --rm "$LAB_IMAGE" true
    timed /run/lab/bench-tpm podman run --rm --annotation oci-tpm-hook/device=tpmrm0 "$LAB_IMAGE" true
    timed /run/lab/bench-manual podman run --rm --device /dev/tpmrm0 --group-add "$gid" "$LAB_IMAGE" true
done
hook_log_new >/run/lab/bench-hook-log
phase() { sed -n "s/.*TPM delivered.* $1=\([0-9]*\).*/\1/p" /run/lab/bench-hook-log; }
phase duration_ms >/run/lab/bench-delivery
[[ -s /run/lab/bench-delivery ]] || fail "no deliveries in the hook log"
echo "BENCH hook delivery (state to self-tested node, from the hook's log): median $(median </run/lab/bench-delivery) ms over $(wc -l </run/lab/bench-delivery) containers"
for p in startup_ms plan_ms state_ms decide_ms spec_ms attach_ms node_ms cgroup_ms systemd_ms self_test_ms; do
    printf '%s ' "${p%_ms} $(phase "$p" | median) ms"
done | sed 's/^/BENCH hook delivery by phase (medians): /; s/ $//'
echo
echo "BENCH podman run true: median $(median </run/lab/bench-plain) ms without a TPM, $(median </run/lab/bench-tpm) ms with the annotation, $(median </run/lab/bench-manual) ms with --device --group-add ($RUNS interleaved runs each)"
echo "BENCH podman annotated / manual: $(ratio /run/lab/bench-tpm /run/lab/bench-manual) (ratio of medians)"

# Each docker runtime call, timed: a script around the runtime that docker
# calls, the same script around plain runc and around the wrapper, so that
# the difference between the two is what the wrapper and the hook add to
# each call (a whole `docker run` varies too much here to show it).
mkdir -p /run/lab/timed-runtime
for rt in runc tpm; do
    target=$(command -v runc)
    [[ $rt == tpm ]] && target="$LAB_BIN/oci-tpm-runtime"
    cat >"/run/lab/timed-runtime/$rt" <<SCRIPT
#!/bin/bash
start=\$(date +%s%N)
call=""
for a in "\$@"; do
    case "\$a" in create|start|delete|kill|state|features|exec|update|pause|resume|ps) call=\$a; break ;; esac
done
"$target" "\$@"
rc=\$?
echo "$rt \$call \$(( (\$(date +%s%N) - start) / 1000000 ))" >>/run/lab/timed-runtime/calls
exit \$rc
SCRIPT
    chmod +x "/run/lab/timed-runtime/$rt"
done
start_dockerd "{\"runtimes\":{\"tpm\":{\"path\":\"$LAB_BIN/oci-tpm-runtime\"},\"timed-runc\":{\"path\":\"/run/lab/timed-runtime/runc\"},\"timed-tpm\":{\"path\":\"/run/lab/timed-runtime/tpm\"}}}"
load_image_docker
docker_tpm=(docker run --rm --network none --runtime tpm --annotation oci-tpm-hook/device=tpmrm0 "$LAB_IMAGE" true)
docker_manual=(docker run --rm --network none --device /dev/tpmrm0 --group-add "$gid" "$LAB_IMAGE" true)
# docker_pair N: the annotated run and the manual one, one after the other
# (which goes first alternates with N), and the pair's ratio.
docker_pair() {
    if (( $1 % 2 )); then
        timed /run/lab/bench-docker-manual "${docker_manual[@]}"
        timed /run/lab/bench-docker-tpm "${docker_tpm[@]}"
    else
        timed /run/lab/bench-docker-tpm "${docker_tpm[@]}"
        timed /run/lab/bench-docker-manual "${docker_manual[@]}"
    fi
    awk -v a="$(tail -n1 /run/lab/bench-docker-tpm)" -v b="$(tail -n1 /run/lab/bench-docker-manual)" \
        'BEGIN { printf "%.4f\n", a / b }' >>/run/lab/bench-docker-pair
}
for i in $(seq "$RUNS"); do
    timed /run/lab/bench-docker-plain docker run --rm --network none "$LAB_IMAGE" true
    docker_pair "$i"
    # The wrapper with nothing asked: what the runtime registration costs by itself.
    timed /run/lab/bench-docker-wrapper docker run --rm --network none --runtime tpm "$LAB_IMAGE" true
done
# A whole `docker run` here takes 6 to 12 s from one run to the next, more
# than the wrapper adds: the annotated and manual runs get more pairs.
for i in $(seq $(( RUNS + 1 )) "$DOCKER_PAIRS"); do
    docker_pair "$i"
done
quartiles() { sort -n | awk '{a[NR]=$1} END {printf "%.2f–%.2f", a[int((NR+3)/4)], a[int((3*NR+3)/4)]}'; }
echo "BENCH docker run true: median $(median </run/lab/bench-docker-plain) ms without a TPM, $(median </run/lab/bench-docker-wrapper) ms through the wrapper with nothing asked ($RUNS interleaved runs each); / plain runc: $(ratio /run/lab/bench-docker-wrapper /run/lab/bench-docker-plain)"
echo "BENCH docker run true: median $(median </run/lab/bench-docker-tpm) ms with the wrapper and the annotation, $(median </run/lab/bench-docker-manual) ms with --device --group-add ($(wc -l </run/lab/bench-docker-pair) interleaved pairs)"
echo "BENCH docker annotated / manual: $(ratio /run/lab/bench-docker-tpm /run/lab/bench-docker-manual) (ratio of medians); each pair's ratio: median $(median </run/lab/bench-docker-pair | awk '{printf "%.2f", $1}'), quartiles $(quartiles </run/lab/bench-docker-pair)"

# The same annotated container through runc (which ignores the annotation)
# and through the wrapper (which grants the TPM), both behind the timing
# script: the runtime calls' medians.
: >/run/lab/timed-runtime/calls
run_docker=(docker run --rm --network none --annotation oci-tpm-hook/device=tpmrm0 --runtime)
for _ in $(seq "$RUNS"); do
    "${run_docker[@]}" timed-runc "$LAB_IMAGE" true >/dev/null || fail "docker run through the timed runc failed"
    "${run_docker[@]}" timed-tpm "$LAB_IMAGE" true >/dev/null || fail "docker run through the timed wrapper failed"
done
call_ms() { awk -v rt="$1" -v call="$2" '$1 == rt && $2 == call {print $3}' /run/lab/timed-runtime/calls | median; }
for call in create start delete; do
    runc_ms=$(call_ms runc "$call")
    tpm_ms=$(call_ms tpm "$call")
    [[ "$runc_ms" != n/a && "$tpm_ms" != n/a ]] || fail "no timed '$call' calls from docker"
    echo "BENCH docker runtime call '$call', annotated container: median $runc_ms ms through runc, $tpm_ms ms through the wrapper ($(awk -v a="$tpm_ms" -v b="$runc_ms" 'BEGIN { printf "%+.0f ms, %.3f", a - b, a / b }'))"
done
