//! What the runtime tells a hook on stdin: the OCI state.
//!
//! Read leniently as JSON values: runtimes differ in the state's
//! `status` ("creating" for runc, "created" for crun) and extra fields (crun
//! adds "root"), and a hook must not fail a container over a field it does
//! not use. The fields it does use are checked strictly.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

/// The parts of the OCI state a hook needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub id: String,
    pub pid: i32,
    pub bundle: PathBuf,
    pub annotations: BTreeMap<String, String>,
}

/// The state is small; anything bigger than this is not a state.
const MAX_STATE_BYTES: usize = 1 << 20;

impl ContainerState {
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        if bytes.len() > MAX_STATE_BYTES {
            bail!(
                "OCI state on stdin is {} bytes; refusing more than {MAX_STATE_BYTES}",
                bytes.len()
            );
        }
        let v: Value = serde_json::from_slice(bytes).context("OCI state on stdin is not JSON")?;
        let obj = v
            .as_object()
            .ok_or_else(|| anyhow!("OCI state on stdin is not a JSON object"))?;
        let id = obj
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow!("OCI state has no container \"id\""))?
            .to_owned();
        let pid = obj
            .get("pid")
            .and_then(Value::as_i64)
            .filter(|p| *p > 0 && *p <= i64::from(i32::MAX))
            .ok_or_else(|| anyhow!("OCI state of container {id} has no valid \"pid\" (is this hook registered for a stage before the container process exists?)"))?
            as i32;
        let bundle = obj
            .get("bundle")
            .and_then(Value::as_str)
            .filter(|s| s.starts_with('/'))
            .ok_or_else(|| anyhow!("OCI state of container {id} has no absolute \"bundle\" path"))?
            .into();
        let annotations = annotations(&v)
            .with_context(|| format!("OCI state of container {id}: bad \"annotations\""))?;
        Ok(Self {
            id,
            pid,
            bundle,
            annotations,
        })
    }
}

/// The `annotations` of an OCI document (the state or config.json): absent
/// or null means none; anything but an object of strings is an error (the
/// OCI spec says `map[string]string`).
pub fn annotations(doc: &Value) -> anyhow::Result<BTreeMap<String, String>> {
    annotations_value(doc.get("annotations"))
}

/// The same check for the `annotations` value itself (`None`: absent).
pub fn annotations_value(value: Option<&Value>) -> anyhow::Result<BTreeMap<String, String>> {
    match value {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => bail!("/annotations/{k} is {other}, not a string"),
            })
            .collect(),
        Some(other) => bail!("/annotations is {other}, not an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn annotations_shape() {
        assert!(annotations(&json!({})).unwrap().is_empty());
        let a = annotations(&json!({"annotations": {"oci-tpm-hook/device": "tpmrm0"}})).unwrap();
        assert_eq!(a["oci-tpm-hook/device"], "tpmrm0");
        let err = annotations(&json!({"annotations": {"k": 1}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/annotations/k"), "{err}");
        assert!(annotations(&json!({"annotations": []})).is_err());
    }

    #[test]
    fn runc_and_crun_states() {
        let runc = br#"{"ociVersion":"1.0.2","id":"abc","status":"creating","pid":42,"bundle":"/run/b","annotations":{"oci-tpm-hook/device":"tpmrm0"}}"#;
        let s = ContainerState::parse(runc).unwrap();
        assert_eq!((s.id.as_str(), s.pid), ("abc", 42));
        assert_eq!(s.annotations["oci-tpm-hook/device"], "tpmrm0");
        let crun = br#"{"ociVersion":"1.0.0","id":"x","status":"created","pid":7,"bundle":"/b","root":"/b/rootfs"}"#;
        let s = ContainerState::parse(crun).unwrap();
        assert!(s.annotations.is_empty());
    }

    #[test]
    fn malformed_states() {
        for bad in [
            &b""[..],
            b"[]",
            b"{",
            br#"{"pid":1,"bundle":"/b"}"#,
            br#"{"id":"a","bundle":"/b"}"#,
            br#"{"id":"a","pid":0,"bundle":"/b"}"#,
            br#"{"id":"a","pid":99999999999,"bundle":"/b"}"#,
            br#"{"id":"a","pid":"1","bundle":"/b"}"#,
            br#"{"id":"a","pid":1,"bundle":"relative"}"#,
            br#"{"id":"a","pid":1,"bundle":"/b","annotations":{"k":1}}"#,
            br#"{"id":"a","pid":1,"bundle":"/b","annotations":[]}"#,
        ] {
            assert!(
                ContainerState::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(ContainerState::parse(&vec![b' '; MAX_STATE_BYTES + 1]).is_err());
    }
}
