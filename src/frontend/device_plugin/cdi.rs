//! The CDI spec that the device plugin's `Allocate` names: one device
//! `oci-tpm-hook.dev/kubelet=tpmrmN` per advertised TPM, so that the container
//! runtime (containerd with `enable_cdi`, CRI-O) gives the container's
//! process the node's group as an additional GID — the one thing neither
//! the kubelet's device spec nor the NRI API can add — besides the node
//! (mode 0660, the host's `tss` GID) and the TCTI environment.
//!
//! The self-test is not in the spec: `Allocate`'s annotations make the hook
//! (CRI-O's hooks directory) or the NRI plugin run it, judged by the policy
//! with the pod's namespace. The devices are `cdi generate`'s
//! ([`crate::frontend::cdi::device`]) without the hook.

use std::path::Path;

use serde_json::Value;

use super::inventory::Inventory;
use crate::core::host::container_path;
use crate::frontend::cdi::{device, remove_spec, spec as cdi_spec, write_spec};

/// The CDI kind: device names are `oci-tpm-hook.dev/kubelet=tpmrm0`. Not
/// `cdi generate`'s kind: its devices carry the hook, and a node may have
/// both specs (CDI refuses a device two specs define).
pub const KIND: &str = "oci-tpm-hook.dev/kubelet";
/// CDI's directory for specs made at run time.
pub const DEFAULT_DIR: &str = "/var/run/cdi";
pub const FILE_NAME: &str = "oci-tpm-hook-device-plugin.json";

/// The spec of every TPM in `inventory`, healthy or not (health decides
/// what the kubelet hands out, not what a name means); `None` without one.
/// Without the hook: `Allocate`'s annotations bring it.
pub fn spec(inventory: &Inventory) -> Option<Value> {
    let devices = inventory
        .tpms()
        // The host's path, whatever this process sees (--host-root).
        .map(|(name, t)| device(&t.grant, &container_path(name), None))
        .collect();
    cdi_spec(KIND, devices)
}

/// Writes `spec` as `dir/oci-tpm-hook-device-plugin.json` when it differs
/// from what is there (atomically), or removes the file when there is no
/// spec. Whether anything changed.
pub fn write(dir: &Path, spec: Option<&Value>) -> anyhow::Result<bool> {
    let path = dir.join(FILE_NAME);
    match spec {
        Some(spec) => write_spec(&path, spec),
        None => remove_spec(&path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::device_plugin::inventory::tests_support::inventory_with;
    use serde_json::json;

    #[test]
    fn one_device_per_tpm_with_the_group_as_additional_gid() {
        let inv = inventory_with(&[
            ("tpmrm0", Err("not yet".into())),
            ("tpmrm1", Err("x".into())),
        ]);
        let spec = spec(&inv).unwrap();
        assert_eq!(spec["cdiVersion"], "0.7.0");
        assert_eq!(spec["kind"], KIND);
        let devices = spec["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 2);
        let d = &devices[1];
        assert_eq!(d["name"], "tpmrm1");
        let edits = &d["containerEdits"];
        assert_eq!(edits["additionalGids"], json!([102]));
        assert_eq!(
            edits["env"],
            json!([
                "TPM2TOOLS_TCTI=device:/dev/tpmrm1",
                "TSS2_TCTI=device:/dev/tpmrm1"
            ])
        );
        let node = &edits["deviceNodes"][0];
        assert_eq!(node["path"], "/dev/tpmrm1");
        assert_eq!(
            node["hostPath"], "/dev/tpmrm1",
            "the host's path, not the fake root's"
        );
        assert_eq!(
            (node["fileMode"].as_u64(), node["gid"].as_u64()),
            (Some(0o660), Some(102))
        );
        assert!(
            node.get("major").is_none(),
            "the runtime reads the numbers from the host"
        );
        assert!(super::spec(&inventory_with(&[])).is_none());
    }

    #[test]
    fn process_gid_access_names_no_group() {
        let mut inv = inventory_with(&[("tpmrm0", Err("x".into()))]);
        let mut grant = inv.get("tpmrm0").unwrap().grant.clone();
        grant.access = crate::core::policy::NodeAccess::ProcessGid;
        inv.granted(grant);
        let spec = spec(&inv).unwrap();
        let edits = &spec["devices"][0]["containerEdits"];
        assert!(edits.get("additionalGids").is_none());
        assert!(edits["deviceNodes"][0].get("gid").is_none());
    }

    #[test]
    fn written_when_changed_removed_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let inv = inventory_with(&[("tpmrm0", Err("x".into()))]);
        let s = spec(&inv);
        assert!(write(dir.path(), s.as_ref()).unwrap());
        assert!(!write(dir.path(), s.as_ref()).unwrap());
        let back: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap())
                .unwrap();
        assert_eq!(Some(back), s);
        assert!(write(dir.path(), None).unwrap());
        assert!(!dir.path().join(FILE_NAME).exists());
        assert!(!write(dir.path(), None).unwrap());
    }
}
