#!/usr/bin/env bash
# podman-runc: podman with runc, hooks.d + annotation, no --device (guest/podman-hook.sh).
# lab: cost 150 (seconds, usual; to split the scenarios between guests)
set -euo pipefail
RUNTIME=runc
source "$LAB_REPO/tests/lab/guest/podman-hook.sh"
