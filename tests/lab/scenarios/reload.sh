#!/usr/bin/env bash
# reload: a TPM the hook granted keeps working after `systemctl daemon-reload`
# under the systemd cgroup driver (podman with cgroup_manager = "systemd",
# runc and crun). The hook adds the device to the container unit's
# DeviceAllow=, so systemd's own rules, re-applied on reload, include it
# (and with crun, whose container runs in a child of the unit's cgroup,
# systemd's rules decide from the start). A control container whose hook
# cannot reach systemd shows what a reload does without that: the TPM is
# cut off while the container runs. An abandoned grant (a hung TPM,
# required=false) leaves the unit's list as it was.
#
# On systemd 257 with cgroup v2 a daemon-reload alone does not rewrite the
# device rules of a runc container's scope (runc replaced systemd's device
# program with its own, and systemd does not put its own back on reload);
# systemd rewrites them whenever the unit's device settings change. So
# after each daemon-reload the scenario also adds /dev/null to the unit's
# list (`systemctl set-property`), which makes systemd compile and attach
# its program from the unit's list anew, as it does on cgroup v1 reloads.
#
# The guest does not boot systemd, so one runs here as PID 1 of its own PID,
# mount and cgroup namespaces (as in a system container), with its D-Bus
# system bus; podman and the runtimes run inside those namespaces.
# lab: cost 130 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

require_binaries oci-tpm-hook
install_hooks_dir >/dev/null
install_policy '[self-test]
timeout-ms = 2000'
load_image_podman
gid=$(tss_gid)
assert_eq "" "$(podman ps -aq)" "containers before the scenario"

CG=/sys/fs/cgroup/lab-systemd
machine_id_before=$(cat /etc/machine-id 2>/dev/null || echo "(none)")
SD_LOG="$LAB_LOG_DIR/reload-systemd.log"

step "systemd as PID 1 of its own namespaces, with its system bus"
# systemd hands controllers down only from what its own root has: the
# guest's root cgroup enables all it can (podman's cgroupfs driver
# otherwise does this per container).
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control
done
mkdir -p "$CG"
cat >/run/lab/systemd-init.sh <<'EOF'
#!/bin/sh
# PID 1 of the new namespaces: its own /run (the guest's /run/lab kept, for
# the hooks directory, with the mounts under it: the project's programs are
# in /run/lab/bin), its own cgroup root, then systemd.
set -e
# Wait until the unshare process that forked us has left the cgroup: a
# cgroup that holds processes cannot hand controllers down (the kernel's
# no-internal-processes rule), and systemd enables them at its start.
while [ ! -e /run/lab/systemd-go ]; do sleep 0.1; done
mount --make-rprivate /
mount --rbind /run/lab /mnt
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/lab
mount --move /mnt /run/lab
# systemd writes /etc/machine-id when it finds none, and the guest's udevd
# then gives every new veth a "persistent" MAC (99-default.link) after the
# CNI plugin has recorded the first, which CRI-O's CNI check rejects in
# later scenarios. So systemd gets an id of its own, in this namespace.
[ -e /etc/machine-id ] || : >/etc/machine-id
tr -d - </proc/sys/kernel/random/uuid >/run/machine-id
mount --bind /run/machine-id /etc/machine-id
# Nor does it commit that id to the guest's file (machine-id-commit does so
# when /etc/machine-id is a mount point), or start a second udev to replay
# every device of the guest.
mkdir -p /run/systemd/system
for unit in systemd-machine-id-commit.service systemd-udevd.service systemd-udevd-kernel.socket \
            systemd-udevd-control.socket systemd-udev-trigger.service; do
    ln -s /dev/null "/run/systemd/system/$unit"
done
umount -l /sys/fs/cgroup 2>/dev/null || true
mount -t cgroup2 cgroup2 /sys/fs/cgroup
export container=lab
# sockets.target: the system bus (dbus.socket) and journald, not the
# services the guest root has enabled (containerd, docker), which would
# take minutes to start here.
exec /usr/lib/systemd/systemd --system --unit=sockets.target --log-target=console
EOF
chmod +x /run/lab/systemd-init.sh
# Into the cgroup first, then a cgroup namespace rooted there.
rm -f /run/lab/systemd-go
sh -c "echo \$\$ >$CG/cgroup.procs; exec unshare --fork --pid --mount --cgroup --mount-proc /run/lab/systemd-init.sh" \
    >"$SD_LOG" 2>&1 </dev/null &
