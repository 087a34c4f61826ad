# Helpers for lab scenarios. A scenario starts with
#     set -euo pipefail
#     source "$LAB_LIB"
# and runs as root inside the lab guest; its exit status is its verdict.
# Daemons and extra TPMs started through these helpers are stopped when the
# scenario exits (add more with on_exit).
# shellcheck shell=bash

LAB_REPO="${LAB_REPO:-/lab/repo}"
LAB_BIN="${LAB_BIN:-/run/lab/bin}"          # the project's binaries (read-only, local copy of /lab/bin)
LAB_IMAGE_DIR="${LAB_IMAGE_DIR:-/lab/image}"
LAB_OUT="${LAB_OUT:-/lab/out}"
LAB_SCENARIO="${LAB_SCENARIO:-scenario}"
LAB_IMAGE="localhost/tpm-test:latest"        # the test image, same name in every engine
LAB_PAUSE_IMAGE="localhost/pause:lab"        # containerd CRI sandbox image
LAB_WAIT="${LAB_WAIT:-180}"                  # seconds any single wait may take
LAB_LOG_DIR=/var/log/lab
mkdir -p "$LAB_LOG_DIR" /run/lab
# shellcheck source=tests/lab/guest/poll.sh
source "$LAB_REPO/tests/lab/guest/poll.sh"
# CRI-O and Kubernetes: configuration writers shared with the cluster fixture.
# shellcheck source=tests/lab/guest/k8s.sh
source "$LAB_REPO/tests/lab/guest/k8s.sh"
# kubectl talks to the cluster fixture when it runs (scenarios with "# lab: needs cluster").
[[ -f /run/lab/cluster/admin.kubeconfig ]] && export KUBECONFIG=/run/lab/cluster/admin.kubeconfig

# ---------------------------------------------------------------- output

LAB_T0=$(date +%s)
# step "what happens next": a visible heading, with seconds since the scenario began.
step() { printf '\n--- [%ss] %s\n' "$(( $(date +%s) - LAB_T0 ))" "$*"; }

# note "text": an informational line (on stderr, so helpers can print results on stdout).
note() { printf '    %s\n' "$*" >&2; }

# run CMD...: print the command, then run it (its output goes to the log).
run() { printf '+ %s\n' "$*"; "$@"; }

# ---------------------------------------------------------------- assertions
# Each prints what was expected and what was seen, and exits the scenario
# with status 1 when the assertion does not hold.

fail() { printf 'FAIL: %s\n' "$*"; exit 1; }

# known_gap TEXT: an assertion that fails because of a known gap not fixed
# yet. It is printed at once as "FAIL (known gap)", the scenario goes on,
# and it fails at its end (listing every known gap it met): never a pass.
LAB_KNOWN_GAPS=()
known_gap() {
    printf 'FAIL (known gap, the scenario goes on and fails at its end): %s\n' "$*"
    LAB_KNOWN_GAPS+=("$*")
}

# assert_eq EXPECTED ACTUAL [WHAT]
assert_eq() {
    if [[ "$1" == "$2" ]]; then
        printf 'ok: %s = %q\n' "${3:-value}" "$2"
    else
        printf 'FAIL: %s\n  expected: %q\n  seen:     %q\n' "${3:-value}" "$1" "$2"
        exit 1
    fi
}

# assert_contains HAYSTACK NEEDLE [WHAT]
assert_contains() {
    if [[ "$1" == *"$2"* ]]; then
        printf 'ok: %s contains %q\n' "${3:-output}" "$2"
    else
        printf 'FAIL: %s\n  expected to contain: %q\n  seen:\n%s\n' "${3:-output}" "$2" "$1"
        exit 1
    fi
}

# assert_not_contains HAYSTACK NEEDLE [WHAT]
assert_not_contains() {
    if [[ "$1" != *"$2"* ]]; then
        printf 'ok: %s does not contain %q\n' "${3:-output}" "$2"
    else
        printf 'FAIL: %s\n  expected not to contain: %q\n  seen:\n%s\n' "${3:-output}" "$2" "$1"
        exit 1
    fi
}

