#!/usr/bin/env bash
# Build (once) the CRI-O and Kubernetes binaries the lab runs as test tools:
# Debian 13 packages neither CRI-O nor a kubelet. They are compiled from
# pinned source tarballs (tests/lab/third-party.sha256) in a Debian 13
# builder root, and never become part of the project. Prints the directory
# that holds bin/ (crio, pinns, kubelet, kube-apiserver, kube-scheduler,
# kube-controller-manager) on stdout.
#
#   tests/lab/build-third-party.sh
#
# The tarballs are looked for in $LAB_THIRD_PARTY (default: ../shared/third_party
# next to the repository, when it exists). Exit status 3 when they are absent
# (the message says how to provide them); any other failure is 1.
#
# Cached in $LAB_CACHE:
#   builder-<key>/      the builder root (mmdebstrap; key: tests/lab/builder.packages)
#   third-party-<key>/  the binaries (key: the tarballs' sha256, this script, the builder)
#   go-build/           Go's build cache, so that a rebuild compiles only what changed
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PACKAGES="$LAB_DIR/builder.packages"
KEEP="${LAB_KEEP_THIRD_PARTY:-2}"
GO_CACHE="$LAB_CACHE/go-build"
BINARIES=(crio pinns kubelet kube-apiserver kube-scheduler kube-controller-manager)

builder_key() {
    { echo "$LAB_SUITE"; cache_key_of "$PACKAGES"; } | sha256sum | cut -c1-16
}

binaries_key() {
    { cat "$THIRD_PARTY_SUMS"; cache_key_of "${BASH_SOURCE[0]}"; builder_key; } | sha256sum | cut -c1-16
}

# ---------------------------------------------------------------- builder root

build_builder_root() {
    local root="$1" mirror started
    (
        flock -x 9
        [[ -f "$root/.lab-complete" ]] && { say "builder root cached: $root"; exit 0; }
        started=$(now)
        mirror=$(host_debian_mirror)
        say "building the builder root ($LAB_SUITE from $mirror) into $root"
        rm -rf --one-file-system "$root.tmp"
        mmdebstrap --variant=minbase \
            --include="$(package_list_csv "$PACKAGES")" \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --customize-hook='mkdir -p "$1/build" "$1/go-cache"' \
            "$LAB_SUITE" "$root.tmp" "$mirror" >&2
        rm -rf --one-file-system "$root"
        mv "$root.tmp" "$root"
        date -u +%FT%TZ >"$root/.lab-complete"
        say "builder root built in $(( $(now) - started )) s"
    ) 9>"$root.build-lock"
    touch "$root"
}

# ---------------------------------------------------------------- the build

# Runs in the builder root (chroot), with the sources under /build/src and the
# results going to /build/out.
build_steps() {
    cat <<'SH'
set -eu
export PATH=/usr/lib/go-1.24/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/build/tmp TMPDIR=/build/tmp
export GOCACHE=/go-cache GOPATH=/build/gopath GOTOOLCHAIN=local GOFLAGS=-mod=vendor
mkdir -p "$TMPDIR"
go version
t0=$(date +%s)

cd /build/src/cri-o-*
echo "== crio"
# sqlite3-binding.c (the bundled SQLite) is not in the source snapshot:
# the libsqlite3 tag links Debian's libsqlite3 instead.
go build -trimpath -ldflags "-s -w" -o /build/out/crio \
    -tags "containers_image_ostree_stub containers_image_openpgp exclude_graphdriver_btrfs btrfs_noversion seccomp libsqlite3" \
    ./cmd/crio
echo "== pinns"
make -C pinns
cp bin/pinns /build/out/pinns
t1=$(date +%s)

cd /build/src/kubernetes
echo "== kubelet kube-apiserver kube-scheduler kube-controller-manager"
V="-X k8s.io/component-base/version.gitVersion=v1.34.9 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34 -X k8s.io/component-base/version.gitTreeState=clean"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $V" -o /build/out/ \
    ./cmd/kubelet ./cmd/kube-apiserver ./cmd/kube-scheduler ./cmd/kube-controller-manager
t2=$(date +%s)

{
    /build/out/crio --version 2>&1 | grep -m1 -i version
    /build/out/kubelet --version
    /build/out/kube-apiserver --version
    echo "crio links: $(ldd /build/out/crio | awk '/=>/ {print $1}' | paste -sd' ' -)"
    echo "pinns: $(file -b /build/out/pinns 2>/dev/null || ldd /build/out/pinns 2>&1 | head -n1)"
} >/build/out/versions.txt
echo "crio $((t1 - t0)) s, kubernetes $((t2 - t1)) s" >/build/out/build-times.txt
SH
}

