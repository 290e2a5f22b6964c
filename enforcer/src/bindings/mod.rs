//! Where a SIM's address comes from at run time: the policy file gives static addresses; the
//! packet core reports dynamic ones over RADIUS accounting ([`radius`]).

pub mod radius;