# assert_ok CMD...: the command must succeed. Its output is printed and kept
# in $LAB_OUTPUT.
assert_ok() {
    local rc=0
    printf '+ %s\n' "$*"
    LAB_OUTPUT=$("$@" 2>&1) || rc=$?
    printf '%s\n' "$LAB_OUTPUT"
    if [[ $rc -ne 0 ]]; then
        printf 'FAIL: expected success, seen exit status %d from: %s\n' "$rc" "$*"
        exit 1
    fi
    printf 'ok: succeeded\n'
}

# assert_fails CMD...: the command must fail (non-zero exit). Its output is
# printed and kept in $LAB_OUTPUT, e.g. for assert_contains afterwards.
assert_fails() {
    local rc=0
    printf '+ %s\n' "$*"
    LAB_OUTPUT=$("$@" 2>&1) || rc=$?
    printf '%s\n' "$LAB_OUTPUT"
    if [[ $rc -eq 0 ]]; then
        printf 'FAIL: expected failure, but it succeeded: %s\n' "$*"
        exit 1
    fi
    printf 'ok: failed as expected (exit status %d)\n' "$rc"
}

# poll_until SECONDS CMD...: poll CMD until it succeeds (status 0) or
# SECONDS pass (status 1), paced by pause_after (poll.sh).
poll_until() { poll "$1" true "${@:2}"; }

# wait_for SECONDS DESCRIPTION CMD...: poll CMD (as poll_until) until it
# succeeds; fail the scenario after SECONDS.
wait_for() {
    local secs="$1" what="$2"
    shift 2
    poll_until "$secs" "$@" || fail "timed out after ${secs}s waiting for $what"
}

# ---------------------------------------------------------------- cleanup

LAB_EXIT_ACTIONS=()
LAB_DAEMON_PIDS=()     # pids from start_daemon in this shell
LAB_DAEMON_NAMES=()
# Every daemon started by this scenario, also from subshells ($$ is the
# scenario's pid there too), so the exit trap can stop them all.
LAB_DAEMONS_FILE="/run/lab/daemons.$$"

# on_exit "shell command": run it when the scenario exits (last added, first run).
on_exit() { LAB_EXIT_ACTIONS+=("$1"); }

# stop_pid PID NAME: TERM, wait up to 20 s, then KILL.
stop_pid() {
    local pid="$1" name="$2" i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 40); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    echo "[lab] $name (pid $pid) did not stop after TERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