unshare_pid=$!
# in_systemd CMD...: CMD in systemd's namespaces.
sd_pid=""
forked() { sd_pid=$(pgrep -P "$unshare_pid" | head -n1) && [[ -n "$sd_pid" ]]; }
wait_for 60 "unshare to fork systemd's PID 1" forked
echo "$unshare_pid" >/sys/fs/cgroup/cgroup.procs
touch /run/lab/systemd-go
systemd_started() { [[ "$(cat "/proc/$sd_pid/comm" 2>/dev/null)" == systemd ]]; }
wait_for 60 "systemd to start" systemd_started
in_systemd() { nsenter --target "$sd_pid" --mount --pid --cgroup -- "$@"; }
cleanup_systemd() {
    in_systemd podman rm -af -t 0 >/dev/null 2>&1 || true
    kill -KILL "$sd_pid" 2>/dev/null || true
    wait "$unshare_pid" 2>/dev/null || true
    find "$CG" -depth -type d -exec rmdir {} + 2>/dev/null || true
    # The empty file the init script made where there was none.
    if [[ "$machine_id_before" == "(none)" && ! -s /etc/machine-id ]]; then rm -f /etc/machine-id; fi
}
on_exit cleanup_systemd
systemd_ready() {
    local s
    s=$(in_systemd systemctl is-system-running 2>/dev/null) || true
    [[ $s == running || $s == degraded ]]
}
wait_for 180 "systemd to finish starting (see $SD_LOG)" systemd_ready
note "systemd $(in_systemd systemctl --version | head -n1) is $(in_systemd systemctl is-system-running || true)"
note "failed units (not needed here): $(in_systemd systemctl --failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')"
assert_ok in_systemd busctl --system status org.freedesktop.systemd1
wait_for 30 "the system bus" in_systemd test -S /run/dbus/system_bus_socket

# podman IN systemd's namespaces, with its cgroup driver; no network (the
# TPM is what is tested here).
sd_podman() { in_systemd podman --cgroup-manager systemd "$@"; }

# unit_of NAME: the systemd unit of a container's cgroup.
unit_of() { echo "libpod-$(sd_podman inspect --format '{{.Id}}' "$1").scope"; }

# reapply NAME: systemd reloads, and applies the unit's device list anew.
reapply() {
    assert_ok in_systemd systemctl daemon-reload
    assert_ok in_systemd systemctl set-property --runtime "$(unit_of "$1")" "DeviceAllow=/dev/null rw"
}

# read_tpm NAME: the container's own user reads random bytes from the TPM.
read_tpm() {
    local out
    out=$(sd_podman exec "$1" tpm2_getrandom --hex 8 2>&1) || { echo "$out"; return 1; }
    [[ "$(tail -n1 <<<"$out")" =~ ^[0-9a-f]{16}$ ]] || { echo "$out"; return 1; }
}

for rt in runc crun; do
    step "$rt: a running container granted the TPM by the hook"
    mark_hook_log
    assert_ok sd_podman run -d --name "reload-$rt" --runtime "$rt" --network none --user 1000 --group-add "$gid" \
        --annotation oci-tpm-hook/device=tpmrm0 "$LAB_IMAGE" sleep 600
    unit=$(unit_of "reload-$rt")
    assert_ok in_systemd systemctl show -p DevicePolicy -p DeviceAllow "$unit"
    note "$unit: $(tr '\n' ' ' <<<"$LAB_OUTPUT")"
    delivered=$(hook_log_new | grep 'TPM delivered' | tail -n1)
    note "the hook: $(grep -o 'systemd=[^ ]*\( [^ =]*\)*' <<<"$delivered" || true)"
    read_tpm "reload-$rt" || fail "$rt: the container cannot use its TPM before the reload"

    step "$rt: systemctl daemon-reload and systemd's device rules applied anew, then the same container uses the TPM"
    reapply "reload-$rt"
    out=$(read_tpm "reload-$rt") || fail "$rt: the TPM was cut off by the reload: $out"
    note "$rt: the TPM still answers after the reload"
