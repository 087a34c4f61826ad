//! Acting on a running container with the host's privileges: a bounded
//! child of the hook (child), that child joining the container's namespaces
//! and cgroup (container), the device node in its rootfs (node), becoming
//! its process for the self-test (credentials), and the container's systemd
//! unit, told about the device so that a reload keeps it (systemd). Thin,
//! and tested for real in the lab; the cgroup grant itself is the
//! `devcgroup` crate.

pub mod child;
pub mod container;
pub mod credentials;
pub mod node;
pub mod systemd;
