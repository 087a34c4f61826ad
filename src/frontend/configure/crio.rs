//! CRI-O: a drop-in in `/etc/crio/crio.conf.d/` (CRI-O reads every file
//! there after crio.conf, in name order, later keys winning) that turns
//! NRI on for the `oci-tpm-hook nri` plugin, and with `--hooks-dir` names
//! the hooks directories, so the packaged hooks.d file is read whatever
//! crio.conf says.

use std::path::PathBuf;

use anyhow::{bail, Context};
use toml_edit::DocumentMut;

use super::{cannot_edit, malformed, FileEdit, Plan, Target};
use clap::Args;

pub const DEFAULT_DROP_IN_DIR: &str = "/etc/crio/crio.conf.d";
pub const DROP_IN_NAME: &str = "50-oci-tpm-hook.conf";

/// The hooks directories podman and CRI-O know, the one that overrides
/// last: the package installs into the first, an administrator's same-named
/// file in the second wins.
pub const HOOKS_DIRS: [&str; 2] = [
    "/usr/share/containers/oci/hooks.d",
    "/etc/containers/oci/hooks.d",
];

/// The drop-in's text.
pub fn drop_in(nri: bool, hooks_dir: bool) -> anyhow::Result<String> {
    if !nri && !hooks_dir {
        bail!("nothing to configure: --no-nri without --hooks-dir");
    }
    let mut out = String::from(
        "# Written by `oci-tpm-hook configure crio`, for containers that ask for the\n\
         # host's TPM (the oci-tpm-hook/device annotation).\n",
    );
    if hooks_dir {
        let dirs: Vec<String> = HOOKS_DIRS.iter().map(|d| format!("\"{d}\"")).collect();
        out.push_str(&format!(
            "\n[crio.runtime]\n\
             # The hooks.d directories; the oci-tpm-hook hook is in the first.\n\
             hooks_dir = [{}]\n",
            dirs.join(", ")
        ));
    }
    if nri {
        out.push_str(
            "\n[crio.nri]\n\
             # For the oci-tpm-hook NRI plugin (oci-tpm-nri.service or the DaemonSet).\n\
             enable_nri = true\n",
        );
    }
    Ok(out)
}

pub fn plan(args: &ConfigureCrioArgs) -> anyhow::Result<Plan> {
    let path = args.drop_in_dir.join(DROP_IN_NAME);
    let new = drop_in(!args.no_nri, args.hooks_dir)?;
    let target = Target::read(&path)?;
    check_existing(&target).with_context(|| cannot_edit(&path))?;
    Ok(Plan {
        edits: vec![FileEdit::new(target, new.into_bytes())],
        then:
            "restart CRI-O to apply it (e.g. systemctl restart crio); its containers keep running"
                .into(),
    })
}

/// The drop-in is ours and is rewritten, but one that is not TOML is
/// refused rather than replaced: someone edited it by hand.
fn check_existing(target: &Target) -> anyhow::Result<()> {
    if let Some(text) = target.text()? {
        text.parse::<DocumentMut>()
            .map_err(|e| malformed("TOML", "CRI-O", e))?;
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ConfigureCrioArgs {
    /// Where the drop-in (50-oci-tpm-hook.conf) goes
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DROP_IN_DIR)]
    pub drop_in_dir: PathBuf,
    /// Leave NRI as it is (use with --hooks-dir)
    #[arg(long)]
    pub no_nri: bool,
    /// Name the hooks directories (/usr/share/containers/oci/hooks.d, /etc/containers/oci/hooks.d)
    #[arg(long)]
    pub hooks_dir: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drop_in_parses_to_what_crio_reads() {
        let doc: DocumentMut = drop_in(true, true).unwrap().parse().unwrap();
        assert_eq!(doc["crio"]["nri"]["enable_nri"].as_bool(), Some(true));
        let dirs: Vec<&str> = doc["crio"]["runtime"]["hooks_dir"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(dirs, HOOKS_DIRS);
        // The default: NRI only; the hooks directories stay CRI-O's own.
        let doc: DocumentMut = drop_in(true, false).unwrap().parse().unwrap();
        assert!(doc["crio"].get("runtime").is_none());
        assert_eq!(doc["crio"]["nri"]["enable_nri"].as_bool(), Some(true));
        let doc: DocumentMut = drop_in(false, true).unwrap().parse().unwrap();
        assert!(doc["crio"].get("nri").is_none());
        assert!(drop_in(false, false).is_err());
    }

    #[test]
    fn a_malformed_drop_in_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DROP_IN_NAME);
        std::fs::write(&path, "[crio.nri\n").unwrap();
        let args = ConfigureCrioArgs {
            drop_in_dir: dir.path().to_path_buf(),
            no_nri: false,
            hooks_dir: false,
        };
        let err = format!("{:#}", plan(&args).unwrap_err());
        assert!(
            err.contains(DROP_IN_NAME)
                && err.contains("not valid TOML")
                && err.contains("nothing was changed"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[crio.nri\n");
        std::fs::remove_file(&path).unwrap();
        let plan = plan(&args).unwrap();
        assert!(plan.changes_anything());
        assert!(!path.exists(), "planning writes nothing");
    }
}
