//! What OCI runtimes hand over: the state on a hook's stdin, the bundle's
//! config.json (read leniently, edited losslessly), the spec's device-cgroup
//! rules, and the runtime's command line and log format.

pub mod bundle;
pub mod device_rules;
pub mod runtime_cli;
pub mod runtime_log;
pub mod spec_edit;
pub mod state;
