//! The grant: what a container must get to use a host TPM, as
//! [`crate::core::decision::decide`] determines it; every front-end
//! expresses it in its own terms (a node made by the hook, a spec edit, an
//! NRI adjustment).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::core::host::HostTpm;
use crate::core::identity::ProcessIdentity;
use crate::core::policy::NodeAccess;
use crate::core::request;
use tpm2_selftest::SelfTestLevel;

/// The node's mode: the owner (root) and the group may read and write.
pub const NODE_MODE: u32 = 0o660;

/// Everything a container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub device: HostTpm,
    /// Where the node appears inside the container.
    pub container_path: PathBuf,
    pub mode: u32,
    /// The policy's group (`[node] group`), as a host GID.
    pub gid: u32,
    pub group_name: Option<String>,
    /// Whose group the node gets (`[node] access`); see [`Grant::node_gid`].
    pub access: NodeAccess,
    pub self_test: SelfTestLevel,
    pub timeout: Duration,
    pub required: bool,
}

impl Grant {
    /// The node's group for a container whose process is `process` (when
    /// the front-end knows it): the policy's group, or with
    /// `access = "process-gid"` the process's own GID.
    pub fn node_gid(&self, process: Option<&ProcessIdentity>) -> u32 {
        match (self.access, process) {
            (NodeAccess::ProcessGid, Some(p)) => p.gid,
            _ => self.gid,
        }
    }

    /// Whether the process needs the node's group as an additional GID.
    pub fn process_needs_group(&self) -> bool {
        self.access == NodeAccess::Group
    }

    /// The request this grant answers, as annotations that a spec-editing
    /// front-end adds to the container, so that the hook it adds finds the
    /// same request in the container's own state (containerd does not copy
    /// pod annotations into containers by default) without the per-container
    /// form, which it already resolved.
    pub fn request_annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (request::KEY_DEVICE.to_owned(), self.device.name.clone()),
            (
                request::KEY_SELF_TEST.to_owned(),
                self.self_test.to_string(),
            ),
            (request::KEY_REQUIRED.to_owned(), self.required.to_string()),
        ])
    }

    /// The device-cgroup rule in `devices.allow` syntax.
    pub fn cgroup_rule(&self) -> String {
        format!("c {}:{} rw", self.device.major, self.device.minor)
    }

    /// Environment that points TPM software at the node: tpm2-tools reads
    /// `TPM2TOOLS_TCTI`, the tpm2-tss libraries `TSS2_TCTI`.
    pub fn env(&self) -> [(&'static str, String); 2] {
        let tcti = format!("device:{}", self.container_path.display());
        [("TPM2TOOLS_TCTI", tcti.clone()), ("TSS2_TCTI", tcti)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decision::decide_for_tests;
    use crate::core::request::DeviceSelector;

    #[test]
    fn full_grant() {
        let g = decide_for_tests();
        assert_eq!(g.container_path, PathBuf::from("/dev/tpmrm0"));
        assert_eq!(
            (g.device.major, g.device.minor, g.gid, g.mode),
            (1, 3, 102, 0o660)
        );
        assert_eq!(g.cgroup_rule(), "c 1:3 rw");
        assert_eq!(
            g.env()[0],
            ("TPM2TOOLS_TCTI", "device:/dev/tpmrm0".to_string())
        );
        assert_eq!(g.self_test, SelfTestLevel::Quick);
        assert!(g.required);
        // The annotations parse back to the same request.
        let back = request::parse(&g.request_annotations(), None)
            .unwrap()
            .unwrap();
        assert_eq!(back.device, DeviceSelector::Named("tpmrm0".into()));
        assert_eq!(back.self_test, Some(SelfTestLevel::Quick));
        assert!(back.required);
    }
}
