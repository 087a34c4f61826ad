#!/usr/bin/env bash
# podman-runc: podman with runc, hooks.d + annotation, no --device (guest/podman-hook.sh).
set -euo pipefail
RUNTIME=runc
source "$LAB_REPO/tests/lab/guest/podman-hook.sh"
