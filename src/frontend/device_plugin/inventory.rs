//! What the plugin advertises and hands out, decided without I/O: the
//! host's TPMs as the core grants them, their health, their shares, and the
//! answers to the kubelet's `Allocate` and `GetPreferredAllocation`.
//!
//! A TPM is advertised when [`crate::core::decision::decide`] grants it to
//! a container that asks for it by name: the same policy, host checks and
//! group as every other front-end. Each one is `shares` devices for the
//! kubelet (`tpmrm0-1` … `tpmrm0-N`): the kernel's resource manager lets
//! many containers use one TPM at once, and the share count is how many the
//! node accepts. A share of an unhealthy TPM is reported `Unhealthy`, which
//! takes it out of the node's allocatable count.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::api::{
    CdiDevice, ContainerAllocateRequest, ContainerAllocateResponse,
    ContainerPreferredAllocationRequest, Device, DeviceSpec, HEALTHY, UNHEALTHY,
};
use super::health::TpmInfo;
use crate::core::grant::Grant;
use crate::core::host::container_path;

/// A TPM the plugin knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tpm {
    /// The core's grant for a container that asks for this TPM; kept from
    /// the last time it was granted, so that a TPM that went away is still
    /// listed (as unhealthy).
    pub grant: Grant,
    pub health: Health,
    /// What the last passing self-test found.
    pub info: Option<TpmInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Not checked yet: not offered until its first self-test passed.
    Unknown,
    Healthy,
    /// Why not.
    Unhealthy(String),
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        *self == Health::Healthy
    }
}

/// The TPMs, by name (`tpmrm0`), and how many shares each one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    shares: u32,
    tpms: BTreeMap<String, Tpm>,
    /// The CDI kind of the devices named in `Allocate`; `None`: no CDI.
    cdi_kind: Option<String>,
}

/// The inventory the monitor writes and the service reads.
#[derive(Debug, Clone)]
pub struct SharedInventory(Arc<Mutex<Inventory>>);

impl SharedInventory {
    pub fn new(inventory: Inventory) -> Self {
        Self(Arc::new(Mutex::new(inventory)))
    }

    /// The inventory, for as long as the guard lives. A panic elsewhere
    /// while it was held must not take the plugin down with it.
    pub fn lock(&self) -> MutexGuard<'_, Inventory> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What changed in a TPM's health, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    None,
    BecameHealthy,
    BecameUnhealthy(String),
}

impl Inventory {
    pub fn new(shares: u32, cdi_kind: Option<String>) -> Self {
        Self {
            shares: shares.max(1),
            tpms: BTreeMap::new(),
            cdi_kind,
        }
    }

    pub fn shares(&self) -> u32 {
        self.shares
    }

    pub fn tpms(&self) -> impl Iterator<Item = (&String, &Tpm)> {
        self.tpms.iter()
    }

    pub fn get(&self, name: &str) -> Option<&Tpm> {
        self.tpms.get(name)
    }

    /// A TPM the core grants (again): added with unknown health, or its
    /// grant refreshed (the device numbers or the group may have changed).
    pub fn granted(&mut self, grant: Grant) {
        let name = grant.device.name.clone();
        match self.tpms.get_mut(&name) {
            Some(t) => t.grant = grant,
            None => {
                self.tpms.insert(
                    name,
                    Tpm {
                        grant,
                        health: Health::Unknown,
                        info: None,
                    },
                );
            }
        }
    }

    /// The outcome of a self-test (or of the host check, for a TPM that
    /// went away or that the core no longer grants).
    pub fn checked(&mut self, name: &str, outcome: Result<TpmInfo, String>) -> Transition {
        let Some(tpm) = self.tpms.get_mut(name) else {
            return Transition::None;
        };
        let before = tpm.health.clone();
        match outcome {
            Ok(info) => {
                tpm.health = Health::Healthy;
                tpm.info = Some(info);
            }
            Err(reason) => tpm.health = Health::Unhealthy(reason),
        }
        match (&before, &tpm.health) {
            (Health::Healthy, Health::Healthy) => Transition::None,
            (_, Health::Healthy) => Transition::BecameHealthy,
            (Health::Unhealthy(_), Health::Unhealthy(_)) => Transition::None,
            (_, Health::Unhealthy(r)) => Transition::BecameUnhealthy(r.clone()),
            (_, Health::Unknown) => Transition::None,
        }
    }

