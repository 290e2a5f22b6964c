//! Shared helpers of the integration tests: a frame builder, a harness that loads a policy
//! into the real XDP program and the reference model side by side, a seeded RNG and network
//! namespace guards.

pub mod bench;
pub mod frames;
pub mod harness;
pub mod netns;
pub mod rng;
pub mod throughput;
pub mod topology;
