# Shared host-side helpers for the lab scripts. Sourced, not executed.
# shellcheck shell=bash

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$LAB_DIR/../.." && pwd)"

# Where built guest roots and container images are kept between runs.
LAB_CACHE="${LAB_CACHE:-/var/cache/oci-tpm-hook/lab}"
# Debian suite of the guest and the container image.
LAB_SUITE="${LAB_SUITE:-trixie}"

say() { printf '[lab] %s\n' "$*" >&2; }
die() { printf '[lab] error: %s\n' "$*" >&2; exit 1; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die "the lab needs root (mmdebstrap, qemu, swtpm); run it as root"
}

# The Debian mirror this host already uses, so the lab fetches from the same place.
host_debian_mirror() {
    local mirror=""
    if [[ -n "${LAB_MIRROR:-}" ]]; then
        echo "$LAB_MIRROR"; return
    fi
    mirror=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    if [[ -z "$mirror" ]]; then
        mirror=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    fi
    echo "${mirror:-http://deb.debian.org/debian}"
}

# Package list file -> comma separated, comments and blank lines dropped.
package_list_csv() {
    sed -e 's/#.*//' -e 's/[[:space:]]//g' "$1" | grep -v '^$' | paste -sd, -
}

# sha256 over the given files (names and contents), short form, used as cache key.
cache_key_of() {
    local f
    for f in "$@"; do
        f=$(realpath "$f")
        printf '%s\n' "${f#"$LAB_DIR"/}"
        cat "$f"
    done | sha256sum | cut -c1-16
}

# Seconds since the epoch, for timing.
now() { date +%s; }

# ---------------------------------------------------------------- third-party sources

# Names and sha256 of the pinned CRI-O and Kubernetes source tarballs.
THIRD_PARTY_SUMS="$LAB_DIR/third-party.sha256"

# Where the tarballs are looked for: $LAB_THIRD_PARTY, else ../shared/third_party
# next to the repository when that directory exists. Prints nothing when neither.
third_party_dir() {
    if [[ -n "${LAB_THIRD_PARTY:-}" ]]; then
        echo "$LAB_THIRD_PARTY"
    elif [[ -d "$REPO_DIR/../shared/third_party" ]]; then
        (cd "$REPO_DIR/../shared/third_party" && pwd)
    fi
}

# The tarball file names, one a line.
third_party_tarballs() { awk 'NF == 2 {print $2}' "$THIRD_PARTY_SUMS"; }

# Why the tarballs cannot be used, in one line; nothing when they are all there.
third_party_missing() {
    local dir name missing=()
    dir=$(third_party_dir)
    if [[ -z "$dir" ]]; then
        echo "LAB_THIRD_PARTY is not set (and no ../shared/third_party next to the repository)"
        return
    fi
    while read -r name; do
        [[ -f "$dir/$name" ]] || missing+=("$name")
    done < <(third_party_tarballs)
    [[ ${#missing[@]} -eq 0 ]] || echo "not in $dir: ${missing[*]}"
}

# How to provide them, for the loud line of a skipped scenario.
third_party_howto() {
    echo "put $(third_party_tarballs | paste -sd' ' -) (sha256 in tests/lab/third-party.sha256) into a directory and set LAB_THIRD_PARTY=DIR"
}
