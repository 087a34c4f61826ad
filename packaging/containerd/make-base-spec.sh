#!/bin/sh
# Print containerd's default OCI spec with the oci-tpm-hook createRuntime hook
# added, for containerd's base_runtime_spec (see fail-closed.toml):
#
#   make-base-spec.sh > /etc/containerd/oci-tpm-hook-base-spec.json
#
# Needs ctr (ships with containerd) and jq. HOOK overrides the hook's path.
set -eu
hook="${HOOK:-/usr/bin/oci-tpm-hook}"
[ -x "$hook" ] || { echo "make-base-spec.sh: $hook is not an executable; set HOOK=" >&2; exit 1; }
ctr oci spec | jq --arg hook "$hook" \
    '.hooks.createRuntime = ((.hooks.createRuntime // []) | map(select(.path != $hook)))
        + [{"path": $hook, "args": ["oci-tpm-hook"], "timeout": 15}]'
