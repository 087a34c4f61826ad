# Shared by packaging/deb/build.sh and packaging/rpm/build.sh.
# shellcheck shell=bash

fail() { echo "packaging: $*" >&2; exit 1; }

# The workspace version from Cargo.toml.
package_version() {
    sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1
}

# The highest glibc symbol version any of the binaries needs, e.g. 2.34.
glibc_needed() {
    objdump -T "$@" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n1
}

# True when none of the binaries has a dynamic section: `make build` links
# them statically, and then they depend on no library at all.
all_static() {
    local b
    for b in "$@"; do
        readelf -d "$b" 2>/dev/null | grep -q 'There is no dynamic section' || return 1
    done
}

# The Debian Depends of the binaries, from the libraries they link (readelf
# NEEDED) and the glibc symbol versions they use: libc6 (>= X.Y) and
# libgcc-s1; nothing for static binaries. A library this does not know
# stops the build, so a new dependency is never shipped undeclared.
deb_depends() {
    local lib libs glibc deps=()
    all_static "$@" && return 0
    libs=$(readelf -d "$@" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u)
    glibc=$(glibc_needed "$@")
    [[ -n "$glibc" ]] || fail "found no GLIBC symbol versions in $*"
    deps+=("libc6 (>= $glibc)")
    for lib in $libs; do
        case "$lib" in
            libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux*.so.*) ;;
            libgcc_s.so.1) deps+=("libgcc-s1") ;;
            *) fail "the binaries link $lib: add its package to deb_depends in packaging/lib.sh" ;;
        esac
    done
    local IFS=,
    printf '%s\n' "${deps[*]}" | sed 's/,/, /g'
}

# Checks on a staged tree: stripped binaries, the hooks.d file pointing at
# the installed hook, the udev rule running an installed binary, and every
# man page a systemd unit's Documentation= names shipped.
check_package_tree() {
    local root="$1" b page unit
    for b in "$root"/usr/bin/* "$root"/usr/libexec/oci-tpm-hook/*; do
        if readelf -S "$b" | grep -q '\.symtab'; then
            fail "$b is not stripped"
        fi
    done
    grep -q '"path": "/usr/bin/oci-tpm-hook"' "$root/usr/share/containers/oci/hooks.d/oci-tpm-hook.json" \
        || fail "the hooks.d file does not point at /usr/bin/oci-tpm-hook"
    b=$(sed -n 's/.*RUN+="\([^ "]*\).*/\1/p' "$root/usr/lib/udev/rules.d/70-oci-tpm-hook-cdi.rules")
    [[ -x "$root$b" ]] || fail "the udev rule runs $b, which the package does not hold"
    for unit in "$root"/usr/lib/systemd/system/*; do
        for page in $(sed -n 's/^Documentation=//p' "$unit"); do
            case "$page" in
                man:*)
                    page=${page#man:}
                    local name=${page%(*} section=${page#*(}
                    section=${section%)}
                    [[ -f "$root/usr/share/man/man$section/$name.$section.gz" ]] \
                        || fail "$(basename "$unit") points at $page, which the package does not hold"
                    ;;
            esac
        done
    done
}
