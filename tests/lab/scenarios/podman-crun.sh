#!/usr/bin/env bash
# podman-crun: podman with crun, hooks.d + annotation, no --device (guest/podman-hook.sh).
# lab: cost 150 (seconds, usual; to split the scenarios between guests)
set -euo pipefail
RUNTIME=crun
source "$LAB_REPO/tests/lab/guest/podman-hook.sh"
