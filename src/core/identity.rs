//! Who the container's process is, and whether it could open the node.
//!
//! A TPM counts as delivered only when the container's own process can use
//! it. [`ProcessIdentity`] is that process as `config.json` describes it
//! (`process.user` and `process.capabilities`); [`check_access`] answers the
//! kernel's question for a read-write open of the node (owner, group, other
//! class, then `CAP_DAC_OVERRIDE`, which in a user namespace only counts for
//! inodes whose owner and group are mapped), so a container that could never
//! open its node is refused before anything is changed, with the reason.
//! The hook's self-test then proves the same thing for real, as that process.
//! Pure.

use std::collections::BTreeSet;
use std::fmt;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use crate::core::userns::{inside_id, IdMaps};

/// The container's process, in the container's own ids (inside its user
/// namespace when it has one), as the runtime will start it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIdentity {
    pub uid: u32,
    pub gid: u32,
    /// `process.user.additionalGids`: the runtime sets exactly these as the
    /// supplementary groups (engines resolve the image's /etc/group into
    /// this list before they write the spec).
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    /// The effective capabilities the process has once started, by name
    /// (`CAP_DAC_OVERRIDE`): `process.capabilities.effective` for root, the
    /// ambient ones that are also permitted and inheritable for any other
    /// user (what execve leaves it).
    pub effective_caps: BTreeSet<String>,
    /// The permitted ones, the same way.
    pub permitted_caps: BTreeSet<String>,
}

impl ProcessIdentity {
    /// Reads `process.user` and `process.capabilities` of a spec. A missing
    /// `process.user` is uid 0, gid 0, as runtimes treat it.
    pub fn from_spec(spec: &Value) -> anyhow::Result<Self> {
        let user = spec.pointer("/process/user");
        let id = |key: &str| -> anyhow::Result<u32> {
            match user.and_then(|u| u.get(key)) {
                None | Some(Value::Null) => Ok(0),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| anyhow!("/process/user/{key} is {v}, not a user or group id")),
            }
        };
        let additional_gids = match user.and_then(|u| u.get("additionalGids")) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(gids)) => gids
                .iter()
                .map(|g| {
                    g.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| anyhow!("/process/user/additionalGids has {g}, not a GID"))
                })
                .collect::<anyhow::Result<_>>()?,
            Some(other) => bail!("/process/user/additionalGids is {other}, not a list"),
        };
        let umask = match user.and_then(|u| u.get("umask")) {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n <= 0o777)
                    .ok_or_else(|| anyhow!("/process/user/umask is {v}, not a umask"))?,
            ),
        };
        let caps = |set: &str| -> anyhow::Result<BTreeSet<String>> {
            match spec.pointer(&format!("/process/capabilities/{set}")) {
                None | Some(Value::Null) => Ok(BTreeSet::new()),
                Some(Value::Array(names)) => names
                    .iter()
                    .map(|n| {
                        n.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| anyhow!("{n} is not a capability name"))
                    })
                    .collect::<anyhow::Result<_>>()
                    .with_context(|| format!("/process/capabilities/{set}")),
                Some(other) => bail!("/process/capabilities/{set} is {other}, not a list"),
            }
        };
        let uid = id("uid")?;
        let (effective_caps, permitted_caps) = if uid == 0 {
            (caps("effective")?, caps("permitted")?)
        } else {
            // The runtime sets these sets and then executes the process as
            // a non-root user: execve keeps only the ambient capabilities
            // (which must also be permitted and inheritable); a program
            // without file capabilities gets no others (capabilities(7)).
            // docker writes its whole default set as effective for every
            // user, and a process of uid 1000 still has none of it.
            let (permitted, inheritable) = (caps("permitted")?, caps("inheritable")?);
            let kept: BTreeSet<String> = caps("ambient")?
                .into_iter()
                .filter(|c| permitted.contains(c) && inheritable.contains(c))
                .collect();
            (kept.clone(), kept)
        };
        Ok(Self {
            uid,
            gid: id("gid")?,
            additional_gids,
            umask,
            effective_caps,
            permitted_caps,
        })
    }

    /// The process's groups: its GID first, then the additional ones.
    pub fn groups(&self) -> Vec<u32> {
        let mut all = vec![self.gid];
        for g in &self.additional_gids {
            if !all.contains(g) {
                all.push(*g);
            }
        }
        all
    }

    fn has_effective(&self, cap: &str) -> bool {
        self.effective_caps.contains(cap)
    }
}

