#!/usr/bin/env bash
# podman-runc: podman with runc, hooks.d + annotation, no --device (guest/podman-hook.sh).
# lab: cost 30 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
RUNTIME=runc
source "$LAB_REPO/tests/lab/guest/podman-hook.sh"
