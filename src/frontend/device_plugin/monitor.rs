//! The plugin's loop: which TPMs there are, whether each one works, and
//! what follows from that.
//!
//! ```text
//!  every interval: discover() ── the core's decide() per allowed tpmrmN ──┐
//!  per TPM: health::watch() ── a self-test every interval ── Report ──────┤
//!                                                                         ▼
//!                                                          Inventory (shared with the service)
//!                                                                         │ publish()
//!            CDI spec (first: Allocate names it) ◄─────────────────────────┤
//!            device list (ListAndWatch) ◄──────────────────────────────────┤
//!            NFD feature file (node labels) ◄──────────────────────────────┘
//! ```
//!
//! Discovery uses the same decision as every other front-end, for a
//! container that asks for one TPM by name: the policy's device list and
//! the host checks (the node is the device the kernel registered, TPM 2.0,
//! the group exists). A TPM that disappears, or that the core stops
//! granting, stays listed as unhealthy: the node's capacity stays, its
//! allocatable count drops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::api::Device;
use super::health::{self, Checker, Report};
use super::inventory::{SharedInventory, Transition};
use super::{cdi, nfd};
use crate::core::decision::{decide, Decision};
use crate::core::grant::Grant;
use crate::core::host::HostRoots;
use crate::core::policy::Policy;
use crate::core::request::KEY_DEVICE;
use crate::core::subject::Subject;

/// Where the plugin writes what it found; `None`: not at all.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub nfd_dir: Option<PathBuf>,
    pub cdi_dir: Option<PathBuf>,
}

pub struct Monitor {
    pub policy: Policy,
    pub host: HostRoots,
    pub inventory: SharedInventory,
    pub devices: watch::Sender<Vec<Device>>,
    pub checker: Arc<dyn Checker>,
    /// Between discoveries, and between one TPM's self-tests.
    pub interval: Duration,
    pub outputs: Outputs,
}

/// The TPM resource managers the policy allows, each with the core's grant
/// for a container asking for it, or why there is none.
pub fn discover(policy: &Policy, host: &HostRoots) -> BTreeMap<String, Result<Grant, String>> {
    // No tpmrm device at all is not an error here: the node simply offers
    // nothing until one appears. `/dev/tpmN` is never advertised: it is
    // exclusive, so it cannot be shared between containers.
    let names = host.resource_managers().unwrap_or_default();
    names
        .into_iter()
        .filter(|name| policy.device_allowed(name))
        .map(|name| {
            let outcome = grant_for(&name, policy, host);
            (name, outcome)
        })
        .collect()
}

/// The core's grant of TPM `name` to a container that asks for it by name,
/// or why there is none.
pub fn grant_for(name: &str, policy: &Policy, host: &HostRoots) -> Result<Grant, String> {
    let subject = Subject {
        id: "device-plugin".into(),
        annotations: [(KEY_DEVICE.to_owned(), name.to_owned())].into(),
        ..Default::default()
    };
    match decide(&subject, policy, host) {
        Decision::Grant(grant) => Ok(*grant),
        // The reason without the "container …: cannot give it" part: there
        // is no container yet.
        Decision::Refuse(refusal) => Err(refusal
            .error
            .chain()
            .skip(1)
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(": ")),
        Decision::NotRequested => Err("the core saw no request".into()),
    }
}