impl fmt::Display for ProcessIdentity {
    /// `uid 1000, gid 1000, groups 1000,102`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<String> = self.groups().iter().map(u32::to_string).collect();
        write!(
            f,
            "uid {}, gid {}, groups {}",
            self.uid,
            self.gid,
            groups.join(",")
        )
    }
}

/// The node's owner, group and mode, as host ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeOwnership {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// Which part of the mode decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessClass {
    Owner,
    Group,
    Other,
    /// `CAP_DAC_OVERRIDE` among the capabilities the process keeps.
    Capability,
}

/// Why the process could not open the node read-write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessDenied {
    pub identity: ProcessIdentity,
    pub node: NodeOwnership,
    /// The node's group as the container sees it; `None` when a user
    /// namespace does not map it.
    pub group_inside: Option<u32>,
    pub user_namespace: bool,
}

/// Could `process` open a node with `node`'s ownership for reading and
/// writing? `maps` are the container's user-namespace maps, if it has one.
pub fn check_access(
    process: &ProcessIdentity,
    node: NodeOwnership,
    maps: Option<&IdMaps>,
) -> Result<AccessClass, AccessDenied> {
    let (owner_inside, group_inside) = match maps {
        Some(m) => (inside_id(&m.uid, node.uid), inside_id(&m.gid, node.gid)),
        None => (Some(node.uid), Some(node.gid)),
    };
    let rw = |bits: u32| bits & 0o6 == 0o6;
    let by_mode = if owner_inside == Some(process.uid) {
        rw(node.mode >> 6).then_some(AccessClass::Owner)
    } else if group_inside.is_some_and(|g| process.groups().contains(&g)) {
        rw(node.mode >> 3).then_some(AccessClass::Group)
    } else {
        rw(node.mode).then_some(AccessClass::Other)
    };
    if let Some(class) = by_mode {
        return Ok(class);
    }
    // The kernel honours CAP_DAC_OVERRIDE only for inodes whose owner and
    // group are both mapped into the caller's user namespace.
    let cap_counts = owner_inside.is_some() && group_inside.is_some();
    if cap_counts && process.has_effective("CAP_DAC_OVERRIDE") {
        return Ok(AccessClass::Capability);
    }
    Err(AccessDenied {
        identity: process.clone(),
        node,
        group_inside,
        user_namespace: maps.is_some(),
    })
}

/// Who starts the container, for the one fix that fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// A Kubernetes pod (CRI annotations present).
    Kubernetes,
    /// podman, docker or anything else with a `--group-add` flag.
    Cli,
}

impl AccessDenied {
    /// The fix, in the terms of the engine that starts the container.
    pub fn remedy(&self, engine: Engine) -> String {
        let policy = "or let the node's group be the process's own GID with [node] access = \"process-gid\" in the policy";
        let gid = self.node.gid;
        if self.user_namespace {
            return match self.group_inside {
                None => format!(
                    "the container's user namespace does not map host GID {gid}: map it and add the mapped GID, e.g. podman run --userns=auto:gidmapping=5000:{gid}:1 --group-add 5000"
                ),
                Some(inside) => format!(
                    "add GID {inside} (host GID {gid} as mapped into the container's user namespace): --group-add {inside}"
                ),
            };
        }
        match engine {
            Engine::Kubernetes => format!(
                "add the group to the pod: securityContext.supplementalGroups: [{gid}], {policy}"
            ),
            Engine::Cli => format!(
                "add the group to the container: podman run --group-add {gid} (docker: --group-add {gid}; the number, since the image's own group names may differ), {policy}"
            ),
        }
    }
}

