//! What OCI runtimes hand over: the state on a hook's stdin, the bundle's
//! config.json (read leniently, edited losslessly), and the spec's
//! device-cgroup rules.

pub mod device_rules;
pub mod spec_edit;
pub mod state;
