//! docker: `/etc/docker/daemon.json` gains the runtime `tpm` (the runc
//! wrapper `oci-tpm-runtime`), optionally as the default runtime, and
//! optionally the `cdi` feature. The file is edited as a JSON value in its
//! own key order and indentation; every other key stays as it was.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use serde_json::{Map, Value};

use super::{cannot_edit, installed, malformed, FileEdit, Plan, Target};
use crate::files::json_like;
use clap::Args;

pub const DEFAULT_CONFIG: &str = "/etc/docker/daemon.json";

/// What to put into daemon.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerEdit {
    pub runtime_name: String,
    pub runtime_path: String,
    pub set_as_default: bool,
    pub cdi: bool,
}

impl Default for DockerEdit {
    fn default() -> Self {
        Self {
            runtime_name: "tpm".into(),
            runtime_path: installed("oci-tpm-runtime").display().to_string(),
            set_as_default: false,
            cdi: false,
        }
    }
}

pub fn plan(args: &ConfigureDockerArgs) -> anyhow::Result<Plan> {
    let edit = DockerEdit {
        runtime_name: args.runtime_name.clone(),
        runtime_path: args.runtime_path.display().to_string(),
        set_as_default: args.set_as_default,
        cdi: args.cdi,
    };
    let target = Target::read(&args.config)?;
    let original = target.contents().unwrap_or_default().to_vec();
    let new = edit_daemon_json(&original, &edit).with_context(|| cannot_edit(&args.config))?;
    Ok(Plan {
        edits: vec![FileEdit::new(target, new)],
        then: "restart docker to apply it (e.g. systemctl restart docker); running containers \
               stop unless \"live-restore\" is on"
            .into(),
    })
}

/// daemon.json's bytes after the edit (the same bytes when nothing needs to
/// change). An empty or missing file counts as `{}`.
pub fn edit_daemon_json(original: &[u8], edit: &DockerEdit) -> anyhow::Result<Vec<u8>> {
    let mut doc: Value = if original.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(original).map_err(|e| malformed("JSON", "docker", e))?
    };
    let before = doc.clone();
    let root = doc.as_object_mut().ok_or_else(|| {
        anyhow!(
            "it holds {}, not a JSON object: fix it by hand",
            kind(&before)
        )
    })?;

    let runtimes = object_at(root, "runtimes")?;
    let entry = match runtimes.get_mut(&edit.runtime_name) {
        Some(Value::Object(o)) => o,
        Some(other) => bail!(
            "\"runtimes\".{:?} is {}, not an object: fix it by hand",
            edit.runtime_name,
            kind(other)
        ),
        None => {
            runtimes.insert(edit.runtime_name.clone(), Value::Object(Map::new()));
            runtimes
                .get_mut(&edit.runtime_name)
                .and_then(Value::as_object_mut)
                .expect("just inserted")
        }
    };
    entry.insert("path".into(), Value::String(edit.runtime_path.clone()));

    if edit.set_as_default {
        root.insert(
            "default-runtime".into(),
            Value::String(edit.runtime_name.clone()),
        );
    }
    if edit.cdi {
        object_at(root, "features")?.insert("cdi".into(), Value::Bool(true));
    }
    if doc == before && !original.iter().all(u8::is_ascii_whitespace) {
        return Ok(original.to_vec());
    }
    json_like(&doc, original)
}

/// The object under `key`, created when missing; an error for another type.
fn object_at<'a>(
    root: &'a mut Map<String, Value>,
    key: &str,
) -> anyhow::Result<&'a mut Map<String, Value>> {
    let v = root
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    let shown = kind(v);
    v.as_object_mut()
        .ok_or_else(|| anyhow!("{key:?} is {shown}, not an object: fix it by hand"))
}

fn kind(v: &Value) -> &'static str {
    crate::oci::spec_edit::kind(v)
}