# In a private mount namespace: the builder root read-only, a scratch
# directory and the Go cache bound in, then chroot and build.
run_in_builder() {
    local root="$1" work="$2" mnt="$2/root"
    mkdir -p "$mnt"
    mount --bind "$root" "$mnt"
    mount -o remount,bind,ro "$mnt"
    mount --bind "$work" "$mnt/build"
    mount --bind "$GO_CACHE" "$mnt/go-cache"
    mount -t proc proc "$mnt/proc"
    mount --bind /dev "$mnt/dev"
    env -i "$(command -v chroot)" "$mnt" /bin/sh /build/steps.sh
}

build_binaries() {
    local root="$1" out="$2" src_dir="$3" work started name
    started=$(now)
    work=$(mktemp -d "$LAB_CACHE/work-third-party.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf --one-file-system '$work'" EXIT
    mkdir -p "$work/src" "$work/out" "$GO_CACHE"
    while read -r name; do
        say "unpacking $name"
        tar -C "$work/src" -xJf "$src_dir/$name"
    done < <(third_party_tarballs)
    build_steps >"$work/steps.sh"
    say "compiling CRI-O and Kubernetes in the builder root (log: $out.tmp/build.log); takes minutes"
    rm -rf "$out.tmp"
    mkdir -p "$out.tmp/bin"
    if ! unshare --mount --propagation private \
            bash -c "$(declare -f run_in_builder); GO_CACHE='$GO_CACHE' run_in_builder '$root' '$work'" \
            >"$out.tmp/build.log" 2>&1; then
        tail -n 30 "$out.tmp/build.log" >&2
        die "the build failed; full log: $out.tmp/build.log"
    fi
    for name in "${BINARIES[@]}"; do
        [[ -x "$work/out/$name" ]] || die "the build made no $name; log: $out.tmp/build.log"
        install -m 0755 "$work/out/$name" "$out.tmp/bin/$name"
    done
    cp "$work/out/versions.txt" "$work/out/build-times.txt" "$out.tmp/"
    echo "total $(( $(now) - started )) s" >>"$out.tmp/build-times.txt"
    rm -rf --one-file-system "$out"
    mv "$out.tmp" "$out"
    date -u +%FT%TZ >"$out/.lab-complete"
    say "built in $(( $(now) - started )) s ($(paste -sd' ' "$out/build-times.txt")): $out"
    sed 's/^/[lab]   /' "$out/versions.txt" >&2
}

verify_tarballs() {
    local dir="$1"
    (cd "$dir" && sha256sum --quiet --strict -c "$THIRD_PARTY_SUMS") >&2 \
        || die "the tarballs in $dir do not match tests/lab/third-party.sha256"
}

prune_old() {
    local pattern="$1" dir n=0
    while read -r dir; do
        n=$((n + 1))
        [[ $n -le $KEEP ]] && continue
        (
            flock -n -x 9 || { say "keeping $dir (in use)"; exit 0; }
            say "removing old $dir"
            rm -rf --one-file-system "$dir"
            rm -f "$dir.lock" "$dir.build-lock"
        ) 9>"$dir.lock"
    done < <(ls -1dt "$LAB_CACHE"/$pattern-*[0-9a-f] 2>/dev/null || true)
    # What failed builds left behind (not while a build of that key runs).
    for dir in "$LAB_CACHE"/$pattern-*.tmp; do
        [[ -d "$dir" ]] || continue
        (
            flock -n -x 9 || exit 0
            rm -rf --one-file-system "$dir"
        ) 9>"${dir%.tmp}.build-lock"
    done
}

main() {
    require_root
    local missing src_dir root out
    missing=$(third_party_missing)
    if [[ -n "$missing" ]]; then
        say "CRI-O and Kubernetes sources are absent: $missing"
        say "to provide them: $(third_party_howto)"
        exit 3
    fi
    src_dir=$(third_party_dir)
    mkdir -p "$LAB_CACHE"
    root="$LAB_CACHE/builder-$(builder_key)"
    out="$LAB_CACHE/third-party-$(binaries_key)"
    (
        flock -x 9
        if [[ -f "$out/.lab-complete" ]]; then
            say "CRI-O and Kubernetes binaries cached: $out"
            exit 0
        fi
        verify_tarballs "$src_dir"
        build_builder_root "$root"
        # Shared: the pruner leaves the builder root alone while it is in use.
        exec 8>>"$root.lock"
        flock -s 8
        build_binaries "$root" "$out" "$src_dir"
    ) 9>"$out.build-lock"
    touch "$out"
    prune_old third-party
    prune_old builder
    echo "$out"
}

main "$@"