impl fmt::Display for AccessDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = &self.node;
        write!(
            f,
            "the container's process ({}) could not open the node (owner {}, group {}, mode {:04o})",
            self.identity, n.uid, n.gid, n.mode
        )?;
        match (self.user_namespace, self.group_inside) {
            (true, None) => write!(
                f,
                ": its user namespace does not map the node's group {}",
                n.gid
            ),
            (true, Some(inside)) => write!(
                f,
                ": it is not in group {inside} (host GID {} in its user namespace)",
                n.gid
            ),
            (false, _) => write!(f, ": it is not in group {}", n.gid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::userns::parse_id_map;
    use serde_json::json;

    fn user(uid: u32, gid: u32, extra: &[u32]) -> ProcessIdentity {
        ProcessIdentity {
            uid,
            gid,
            additional_gids: extra.to_vec(),
            umask: None,
            effective_caps: BTreeSet::new(),
            permitted_caps: BTreeSet::new(),
        }
    }

    const NODE: NodeOwnership = NodeOwnership {
        uid: 0,
        gid: 102,
        mode: 0o660,
    };

    #[test]
    fn reads_the_spec() {
        let spec = json!({"process": {
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [102, 1000], "umask": 18},
            "capabilities": {"effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN", "CAP_KILL"]}
        }});
        let p = ProcessIdentity::from_spec(&spec).unwrap();
        assert_eq!((p.uid, p.gid, p.umask), (1000, 1000, Some(0o22)));
        assert_eq!(p.groups(), [1000, 102]);
        assert_eq!(p.to_string(), "uid 1000, gid 1000, groups 1000,102");
        let root = ProcessIdentity::from_spec(&json!({})).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        let root = ProcessIdentity::from_spec(&json!({"process": {
            "capabilities": {"effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN", "CAP_KILL"]}
        }}))
        .unwrap();
        assert!(root.effective_caps.contains("CAP_CHOWN") && root.permitted_caps.len() == 2);
    }

    #[test]
    fn a_non_root_process_keeps_only_its_ambient_capabilities() {
        // What docker writes for --user 1000: its default set everywhere
        // but ambient. The process it starts has none of them.
        let all = json!(["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_KILL"]);
        let docker = json!({"process": {
            "user": {"uid": 1000, "gid": 1000},
            "capabilities": {"bounding": all, "effective": all, "permitted": all, "inheritable": all}
        }});
        let p = ProcessIdentity::from_spec(&docker).unwrap();
        assert!(
            p.effective_caps.is_empty() && p.permitted_caps.is_empty(),
            "{p:?}"
        );
        let denied = check_access(&p, NODE, None).unwrap_err();
        assert_eq!(denied.group_inside, Some(102));
        // Ambient ones survive, if also permitted and inheritable.
        let ambient = json!({"process": {
            "user": {"uid": 1000, "gid": 1000},
            "capabilities": {"effective": all, "permitted": all, "inheritable": ["CAP_DAC_OVERRIDE"],
                             "ambient": ["CAP_DAC_OVERRIDE", "CAP_KILL"]}
        }});
        let p = ProcessIdentity::from_spec(&ambient).unwrap();
        assert_eq!(
            p.effective_caps,
            BTreeSet::from(["CAP_DAC_OVERRIDE".to_string()])
        );
        assert_eq!(check_access(&p, NODE, None), Ok(AccessClass::Capability));
    }

    #[test]
    fn malformed_users_are_errors() {
        for bad in [
            json!({"process": {"user": {"uid": -1}}}),
            json!({"process": {"user": {"uid": "1000"}}}),
            json!({"process": {"user": {"gid": 4294967296u64}}}),
            json!({"process": {"user": {"additionalGids": 5}}}),
            json!({"process": {"user": {"additionalGids": ["x"]}}}),
            json!({"process": {"user": {"umask": 4096}}}),
            json!({"process": {"capabilities": {"effective": "CAP_KILL"}}}),
            json!({"process": {"capabilities": {"effective": [1]}}}),
            json!({"process": {"user": {"uid": 5}, "capabilities": {"ambient": "CAP_KILL"}}}),
        ] {
            assert!(ProcessIdentity::from_spec(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_kernels_classes() {
        assert_eq!(
            check_access(&user(0, 0, &[]), NODE, None),
            Ok(AccessClass::Owner)
        );
        assert_eq!(
            check_access(&user(1000, 1000, &[102]), NODE, None),
            Ok(AccessClass::Group)
        );
        assert_eq!(
            check_access(&user(1000, 102, &[]), NODE, None),
            Ok(AccessClass::Group)
        );
        let denied = check_access(&user(1000, 1000, &[]), NODE, None).unwrap_err();
        assert!(!denied.user_namespace && denied.group_inside == Some(102));
        // Owner class decides alone, even when the group would allow.
        let owner_ro = NodeOwnership {
            mode: 0o460,
            ..NODE
        };
        assert!(check_access(&user(0, 102, &[]), owner_ro, None).is_err());
        let world = NodeOwnership {
            mode: 0o666,
            ..NODE
        };
        assert_eq!(
            check_access(&user(5, 5, &[]), world, None),
            Ok(AccessClass::Other)
        );
    }

    #[test]
    fn dac_override_only_for_mapped_inodes() {
        let mut admin = user(1000, 1000, &[]);
        admin.effective_caps.insert("CAP_DAC_OVERRIDE".into());
        assert_eq!(
            check_access(&admin, NODE, None),
            Ok(AccessClass::Capability)
        );
        // In a user namespace that maps neither host root nor the group, the
        // capability does not help; root inside is just "other".
        let maps = IdMaps {
            uid: parse_id_map("0 100000 65536").unwrap(),
            gid: parse_id_map("0 100000 65536").unwrap(),
        };
        let mut root = user(0, 0, &[]);
        root.effective_caps.insert("CAP_DAC_OVERRIDE".into());
        let denied = check_access(&root, NODE, Some(&maps)).unwrap_err();
        assert_eq!(denied.group_inside, None);
        assert!(denied
            .to_string()
            .contains("does not map the node's group 102"));
        assert!(denied
            .remedy(Engine::Cli)
            .contains("--userns=auto:gidmapping=5000:102:1 --group-add 5000"));
    }

    #[test]
    fn mapped_group_in_a_user_namespace() {
        let maps = IdMaps {
            uid: parse_id_map("0 100000 65536").unwrap(),
            gid: parse_id_map("0 100000 5000\n5000 102 1").unwrap(),
        };
        assert_eq!(
            check_access(&user(1000, 1000, &[5000]), NODE, Some(&maps)),
            Ok(AccessClass::Group)
        );
        let denied = check_access(&user(1000, 1000, &[]), NODE, Some(&maps)).unwrap_err();
        assert_eq!(denied.group_inside, Some(5000));
        assert!(denied.remedy(Engine::Cli).contains("--group-add 5000"));
    }

    #[test]
    fn remedies_per_engine() {
        let denied = check_access(&user(1000, 1000, &[]), NODE, None).unwrap_err();
        let k8s = denied.remedy(Engine::Kubernetes);
        assert!(k8s.contains("supplementalGroups: [102]"), "{k8s}");
        assert!(!k8s.contains("--group-add"), "{k8s}");
        let cli = denied.remedy(Engine::Cli);
        assert!(
            cli.contains("--group-add 102") && cli.contains("process-gid"),
            "{cli}"
        );
        assert_eq!(
            denied.to_string(),
            "the container's process (uid 1000, gid 1000, groups 1000) could not open the node \
             (owner 0, group 102, mode 0660): it is not in group 102"
        );
    }
}
