//! containerd: NRI on, for the `oci-tpm-hook nri` plugin, through a drop-in.
//!
//! containerd (1.7 and 2.x) reads the files its main config lists in
//! `imports` (globs allowed) and merges them in. The drop-in
//! `conf.d/oci-tpm-hook.toml` carries the NRI plugin's table with the
//! main config's `version` (2 for containerd 1.7, 3 for 2.x; 2.x refuses a
//! drop-in newer than its main config, 1.7 replaces a plugin's whole table
//! with the drop-in's). The main config only gains the import, edited in
//! place: comments, order and formatting stay. With `--cdi` it also gets
//! `enable_cdi = true` in the CRI plugin's table; that one goes into the
//! main config itself, because a drop-in's CRI table would replace the
//! whole CRI configuration on containerd 1.7.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context};
use toml_edit::{value, Array, DocumentMut, Item, Table, TableLike};

use super::{cannot_edit, malformed, FileEdit, Plan, Target};
use crate::core::policy::glob_match;
use clap::Args;

pub const DEFAULT_CONFIG: &str = "/etc/containerd/config.toml";
pub const DEFAULT_DROP_IN_DIR: &str = "/etc/containerd/conf.d";
pub const DROP_IN_NAME: &str = "oci-tpm-hook.toml";

/// The NRI plugin's table in both config versions.
const NRI_TABLE: &str = "io.containerd.nri.v1.nri";

/// The drop-in: NRI on, with containerd's defaults spelled out.
pub fn drop_in(version: i64) -> String {
    format!(
        "\
# Written by `oci-tpm-hook configure containerd`: NRI on, so that the
# oci-tpm-hook NRI plugin (oci-tpm-nri.service, /opt/nri/plugins or the
# DaemonSet) can give pods that ask for it the host's TPM.
version = {version}

[plugins.\"{NRI_TABLE}\"]
  disable = false
  # Plugins started outside containerd (systemd unit, DaemonSet) connect here.
  disable_connections = false
  socket_path = \"/var/run/nri/nri.sock\"
  # Plugins containerd starts itself (10-oci-tpm-hook) live here.
  plugin_path = \"/opt/nri/plugins\"
  plugin_config_path = \"/etc/nri/conf.d\"
  plugin_registration_timeout = \"5s\"
  plugin_request_timeout = \"2s\"
"
    )
}

pub fn plan(args: &ConfigureContainerdArgs) -> anyhow::Result<Plan> {
    let main = Target::read(&args.config)?;
    let drop_in_path = args.drop_in_dir.join(DROP_IN_NAME);
    let (new_main, version) = (|| {
        let text = main.text()?.unwrap_or_default();
        edit_main(
            text,
            &drop_in_path,
            args.config_version,
            args.cdi,
            installed_version,
        )
    })()
    .with_context(|| cannot_edit(&args.config))?;

    let drop_in_target = Target::read(&drop_in_path)?;
    (|| {
        if let Some(text) = drop_in_target.text()? {
            text.parse::<DocumentMut>()
                .map_err(|e| malformed("TOML", "containerd", e))?;
        }
        anyhow::Ok(())
    })()
    .with_context(|| cannot_edit(&drop_in_path))?;
    Ok(Plan {
        // The drop-in first, so that the import never names a file that is not there.
        edits: vec![
            FileEdit::new(drop_in_target, drop_in(version).into_bytes()),
            FileEdit::new(main, new_main.into_bytes()),
        ],
        then: "restart containerd to apply it (e.g. systemctl restart containerd); its \
               containers keep running"
            .into(),
    })
}

/// The main config after the edit, and its version. `asked` is
/// `--config-version`; `installed` tells the version for a config that does
/// not exist yet from the installed containerd.
pub fn edit_main(
    text: &str,
    drop_in: &Path,
    asked: Option<i64>,
    cdi: bool,
    installed: impl FnOnce() -> anyhow::Result<i64>,
) -> anyhow::Result<(String, i64)> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| malformed("TOML", "containerd", e))?;
    let blank = doc.iter().next().is_none();
    let version = match (doc.get("version").map(|v| v.as_integer()), asked) {
        (Some(Some(v @ (2 | 3))), None) => v,
        (Some(Some(v @ (2 | 3))), Some(a)) if a == v => v,
        (Some(Some(v @ (2 | 3))), Some(a)) => bail!(
            "it says version = {v}, not {a} as --config-version asks: leave --config-version out"
        ),
        (Some(Some(v)), _) => bail!(
            "version = {v} is not a config version this supports (2: containerd 1.7, 3: containerd 2.x); \
             migrate it with `containerd config migrate`"
        ),
        (Some(None), _) => bail!("version is not a number"),
        (None, _) if !blank => bail!(
            "it has no `version` (a version 1 config, read with other plugin names): \
             migrate it first (`containerd config migrate` on containerd 2.x) or add version = 2"
        ),
        (None, Some(a @ (2 | 3))) => a,
        (None, Some(a)) => bail!("--config-version {a}: use 2 (containerd 1.7) or 3 (containerd 2.x)"),
        (None, None) => installed().context(
            "the config does not exist yet, so its version must come from the installed containerd; \
             pass --config-version 2 (containerd 1.7) or 3 (containerd 2.x)",
        )?,
    };
    if blank {
        doc.insert("version", value(version));
    }
    add_import(&mut doc, drop_in)?;
    if cdi {
        // containerd 1.7's CRI plugin; containerd 2.x moved the key to
        // the runtime part of CRI (and turns it on by default).
        let table = if version == 2 {
            ["plugins", "io.containerd.grpc.v1.cri"]
        } else {
            ["plugins", "io.containerd.cri.v1.runtime"]
        };
        let t = table_at(doc.as_table_mut(), &table)?;
        if t.get("enable_cdi").and_then(Item::as_bool) != Some(true) {
            t.insert("enable_cdi", value(true));
        }
    }
    let out = doc.to_string();
    // An unchanged document is its original text, byte for byte.
    Ok((if out == text { text.to_owned() } else { out }, version))
}