done

step "an abandoned grant (a hung second TPM, required=false) leaves the unit's DeviceAllow= as it was"
# Not in $(...): add_vtpm records its swtpm for cleanup in this shell.
add_vtpm >/run/lab/vtpm.out
vdev=$(tail -n1 /run/lab/vtpm.out)
vswtpm=${LAB_DAEMON_PIDS[-1]}
kill -STOP "$vswtpm"
on_exit "kill -CONT $vswtpm"
mark_hook_log
assert_ok sd_podman run -d --name reload-abandoned --runtime crun --network none \
    --annotation "oci-tpm-hook/device=$(basename "$vdev")" --annotation oci-tpm-hook/required=false "$LAB_IMAGE" sleep 600
assert_contains "$(hook_log_new)" "the container starts without a TPM" "the hook's warning"
unit=$(unit_of reload-abandoned)
abandoned=$(in_systemd systemctl show -p DevicePolicy -p DeviceAllow "$unit")
assert_not_contains "$abandoned" "$vdev" "DeviceAllow= of $unit"
assert_not_contains "$(hook_log_new)" "could not take back" "the hook's log"
# The same list as a crun container that never asked for a TPM.
assert_ok sd_podman run -d --name reload-plain --runtime crun --network none "$LAB_IMAGE" sleep 600
assert_eq "$(in_systemd systemctl show -p DevicePolicy -p DeviceAllow "$(unit_of reload-plain)")" "$abandoned" \
    "DeviceAllow= of $unit against a container that asked for nothing"
note "$unit: $(tr '\n' ' ' <<<"$abandoned")"
kill -CONT "$vswtpm"
assert_ok sd_podman rm -f -t 0 reload-abandoned reload-plain

step "control: a container whose hook could not reach systemd loses the TPM when systemd applies its rules anew"
# The hook runs under strace, which fails its connect(2) to the system bus;
# the container still gets the TPM, with a warning in the hook's log.
hook_under_strace -f -qq -e trace=connect -e inject=connect:error=EACCES -o /run/lab/hook-connect.trace
mark_hook_log
assert_ok sd_podman run -d --name reload-control --runtime runc --network none --user 1000 --group-add "$gid" \
    --annotation oci-tpm-hook/device=tpmrm0 "$LAB_IMAGE" sleep 600
hook_under_strace
grep -q 'connect(.*INJECTED' /run/lab/hook-connect.trace \
    || fail "strace did not fail the hook's connect: $(cat /run/lab/hook-connect.trace)"
assert_contains "$(hook_log_new)" "could not add the TPM to the container's systemd unit" "the hook's warning"
note "the hook: $(hook_log_new | grep -o 'could not add.*' | tail -n1)"
read_tpm reload-control || fail "control: no TPM before the reload"
unit=$(unit_of reload-control)
assert_ok in_systemd systemctl show -p DevicePolicy -p DeviceAllow "$unit"
note "$unit: $(tr '\n' ' ' <<<"$LAB_OUTPUT")"
reapply reload-control
if out=$(read_tpm reload-control); then
    fail "control: the TPM still works after the reload, so this setup does not show the problem the hook solves"
fi
note "control, after the reload: $(tail -n1 <<<"$out")"

step "nothing left: the containers removed, their units gone"
for name in reload-runc reload-crun reload-control; do
    unit=$(unit_of "$name")
    assert_ok sd_podman rm -f -t 0 "$name"
    if in_systemd systemctl is-active --quiet "$unit"; then fail "$unit is still active"; fi
done
assert_eq "" "$(sd_podman ps -aq)" "containers left"

step "the guest is left as it was: its machine id unchanged, no second udev"
cleanup_systemd
assert_eq "$machine_id_before" "$(cat /etc/machine-id 2>/dev/null || echo "(none)")" "/etc/machine-id"
assert_eq "1" "$(pgrep -xc systemd-udevd || true)" "systemd-udevd processes (the guest's own)"
