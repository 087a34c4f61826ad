#!/bin/sh
# podman: a container as user 1000 that uses the host's TPM.
# Needs the hooks.d file (the package installs it) and the tss GID as an
# extra group: the node in the container has the host's tss group, mode 0660.
set -eu
IMAGE=${IMAGE:-registry.example/licence-server:1}
TSS_GID=$(getent group tss | cut -d: -f3)
exec podman run --rm \
    --annotation oci-tpm-hook/device=tpmrm0 \
    --user 1000 --group-add "$TSS_GID" \
    "$IMAGE" tpm2_getrandom --hex 16