/// Adds the drop-in to `imports` unless an entry already covers it.
fn add_import(doc: &mut DocumentMut, drop_in: &Path) -> anyhow::Result<()> {
    let ours = drop_in.display().to_string();
    let glob = drop_in
        .parent()
        .map(|d| d.join("*.toml").display().to_string())
        .unwrap_or_else(|| ours.clone());
    match doc.get_mut("imports") {
        None => {
            doc.insert("imports", value(Array::from_iter([glob])));
        }
        Some(item) => {
            let array = item
                .as_array_mut()
                .ok_or_else(|| anyhow!("imports is not a list of files: fix it by hand"))?;
            let mut covered = false;
            for entry in array.iter() {
                let entry = entry.as_str().ok_or_else(|| {
                    anyhow!("imports holds {entry}, not a file name: fix it by hand")
                })?;
                covered |= entry == ours || path_glob_covers(entry, &ours);
            }
            if !covered {
                array.push(glob);
            }
        }
    }
    Ok(())
}

/// Whether containerd's glob `pattern` (Go's filepath.Glob: `*` stays
/// within one path component) names `path`. Only `*` is understood: an
/// entry with other wildcards does not count, and the drop-in's own import
/// is added (containerd loads a file once, however often it is named).
fn path_glob_covers(pattern: &str, path: &str) -> bool {
    let (p, t): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    !pattern.contains(['?', '[', '\\'])
        && p.len() == t.len()
        && p.iter().zip(&t).all(|(p, t)| glob_match(p, t))
}

/// The table at `path`, made (implicit, so no empty headers appear) where
/// missing; an error where a key on the way is not a table.
fn table_at<'a>(
    table: &'a mut dyn TableLike,
    path: &[&str],
) -> anyhow::Result<&'a mut dyn TableLike> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(table);
    };
    let item = table.entry(first).or_insert_with(|| {
        let mut t = Table::new();
        t.set_implicit(true);
        Item::Table(t)
    });
    let inner = item
        .as_table_like_mut()
        .ok_or_else(|| anyhow!("{first:?} is not a table: fix it by hand"))?;
    table_at(inner, rest)
}

