//! The decision core: what a container asks for (request), what the host
//! allows (policy), what the host has (host), what the container must get
//! (grant), and whether its process could use it (identity, userns).
//!
//! Pure but for reading files (policy, sysfs, /etc/group, /proc id maps):
//! no privileged call, no container is touched. Every front-end decides
//! through [`decision::decide`].

pub mod decision;
pub mod grant;
pub mod hook_entry;
pub mod host;
pub mod identity;
pub mod policy;
pub mod request;
pub mod subject;
pub mod userns;
