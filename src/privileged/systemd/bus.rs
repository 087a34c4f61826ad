//! The D-Bus side of [`super`]: systemd's Manager API on the system bus,
//! through zbus (blocking API on its own async-io executor, so nothing
//! links tokio). Only the `oci-tpm-systemd` program calls this; the hook
//! runs that program (see [`super`] for why).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use zbus::blocking::{connection, proxy, Connection, Proxy};
use zbus::proxy::CacheProperties;
use zbus::zvariant::{OwnedObjectPath, Value};

use super::{unit_interface, DeviceList, ReloadOutcome};

const DESTINATION: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
/// Bound on each D-Bus call.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Makes sure systemd's own rules for `unit` let the container use `device`
/// (host path and numbers), now and after a reload.
pub fn allow_in_unit(
    unit: String,
    device: &Path,
    major: u32,
    minor: u32,
) -> anyhow::Result<ReloadOutcome> {
    let systemd = Systemd::connect()?;
    let Some(list) = systemd.device_list(&unit)? else {
        return Ok(ReloadOutcome::NoUnit);
    };
    match list.allows(device, major, minor) {
        None => return Ok(ReloadOutcome::Unrestricted { unit }),
        Some(true) => return Ok(ReloadOutcome::AlreadyListed { unit }),
        Some(false) => {}
    }
    let path = device
        .to_str()
        .with_context(|| format!("device path {} is not UTF-8", device.display()))?;
    systemd
        .set_properties(&unit, vec![("DeviceAllow", Value::new(vec![(path, "rw")]))])
        .with_context(|| format!("systemd refused to add {path} to DeviceAllow= of {unit}"))?;
    let added = ReloadOutcome::Added {
        unit: unit.clone(),
        previous: list.allowed,
    };
    // Read back: the answer also comes after systemd has re-applied the
    // unit's cgroup settings (it does so before it reads the next message),
    // so the self-test that follows sees systemd's new rules.
    let now = systemd.device_list(&unit)?;
    if now.and_then(|l| l.allows(device, major, minor)) != Some(true) {
        take_back(&added).ok();
        bail!("systemd accepted {path} for DeviceAllow= of {unit} but does not list it");
    }
    Ok(added)
}

/// Undoes [`ReloadOutcome::Added`]: the unit's list as it was before
/// (systemd can only append to a list or empty it, so: empty, then the old
/// entries, in one call). Nothing to do for the other outcomes.
pub fn take_back(outcome: &ReloadOutcome) -> anyhow::Result<()> {
    let ReloadOutcome::Added { unit, previous } = outcome else {
        return Ok(());
    };
    let empty: Vec<(&str, &str)> = Vec::new();
    // systemd puts each new entry first and reports the list in its own
    // order, so the old entries go back in reverse to come out the same.
    let old: Vec<(&str, &str)> = previous
        .iter()
        .rev()
        .map(|(p, r)| (p.as_str(), r.as_str()))
        .collect();
    let mut properties = vec![("DeviceAllow", Value::new(empty))];
    if !old.is_empty() {
        properties.push(("DeviceAllow", Value::new(old)));
    }
    Systemd::connect()?
        .set_properties(unit, properties)
        .with_context(|| format!("cannot put back DeviceAllow= of {unit}"))
}

struct Systemd {
    conn: Connection,
}

impl Systemd {
    fn connect() -> anyhow::Result<Systemd> {
        // The system bus, as systemd's cgroup drivers in runc, crun and
        // podman use it. (Not systemd's private socket: zbus rejects the
        // messages systemd sends there, which carry no valid sender.)
        let conn = connection::Builder::system()
            .and_then(|b| b.method_timeout(CALL_TIMEOUT).build())
            .context("cannot connect to systemd through the D-Bus system bus")?;
        Ok(Systemd { conn })
    }

    fn proxy<'a>(&'a self, path: &'a str, interface: &'a str) -> anyhow::Result<Proxy<'a>> {
        Ok(proxy::Builder::new(&self.conn)
            .destination(DESTINATION)?
            .path(path)?
            .interface(interface)?
            .cache_properties(CacheProperties::No)
            .build()?)
    }

    /// The unit's `DevicePolicy=` and `DeviceAllow=`; `None` when systemd
    /// has no such unit.
    fn device_list(&self, unit: &str) -> anyhow::Result<Option<DeviceList>> {
        let manager = self.proxy(MANAGER_PATH, MANAGER)?;
        let path: OwnedObjectPath = match manager.call("GetUnit", &(unit,)) {
            Ok(path) => path,
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == NO_SUCH_UNIT => {
                return Ok(None)
            }
            Err(e) => return Err(e).with_context(|| format!("cannot ask systemd for unit {unit}")),
        };
        let interface = unit_interface(unit)
            .with_context(|| format!("{unit} is neither a scope nor a service"))?;
        let properties = self.proxy(path.as_str(), interface)?;
        let read = |name: &str| format!("cannot read {name}= of systemd unit {unit}");
        let policy: String = properties
            .get_property("DevicePolicy")
            .with_context(|| read("DevicePolicy"))?;
        let allowed: Vec<(String, String)> = properties
            .get_property("DeviceAllow")
            .with_context(|| read("DeviceAllow"))?;
        Ok(Some(DeviceList { policy, allowed }))
    }

    /// Sets properties of the unit until it ends (`runtime`: nothing is
    /// written under /etc).
    fn set_properties(&self, unit: &str, properties: Vec<(&str, Value<'_>)>) -> anyhow::Result<()> {
        let manager = self.proxy(MANAGER_PATH, MANAGER)?;
        manager.call::<_, _, ()>("SetUnitProperties", &(unit, true, properties))?;
        Ok(())
    }
}
