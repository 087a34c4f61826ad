//! Becoming the container's process: the last step of the self-test child
//! before it opens the node.
//!
//! Same order as runtimes use for their init: enter the user namespace,
//! supplementary groups, GID, then UID with `PR_SET_KEEPCAPS` so that the
//! capabilities can be cut to exactly what the spec gives the process (no
//! `CAP_DAC_OVERRIDE` unless granted), and the spec's umask. Seccomp,
//! no-new-privileges and LSM labels are not applied: they do not decide
//! whether `open()` of a device node succeeds for DAC and the device
//! cgroup, which is what the self-test proves.
//!
//! Only ever called in a forked, single-threaded child that exits after the
//! self-test: nothing here is undone.

use std::collections::HashSet;
use std::os::fd::BorrowedFd;
use std::str::FromStr;

use anyhow::{bail, Context};
use caps::{CapSet, Capability, CapsHashSet};
use nix::sched::{setns, CloneFlags};
use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};

use crate::core::identity::ProcessIdentity;

/// The ids the process ended up with, read back from the kernel (inside the
/// user namespace when it entered one): what the hook's report shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RanAs {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl std::fmt::Display for RanAs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        write!(
            f,
            "uid={} gid={} groups={}",
            self.uid,
            self.gid,
            groups.join(",")
        )
    }
}

/// Turns the calling process into `who`: after this it can do only what
/// the container's process could.
pub fn assume(who: &ProcessIdentity, user_ns: Option<BorrowedFd<'_>>) -> anyhow::Result<RanAs> {
    if let Some(ns) = user_ns {
        setns(ns, CloneFlags::CLONE_NEWUSER)
            .context("cannot enter the container's user namespace")?;
    }
    let groups: Vec<Gid> = who
        .additional_gids
        .iter()
        .copied()
        .map(Gid::from_raw)
        .collect();
    // A user namespace whose setgroups file says "deny" keeps the groups the
    // runtime could not change either; the process then has none extra.
    match nix::unistd::setgroups(&groups) {
        Ok(()) => {}
        Err(nix::errno::Errno::EPERM) if user_ns.is_some() && groups.is_empty() => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot take the supplementary groups {:?}",
                    who.additional_gids
                )
            })
        }
    }
    let gid = Gid::from_raw(who.gid);
    nix::unistd::setresgid(gid, gid, gid).with_context(|| format!("cannot take GID {gid}"))?;
    nix::sys::prctl::set_keepcaps(true).context("PR_SET_KEEPCAPS")?;
    let uid = Uid::from_raw(who.uid);
    nix::unistd::setresuid(uid, uid, uid).with_context(|| format!("cannot take UID {uid}"))?;
    limit_capabilities(who)?;
    if let Some(mask) = who.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    ran_as()
}

/// Effective and permitted as the spec says (names the kernel does not
/// know are skipped, as runtimes do); nothing inheritable or ambient.
fn limit_capabilities(who: &ProcessIdentity) -> anyhow::Result<()> {
    let known = |names: &std::collections::BTreeSet<String>| -> CapsHashSet {
        names
            .iter()
            .filter_map(|n| Capability::from_str(n).ok())
            .collect()
    };
    let permitted_now = caps::read(None, CapSet::Permitted).context("reading capabilities")?;
    let permitted: CapsHashSet = known(&who.permitted_caps)
        .intersection(&permitted_now)
        .copied()
        .collect();
    let effective: CapsHashSet = known(&who.effective_caps)
        .intersection(&permitted)
        .copied()
        .collect();
    caps::clear(None, CapSet::Ambient).context("clearing ambient capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("clearing inheritable capabilities")?;
    caps::set(None, CapSet::Effective, &effective).context("setting effective capabilities")?;
    caps::set(None, CapSet::Permitted, &permitted).context("setting permitted capabilities")?;
    let check: HashSet<Capability> =
        caps::read(None, CapSet::Effective).context("reading capabilities")?;
    if check != effective {
        bail!("the effective capabilities did not come out as the spec says");
    }
    Ok(())
}

fn ran_as() -> anyhow::Result<RanAs> {
    let mut groups: Vec<u32> = nix::unistd::getgroups()
        .context("getgroups")?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    Ok(RanAs {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        groups,
    })
}
