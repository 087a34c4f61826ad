//! Node labels through Node Feature Discovery: a local feature file in
//! NFD's `features.d` directory, which NFD's `local` source turns into node
//! labels under `feature.node.kubernetes.io/` (lines `name=value`, `#`
//! starts a comment). Written by the device plugin from what it advertises
//! and rewritten whenever that changes, so that `nodeSelector` and node
//! affinity find the nodes with a working TPM without labelling by hand:
//!
//! ```text
//! tpm=true                          a TPM 2.0 that passed its self-test
//! tpm.version=2.0                   its family
//! tpm.manufacturer=IBM              its manufacturer (TPM_PT_MANUFACTURER)
//! tpm.firmware=8217.4131.22.13057   its firmware version
//! tpm.count=1                       how many healthy TPMs the node offers
//! ```
//!
//! With no healthy TPM the file says `tpm=false` and nothing else.

use std::path::Path;

use anyhow::Context;

use super::inventory::Inventory;
use crate::files::PlainFile;

/// NFD's directory for local feature files.
pub const DEFAULT_DIR: &str = "/etc/kubernetes/node-feature-discovery/features.d";
/// The plugin's file in it.
pub const FILE_NAME: &str = "oci-tpm-hook";

/// The file's text for what `inventory` holds now: the first healthy TPM
/// describes the node.
pub fn features(inventory: &Inventory) -> String {
    let mut text = String::from(
        "# Node Feature Discovery local features of this node's TPM, written by\n\
         # oci-tpm-hook device-plugin and rewritten when its TPMs change.\n",
    );
    let healthy: Vec<_> = inventory
        .tpms()
        .filter(|(_, t)| t.health.is_healthy())
        .collect();
    let Some(info) = healthy.first().and_then(|(_, t)| t.info.as_ref()) else {
        text.push_str("tpm=false\n");
        return text;
    };
    text.push_str("tpm=true\n");
    for (key, value) in [
        ("version", info.family.as_str()),
        ("manufacturer", info.manufacturer.as_str()),
        ("firmware", info.firmware.as_str()),
    ] {
        if let Some(v) = label_value(value) {
            text.push_str(&format!("tpm.{key}={v}\n"));
        }
    }
    text.push_str(&format!("tpm.count={}\n", healthy.len()));
    text
}

/// A value as a Kubernetes label value allows it: at most 63 characters of
/// `A-Za-z0-9-_.`, starting and ending with a letter or digit. Other
/// characters become `_`; `None` if nothing is left.
pub fn label_value(raw: &str) -> Option<String> {
    let mapped: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    let v = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    (!v.is_empty()).then(|| v.to_owned())
}

/// Writes the feature file in `dir` when its text differs from `text`;
/// whether it wrote. The write is atomic ([`PlainFile`]: a temporary file
/// renamed over it), so NFD never reads half a file.
pub fn write(dir: &Path, text: &str) -> anyhow::Result<bool> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create Node Feature Discovery's directory {}",
            dir.display()
        )
    })?;
    let file = PlainFile::read(&dir.join(FILE_NAME))?;
    if file.contents() == Some(text.as_bytes()) {
        return Ok(false);
    }
    file.write(text.as_bytes(), 0o644)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::device_plugin::health::TpmInfo;
    use crate::frontend::device_plugin::inventory::tests_support::inventory_with;

    #[test]
    fn a_healthy_tpm_is_described() {
        let info = TpmInfo {
            family: "2.0".into(),
            manufacturer: "STM ".into(),
            firmware: "73.4.17568.4452".into(),
        };
        let inv = inventory_with(&[("tpmrm0", Ok(info.clone())), ("tpmrm1", Ok(info))]);
        assert_eq!(
            features(&inv)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            [
                "tpm=true",
                "tpm.version=2.0",
                "tpm.manufacturer=STM",
                "tpm.firmware=73.4.17568.4452",
                "tpm.count=2"
            ]
        );
    }

    #[test]
    fn no_healthy_tpm_is_false() {
        let inv = inventory_with(&[("tpmrm0", Err("no answer".into()))]);
        let text = features(&inv);
        assert!(text.ends_with("\ntpm=false\n"), "{text}");
        assert!(!text.contains("tpm.version"), "{text}");
        assert!(features(&inventory_with(&[])).ends_with("tpm=false\n"));
    }

    #[test]
    fn label_values() {
        assert_eq!(label_value("IBM").as_deref(), Some("IBM"));
        assert_eq!(label_value(" STM ").as_deref(), Some("STM"));
        assert_eq!(label_value("a b/c").as_deref(), Some("a_b_c"));
        assert_eq!(label_value("..x..").as_deref(), Some("x"));
        assert_eq!(label_value("\u{0}\u{0}"), None);
        assert_eq!(label_value(&"9".repeat(80)).unwrap().len(), 63);
    }

    #[test]
    fn written_atomically_and_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("features.d");
        assert!(write(&sub, "tpm=true\n").unwrap());
        assert_eq!(
            std::fs::read_to_string(sub.join(FILE_NAME)).unwrap(),
            "tpm=true\n"
        );
        assert!(!write(&sub, "tpm=true\n").unwrap());
        assert!(write(&sub, "tpm=false\n").unwrap());
        assert_eq!(
            std::fs::read_to_string(sub.join(FILE_NAME)).unwrap(),
            "tpm=false\n"
        );
        let names: Vec<_> = std::fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME], "no temporary file left");
    }
}
