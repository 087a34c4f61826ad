#!/usr/bin/env bash
# Build (once) the lab's container image from Debian packages, no registry:
# a minimal Debian root with tpm2-tools and a non-root user "app" (uid 1000).
# Prints the image directory on stdout; it holds
#   rootfs.tar       the root as a plain tar (for `podman import` / `docker import`)
#   oci-archive.tar  an OCI image layout with two images made from that root,
#                    localhost/tpm-test:latest and localhost/pause:lab (sleeps
#                    forever; containerd's CRI uses it as sandbox image),
#                    for `ctr images import`
# Cached in $LAB_CACHE/image-<key>; <key> hashes the package list and this script.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PACKAGES="$LAB_DIR/image.packages"
KEEP_IMAGES="${LAB_KEEP_IMAGES:-4}"
IMAGE_NAME="localhost/tpm-test:latest"
PAUSE_NAME="localhost/pause:lab"
IMAGE_PATH_ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

image_key() {
    { echo "$LAB_SUITE"; cache_key_of "$PACKAGES" "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16
}

# What no container of the lab runs: udev's hardware database and systemd
# (pulled in by tpm-udev), apt, perl, iconv's converters, caches and shell
# completions. Half of the root: every import of the image in the emulated
# guest (podman, docker, containerd, CRI-O) copies and hashes that much less.
TRIM_HOOK='cd "$1" && rm -rf usr/lib/udev/hwdb.d usr/lib/udev/hwdb.bin usr/lib/systemd \
    usr/lib/x86_64-linux-gnu/systemd usr/lib/x86_64-linux-gnu/gconv usr/lib/x86_64-linux-gnu/perl-base \
    usr/share/perl usr/share/perl5 usr/bin/perl usr/bin/perl5.* usr/lib/apt var/lib/apt var/cache/apt \
    var/cache/debconf usr/bin/sqv usr/share/info usr/share/common-licenses usr/share/bash-completion \
    usr/share/zsh'

run_mmdebstrap_for_image() {
    local tarball="$1" mirror
    mirror=$(host_debian_mirror)
    say "building container image root ($LAB_SUITE from $mirror)"
    mmdebstrap --variant=minbase \
        --include="$(package_list_csv "$PACKAGES")" \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='chroot "$1" useradd -m -u 1000 -s /bin/bash app' \
        --customize-hook="$TRIM_HOOK" \
        "$LAB_SUITE" "$tarball" "$mirror" >&2
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Store stdin as a blob in the OCI layout $1; print its digest (hex).
put_blob() {
    local layout="$1" tmp digest
    tmp=$(mktemp "$layout/blob.XXXXXX")
    cat >"$tmp"
    digest=$(sha256_of "$tmp")
    mv "$tmp" "$layout/blobs/sha256/$digest"
    echo "$digest"
}

blob_size() { stat -c %s "$1/blobs/sha256/$2"; }

# Image config + manifest for one image; prints "digest size" of the manifest.
put_image_manifest() {
    local layout="$1" layer="$2" process_json="$3" config manifest
    config=$(jq -cn --arg diff "sha256:$layer" --arg path "$IMAGE_PATH_ENV" --argjson p "$process_json" \
        '{architecture:"amd64", os:"linux",
          config:({Env:[$path], WorkingDir:"/"} + $p),
          rootfs:{type:"layers", diff_ids:[$diff]}}' | put_blob "$layout")
    manifest=$(jq -cn \
        --arg cfg "sha256:$config" --argjson cfgsize "$(blob_size "$layout" "$config")" \
        --arg layer "sha256:$layer" --argjson layersize "$(blob_size "$layout" "$layer")" \
        '{schemaVersion:2, mediaType:"application/vnd.oci.image.manifest.v1+json",
          config:{mediaType:"application/vnd.oci.image.config.v1+json", digest:$cfg, size:$cfgsize},
          layers:[{mediaType:"application/vnd.oci.image.layer.v1.tar", digest:$layer, size:$layersize}]}' \
        | put_blob "$layout")
    echo "$manifest $(blob_size "$layout" "$manifest")"
}

# An OCI image layout (as a tar) holding $IMAGE_NAME and $PAUSE_NAME, one shared layer.
write_oci_archive() {
    local rootfs_tar="$1" out="$2" layout layer main pause
    layout=$(mktemp -d "$(dirname "$out")/oci.XXXXXX")
    mkdir -p "$layout/blobs/sha256"
    echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
    layer=$(put_blob "$layout" <"$rootfs_tar")
    read -r -a main < <(put_image_manifest "$layout" "$layer" '{"Cmd":["/bin/bash"]}')
    read -r -a pause < <(put_image_manifest "$layout" "$layer" '{"Entrypoint":["/bin/sleep","infinity"]}')
    jq -n --arg m "sha256:${main[0]}" --argjson ms "${main[1]}" --arg mn "$IMAGE_NAME" \
          --arg p "sha256:${pause[0]}" --argjson ps "${pause[1]}" --arg pn "$PAUSE_NAME" \
        'def entry(d; s; n): {mediaType:"application/vnd.oci.image.manifest.v1+json", digest:d, size:s,
            platform:{architecture:"amd64", os:"linux"},
            annotations:{"io.containerd.image.name":n, "org.opencontainers.image.ref.name":(n|split(":")|last)}};
         {schemaVersion:2, mediaType:"application/vnd.oci.image.index.v1+json",
          manifests:[entry($m; $ms; $mn), entry($p; $ps; $pn)]}' >"$layout/index.json"
    tar -C "$layout" -cf "$out" oci-layout index.json blobs
    rm -rf "$layout"
}

prune_old_images() {
    local dir n=0
    while read -r dir; do
        n=$((n + 1))
        [[ $n -le $KEEP_IMAGES ]] && continue
        (
            flock -n -x 9 || { say "keeping $dir (in use)"; exit 0; }
            say "removing old image $dir"
            rm -rf "$dir" "$dir.lock" "$dir.build-lock"
        ) 9>"$dir.lock"
    done < <(ls -1dt "$LAB_CACHE"/image-*[0-9a-f] 2>/dev/null || true)
}

main() {
    require_root
    command -v jq >/dev/null || die "jq is needed to write the OCI image index (run tests/lab/setup-host.sh)"
    local key dir started
    key=$(image_key)
    dir="$LAB_CACHE/image-$key"
    mkdir -p "$LAB_CACHE"
    (
        flock -x 9
        if [[ -f "$dir/.lab-complete" ]]; then
            say "container image cached: $dir"
            exit 0
        fi
        started=$(now)
        rm -rf "$dir.tmp"
        mkdir -p "$dir.tmp"
        run_mmdebstrap_for_image "$dir.tmp/rootfs.tar"
        write_oci_archive "$dir.tmp/rootfs.tar" "$dir.tmp/oci-archive.tar"
        echo "$IMAGE_NAME" >"$dir.tmp/name"
        rm -rf "$dir"
        mv "$dir.tmp" "$dir"
        date -u +%FT%TZ >"$dir/.lab-complete"
        say "container image built in $(( $(now) - started )) s: $dir"
    ) 9>"$dir.build-lock"
    touch "$dir"
    prune_old_images
    echo "$dir"
}

main "$@"
