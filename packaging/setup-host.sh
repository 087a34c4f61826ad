#!/usr/bin/env bash
# Installs the tools `make deb` and `make rpm` need, if they are missing, and
# says what it installs: binutils (objdump, readelf, strip) and rpm
# (rpmbuild). dpkg-deb comes with every Debian system. Debian 12 or newer,
# as root; works unattended (CI=true, no stdin).
set -euo pipefail

declare -A TOOLS=([objdump]=binutils [readelf]=binutils [strip]=binutils [rpmbuild]=rpm [gzip]=gzip)
missing=()
for cmd in "${!TOOLS[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${TOOLS[$cmd]}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    [[ $(id -u) -eq 0 ]] || { echo "[packaging] missing ${missing[*]}; run as root to install them" >&2; exit 1; }
    echo "[packaging] installing with apt: ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi
