#!/usr/bin/env bash
# Builds target/deb/oci-tpm-hook_<version>_<arch>.deb from the release
# binaries (packaging/stage.sh), then checks that the package holds what it
# must. Needs dpkg-deb, objdump and strip (dpkg, binutils); no jq.
#
#   packaging/deb/build.sh          (make deb)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source packaging/lib.sh

version=$(package_version)
arch=$(dpkg --print-architecture)
out=target/deb
stage="$out/oci-tpm-hook_${version}_${arch}"
deb="$stage.deb"

packaging/stage.sh "$stage" deb
mkdir -p "$stage/DEBIAN"
echo /etc/oci-tpm-hook/config.toml >"$stage/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "packaging/deb/$script" "$stage/DEBIAN/$script"
done

depends=$(deb_depends "$stage/usr/bin/oci-tpm-hook" "$stage/usr/bin/oci-tpm-runtime" "$stage/usr/bin/oci-tpm-device-plugin" \
    "$stage/usr/libexec/oci-tpm-hook/oci-tpm-systemd")
installed_kb=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: oci-tpm-hook
Version: $version
Architecture: $arch
Maintainer: oci-tpm-hook developers <oci-tpm-hook@localhost>
Installed-Size: $installed_kb
${depends:+Depends: $depends
}Recommends: tpm-udev
Suggests: podman | docker.io | containerd, tpm2-tools
Section: admin
Priority: optional
Description: verified host TPM 2.0 access for OCI containers
 One annotation (oci-tpm-hook/device=tpmrm0) or one CDI device
 (oci-tpm-hook.dev/tpm=tpmrm0) gives a container the host's TPM resource
 manager: a createRuntime hook (podman, CRI-O) validates the device, grants
 it in the device cgroup (v1 and v2), creates the node with the host's tss
 group and self-tests the TPM from inside the container before it starts.
 oci-tpm-runtime does the same for docker as a runc wrapper; "oci-tpm-hook
 nri" is a containerd and CRI-O NRI plugin; "oci-tpm-hook configure" sets
 up docker, containerd and CRI-O. oci-tpm-device-plugin is the
 kubelet device plugin (the node's TPMs as a resource, labels for NFD).
CONTROL

dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null

# What the package must hold, and must not.
contents=$(dpkg-deb -c "$deb")
for want in ./usr/bin/oci-tpm-hook ./usr/bin/oci-tpm-runtime ./usr/bin/oci-tpm-device-plugin \
            ./usr/libexec/oci-tpm-hook/oci-tpm-systemd \
            ./usr/share/containers/oci/hooks.d/oci-tpm-hook.json ./etc/oci-tpm-hook/config.toml \
            ./usr/lib/systemd/system/oci-tpm-nri.service ./usr/lib/udev/rules.d/70-oci-tpm-hook-cdi.rules \
            ./usr/share/doc/oci-tpm-hook/copyright ./usr/share/man/man1/oci-tpm-hook.1.gz \
            ./usr/share/man/man1/oci-tpm-hook-cdi-generate.1.gz ./usr/share/man/man1/oci-tpm-runtime.1.gz \
            ./usr/share/bash-completion/completions/oci-tpm-hook ./usr/share/zsh/vendor-completions/_oci-tpm-hook \
            ./usr/share/fish/vendor_completions.d/oci-tpm-hook.fish; do
    grep -q " $want\$" <<<"$contents" || fail "$want missing from $deb"
done
check_package_tree "$stage"
dpkg-deb -f "$deb" Package Version Architecture Depends
echo "built $deb ($(du -k "$deb" | cut -f1) KiB, installed $installed_kb KiB)"
