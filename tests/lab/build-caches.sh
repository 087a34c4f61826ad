#!/usr/bin/env bash
# Build (or reuse) what the lab caches: the guest root, the test image and,
# when their pinned sources are there, the CRI-O and Kubernetes binaries.
#
#   tests/lab/build-caches.sh LOG
#
# `make test` runs this beside the Rust builds: with an empty cache much of
# it is downloading and unpacking, which overlaps them. Its output goes to
# LOG; one line says how it ended. The lab's runner calls the same builders
# afterwards, which wait for a build in progress (they lock) and reuse what
# it left, so a failure here is met again, with its log, where the
# scenarios run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -eq 1 ]] || die "usage: $0 LOG"
log="$1"
mkdir -p "$(dirname "$log")"
# Each step stops the rest when it fails (set -e does not hold under ||).
build_all() {
    "$LAB_DIR/build-guest-root.sh" >/dev/null || return
    "$LAB_DIR/build-image.sh" >/dev/null || return
    local rc=0
    "$LAB_DIR/build-third-party.sh" >/dev/null || rc=$?
    # 3: the CRI-O and Kubernetes sources are absent; the lab's run says so.
    [[ $rc -eq 0 || $rc -eq 3 ]] || return "$rc"
}

t0=$(now)
say "building the lab's caches (log: $log)"
rc=0
build_all >"$log" 2>&1 || rc=$?
if [[ $rc -ne 0 ]]; then
    say "the lab's caches failed after $(( $(now) - t0 )) s (exit $rc); the lab's run builds them again. Last lines of $log:"
    tail -n 15 "$log" >&2
    exit 0
fi
say "the lab's caches are ready after $(( $(now) - t0 )) s"
