#!/usr/bin/env bash
# packages: the .deb (make deb) installed in the guest with dpkg:
#  - it holds what it should (stripped binaries, hooks.d, policy, unit, udev
#    rule, man pages, completions, copyright), and its postinst wrote the
#    CDI spec; the installed hook finds its systemd helper in libexec;
#  - the unit's sandbox scores an exposure of at most 3.0 in this guest's
#    systemd-analyze, and the man page its Documentation= names is there;
#  - podman finds the hook through the packaged hooks.d file alone;
#  - docker, after `oci-tpm-hook configure docker`, uses the packaged runtime;
#  - dpkg -r leaves nothing of it but its conffile, dpkg -P not even that;
#  - the rpm (make rpm) read back with rpm -qlp and its scripts.
# lab: cost 55 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

deb=$(ls /lab/bin/oci-tpm-hook_*.deb 2>/dev/null | head -n1 || true)
[[ -n "$deb" ]] || fail "no .deb in /lab/bin: build it on the host with make deb (make e2e does)"
rpm=$(ls /lab/bin/oci-tpm-hook-*.rpm 2>/dev/null | head -n1 || true)
[[ -n "$rpm" ]] || fail "no rpm in /lab/bin: build it on the host with make rpm (make e2e does)"
gid=$(tss_gid)
spec=/var/run/cdi/oci-tpm-hook.json
on_exit "dpkg -P oci-tpm-hook >/dev/null 2>&1"
# The guest root was built to keep no docs or man pages (dpkg path-exclude);
# the package is installed as on a host without that setting.
excludes=/etc/dpkg/dpkg.cfg.d/99mmdebstrap
if [[ -f "$excludes" ]]; then
    mv "$excludes" /run/lab/99mmdebstrap
    on_exit "mv /run/lab/99mmdebstrap $excludes"
fi

step "dpkg -i $(basename "$deb")"
run dpkg-deb -f "$deb" Package Version Depends Installed-Size
note "package size: $(du -k "$deb" | cut -f1) KiB"
rm -f "$spec"
if [[ -e /etc/oci-tpm-hook ]]; then
    note "removing /etc/oci-tpm-hook, left by an earlier scenario: the package brings its own policy"
    rm -rf /etc/oci-tpm-hook
fi
assert_ok dpkg -i "$deb"
assert_eq "install ok installed" "$(dpkg-query -W -f='${Status}' oci-tpm-hook)" "dpkg status"
for f in /usr/bin/oci-tpm-hook /usr/bin/oci-tpm-runtime /usr/libexec/oci-tpm-hook/oci-tpm-systemd \
         /usr/share/containers/oci/hooks.d/oci-tpm-hook.json \
         /etc/oci-tpm-hook/config.toml /usr/lib/systemd/system/oci-tpm-nri.service \
         /usr/lib/udev/rules.d/70-oci-tpm-hook-cdi.rules /usr/share/doc/oci-tpm-hook/copyright \
         /usr/share/man/man1/oci-tpm-hook-nri.1.gz /usr/share/bash-completion/completions/oci-tpm-hook; do
    [[ -e "$f" ]] || fail "$f is not installed"
done
assert_ok oci-tpm-hook --version
assert_contains "$(head -n1 /usr/share/doc/oci-tpm-hook/copyright)" "copyright-format/1.0"
# Stripped: no symbol table, so no section named .symtab (no binutils here).
for b in /usr/bin/oci-tpm-hook /usr/bin/oci-tpm-runtime /usr/libexec/oci-tpm-hook/oci-tpm-systemd; do
    python3 -c 'import sys; sys.exit(b".symtab\0" in open(sys.argv[1], "rb").read())' "$b" \
        || fail "$b is not stripped (it has a .symtab)"
done

step "the installed hook finds its systemd helper in /usr/libexec/oci-tpm-hook (doctor says where)"
/usr/bin/oci-tpm-hook doctor --json >/run/lab/doctor.json || true
assert_contains "$(jq -r '.checks[] | select(.name == "systemd units") | .detail' /run/lab/doctor.json)" \
    "/usr/libexec/oci-tpm-hook/oci-tpm-systemd" "doctor's systemd units check"
# Run by hand it says it is the hook's helper, and refuses.
assert_fails /usr/libexec/oci-tpm-hook/oci-tpm-systemd
assert_contains "$LAB_OUTPUT" "run by oci-tpm-hook"

step "the postinst wrote the CDI spec, pointing at the installed hook"
[[ -f "$spec" ]] || fail "no $spec after dpkg -i"
assert_eq "/usr/bin/oci-tpm-hook" "$(jq -r '.devices[0].containerEdits.hooks[0].path' "$spec")" "hook path"
assert_eq "tpmrm0" "$(jq -r '.devices[0].name' "$spec")" "device"

