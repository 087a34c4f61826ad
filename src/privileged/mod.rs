//! Acting on a running container with the host's privileges: a forked
//! child that joins its namespaces and cgroup (container), the device node
//! in its rootfs (node), and becoming its process for the self-test
//! (credentials), and the container's systemd unit, told about the device so
//! that a reload keeps it (systemd). Thin, and tested for real in the lab; the cgroup grant
//! itself is the `devcgroup` crate.

pub mod container;
pub mod credentials;
pub mod node;
pub mod systemd;