/// A running watcher; aborted when dropped.
struct Watcher(JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The last error of each output, so that a persistent one is logged once.
#[derive(Default)]
struct OutputErrors {
    cdi: Option<String>,
    nfd: Option<String>,
}

impl Monitor {
    /// Runs until the task is dropped; an error only when an output cannot
    /// be written at start (a misconfigured directory should stop the
    /// DaemonSet's pod where its operator sees it).
    pub async fn run(self) -> anyhow::Result<()> {
        let (reports_tx, mut reports) = mpsc::channel(16);
        let mut watchers: BTreeMap<String, Watcher> = BTreeMap::new();
        let mut refused: BTreeMap<String, String> = BTreeMap::new();
        let mut errors = OutputErrors::default();
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.rediscover(&mut watchers, &mut refused, &reports_tx);
        self.publish(&mut errors, true)?;
        loop {
            tokio::select! {
                _ = ticks.tick() => self.rediscover(&mut watchers, &mut refused, &reports_tx),
                Some(report) = reports.recv() => {
                    // A report from a watcher stopped meanwhile is stale.
                    if watchers.contains_key(&report.name) {
                        self.apply(report);
                    }
                }
            }
            self.publish(&mut errors, false)?;
        }
    }

    /// Discovery: new TPMs get a watcher, TPMs the core no longer grants
    /// (gone from the host, or failing its checks) become unhealthy.
    fn rediscover(
        &self,
        watchers: &mut BTreeMap<String, Watcher>,
        refused: &mut BTreeMap<String, String>,
        reports: &mpsc::Sender<Report>,
    ) {
        let found = discover(&self.policy, &self.host);
        let mut inventory = self.inventory.lock();
        for (name, outcome) in &found {
            match outcome {
                Ok(grant) => {
                    refused.remove(name);
                    inventory.granted(grant.clone());
                    if !watchers.contains_key(name) {
                        info!(
                            "TPM {name} ({}:{}) is allowed by the policy: self-testing it every {} s",
                            grant.device.major,
                            grant.device.minor,
                            self.interval.as_secs()
                        );
                        let task = tokio::spawn(health::watch(
                            name.clone(),
                            grant.device.path.clone(),
                            self.checker.clone(),
                            self.interval,
                            self.policy.self_test_timeout(),
                            reports.clone(),
                        ));
                        watchers.insert(name.clone(), Watcher(task));
                    }
                }
                Err(reason) => {
                    watchers.remove(name);
                    if refused.get(name) != Some(reason) {
                        warn!("TPM {name} is not offered: {reason}");
                        refused.insert(name.clone(), reason.clone());
                    }
                    log_transition(name, &inventory.checked(name, Err(reason.clone())));
                }
            }
        }
        let known: BTreeSet<String> = inventory.tpms().map(|(n, _)| n.clone()).collect();
        for name in known.iter().filter(|n| !found.contains_key(*n)) {
            watchers.remove(name);
            let gone = format!(
                "the TPM is gone from the host ({} no longer lists it)",
                self.host.sys.join("class/tpmrm").display()
            );
            log_transition(name, &inventory.checked(name, Err(gone)));
        }
    }

    fn apply(&self, report: Report) {
        let transition = self.inventory.lock().checked(&report.name, report.outcome);
        log_transition(&report.name, &transition);
    }

    /// Writes what changed: the CDI spec before the device list (a device
    /// the kubelet may allocate must have its CDI name resolvable), then
    /// the node's features. `strict`: fail on a write error (at start)
    /// rather than log it.
    fn publish(&self, errors: &mut OutputErrors, strict: bool) -> anyhow::Result<()> {
        let inventory = self.inventory.lock().clone();
        if let Some(dir) = &self.outputs.cdi_dir {
            let written = cdi::write(dir, cdi::spec(&inventory).as_ref());
            report_output(&mut errors.cdi, written, strict, "CDI spec", dir)?;
        }
        let devices = inventory.devices();
        self.devices.send_if_modified(|current| {
            let changed = *current != devices;
            if changed {
                info!(
                    "device list for the kubelet: {} of {} shares healthy",
                    inventory.healthy_shares(),
                    devices.len()
                );
                *current = devices;
            }
            changed
        });
        if let Some(dir) = &self.outputs.nfd_dir {
            let written = nfd::write(dir, &nfd::features(&inventory));
            report_output(&mut errors.nfd, written, strict, "NFD feature file", dir)?;
        }
        Ok(())
    }
}

/// Logs an output's error when it is new (and its recovery); at start, an
/// error is the plugin's error.
fn report_output(
    last: &mut Option<String>,
    written: anyhow::Result<bool>,
    strict: bool,
    what: &str,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    match written {
        Ok(changed) => {
            if last.take().is_some() || changed {
                info!("{what} in {} is up to date", dir.display());
            }
            Ok(())
        }
        Err(e) if strict => Err(e),
        Err(e) => {
            let message = format!("{e:#}");
            if last.as_deref() != Some(message.as_str()) {
                warn!("{what} could not be written: {message}");
                *last = Some(message);
            }
            Ok(())
        }
    }
}

fn log_transition(name: &str, transition: &Transition) {
    match transition {
        Transition::None => {}
        Transition::BecameHealthy => info!("TPM {name} passed its self-test: Healthy"),
        Transition::BecameUnhealthy(reason) => warn!("TPM {name} is Unhealthy: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::device_plugin::health::TpmInfo;
    use crate::frontend::device_plugin::inventory::Inventory;
    use crate::testing::FakeHost;
    use std::path::Path;
    use std::sync::Mutex;

    #[test]
    fn discovery_is_the_cores_decision_per_allowed_tpm() {
        let host = FakeHost::with_tpm();
        host.add_tpm(1, "1:3", "2");
        host.add_tpm(2, "1:5", "2"); // the node is /dev/null, 1:3: not the registered device
        let policy = Policy::parse("[devices]\nallow = [\"tpmrm0\", \"tpmrm2\"]\n").unwrap();
        let found = discover(&policy, &host.roots);
        assert_eq!(found.keys().collect::<Vec<_>>(), ["tpmrm0", "tpmrm2"]);
        let grant = found["tpmrm0"].as_ref().unwrap();
        assert_eq!((grant.gid, grant.device.minor), (102, 3));
        let refused = found["tpmrm2"].as_ref().unwrap_err();
        assert!(refused.contains("1:5"), "{refused}");
        assert!(!refused.contains("container"), "{refused}");
        assert!(discover(&Policy::default(), &FakeHost::new(102).roots).is_empty());
    }

    /// A checker whose answer the test sets.
    struct Scripted(Mutex<Result<TpmInfo, String>>);

    impl Checker for Scripted {
        fn check(&self, _: &Path, _: Duration) -> Result<TpmInfo, String> {
            self.0.lock().unwrap().clone()
        }
    }

    fn info() -> TpmInfo {
        TpmInfo {
            family: "2.0".into(),
            manufacturer: "IBM".into(),
            firmware: "1.2".into(),
        }
    }

    /// Waits until the published list satisfies `pred`.
    async fn until(rx: &mut watch::Receiver<Vec<Device>>, pred: impl Fn(&[Device]) -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !pred(&rx.borrow_and_update()) {
                rx.changed().await.unwrap();
            }
        })
        .await
        .expect("the device list did not change as expected");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn health_and_removal_reach_the_list_and_the_files() {
        let host = FakeHost::with_tpm();
        let out = tempfile::tempdir().unwrap();
        let (tx, mut rx) = watch::channel(Vec::new());
        let checker = Arc::new(Scripted(Mutex::new(Ok(info()))));
        let monitor = Monitor {
            policy: Policy::default(),
            host: host.roots.clone(),
            inventory: SharedInventory::new(Inventory::new(2, Some(cdi::KIND.into()))),
            devices: tx,
            checker: checker.clone(),
            interval: Duration::from_millis(20),
            outputs: Outputs {
                nfd_dir: Some(out.path().join("features.d")),
                cdi_dir: Some(out.path().join("cdi")),
            },
        };
        let task = tokio::spawn(monitor.run());
        let healthy = |d: &[Device]| d.len() == 2 && d.iter().all(|d| d.health == "Healthy");
        let unhealthy = |d: &[Device]| d.len() == 2 && d.iter().all(|d| d.health == "Unhealthy");
        until(&mut rx, healthy).await;
        let features =
            || std::fs::read_to_string(out.path().join("features.d/oci-tpm-hook")).unwrap();
        assert!(features().contains("tpm=true\n"), "{}", features());
        assert!(out
            .path()
            .join("cdi/oci-tpm-hook-device-plugin.json")
            .is_file());

        // The self-test fails: Unhealthy, and the label says so.
        *checker.0.lock().unwrap() = Err("TPM_RC_FAILURE".into());
        until(&mut rx, unhealthy).await;
        assert!(features().contains("tpm=false\n"));
        *checker.0.lock().unwrap() = Ok(info());
        until(&mut rx, healthy).await;

        // The TPM goes away: still listed, unhealthy.
        std::fs::remove_dir_all(host.roots.sys.join("class/tpmrm/tpmrm0")).unwrap();
        until(&mut rx, unhealthy).await;
        task.abort();
    }
}