lab_cleanup() {
    local rc=$? i name
    set +e
    if [[ ${#LAB_KNOWN_GAPS[@]} -gt 0 ]]; then
        printf '\nFAIL: %d known gap(s) seen:\n' "${#LAB_KNOWN_GAPS[@]}"
        printf '  - %s\n' "${LAB_KNOWN_GAPS[@]}"
        [[ $rc -ne 0 ]] || rc=1
    fi
    for (( i=${#LAB_EXIT_ACTIONS[@]}-1; i>=0; i-- )); do
        eval "${LAB_EXIT_ACTIONS[$i]}" >/dev/null 2>&1
    done
    # Daemons from any subshell of this scenario (e.g. dev=$(add_vtpm)), newest first.
    if [[ -f "$LAB_DAEMONS_FILE" ]]; then
        while read -r i name; do
            stop_pid "$i" "$name"
        done < <(tac "$LAB_DAEMONS_FILE")
        rm -f "$LAB_DAEMONS_FILE"
    fi
    # Keep daemon logs with the run's results on the host.
    for i in "$LAB_LOG_DIR"/*.log; do
        [[ -f "$i" ]] && cp "$i" "$LAB_OUT/$LAB_SCENARIO.$(basename "$i")"
    done
    if [[ $rc -ne 0 ]]; then
        for i in "$LAB_LOG_DIR"/*.log; do
            [[ -f "$i" ]] || continue
            printf '\n--- last lines of %s (full log: %s.%s in the run directory)\n' \
                "$i" "$LAB_SCENARIO" "$(basename "$i")"
            tail -n 25 "$i"
        done
    fi
    exit "$rc"
}
trap lab_cleanup EXIT

# start_daemon NAME CMD...: start CMD in the background with output in
# $LAB_LOG_DIR/NAME.log; it is stopped when the scenario exits.
start_daemon() {
    local name="$1"
    shift
    "$@" >"$LAB_LOG_DIR/$name.log" 2>&1 </dev/null &
    LAB_DAEMON_PIDS+=("$!")
    LAB_DAEMON_NAMES+=("$name")
    echo "$! $name" >>"$LAB_DAEMONS_FILE"
    note "started $name (pid $!, log $LAB_LOG_DIR/$name.log)"
}

# stop_daemon NAME: stop a daemon started with start_daemon (TERM, then KILL).
stop_daemon() {
    local name="$1" i
    for i in "${!LAB_DAEMON_NAMES[@]}"; do
        [[ "${LAB_DAEMON_NAMES[$i]}" == "$name" ]] || continue
        stop_pid "${LAB_DAEMON_PIDS[$i]}" "$name"
        note "stopped $name (pid ${LAB_DAEMON_PIDS[$i]})"
    done
}

# ---------------------------------------------------------------- TPM

# tss_gid: the guest's tss group id (owner group of /dev/tpmrm*).
tss_gid() { getent group tss | cut -d: -f3; }

# device_numbers PATH: "major:minor" in decimal, e.g. 253:65536.
device_numbers() {
    local hex
    hex=$(stat -c '%t %T' "$1")
    # shellcheck disable=SC2086
    printf '%d:%d\n' $(printf '0x%s 0x%s' $hex)
}

# add_vtpm: add one more kernel TPM through the vTPM proxy, backed by a fresh
# swtpm; prints its resource-manager device (e.g. /dev/tpmrm1). The swtpm
# stops when the scenario exits. The kernel gives up on a proxy TPM whose
# start-up commands time out (seen under heavy load: swtpm then logs an I/O
# error and no tpmrm appears), so fresh swtpms get two more tries.
# LAB_VTPM_CTRL is then its swtpm's control socket (swtpm_ioctl --unix).
add_vtpm() {
    local state before dev="" attempt
    # Only the device goes to stdout (callers capture it); what the waits
    # say, a failure included, goes to stderr so it is seen.
    {
        modprobe tpm_vtpm_proxy
        before=$(ls /dev/tpmrm* 2>/dev/null | sort)
        # The kernel gives the proxy's TPM its usual command timeouts, in
        # wall-clock time: on a busy one-vCPU guest (a cluster's control
        # plane) swtpm answered too late and the kernel dropped the device.
        # Real-time priority lets it answer first; its work is small.
        local prio=()
        chrt -f 10 true 2>/dev/null && prio=(chrt -f 10)
        for attempt in 1 2 3; do
            state=$(mktemp -d /run/lab/vtpm.XXXXXX)
            start_daemon "swtpm-vtpm-$(basename "$state")" \
                "${prio[@]}" swtpm chardev --vtpm-proxy --tpm2 --tpmstate "dir=$state" \
                --ctrl "type=unixio,path=$state/ctrl.sock"
            if poll_until $(( LAB_WAIT / 2 )) bash -c "[[ \"\$(ls /dev/tpmrm* 2>/dev/null | sort)\" != \"$before\" ]]"; then
                dev=$(comm -13 <(printf '%s\n' "$before") <(ls /dev/tpmrm* | sort) | head -n1)
                break
            fi
            note "attempt $attempt: no new /dev/tpmrm* from the vTPM proxy; stopping that swtpm"
            stop_pid "${LAB_DAEMON_PIDS[-1]}" "swtpm-vtpm-$(basename "$state")"
            # Give a loaded host a moment before the next fresh swtpm.
            sleep 10
        done
        [[ -n "$dev" ]] || fail "the vTPM proxy gave no new /dev/tpmrm* in three attempts"
        LAB_VTPM_CTRL="$state/ctrl.sock"
        # Like a host's udev rules (tpm2-tss): tpmrm* is group tss, mode 0660.
        wait_for 10 "$dev to appear" test -c "$dev"
        chgrp tss "$dev" && chmod 0660 "$dev"
    } >&2
    echo "$dev"
}

# wait_for_daemon NAME SECONDS CMD...: like wait_for, for a daemon started with
# start_daemon; fails at once (with its log) if the daemon exits meanwhile.
wait_for_daemon() {
    local name="$1" secs="$2" alive=true i rc=0
    shift 2
    for i in "${!LAB_DAEMON_NAMES[@]}"; do
        [[ "${LAB_DAEMON_NAMES[$i]}" == "$name" ]] && alive="kill -0 ${LAB_DAEMON_PIDS[$i]}"
    done
    poll "$secs" "$alive" "$@" || rc=$?
    [[ $rc -ne 2 ]] || fail "$name exited before it answered (log: $LAB_LOG_DIR/$name.log)"
    [[ $rc -ne 1 ]] || fail "timed out after ${secs}s waiting for $name to answer"
    note "$name answers"
}

# ---------------------------------------------------------------- engines

# LAB_DOCKERD_CONFIG: the daemon.json start_dockerd writes.
LAB_DOCKERD_CONFIG=/run/lab/docker/daemon.json

# start_dockerd [JSON]: start dockerd (no network, cgroupfs, overlay2 on tmpfs);
# JSON is merged over the lab's daemon.json, e.g.
#   start_dockerd '{"runtimes":{"tpm":{"path":"/run/lab/bin/oci-tpm-runtime"}}}'
# Containers need `--network none` (there is no bridge in the guest).
# dockerd gets its own containerd (/run/lab/docker-containerd/containerd.sock, CRI
# off), started and awaited here: dockerd's built-in start of containerd gives
# up after 15 s, too short for a slow emulated guest.
start_dockerd() {
    local extra="${1:-}" conf=$LAB_DOCKERD_CONFIG ctd=/run/lab/docker-containerd
    mkdir -p /run/lab/docker "$ctd"
    cat >"$ctd/config.toml" <<TOML
version = 2
root = "/var/lib/docker/containerd"
state = "$ctd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$ctd/containerd.sock"
TOML
    start_daemon docker-containerd containerd --config "$ctd/config.toml"
    wait_for_daemon docker-containerd "$LAB_WAIT" ctr --address "$ctd/containerd.sock" version

    jq -n --arg ctd "$ctd/containerd.sock" '{
        "bridge": "none", "iptables": false, "ip6tables": false, "ip-masq": false,
        "exec-opts": ["native.cgroupdriver=cgroupfs"],
        "storage-driver": "overlay2", "data-root": "/var/lib/docker",
        "containerd": $ctd,
        "hosts": ["unix:///run/docker.sock"]}' >"$conf.base"
    if [[ -n "$extra" ]]; then
        jq -s '.[0] * .[1]' "$conf.base" <(printf '%s' "$extra") >"$conf"
    else
        cp "$conf.base" "$conf"
    fi
    note "dockerd config: $(jq -c . "$conf")"
    start_daemon dockerd dockerd --config-file "$conf"
    wait_for_daemon dockerd "$LAB_WAIT" docker version
}

# restart_dockerd: stop dockerd (not its containerd) and start it again on
# $LAB_DOCKERD_CONFIG as it is now (after an edit); its log is
# dockerd-restarted.log.
restart_dockerd() {
    stop_daemon dockerd
    start_daemon dockerd-restarted dockerd --config-file "$LAB_DOCKERD_CONFIG"
    wait_for_daemon dockerd-restarted "$LAB_WAIT" docker version
}

# start_containerd [--cdi] [TOML]: start containerd with the CRI plugin
# (sandbox image localhost/pause:lab, runc, cgroupfs; with --cdi, CDI on);
# TOML is appended to the lab's config (add new tables, e.g. the NRI
# plugin's). Config: $LAB_CONTAINERD_CONFIG. Socket: /run/containerd/containerd.sock.
LAB_CONTAINERD_CONFIG=/run/lab/containerd/config.toml
start_containerd() {
    local opts=() extra conf=$LAB_CONTAINERD_CONFIG
    [[ "${1:-}" == --cdi ]] && { opts+=(--cdi); shift; }
    extra="${1:-}"
    mkdir -p /run/lab/containerd /etc/cni/net.d
    containerd_config "${opts[@]}" >"$conf"
    [[ -n "$extra" ]] && printf '\n%s\n' "$extra" >>"$conf"
    start_daemon containerd containerd --config "$conf"
    wait_for_daemon containerd "$LAB_WAIT" ctr version
}

# restart_containerd: stop containerd and start it again on
# $LAB_CONTAINERD_CONFIG as it is now (after an edit); its log is
# containerd-restarted.log.
restart_containerd() {
    stop_daemon containerd
    start_daemon containerd-restarted containerd --config "$LAB_CONTAINERD_CONFIG"
    wait_for_daemon containerd-restarted "$LAB_WAIT" ctr version
}

# start_crio [--nri] [--hooks-dir DIR] [--runtime crun|runc]: start CRI-O
# 1.33 (built from the pinned sources; see k8s.sh, crio_config, for its
# settings) on /run/crio/crio.sock, stopped when the scenario exits. Without
# --hooks-dir it reads its default hooks directory
# (/usr/share/containers/oci/hooks.d); NRI is off unless --nri. Point
# cri_run at it with --socket "$CRIO_SOCKET" or CRI_RUNTIME_ENDPOINT.
start_crio() {
    have_third_party || fail "no CRI-O binary in $LAB_THIRD_PARTY_BIN: the scenario needs '# lab: needs third-party'"
    mkdir -p /run/lab/crio
    crio_config "$@" >/run/lab/crio/crio.conf
    # shellcheck disable=SC2046
    start_daemon crio $(crio_command /run/lab/crio/crio.conf)
    wait_for_daemon crio "$LAB_WAIT" cri_version "$CRIO_SOCKET"
    note "CRI-O: $(cri_version "$CRIO_SOCKET"), options: ${*:-none}"
}

# start_kubelet STATIC_POD_DIR [CRI_SOCKET]: a standalone kubelet (no API
# server) that runs the static pods in STATIC_POD_DIR over the CRI runtime at
# CRI_SOCKET (default containerd's); stopped when the scenario exits.
start_kubelet() {
    local static="$1" socket="${2:-$CONTAINERD_SOCKET}"
    have_third_party || fail "no kubelet in $LAB_THIRD_PARTY_BIN: the scenario needs '# lab: needs third-party'"
    mkdir -p /run/lab/kubelet "$static"
    setup_node_network
    kubelet_config "$socket" "$static" >/run/lab/kubelet/config.yaml
    # shellcheck disable=SC2046
    start_daemon kubelet $(kubelet_command /run/lab/kubelet/config.yaml)
}

# cri_run [OPTIONS] -- CMD...: run CMD in a one-container pod through
# containerd's CRI, as a kubelet would (start_containerd and
# load_image_containerd first); prints its output, exits with its status
# (125: CRI error, 124: timeout). `cri_run --help` lists the options
# (--pod-annotation, --annotation, --device, --user, --supplemental-group, ...).
# The socket: --socket PATH, else $CRI_RUNTIME_ENDPOINT, else containerd's.
cri_run() { python3 "$LAB_REPO/tests/lab/guest/cri-run" "$@"; }

# ---------------------------------------------------------------- image

# load_image_podman: make $LAB_IMAGE available to podman (podman import).
load_image_podman() {
    podman image exists "$LAB_IMAGE" && return 0
    note "podman import $LAB_IMAGE"
    podman import --quiet --change 'CMD ["/bin/bash"]' "$LAB_IMAGE_DIR/rootfs.tar" "$LAB_IMAGE" >/dev/null
}

# load_image_docker: make $LAB_IMAGE available to docker (docker import);
# dockerd must be running (start_dockerd).
load_image_docker() {
    docker image inspect "$LAB_IMAGE" >/dev/null 2>&1 && return 0
    note "docker import $LAB_IMAGE"
    docker import --change 'CMD ["/bin/bash"]' "$LAB_IMAGE_DIR/rootfs.tar" "$LAB_IMAGE" >/dev/null
}

# load_image_containerd: make $LAB_IMAGE and $LAB_PAUSE_IMAGE available in
# containerd's k8s.io namespace (what the CRI plugin uses); containerd must be
# running (start_containerd).
load_image_containerd() {
    ctr -n k8s.io images check "name==$LAB_IMAGE" 2>/dev/null | grep -q . && return 0
    note "ctr -n k8s.io images import ($LAB_IMAGE, $LAB_PAUSE_IMAGE)"
    ctr -n k8s.io images import --platform linux/amd64 "$LAB_IMAGE_DIR/oci-archive.tar" >/dev/null
}

# ---------------------------------------------------------------- the project

# install_hooks_dir [SRC]: a writable hooks dir (/run/lab/hooks.d) with the
# repo's hooks.d/*.json, each hook.path rewritten to the same-named binary in
# $LAB_BIN; podman uses it from now on (containers.conf.d drop-in). Prints the
# dir; also exported as LAB_HOOKS_DIR (for `podman --hooks-dir`).
install_hooks_dir() {
    local src="${1:-$LAB_REPO/hooks.d}" dst=/run/lab/hooks.d f bin
    [[ -d "$src" ]] || fail "no hooks directory at $src"
    # Start empty: a hook file an earlier scenario installed would run too.
    rm -rf "$dst"
    mkdir -p "$dst"
    for f in "$src"/*.json; do
        [[ -f "$f" ]] || fail "no hook JSON files in $src"
        bin="$LAB_BIN/$(basename "$(jq -r .hook.path "$f")")"
        [[ -x "$bin" ]] || fail "hook binary $bin (for $(basename "$f")) is missing: build the project first"
        jq --arg p "$bin" '.hook.path = $p' "$f" >"$dst/$(basename "$f")"
    done
    mkdir -p /etc/containers/containers.conf.d
    printf '[engine]\nhooks_dir = ["%s"]\n' "$dst" >/etc/containers/containers.conf.d/50-lab-hooks.conf
    on_exit "rm -f /etc/containers/containers.conf.d/50-lab-hooks.conf"
    export LAB_HOOKS_DIR="$dst"
    echo "$dst"
}

# require_binaries NAME...: fail clearly unless the project's binaries are there.
require_binaries() {
    local b
    for b in "$@"; do
        [[ -x "$LAB_BIN/$b" ]] || fail "$LAB_BIN/$b is missing: build the project (make build)"
    done
}

# ---------------------------------------------------------------- the cluster fixture

# cluster_node containerd|crio: have the cluster fixture's node run on that
# container runtime (restarts the kubelet and the runtime when it changes;
# the control plane stays). The scenario must declare "# lab: needs cluster".
cluster_node() {
    [[ -f /run/lab/cluster/admin.kubeconfig ]] || fail "no cluster: the scenario needs '# lab: needs cluster'"
    local rc=0
    timeout --kill-after=20 900 bash "$LAB_REPO/tests/lab/guest/fixtures/cluster.sh" node "$1" || rc=$?
    [[ $rc -eq 0 ]] || fail "the cluster's node did not come up on $1 (logs: cluster/*.log in the run directory)"
}

# cluster_restart_kubelet: the cluster's kubelet stopped and started again
# (pods and runtime stay), as an upgrade or a crash would.
cluster_restart_kubelet() {
    [[ -f /run/lab/cluster/admin.kubeconfig ]] || fail "no cluster: the scenario needs '# lab: needs cluster'"
    local rc=0
    timeout --kill-after=20 900 bash "$LAB_REPO/tests/lab/guest/fixtures/cluster.sh" restart-kubelet || rc=$?
    [[ $rc -eq 0 ]] || fail "the kubelet did not come back (logs: cluster/kubelet.log in the run directory)"
}

# assert_sign_verify NS POD: in the pod, as its own user, a TPM key is made,
# loaded and used to sign; the signature verifies, and not for another
# message.
assert_sign_verify() {
    local ns="$1" target="$2"
    assert_ok kubectl -n "$ns" exec "$target" -- sh -c '
        set -e; cd "$(mktemp -d)"
        tpm2_createprimary -Q -C o -G ecc -c primary.ctx
        tpm2_create -Q -C primary.ctx -G ecc -u key.pub -r key.priv
        tpm2_load -Q -C primary.ctx -u key.pub -r key.priv -c key.ctx
        echo "signed in a pod" >message
        tpm2_sign -Q -c key.ctx -g sha256 -o message.sig message
        tpm2_verifysignature -Q -c key.ctx -g sha256 -m message -s message.sig && echo SIGNATURE-VERIFIED
        echo "changed" >other
        if tpm2_verifysignature -Q -c key.ctx -g sha256 -m other -s message.sig 2>/dev/null; then
            echo CHANGED-MESSAGE-VERIFIED
        else
            echo CHANGED-MESSAGE-REJECTED
        fi'
    assert_contains "$LAB_OUTPUT" SIGNATURE-VERIFIED
    assert_contains "$LAB_OUTPUT" CHANGED-MESSAGE-REJECTED
}

# load_nri_plugin_image: the DaemonSets' image (oci-tpm-hook:0.1.0: the NRI
# plugin and the device plugin) in containerd's k8s.io namespace, built with
# podman from packaging/kubernetes/Containerfile. Its context is what the
# Containerfile expects of the repository (target/release/ with the
# binaries, the .dockerignore), made from the binaries in $LAB_BIN: the
# guest's copy of the repository has no target/. Nothing is pulled: the
# base is a small root made from the guest's own Debian files (busybox-static
# and the C library the binary links), passed as --build-arg BASE.
load_nri_plugin_image() {
    ctr -n k8s.io images check "name==$NRI_PLUGIN_IMAGE_FULL" 2>/dev/null | grep -q . && return 0
    require_binaries oci-tpm-hook oci-tpm-device-plugin oci-tpm-systemd
    local base=localhost/lab-plugin-base:latest root lib tool context
    if ! podman image exists "$base"; then
        root=$(mktemp -d /run/lab/plugin-base.XXXXXX)
        mkdir -p "$root/bin" "$root/tmp" "$root/etc"
        cp /bin/busybox "$root/bin/busybox"
        for tool in sh cp mv chmod mkdir ls cat rm; do ln -s busybox "$root/bin/$tool"; done
        # A static binary needs no library; a dynamic one gets the ones it links.
        # (One binary per ldd: given several, it prints each one's name.)
        for lib in $(for b in oci-tpm-hook oci-tpm-device-plugin oci-tpm-systemd; do ldd "$LAB_BIN/$b" 2>/dev/null || true; done \
                     | grep -o '/[^ ]*' | sort -u); do
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        done
        echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
        echo 'root:x:0:' >"$root/etc/group"
        tar -C "$root" -cf "$root.tar" .
        podman import --quiet --change 'ENV PATH=/bin:/usr/bin' "$root.tar" "$base" >/dev/null
        rm -rf "$root" "$root.tar"
    fi
    # The build context: what the Containerfile copies from a repository
    # after `make build` (the staged repository has no target/).
    context=$(mktemp -d /run/lab/plugin-context.XXXXXX)
    mkdir -p "$context/target/release"
    cp "$LAB_BIN/oci-tpm-hook" "$LAB_BIN/oci-tpm-device-plugin" "$LAB_BIN/oci-tpm-systemd" "$context/target/release/"
    cp "$LAB_REPO/.dockerignore" "$context/"
    run podman build --pull=never --build-arg "BASE=$base" \
        -f "$LAB_REPO/packaging/kubernetes/Containerfile" -t "$NRI_PLUGIN_IMAGE_FULL" "$context"
    rm -rf "$context"
    podman save --quiet --format docker-archive -o /run/lab/nri-plugin-image.tar "$NRI_PLUGIN_IMAGE_FULL"
    ctr -n k8s.io images import /run/lab/nri-plugin-image.tar >/dev/null
    rm -f /run/lab/nri-plugin-image.tar
    ctr -n k8s.io images check "name==$NRI_PLUGIN_IMAGE_FULL" | grep -q . \
        || fail "$NRI_PLUGIN_IMAGE_FULL is not in containerd after the import"
    note "NRI plugin image $NRI_PLUGIN_IMAGE_FULL imported into containerd (k8s.io)"
}
