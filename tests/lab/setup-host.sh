#!/usr/bin/env bash
# Install the host tools the lab needs, if they are missing, and say what is installed.
# Debian 12 or newer, as root; works unattended (CI=true, no stdin).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# command that must exist -> Debian package that provides it
declare -A APT_TOOLS=(
    [qemu-system-x86_64]=qemu-system-x86
    [mmdebstrap]=mmdebstrap
    [swtpm]=swtpm
    [swtpm_setup]=swtpm-tools
    [modprobe]=kmod
    [flock]=util-linux
    [setsid]=util-linux
    [timeout]=coreutils
    [python3]=python3
    [jq]=jq
)

apt_updated=0
apt_install() {
    if [[ $apt_updated -eq 0 ]]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    say "installing with apt: $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

install_missing_apt_tools() {
    local cmd missing=()
    for cmd in "${!APT_TOOLS[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("${APT_TOOLS[$cmd]}")
    done
    # virtme-ng builds its initramfs from a statically linked busybox.
    dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' \
        || missing+=(busybox-static)
    if [[ ${#missing[@]} -gt 0 ]]; then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        apt_install "${missing[@]}"
    fi
}

install_virtme_ng() {
    command -v vng >/dev/null 2>&1 && return 0
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install python3-pip
    fi
    say "installing with pip: virtme-ng"
    python3 -m pip install --quiet --break-system-packages virtme-ng 2>/dev/null \
        || python3 -m pip install --quiet virtme-ng
    command -v vng >/dev/null 2>&1 || die "virtme-ng installed but 'vng' is not on PATH ($PATH)"
}

check_kvm_free_emulation() {
    # The lab always runs under software emulation (TCG); nothing to check but qemu itself.
    qemu-system-x86_64 --version | head -n1 >&2
}

main() {
    require_root
    install_missing_apt_tools
    install_virtme_ng
    check_kvm_free_emulation
    say "host tools ready: $(vng --version 2>&1 | head -n1), mmdebstrap $(mmdebstrap --version | awk '{print $2}'), $(swtpm --version 2>&1 | grep -o "swtpm\|TPM emulator version [0-9.]*" | head -n1)"
}

main "$@"