    /// The kubelet's view: every share of every TPM, lowest TPM first.
    /// A TPM not yet checked is not listed, so that a node never offers a
    /// TPM it has not seen working.
    pub fn devices(&self) -> Vec<Device> {
        self.tpms
            .iter()
            .filter(|(_, t)| t.health != Health::Unknown)
            .flat_map(|(name, t)| {
                let health = if t.health.is_healthy() {
                    HEALTHY
                } else {
                    UNHEALTHY
                };
                (1..=self.shares).map(move |i| Device {
                    id: share_id(name, i),
                    health: health.to_owned(),
                    topology: None,
                })
            })
            .collect()
    }

    /// How many shares the node can hand out now.
    pub fn healthy_shares(&self) -> usize {
        self.tpms.values().filter(|t| t.health.is_healthy()).count() * self.shares as usize
    }

    /// The TPM a share belongs to.
    fn tpm_of<'a>(&'a self, id: &str) -> Result<(&'a String, &'a Tpm), String> {
        let name = id
            .rsplit_once('-')
            .filter(|(n, i)| {
                n.starts_with("tpmrm")
                    && i.parse::<u32>()
                        .is_ok_and(|i| (1..=self.shares).contains(&i))
            })
            .map(|(n, _)| n)
            .ok_or_else(|| format!("{id:?} is not a device of this plugin"))?;
        self.tpms
            .get_key_value(name)
            .ok_or_else(|| format!("{id:?} names TPM {name:?}, which this node does not have"))
    }

    /// What one container gets for the shares the kubelet picked: the
    /// node, the TCTI environment, the request as annotations (so that the
    /// hook, or the NRI plugin, checks the grant against the policy with
    /// the pod's namespace and proves the TPM from inside the container)
    /// and the CDI device, whose spec adds the node's group to the
    /// container's process. All shares must be of one TPM: a container gets
    /// one TPM.
    pub fn allocate(
        &self,
        request: &ContainerAllocateRequest,
    ) -> Result<ContainerAllocateResponse, String> {
        let mut names = BTreeSet::new();
        for id in &request.devices_ids {
            let (name, tpm) = self.tpm_of(id)?;
            if let Health::Unhealthy(reason) = &tpm.health {
                return Err(format!("TPM {name} is unhealthy: {reason}"));
            }
            names.insert(name);
        }
        let names: Vec<&String> = names.into_iter().collect();
        let name = match names.as_slice() {
            [one] => *one,
            [] => return Err("no device asked for".into()),
            many => {
                return Err(format!(
                    "the shares span TPMs {}: a container gets one TPM; ask for one share",
                    many.iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        };
        let grant = &self.tpms[name].grant;
        Ok(ContainerAllocateResponse {
            envs: grant
                .env()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            mounts: Vec::new(),
            devices: vec![DeviceSpec {
                container_path: grant.container_path.display().to_string(),
                // The host's own path: the plugin may see the host's /dev
                // elsewhere (--host-root), the runtime never does.
                host_path: container_path(name).display().to_string(),
                permissions: "rw".into(),
            }],
            annotations: grant.request_annotations(),
            cdi_devices: self
                .cdi_kind
                .iter()
                .map(|kind| CdiDevice {
                    name: format!("{kind}={name}"),
                })
                .collect(),
        })
    }

    /// The shares to prefer: those that must be included, then more of the
    /// same TPM, then the healthy TPM with the most shares free, so that one
    /// container's shares stay on one TPM.
    pub fn preferred(&self, request: &ContainerPreferredAllocationRequest) -> Vec<String> {
        let want = usize::try_from(request.allocation_size).unwrap_or(0);
        let mut chosen: Vec<String> = request.must_include_device_i_ds.clone();
        let mut available: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
        for id in &request.available_device_i_ds {
            if chosen.contains(id) {
                continue;
            }
            if let Ok((name, _)) = self.tpm_of(id) {
                available.entry(name.as_str()).or_default().push(id);
            }
        }
        let first_tpm = chosen
            .first()
            .and_then(|id| self.tpm_of(id).ok())
            .map(|(n, _)| n.as_str());
        let mut order: Vec<(&str, Vec<&String>)> = available.into_iter().collect();
        // Stable: the must-include TPM first, then by most available.
        order.sort_by_key(|(name, ids)| (Some(*name) != first_tpm, std::cmp::Reverse(ids.len())));
        for (_, ids) in order {
            for id in ids {
                if chosen.len() >= want {
                    return chosen;
                }
                chosen.push(id.clone());
            }
        }
        chosen
    }
}

/// `tpmrm0`, 3 → `tpmrm0-3`.
pub fn share_id(tpm: &str, index: u32) -> String {
    format!("{tpm}-{index}")
}

/// Inventories for other modules' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use crate::core::policy::Policy;
    use crate::frontend::device_plugin::monitor::grant_for;
    use crate::testing::FakeHost;

    /// The core's grant of `name` on `host`, as discovery gets it.
    pub fn grant(host: &FakeHost, name: &str) -> Grant {
        grant_for(name, &Policy::default(), &host.roots).unwrap_or_else(|e| panic!("{e}"))
    }

    /// One share per TPM `tpmrmN`, each checked with the given outcome.
    pub fn inventory_with(tpms: &[(&str, Result<TpmInfo, String>)]) -> Inventory {
        let host = FakeHost::new(102);
        let mut inv = Inventory::new(1, None);
        for (name, outcome) in tpms {
            let index = name.trim_start_matches("tpmrm").parse().unwrap();
            host.add_tpm(index, "1:3", "2");
            inv.granted(grant(&host, name));
            inv.checked(name, outcome.clone());
        }
        inv
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::grant;
    use super::*;
    use crate::testing::FakeHost;

    fn info() -> TpmInfo {
        TpmInfo {
            family: "2.0".into(),
            manufacturer: "IBM".into(),
            firmware: "8217.4131.22.13057".into(),
        }
    }

    fn two_tpms() -> Inventory {
        let host = FakeHost::with_tpm();
        host.add_tpm(1, "1:3", "2");
        let mut inv = Inventory::new(2, Some(super::super::cdi::KIND.into()));
        inv.granted(grant(&host, "tpmrm0"));
        inv.granted(grant(&host, "tpmrm1"));
        assert_eq!(inv.checked("tpmrm0", Ok(info())), Transition::BecameHealthy);
        assert_eq!(inv.checked("tpmrm1", Ok(info())), Transition::BecameHealthy);
        inv
    }

    fn ids(devices: &[Device]) -> Vec<(String, String)> {
        devices
            .iter()
            .map(|d| (d.id.clone(), d.health.clone()))
            .collect()
    }

    #[test]
    fn unchecked_tpms_are_not_offered_and_shares_follow_health() {
        let host = FakeHost::with_tpm();
        let mut inv = Inventory::new(3, None);
        inv.granted(grant(&host, "tpmrm0"));
        assert!(inv.devices().is_empty(), "not checked yet");
        inv.checked("tpmrm0", Ok(info()));
        assert_eq!(
            ids(&inv.devices()),
            [1, 2, 3].map(|i| (format!("tpmrm0-{i}"), "Healthy".to_string()))
        );
        assert_eq!(inv.healthy_shares(), 3);
        assert_eq!(
            inv.checked("tpmrm0", Err("no answer within 5000 ms".into())),
            Transition::BecameUnhealthy("no answer within 5000 ms".into())
        );
        assert_eq!(
            inv.checked("tpmrm0", Err("still none".into())),
            Transition::None
        );
        assert!(inv.devices().iter().all(|d| d.health == "Unhealthy"));
        assert_eq!(inv.devices().len(), 3, "still listed: capacity stays");
        assert_eq!(inv.healthy_shares(), 0);
        assert_eq!(inv.checked("tpmrm0", Ok(info())), Transition::BecameHealthy);
        assert_eq!(inv.checked("tpmrm9", Ok(info())), Transition::None);
    }

    #[test]
    fn allocate_gives_the_node_env_annotations_and_cdi_device() {
        let inv = two_tpms();
        let r = inv
            .allocate(&ContainerAllocateRequest {
                devices_ids: vec!["tpmrm1-2".into()],
            })
            .unwrap();
        assert_eq!(
            r.devices,
            [DeviceSpec {
                container_path: "/dev/tpmrm1".into(),
                host_path: "/dev/tpmrm1".into(),
                permissions: "rw".into(),
            }]
        );
        assert_eq!(r.envs["TPM2TOOLS_TCTI"], "device:/dev/tpmrm1");
        assert_eq!(r.envs["TSS2_TCTI"], "device:/dev/tpmrm1");
        assert_eq!(r.annotations["oci-tpm-hook/device"], "tpmrm1");
        assert_eq!(r.annotations["oci-tpm-hook/self-test"], "quick");
        assert_eq!(r.annotations["oci-tpm-hook/required"], "true");
        assert_eq!(r.cdi_devices[0].name, "oci-tpm-hook.dev/kubelet=tpmrm1");
        // The annotations are a request the hook's own parser accepts.
        let back = crate::core::request::parse(&r.annotations, None)
            .unwrap()
            .unwrap();
        assert!(back.required);
    }

    #[test]
    fn allocate_refuses_what_it_cannot_give() {
        let mut inv = two_tpms();
        let alloc = |inv: &Inventory, ids: &[&str]| {
            inv.allocate(&ContainerAllocateRequest {
                devices_ids: ids.iter().map(|s| s.to_string()).collect(),
            })
            .unwrap_err()
        };
        assert!(alloc(&inv, &["tpmrm0-1", "tpmrm1-1"]).contains("one TPM"));
        assert!(alloc(&inv, &["tpmrm0-3"]).contains("not a device"));
        assert!(alloc(&inv, &["gpu0-1"]).contains("not a device"));
        assert!(alloc(&inv, &["tpmrm7-1"]).contains("does not have"));
        assert!(alloc(&inv, &[]).contains("no device"));
        inv.checked("tpmrm0", Err("gone".into()));
        assert!(alloc(&inv, &["tpmrm0-1"]).contains("unhealthy: gone"));
        // Two shares of one TPM: one device.
        let r = inv
            .allocate(&ContainerAllocateRequest {
                devices_ids: vec!["tpmrm1-1".into(), "tpmrm1-2".into()],
            })
            .unwrap();
        assert_eq!(r.devices.len(), 1);
    }

    #[test]
    fn without_cdi_no_cdi_device() {
        let host = FakeHost::with_tpm();
        let mut inv = Inventory::new(1, None);
        inv.granted(grant(&host, "tpmrm0"));
        inv.checked("tpmrm0", Ok(info()));
        let r = inv
            .allocate(&ContainerAllocateRequest {
                devices_ids: vec!["tpmrm0-1".into()],
            })
            .unwrap();
        assert!(r.cdi_devices.is_empty());
    }

    #[test]
    fn preferred_keeps_a_container_on_one_tpm() {
        let inv = two_tpms();
        let req = |avail: &[&str], must: &[&str], size: i32| ContainerPreferredAllocationRequest {
            available_device_i_ds: avail.iter().map(|s| s.to_string()).collect(),
            must_include_device_i_ds: must.iter().map(|s| s.to_string()).collect(),
            allocation_size: size,
        };
        // tpmrm1 has more free shares: both come from it.
        assert_eq!(
            inv.preferred(&req(&["tpmrm0-1", "tpmrm1-1", "tpmrm1-2"], &[], 2)),
            ["tpmrm1-1", "tpmrm1-2"]
        );
        // A must-include share pulls the rest onto its TPM.
        assert_eq!(
            inv.preferred(&req(
                &["tpmrm0-1", "tpmrm0-2", "tpmrm1-1", "tpmrm1-2"],
                &["tpmrm0-2"],
                2
            )),
            ["tpmrm0-2", "tpmrm0-1"]
        );
        assert_eq!(inv.preferred(&req(&["tpmrm0-1"], &[], 1)), ["tpmrm0-1"]);
    }
}
