//! The enforcer daemon and CLI as a library: policy files, compilation to map contents, the
//! loader, stable ids and the store that keeps them, counters, the userspace reference model of
//! the XDP program, the independent policy oracle and capture replay.
mod batch;
pub mod bindings;
pub mod capacity;
pub mod clock;
pub mod compile;
pub mod control;
pub mod counters;
pub mod diff;
pub mod explain;
pub mod held;
pub mod ids;
pub mod links;
pub mod loader;
mod map_iter;
pub mod netlink_watch;
pub mod oracle;
pub mod pins;
pub mod policy;
pub mod privileges;
pub mod reference;
pub mod replay;
pub mod report;
pub mod runtime;
pub mod scan_plan;
pub mod sim_table;
pub mod store;
pub mod telemetry;
pub mod xdp_features;
pub mod xdp_holder;
