#!/usr/bin/env bash
# Builds target/rpm/oci-tpm-hook-<version>-1.<arch>.rpm from the release
# binaries (packaging/stage.sh, the same tree as the .deb's), then reads it
# back: its file list (rpm -qlp), its scriptlets (rpm -qp --scripts) and
# its requirements, which rpmbuild derives from the binaries.
#
#   packaging/rpm/build.sh          (make rpm)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source packaging/lib.sh

command -v rpmbuild >/dev/null || fail "rpmbuild is missing: packaging/setup-host.sh installs it (Debian package rpm)"
version=$(package_version)
arch=$(uname -m)
out="$PWD/target/rpm"
stage="$out/stage"
rm -rf "$out/rpmbuild"
mkdir -p "$out"
packaging/stage.sh "$stage" rpm
check_package_tree "$stage"

rpmbuild -bb --quiet \
    --define "_topdir $out/rpmbuild" \
    --define "_version $version" \
    --define "_stage $stage" \
    --define "_build_id_links none" \
    --define "_binary_payload w9.xzdio" \
    --target "$arch" \
    packaging/rpm/oci-tpm-hook.spec >/dev/null
rpm=$(find "$out/rpmbuild/RPMS" -name "oci-tpm-hook-$version-1.*.rpm" | head -n1)
[[ -n "$rpm" ]] || fail "rpmbuild made no package"
mv "$rpm" "$out/"
rpm="$out/$(basename "$rpm")"

# Read it back.
files=$(rpm -qlp "$rpm")
echo "--- rpm -qlp $(basename "$rpm")"
printf '%s\n' "$files"
for want in /usr/bin/oci-tpm-hook /usr/bin/oci-tpm-runtime /usr/bin/oci-tpm-device-plugin \
            /usr/libexec/oci-tpm-hook/oci-tpm-systemd /etc/oci-tpm-hook/config.toml \
            /usr/share/containers/oci/hooks.d/oci-tpm-hook.json /usr/lib/systemd/system/oci-tpm-nri.service \
            /usr/lib/udev/rules.d/70-oci-tpm-hook-cdi.rules /usr/share/man/man1/oci-tpm-hook-nri.1.gz \
            /usr/share/doc/oci-tpm-hook/copyright; do
    grep -qx "$want" <<<"$files" || fail "$want missing from $rpm"
done
# The directories other packages own are not claimed.
for not in /usr/share/containers/oci/hooks.d /usr/lib/systemd/system /usr/bin /usr/libexec; do
    ! grep -qx "$not" <<<"$files" || fail "$rpm claims $not"
done
scripts=$(rpm -qp --scripts "$rpm")
echo "--- rpm -qp --scripts"
printf '%s\n' "$scripts"
grep -q 'cdi generate' <<<"$scripts" || fail "the rpm's %post does not write the CDI spec"
! grep -Eq 'daemon-reload|restart (docker|containerd|crio)' <<<"$scripts" \
    || fail "the rpm's scriptlets reload or restart what they do not own"
echo "--- rpm -qp --requires"
requires=$(rpm -qp --requires "$rpm")
printf '%s\n' "$requires"
if all_static "$stage"/usr/bin/*; then
    ! grep -q '^libc\.so' <<<"$requires" || fail "the rpm requires libc for static binaries"
else
    grep -q "libc.so.6(GLIBC_$(glibc_needed "$stage"/usr/bin/*))" <<<"$requires" \
        || fail "the rpm does not require the glibc version the binaries need"
fi
rpm -qp --queryformat '%{NAME} %{VERSION}-%{RELEASE} %{ARCH}\n' "$rpm"
echo "built $rpm ($(du -k "$rpm" | cut -f1) KiB)"
