#!/usr/bin/env bash
# podman-crun: podman with crun, hooks.d + annotation, no --device (guest/podman-hook.sh).
# lab: cost 20 (seconds, usual with two guests side by side; to split the scenarios between them)
set -euo pipefail
RUNTIME=crun
source "$LAB_REPO/tests/lab/guest/podman-hook.sh"
