#!/usr/bin/env bash
# The checked-in protobuf code comes from the .proto files in the pinned
# source tarballs, through tools/protogen:
#   nri      src/frontend/nri/generated/            from cri-o-v1.33.13.tar.xz
#   kubelet  src/frontend/device_plugin/generated/  from kubernetes-v1.34.9-ocp-4.21.tar.xz
#
#   tools/protogen/proto.sh write    (make proto)        regenerate them
#   tools/protogen/proto.sh check    (make proto-check)  fail if they differ
#
# The tarballs are looked for in $LAB_THIRD_PARTY (default:
# ../shared/third_party beside the repository). Without one, its check is
# skipped, loudly, except under CI=true, where that is a failure.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

third_party=${LAB_THIRD_PARTY:-$repo/../shared/third_party}
cargo=${CARGO:-cargo}
# set tarball generated-dir
sets=(
    "nri cri-o-v1.33.13.tar.xz src/frontend/nri/generated"
    "kubelet kubernetes-v1.34.9-ocp-4.21.tar.xz src/frontend/device_plugin/generated"
)

mode=${1:-}
case $mode in
    write | check) ;;
    *) echo "usage: $0 write|check" >&2; exit 2 ;;
esac

"$cargo" build --quiet -p protogen
failed=0
for entry in "${sets[@]}"; do
    read -r set tarball_name generated <<<"$entry"
    tarball=$third_party/$tarball_name
    if [[ ! -f $tarball ]]; then
        how="put $tarball_name (a pinned source tarball) in $third_party, or set LAB_THIRD_PARTY to the directory that holds it"
        if [[ $mode == write || ${CI:-} == true ]]; then
            echo "proto: FAILED: $tarball is missing; $how" >&2
            failed=1
            continue
        fi
        echo "!!! proto-check SKIPPED for $set: $tarball is missing, $generated was NOT checked; $how !!!" >&2
        continue
    fi
    if [[ $mode == write ]]; then
        "$cargo" run --quiet -p protogen -- "$set" "$tarball" "$generated"
        continue
    fi
    tmp=$(mktemp -d)
    "$cargo" run --quiet -p protogen -- "$set" "$tarball" "$tmp" >/dev/null
    if ! diff -ru "$generated" "$tmp"; then
        echo "proto-check: FAILED: $generated differs from what tools/protogen writes from $tarball_name; run 'make proto' and commit the result" >&2
        failed=1
    else
        echo "proto-check: $generated matches $tarball_name"
    fi
    rm -rf "$tmp"
done
exit "$failed"