/// The config version the installed containerd writes: 2 for 1.x, 3 for 2.x.
fn installed_version() -> anyhow::Result<i64> {
    let out = Command::new("containerd")
        .arg("--version")
        .output()
        .context("cannot run `containerd --version`")?;
    config_version_for(&String::from_utf8_lossy(&out.stdout))
}

/// `containerd github.com/containerd/containerd 1.7.24~ds1 ...` → 2.
pub fn config_version_for(version_output: &str) -> anyhow::Result<i64> {
    let release = version_output
        .split_whitespace()
        .nth(2)
        .ok_or_else(|| anyhow!("unexpected `containerd --version` output {version_output:?}"))?;
    match release.trim_start_matches('v').split('.').next() {
        Some("1") => Ok(2),
        Some("2") => Ok(3),
        _ => bail!("containerd {release} is neither 1.x nor 2.x"),
    }
}

/// Where the drop-in goes by default.
pub fn default_drop_in() -> PathBuf {
    Path::new(DEFAULT_DROP_IN_DIR).join(DROP_IN_NAME)
}

#[derive(Args, Debug)]
pub struct ConfigureContainerdArgs {
    /// containerd's main configuration; it gains the drop-in in `imports`
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Where the drop-in (oci-tpm-hook.toml) goes
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DROP_IN_DIR)]
    pub drop_in_dir: PathBuf,
    /// The config version for a config that does not exist yet [default: from `containerd --version`]
    #[arg(long, value_name = "2|3", value_parser = clap::value_parser!(i64).range(2..=3))]
    pub config_version: Option<i64>,
    /// Also turn on CDI in the CRI plugin (enable_cdi = true, in the main config)
    #[arg(long)]
    pub cdi: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drop_in_path() -> PathBuf {
        default_drop_in()
    }

    fn edit(text: &str, asked: Option<i64>, cdi: bool) -> anyhow::Result<(String, i64)> {
        edit_main(text, &drop_in_path(), asked, cdi, || {
            bail!("no containerd here")
        })
    }

    const V2: &str = r#"# my containerd
