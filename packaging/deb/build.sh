#!/usr/bin/env bash
# Builds target/deb/oci-tpm-hook_<version>_<arch>.deb from the release
# binaries, then checks that the package holds what it must.
#
#   packaging/deb/build.sh          (make deb)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
out=target/deb
stage="$out/oci-tpm-hook_${version}_${arch}"
deb="$stage.deb"

for b in oci-tpm-hook oci-tpm-runtime oci-tpm-device-plugin; do
    [[ -x target/release/$b ]] || { echo "deb: target/release/$b is missing (make build)" >&2; exit 1; }
done

rm -rf "$stage"
install -D -m 0755 target/release/oci-tpm-hook "$stage/usr/bin/oci-tpm-hook"
install -D -m 0755 target/release/oci-tpm-runtime "$stage/usr/bin/oci-tpm-runtime"
install -D -m 0755 target/release/oci-tpm-device-plugin "$stage/usr/bin/oci-tpm-device-plugin"
# podman, CRI-O and buildah read this directory by default.
install -D -m 0644 hooks.d/oci-tpm-hook.json "$stage/usr/share/containers/oci/hooks.d/oci-tpm-hook.json"
install -D -m 0644 packaging/config.toml "$stage/etc/oci-tpm-hook/config.toml"
doc="$stage/usr/share/doc/oci-tpm-hook"
install -D -m 0644 README.md "$doc/README.md"
for f in docs/*.md; do install -D -m 0644 "$f" "$doc/$(basename "$f")"; done
for d in docker containerd kubernetes systemd; do
    [[ -d packaging/$d ]] || continue
    mkdir -p "$doc/examples/$d"
    cp -r "packaging/$d/." "$doc/examples/$d/"
done
if [[ -f packaging/systemd/oci-tpm-nri.service ]]; then
    install -D -m 0644 packaging/systemd/oci-tpm-nri.service "$stage/usr/lib/systemd/system/oci-tpm-nri.service"
fi

mkdir -p "$stage/DEBIAN"
echo /etc/oci-tpm-hook/config.toml >"$stage/DEBIAN/conffiles"
installed_kb=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: oci-tpm-hook
Version: $version
Architecture: $arch
Maintainer: oci-tpm-hook developers <oci-tpm-hook@localhost>
Installed-Size: $installed_kb
Depends: libc6
Recommends: tpm-udev
Suggests: podman | docker.io | containerd, tpm2-tools
Section: admin
Priority: optional
Description: verified host TPM 2.0 access for OCI containers
 One annotation (oci-tpm-hook/device=tpmrm0) gives a container the host's
 TPM resource manager: a createRuntime hook (podman, CRI-O) validates the
 device, grants it in the device cgroup (v1 and v2), creates the node with
 the host's tss group and self-tests the TPM from inside the container
 before it starts. oci-tpm-runtime does the same for docker as a runc
 wrapper; "oci-tpm-hook nri" is a containerd NRI plugin.
CONTROL

dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null

# The package must hold the binaries, the hooks.d file pointing at the
# installed hook, and the policy as a conffile.
contents=$(dpkg-deb -c "$deb")
for want in ./usr/bin/oci-tpm-hook ./usr/bin/oci-tpm-runtime ./usr/bin/oci-tpm-device-plugin \
            ./usr/share/containers/oci/hooks.d/oci-tpm-hook.json ./etc/oci-tpm-hook/config.toml; do
    grep -q " $want\$" <<<"$contents" || { echo "deb: $want missing from $deb" >&2; exit 1; }
done
hook_path=$(dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./usr/share/containers/oci/hooks.d/oci-tpm-hook.json | jq -r .hook.path)
[[ "$hook_path" == /usr/bin/oci-tpm-hook ]] || { echo "deb: hooks.d points at $hook_path" >&2; exit 1; }
dpkg-deb -f "$deb" Package Version Architecture
echo "built $deb ($(du -k "$deb" | cut -f1) KiB)"
