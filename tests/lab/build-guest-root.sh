#!/usr/bin/env bash
# Build (once) the lab's guest root: a Debian 13 tree with the container
# engines, the TPM tools and a kernel. Prints the root's directory on stdout.
# Cached in $LAB_CACHE/root-<key>, where <key> hashes the package list, this
# script and the files baked into the root: change any of them and it rebuilds.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PACKAGES="$LAB_DIR/guest-root.packages"
BAKED_DIR="$LAB_DIR/guest/rootfs"
KEEP_ROOTS="${LAB_KEEP_ROOTS:-4}"

guest_root_key() {
    local files
    mapfile -t files < <(find "$BAKED_DIR" -type f | LC_ALL=C sort)
    { echo "$LAB_SUITE"; cache_key_of "$PACKAGES" "${BASH_SOURCE[0]}" "${files[@]}"; } | sha256sum | cut -c1-16
}

run_mmdebstrap_for_guest_root() {
    local target="$1" mirror
    mirror=$(host_debian_mirror)
    say "building guest root ($LAB_SUITE from $mirror) into $target"
    mmdebstrap --variant=minbase \
        --include="$(package_list_csv "$PACKAGES")" \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook="sync-in $BAKED_DIR /" \
        --customize-hook='mkdir -p "$1/lab/repo" "$1/lab/bin" "$1/lab/image" "$1/lab/out" "$1/lab/third-party"' \
        --customize-hook='chroot "$1" sh -c "getent group tss >/dev/null"' \
        "$LAB_SUITE" "$target" "$mirror" >&2
}

# Remove older guest roots beyond $KEEP_ROOTS, skipping any that a run is using.
prune_old_guest_roots() {
    local dir lock n=0
    while read -r dir; do
        n=$((n + 1))
        [[ $n -le $KEEP_ROOTS ]] && continue
        lock="$dir.lock"
        (
            flock -n -x 9 || { say "keeping $dir (in use)"; exit 0; }
            say "removing old guest root $dir"
            rm -rf --one-file-system "$dir"
            rm -f "$lock" "$dir.build-lock"
        ) 9>"$lock"
    done < <(ls -1dt "$LAB_CACHE"/root-*[0-9a-f] 2>/dev/null || true)
}

main() {
    require_root
    local key root started
    key=$(guest_root_key)
    root="$LAB_CACHE/root-$key"
    mkdir -p "$LAB_CACHE"
    (
        flock -x 9
        if [[ -f "$root/.lab-complete" ]]; then
            say "guest root cached: $root"
            exit 0
        fi
        started=$(now)
        rm -rf --one-file-system "$root.tmp"
        run_mmdebstrap_for_guest_root "$root.tmp"
        rm -rf --one-file-system "$root"
        mv "$root.tmp" "$root"
        date -u +%FT%TZ >"$root/.lab-complete"
        say "guest root built in $(( $(now) - started )) s: $root"
    ) 9>"$root.build-lock"
    touch "$root"
    prune_old_guest_roots
    echo "$root"
}

main "$@"
