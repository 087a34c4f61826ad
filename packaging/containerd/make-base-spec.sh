#!/bin/sh
# Print containerd's default OCI spec with the oci-tpm-hook createRuntime hook
# added, for containerd's base_runtime_spec (see fail-closed.toml):
#
#   make-base-spec.sh > /etc/containerd/oci-tpm-hook-base-spec.json
#
# HOOK overrides the hook's path (default /usr/bin/oci-tpm-hook); CONFIG names
# a policy file other than /etc/oci-tpm-hook/config.toml for the hook to read.
# Needs ctr (ships with containerd) and jq.
set -eu
hook="${HOOK:-/usr/bin/oci-tpm-hook}"
[ -x "$hook" ] || { echo "make-base-spec.sh: $hook is not an executable; set HOOK=" >&2; exit 1; }
ctr oci spec | jq --arg hook "$hook" --arg config "${CONFIG:-}" '
    ({"path": $hook, "args": ["oci-tpm-hook"], "timeout": 15}
     + (if $config == "" then {} else {"env": ["OCI_TPM_HOOK_CONFIG=" + $config]} end)) as $ours
    | .hooks.createRuntime = (((.hooks.createRuntime // []) | map(select(.path != $hook))) + [$ours])'