version = 2
root = "/var/lib/containerd"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"   # pinned
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = true
"#;

    #[test]
    fn v2_gains_the_import_and_keeps_everything_else() {
        let (out, v) = edit(V2, None, false).unwrap();
        assert_eq!(v, 2);
        assert_eq!(
            out,
            V2.replace(
                "root = \"/var/lib/containerd\"\n",
                "root = \"/var/lib/containerd\"\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n"
            )
        );
        // Again: nothing changes.
        assert_eq!(edit(&out, None, false).unwrap().0, out);
    }

    #[test]
    fn v3_and_an_existing_import_list() {
        let text = "version = 3\nimports = [\"/etc/containerd/other.toml\"]\n";
        let (out, v) = edit(text, Some(3), false).unwrap();
        assert_eq!(v, 3);
        assert_eq!(
            out,
            "version = 3\nimports = [\"/etc/containerd/other.toml\", \"/etc/containerd/conf.d/*.toml\"]\n"
        );
        // An import that already covers the drop-in is enough.
        for covered in [
            "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
            "version = 3\nimports = [\"/etc/containerd/conf.d/oci-tpm-hook.toml\"]\n",
            "version = 3\nimports = [\"/etc/containerd/*/*\"]\n",
        ] {
            assert_eq!(edit(covered, None, false).unwrap().0, covered);
        }
        // `*` stays within one component, as in containerd's Go glob.
        let (out, _) = edit("version = 3\nimports = [\"/etc/*.toml\"]\n", None, false).unwrap();
        assert!(
            out.contains("\"/etc/*.toml\", \"/etc/containerd/conf.d/*.toml\""),
            "{out}"
        );
    }

    #[test]
    fn a_missing_config_gets_a_version_from_the_flag_or_the_installed_containerd() {
        let (out, v) = edit("", Some(2), false).unwrap();
        assert_eq!(v, 2);
        assert_eq!(
            out,
            "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n"
        );
        let (_, v) = edit_main("# nothing yet\n", &drop_in_path(), None, false, || Ok(3)).unwrap();
        assert_eq!(v, 3);
        let err = format!("{:#}", edit("", None, false).unwrap_err());
        assert!(err.contains("--config-version"), "{err}");
    }

    #[test]
    fn cdi_goes_into_the_main_cri_table() {
        let (out, _) = edit(V2, None, true).unwrap();
        let doc: DocumentMut = out.parse().unwrap();
        let cri = &doc["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(cri["enable_cdi"].as_bool(), Some(true));
        assert_eq!(
            cri["sandbox_image"].as_str(),
            Some("registry.k8s.io/pause:3.9")
        );
        assert!(out.contains("# pinned"), "comments stay: {out}");
        assert_eq!(edit(&out, None, true).unwrap().0, out, "idempotent");
        let (out, _) = edit("version = 3\n", None, true).unwrap();
        let doc: DocumentMut = out.parse().unwrap();
        assert_eq!(
            doc["plugins"]["io.containerd.cri.v1.runtime"]["enable_cdi"].as_bool(),
            Some(true)
        );
        assert!(
            !out.contains("[plugins]\n"),
            "no empty parent header: {out}"
        );
    }

    #[test]
    fn malformed_or_unsupported_configs_are_refused() {
        for (bad, want) in [
            ("version = 2\n[plugins\n", "not valid TOML"),
            ("root = \"/x\"\n", "no `version`"),
            ("version = 1\n", "version = 1"),
            ("version = \"2\"\n", "not a number"),
            (
                "version = 2\nimports = \"/etc/x.toml\"\n",
                "imports is not a list",
            ),
            ("version = 2\nimports = [1]\n", "not a file name"),
        ] {
            let err = format!("{:#}", edit(bad, None, false).unwrap_err());
            assert!(err.contains(want), "{bad:?}: {err}");
        }
        let err = format!("{:#}", edit("version = 2\n", Some(3), false).unwrap_err());
        assert!(err.contains("--config-version"), "{err}");
        let err = format!(
            "{:#}",
            edit("version = 2\nplugins = 3\n", None, true).unwrap_err()
        );
        assert!(err.contains("\"plugins\" is not a table"), "{err}");
    }

    #[test]
    fn the_drop_in_parses_and_enables_nri_in_both_versions() {
        for v in [2, 3] {
            let doc: DocumentMut = drop_in(v).parse().unwrap();
            assert_eq!(doc["version"].as_integer(), Some(v));
            let nri = &doc["plugins"][NRI_TABLE];
            assert_eq!(nri["disable"].as_bool(), Some(false));
            assert_eq!(nri["disable_connections"].as_bool(), Some(false));
            assert_eq!(nri["socket_path"].as_str(), Some("/var/run/nri/nri.sock"));
        }
    }

    #[test]
    fn containerd_versions() {
        assert_eq!(
            config_version_for(
                "containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+b2\n"
            )
            .unwrap(),
            2
        );
        assert_eq!(
            config_version_for("containerd containerd.io v2.1.4 75cb2b7\n").unwrap(),
            3
        );
        assert!(config_version_for("").is_err());
        assert!(config_version_for("containerd x 3.0.0").is_err());
    }

    #[test]
    fn plan_refuses_a_malformed_drop_in_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "version = 2\n").unwrap();
        let conf_d = dir.path().join("conf.d");
        std::fs::create_dir(&conf_d).unwrap();
        std::fs::write(conf_d.join(DROP_IN_NAME), "[plugins\n").unwrap();
        let args = ConfigureContainerdArgs {
            config: config.clone(),
            drop_in_dir: conf_d.clone(),
            config_version: None,
            cdi: false,
        };
        let err = format!("{:#}", plan(&args).unwrap_err());
        assert!(
            err.contains(DROP_IN_NAME) && err.contains("nothing was changed"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "version = 2\n");
        // Fixed, it plans both files, the drop-in first.
        std::fs::write(conf_d.join(DROP_IN_NAME), "# mine\n").unwrap();
        let plan = plan(&args).unwrap();
        assert_eq!(plan.edits[0].path(), conf_d.join(DROP_IN_NAME));
        assert_eq!(plan.edits[1].path(), config);
        let main = String::from_utf8(plan.edits[1].new_contents().to_vec()).unwrap();
        assert!(
            main.contains(&format!("{}/*.toml", conf_d.display())),
            "{main}"
        );
    }
}