#[derive(Args, Debug)]
pub struct ConfigureDockerArgs {
    /// docker's daemon configuration
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The runtime's name (docker run --runtime NAME)
    #[arg(long, value_name = "NAME", default_value = "tpm", value_parser = crate::text::non_empty)]
    pub runtime_name: String,
    /// The runtime wrapper's path
    #[arg(long, value_name = "PATH", default_value = "/usr/bin/oci-tpm-runtime")]
    pub runtime_path: PathBuf,
    /// Make it docker's default runtime: the annotation alone gives a container its TPM
    #[arg(long)]
    pub set_as_default: bool,
    /// Turn on docker's CDI feature (docker 25 or later): docker run --device oci-tpm-hook.dev/tpm=tpmrm0
    #[arg(long)]
    pub cdi: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(original: &str, e: &DockerEdit) -> anyhow::Result<String> {
        edit_daemon_json(original.as_bytes(), e).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn a_missing_or_empty_file_gets_the_runtime() {
        for original in ["", "\n"] {
            let out = edit(original, &DockerEdit::default()).unwrap();
            assert_eq!(
                out,
                "{\n  \"runtimes\": {\n    \"tpm\": {\n      \"path\": \"/usr/bin/oci-tpm-runtime\"\n    }\n  }\n}\n"
            );
        }
    }

    #[test]
    fn every_other_key_stays_in_its_order_and_style() {
        let original = "{\n\t\"log-driver\": \"journald\",\n\t\"runtimes\": {\n\t\t\"crun\": {\"path\": \"/usr/bin/crun\", \"runtimeArgs\": [\"--debug\"]}\n\t},\n\t\"storage-driver\": \"overlay2\",\n\t\"features\": {\"buildkit\": true}\n}\n";
        let e = DockerEdit {
            set_as_default: true,
            cdi: true,
            ..Default::default()
        };
        let out = edit(original, &e).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "log-driver",
                "runtimes",
                "storage-driver",
                "features",
                "default-runtime"
            ]
        );
        assert_eq!(v["runtimes"]["crun"]["runtimeArgs"][0], "--debug");
        assert_eq!(v["runtimes"]["tpm"]["path"], "/usr/bin/oci-tpm-runtime");
        assert_eq!(
            v["features"],
            serde_json::json!({"buildkit": true, "cdi": true})
        );
        assert_eq!(v["default-runtime"], "tpm");
        assert!(out.starts_with("{\n\t\"log-driver\""), "tabs kept: {out}");
        assert!(out.ends_with("}\n"));
    }

    #[test]
    fn running_it_again_changes_nothing() {
        let e = DockerEdit {
            cdi: true,
            ..Default::default()
        };
        let once = edit("{\"debug\":true}", &e).unwrap();
        let twice = edit(&once, &e).unwrap();
        assert_eq!(once, twice);
        // An already configured file written in another style is kept byte for byte.
        let compact = r#"{"runtimes":{"tpm":{"path":"/usr/bin/oci-tpm-runtime"}}}"#;
        assert_eq!(edit(compact, &DockerEdit::default()).unwrap(), compact);
    }

    #[test]
    fn an_existing_entry_keeps_its_other_keys_and_gets_our_path() {
        let out = edit(
            r#"{"runtimes": {"tpm": {"path": "/opt/old", "runtimeArgs": ["--x"]}}}"#,
            &DockerEdit::default(),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["runtimes"]["tpm"]["path"], "/usr/bin/oci-tpm-runtime");
        assert_eq!(v["runtimes"]["tpm"]["runtimeArgs"][0], "--x");
    }

    #[test]
    fn malformed_files_are_refused() {
        for bad in [
            "{",
            "{\"a\": 1,}",
            "[]",
            "\"x\"",
            r#"{"runtimes": []}"#,
            r#"{"runtimes": {"tpm": "oci-tpm-runtime"}}"#,
        ] {
            let err = format!("{:#}", edit(bad, &DockerEdit::default()).unwrap_err());
            assert!(
                err.contains("not valid JSON")
                    || err.contains("not an object")
                    || err.contains("not a JSON object"),
                "{bad}: {err}"
            );
        }
        let err = format!(
            "{:#}",
            edit(
                r#"{"features": true}"#,
                &DockerEdit {
                    cdi: true,
                    ..Default::default()
                }
            )
            .unwrap_err()
        );
        assert!(err.contains("\"features\""), "{err}");
    }
}
