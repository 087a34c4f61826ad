#!/usr/bin/env bash
# The NRI and ttrpc message types in src/frontend/nri/generated/ come from
# the .proto files in the pinned CRI-O tarball, through tools/nri-protogen.
#
#   tools/nri-protogen/proto.sh write    (make proto)        regenerate them
#   tools/nri-protogen/proto.sh check    (make proto-check)  fail if they differ
#
# The tarball is looked for in $LAB_THIRD_PARTY (default: ../shared/third_party
# beside the repository). Without it the check is skipped, loudly, except
# under CI=true, where that is a failure.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

tarball_name=cri-o-v1.33.13.tar.xz
third_party=${LAB_THIRD_PARTY:-$repo/../shared/third_party}
tarball=$third_party/$tarball_name
generated=src/frontend/nri/generated
cargo=${CARGO:-cargo}

generate() {
    "$cargo" run --quiet -p nri-protogen -- "$tarball" "$1"
}

mode=${1:-}
case $mode in
    write | check) ;;
    *) echo "usage: $0 write|check" >&2; exit 2 ;;
esac

if [[ ! -f $tarball ]]; then
    how="put $tarball_name (the pinned CRI-O source) in $third_party, or set LAB_THIRD_PARTY to the directory that holds it"
    if [[ $mode == write || ${CI:-} == true ]]; then
        echo "proto: FAILED: $tarball is missing; $how" >&2
        exit 1
    fi
    echo "!!! proto-check SKIPPED: $tarball is missing, the generated NRI messages were NOT checked; $how !!!" >&2
    exit 0
fi

if [[ $mode == write ]]; then
    generate "$generated"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
generate "$tmp" >/dev/null
if ! diff -ru "$generated" "$tmp"; then
    echo "proto-check: FAILED: $generated differs from what tools/nri-protogen writes from $tarball_name; run 'make proto' and commit the result" >&2
    exit 1
fi
echo "proto-check: $generated matches $tarball_name"
