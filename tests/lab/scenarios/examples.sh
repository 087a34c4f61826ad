#!/usr/bin/env bash
# examples: every podman and docker file in examples/ runs as a user would run
# it, with the lab's image: podman/run.sh, docker/run.sh, the compose service,
# and an image built from the Dockerfile (its health check reports healthy).
# (The Kubernetes examples are applied by the scenarios `kubernetes` and `kubernetes-crio`.)
# lab: cost 125 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
source "$LAB_LIB"
source "$LAB_REPO/tests/lab/guest/hook.sh"

require_binaries oci-tpm-hook oci-tpm-runtime
install_hooks_dir >/dev/null
install_policy "$(printf '[runtime]\npath = "runc"\n[hook]\npath = "%s"' "$HOOK_BIN")"
EX="$LAB_REPO/examples"
export IMAGE="$LAB_IMAGE"

# random16 OUTPUT: the output ends with 16 random bytes in hex.
random16() {
    local r
    r=$(tail -n1 <<<"$1")
    [[ "$r" =~ ^[0-9a-f]{32}$ ]] || fail "expected 32 hex digits from tpm2_getrandom --hex 16, got '$r'"
    note "random bytes: $r"
}

step "examples/podman/run.sh"
load_image_podman
mark_hook_log
assert_ok sh "$EX/podman/run.sh"
random16 "$LAB_OUTPUT"
assert_contains "$(hook_log_new)" "self_test_as=uid=1000" "the hook proved it for user 1000"

step "docker with the runtime wrapper registered as \"tpm\""
start_dockerd "$(jq -nc --arg p "$LAB_BIN/oci-tpm-runtime" '{runtimes: {tpm: {path: $p}}}')"
load_image_docker

step "examples/docker/run.sh"
mark_hook_log
export DOCKER_RUN_FLAGS="--network none"   # the guest has no bridge
assert_ok sh "$EX/docker/run.sh"
random16 "$LAB_OUTPUT"
assert_contains "$(hook_log_new)" "self_test_as=uid=1000" "the hook proved it for user 1000"

step "examples/docker/compose.yaml"
command -v docker-compose >/dev/null || fail "docker-compose is not in the guest root"
mark_hook_log
export NETWORK_MODE=none   # the guest has no bridge
on_exit "docker-compose -f $EX/docker/compose.yaml -p tpmexample down >/dev/null 2>&1"
assert_ok docker-compose -f "$EX/docker/compose.yaml" -p tpmexample up --abort-on-container-exit
assert_contains "$LAB_OUTPUT" "exited with code 0"
assert_contains "$(hook_log_new)" "self_test_as=uid=1000" "the hook proved it for the service's user"
spec_annotations=$(docker inspect tpmexample-licence-server-1 --format '{{json .HostConfig.Annotations}}')
assert_contains "$spec_annotations" "oci-tpm-hook/device" "compose passed the annotation"

step "examples/docker/Dockerfile: built on the lab's image, healthy with its TPM"
assert_ok docker build --network none --build-arg "BASE=$LAB_IMAGE" -t localhost/licence-server:example \
    -f "$EX/docker/Dockerfile" "$EX/docker"
docker rm -f licence >/dev/null 2>&1 || true
assert_ok docker run -d --name licence --network none --runtime tpm \
    --annotation oci-tpm-hook/device=tpmrm0 localhost/licence-server:example
on_exit "docker rm -f licence >/dev/null 2>&1"
wait_for 180 "the health check to report healthy" \
    bash -c '[ "$(docker inspect licence --format "{{.State.Health.Status}}")" = healthy ]'
assert_ok docker inspect licence --format '{{.Config.User}} {{.State.Health.Status}}'
assert_eq "1000 healthy" "$LAB_OUTPUT" "user and health"
random16 "$(docker logs licence 2>&1)"
