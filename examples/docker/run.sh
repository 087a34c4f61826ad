#!/bin/sh
# docker: a container as user 1000 that uses the host's TPM, through the
# runtime wrapper (oci-tpm-hook configure docker registers it as "tpm").
# No --device and no --group-add: the wrapper puts the device, its cgroup
# rule, the tss GID and the TCTI variables into the container's spec.
set -eu
IMAGE=${IMAGE:-registry.example/licence-server:1}
exec docker run --rm --runtime tpm \
    --annotation oci-tpm-hook/device=tpmrm0 \
    --user 1000 ${DOCKER_RUN_FLAGS:-} \
    "$IMAGE" tpm2_getrandom --hex 16