step "the unit: systemd-analyze security exposure at most 3.0, its man page installed"
unit=/usr/lib/systemd/system/oci-tpm-nri.service
assert_ok systemd-analyze security --offline=true --no-pager "$unit"
exposure=$(sed -n 's/.*Overall exposure level for oci-tpm-nri.service: \([0-9.]*\).*/\1/p' <<<"$LAB_OUTPUT")
note "systemd $(systemd-analyze --version | head -n1 | awk '{print $2}'): exposure $exposure"
[[ -n "$exposure" ]] || fail "no exposure level in the output"
awk -v e="$exposure" 'BEGIN { exit !(e <= 3.0) }' || fail "exposure $exposure is above 3.0"
page=$(sed -n 's/^Documentation=man:\(.*\)(\([0-9]\))$/\1.\2/p' "$unit")
[[ -f "/usr/share/man/man1/$page.gz" ]] || fail "Documentation= names $page, which is not installed"

step "podman: the packaged hooks.d file and policy, annotation only (the hook makes the node)"
load_image_podman
assert_ok podman run --rm --annotation oci-tpm-hook/device=tpmrm0 --user 1000 --group-add "$gid" \
    "$LAB_IMAGE" bash -c "$TPM_PROBE"
assert_contains "$LAB_OUTPUT" "node: character special file mode=660 gid=$gid"
assert_random_hex "$LAB_OUTPUT"

step "docker: oci-tpm-hook configure docker on the daemon's config, then the packaged runtime"
start_dockerd
stop_daemon dockerd
assert_ok oci-tpm-hook configure docker --config "$LAB_DOCKERD_CONFIG"
assert_eq /usr/bin/oci-tpm-runtime "$(jq -r .runtimes.tpm.path "$LAB_DOCKERD_CONFIG")" "runtimes.tpm.path"
restart_dockerd
load_image_docker
assert_ok docker run --rm --network none --runtime tpm --annotation oci-tpm-hook/device=tpmrm0 \
    --user 1000 "$LAB_IMAGE" tpm2_getrandom --hex 8
[[ "$(tail -n1 <<<"$LAB_OUTPUT")" =~ ^[0-9a-f]{16}$ ]] || fail "no random bytes from the TPM"
stop_daemon dockerd-restarted

step "dpkg -r: nothing of the package is left but its conffile"
mapfile -t owned < <(dpkg-query -L oci-tpm-hook | grep -v '^/\.$')
owned_files=()
for f in "${owned[@]}"; do
    [[ -f "$f" || -L "$f" ]] && owned_files+=("$f")
done
assert_ok dpkg -r oci-tpm-hook
assert_eq "deinstall ok config-files" "$(dpkg-query -W -f='${Status}' oci-tpm-hook)" "dpkg status"
left=()
for f in "${owned[@]}"; do
    [[ -f "$f" || -L "$f" ]] && left+=("$f")
done
assert_eq "/etc/oci-tpm-hook/config.toml" "${left[*]}" "files left after dpkg -r"
[[ ! -e "$spec" ]] || fail "the postrm left $spec"
[[ ! -e /usr/share/doc/oci-tpm-hook ]] || fail "/usr/share/doc/oci-tpm-hook is left"
[[ ! -e /usr/libexec/oci-tpm-hook ]] || fail "/usr/libexec/oci-tpm-hook is left"

step "dpkg -P: not even the conffile"
assert_ok dpkg -P oci-tpm-hook
[[ ! -e /etc/oci-tpm-hook ]] || fail "/etc/oci-tpm-hook is left after purge"
assert_eq "" "$(dpkg-query -W -f='${Status}' oci-tpm-hook 2>/dev/null || true)" "dpkg status after purge"

step "the rpm: rpm -qlp lists what the .deb holds, its scripts write the CDI spec and restart nothing"
assert_ok rpm -qp --queryformat '%{NAME} %{VERSION}-%{RELEASE} %{ARCH}\n' "$rpm"
assert_ok rpm -qlp "$rpm"
rpm_files="$LAB_OUTPUT"
# The same files as the .deb (zsh completions go where each family keeps them).
for f in "${owned_files[@]}"; do
    [[ "$f" == /usr/share/zsh/* ]] && continue
    grep -qxF "$f" <<<"$rpm_files" || fail "$f is in the .deb but not in the rpm"
done
assert_ok rpm -qp --scripts "$rpm"
scripts="$LAB_OUTPUT"
assert_contains "$scripts" "postinstall scriptlet"
assert_contains "$scripts" "/usr/bin/oci-tpm-hook cdi generate"
assert_contains "$scripts" "rm -f /var/run/cdi/oci-tpm-hook.json"
assert_not_contains "$scripts" "daemon-reload"
assert_ok rpm -qp --requires "$rpm"
# make build links the binaries statically: no library is required.
assert_not_contains "$LAB_OUTPUT" "libc.so" "the rpm's requirements (static binaries)"
