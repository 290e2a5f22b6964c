//! The enforcer daemon and CLI as a library: policy files, compilation to map contents, the
//! loader, counters and the userspace reference model of the XDP program.
mod batch;
pub mod capacity;
pub mod compile;
pub mod counters;
pub mod loader;
pub mod policy;
pub mod reference;
pub mod report;
