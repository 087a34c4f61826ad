//! The `exec` part of the wrapper: a process started in a running container
//! (`docker exec`, a Dockerfile HEALTHCHECK) gets the TPM node's group too.
//!
//! docker builds an exec's process from the container's configuration
//! (`--user`, `--group-add`), not from the config.json the wrapper edited at
//! create time, so without this a non-root health check that talks to the
//! TPM gets EACCES while the container's main process works. The wrapper
//! asks the real runtime where the container's bundle is (`state`), and when
//! that spec holds a TPM device the wrapper granted, adds the device's group
//! to the exec process's additional GIDs, as it did for the main process.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::core::request::mentions_us;
use crate::oci::bundle::BundleFile;
use crate::oci::runtime_cli::Invocation;

/// The TPM nodes' groups that `process` (an OCI process object) lacks, given
/// the container's spec: the GIDs of the spec's `/dev/tpm*` devices, when
/// the spec asks for a TPM with our annotations and the process is not root
/// (root opens the node by its owner). Pure.
pub fn missing_groups(spec: &Value, process: &Value) -> Vec<u32> {
    let asks = crate::oci::state::annotations(spec)
        .map(|a| mentions_us(&a))
        .unwrap_or(false);
    if !asks {
        return Vec::new();
    }
    let user = &process["user"];
    if user["uid"].as_u64().unwrap_or(0) == 0 {
        return Vec::new();
    }
    let mut has: Vec<u64> = user["additionalGids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    has.extend(user["gid"].as_u64());
    let mut missing = Vec::new();
    for dev in spec["linux"]["devices"].as_array().into_iter().flatten() {
        let is_tpm = dev["path"]
            .as_str()
            .and_then(|p| p.strip_prefix("/dev/tpm"))
            .is_some();
        let Some(gid) = dev["gid"].as_u64().filter(|_| is_tpm) else {
            continue;
        };
        if let Ok(gid) = u32::try_from(gid) {
            if !has.contains(&u64::from(gid)) && !missing.contains(&gid) {
                missing.push(gid);
            }
        }
    }
    missing
}

/// Adds `gids` to the process's `user.additionalGids`. Pure.
pub fn add_groups(process: &mut Value, gids: &[u32]) -> anyhow::Result<()> {
    let Some(user) = process.get_mut("user").and_then(Value::as_object_mut) else {
        bail!("the process has no user object");
    };
    let list = user
        .entry("additionalGids")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(list) = list.as_array_mut() else {
        bail!("the process's additionalGids is not a list");
    };
    list.extend(gids.iter().map(|g| Value::from(*g)));
    Ok(())
}

/// The container's bundle directory, from the real runtime's `state`.
fn bundle_of(runtime: &Path, inv: &Invocation, id: &str) -> anyhow::Result<String> {
    let out = Command::new(runtime)
        .args(&inv.global_args)
        .arg("state")
        .arg(id)
        .output()
        .with_context(|| format!("cannot run {} state {id}", runtime.display()))?;
    if !out.status.success() {
        bail!(
            "{} state {id} failed: {}",
            runtime.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let state: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{} state {id} did not print JSON", runtime.display()))?;
    match state["bundle"].as_str() {
        Some(b) if !b.is_empty() => Ok(b.to_owned()),
        _ => bail!("{} state {id} names no bundle", runtime.display()),
    }
}

/// The `exec` part: when the container has a TPM from us and the process
/// lacks its group, add it to the process file. Returns the GIDs added.
pub fn prepare_exec(runtime: &Path, inv: &Invocation) -> anyhow::Result<Vec<u32>> {
    let (Some(process_path), Some(id)) = (&inv.process, &inv.container_id) else {
        return Ok(Vec::new());
    };
    let bundle = bundle_of(runtime, inv, id)?;
    let config = BundleFile::read_if_asked(&Path::new(&bundle).join("config.json"))
        .with_context(|| format!("container {id}: cannot read its spec"))?;
    let Some(config) = config else {
        return Ok(Vec::new());
    };
    let shown = process_path.display();
    let bytes = std::fs::read(process_path).with_context(|| format!("cannot read {shown}"))?;
    let mut process: Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{shown} is not valid JSON"))?;
    let missing = missing_groups(&config.spec.json, &process);
    if missing.is_empty() {
        return Ok(missing);
    }
    add_groups(&mut process, &missing).with_context(|| format!("cannot edit {shown}"))?;
    std::fs::write(process_path, serde_json::to_vec(&process)?)
        .with_context(|| format!("cannot write {shown}"))?;
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(annotations: Value, devices: Value) -> Value {
        json!({"annotations": annotations, "linux": {"devices": devices}})
    }

    fn tpm_spec() -> Value {
        spec(
            json!({"oci-tpm-hook/device": "tpmrm0"}),
            json!([
                {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "gid": 7},
                {"path": "/dev/tpmrm0", "type": "c", "major": 253, "minor": 65536, "gid": 103}
            ]),
        )
    }

    #[test]
    fn a_non_root_exec_gets_the_tpm_group() {
        let process = json!({"user": {"uid": 1000, "gid": 1000}, "args": ["sh"]});
        assert_eq!(missing_groups(&tpm_spec(), &process), vec![103]);
    }

    #[test]
    fn nothing_when_it_has_the_group_is_root_or_nothing_was_asked() {
        let has = json!({"user": {"uid": 1000, "gid": 1000, "additionalGids": [103]}});
        assert!(missing_groups(&tpm_spec(), &has).is_empty());
        let primary = json!({"user": {"uid": 1000, "gid": 103}});
        assert!(missing_groups(&tpm_spec(), &primary).is_empty());
        let root = json!({"user": {"uid": 0, "gid": 0}});
        assert!(missing_groups(&tpm_spec(), &root).is_empty());
        let other = spec(
            json!({"org.example/x": "1"}),
            json!([{"path": "/dev/tpmrm0", "gid": 103}]),
        );
        let user = json!({"user": {"uid": 1000, "gid": 1000}});
        assert!(missing_groups(&other, &user).is_empty());
        assert!(missing_groups(&json!({}), &user).is_empty());
    }

    #[test]
    fn groups_are_added_to_the_list_or_a_new_one() {
        let mut p = json!({"user": {"uid": 1000, "gid": 1000, "additionalGids": [5]}});
        add_groups(&mut p, &[103]).unwrap();
        assert_eq!(p["user"]["additionalGids"], json!([5, 103]));
        let mut p = json!({"user": {"uid": 1000, "gid": 1000}});
        add_groups(&mut p, &[103]).unwrap();
        assert_eq!(p["user"]["additionalGids"], json!([103]));
        let mut bad = json!({"user": {"uid": 1, "additionalGids": "x"}});
        assert!(add_groups(&mut bad, &[1]).is_err());
        assert!(add_groups(&mut json!({}), &[1]).is_err());
    }
}
