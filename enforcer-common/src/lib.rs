//! Types and logic shared by the XDP program (`enforcer-ebpf`) and userspace (`enforcer`).
//!
//! Everything the kernel and userspace must agree on lives here exactly once: the `#[repr(C)]`
//! map keys and values ([`maps`]), the reasons a packet is passed or dropped ([`verdict`]), the
//! order in which rule tables are probed ([`rules`]) and the decision itself ([`decide`]).
//! The crate is `no_std` and allocation-free so that it compiles for `bpfel-unknown-none`.
#![no_std]

pub mod decide;
pub mod maps;
pub mod rules;
pub mod scan;
pub mod session;
pub mod verdict;

pub use decide::{Dst, DstKind, Inputs, Src, SrcKind, decide};
pub use verdict::{DropReason, PassReason, Verdict};
