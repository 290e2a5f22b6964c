//! The rule lookup for one packet: which subjects and classes are asked, and in what order.
//!
//! Precedence, written out (the compiler in `enforcer::compile` produces entries to match):
//! 1. Subjects: the SIM's segment first, then the SIM itself if it has rules of its own. A rule
//!    of either allows the packet; there are no deny rules, so the order only decides which rule
//!    id is counted.
//! 2. Destination classes: for an address outside every pool, its one CIDR class (which carries
//!    the rules of every policy CIDR that contains the address); for a pool address with a SIM,
//!    the SIM's segment class, then its SIM class if a rule names that SIM.
//! 3. Within one subject and class, the most specific entry wins: a rule for the packet's
//!    protocol and exactly its port (`PORT_RULES`), else the longest prefix in `RULES_V2`, that
//!    is the smallest aligned block of ports containing the port, then the protocol on any
//!    port, then any protocol. Among entries with the same key the lowest rule id was kept by
//!    the compiler. A packet without ports (ICMP, other protocols, non-first fragments) looks up
//!    at the protocol level, so only a rule for its protocol on any port, or for any protocol,
//!    allows it.
//!
//! Lookups per packet are at most 2 subjects × 2 classes × 2 tables = 8 whatever the number of
//! SIMs and rules; the `tiers` bits skip a table in which a subject has no entry that could
//! match, and `PORTS_USED` skips `PORT_RULES` for a port no single-port rule names, so a packet
//! allowed by a single-port rule costs one hash lookup and one denied for its port none.

use crate::maps::{
    PORT_BITS_ANY, RuleKey, TIER_ANY_PORT, TIER_ANY_PROTO, TIER_PORT, TIER_PORT_RANGE,
};

/// Read access to the rule tables: the kernel maps, or the reference model's copy.
pub trait RuleTable {
    /// `PORT_RULES`: the rule of the single-port entry of `generation` for exactly `key`'s
    /// subject, class, protocol and port, if any.
    fn port_rule(&self, generation: u8, key: &RuleKey) -> Option<u32>;
    /// `RULES_V2`: the rule of the longest entry of `generation` that matches `key` (a
    /// longest-prefix match over `key.prefix_len()` bits of `key.lpm_data(generation)`), if any.
    fn rule(&self, generation: u8, key: &RuleKey) -> Option<u32>;
}

/// "No rule allows it": the rule id that is never assigned.
pub const NO_RULE: u32 = u32::MAX;

/// The rule id of a session audit mode opened: no rule allows it (never assigned either).
pub const AUDIT_RULE: u32 = u32::MAX - 1;

/// What the packet offers to the rule table besides subject and class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Active policy generation.
    pub generation: u8,
    /// IP protocol number of the transport header (after IPv6 extension headers).
    pub proto: u8,
    /// Destination port in host order; meaningful only with `has_ports`.
    pub dport: u16,
    /// The packet carries a TCP or UDP header (not a non-first fragment).
    pub has_ports: bool,
    /// Some single-port rule names the destination port (`PORTS_USED`); implies `has_ports`.
    pub single_port: bool,
}

/// The most specific rule of `subject` (with tier bits `tiers`) that allows `probe` towards
/// `class`, or [`NO_RULE`]. (A sentinel, not an `Option`: see the note on undefined values in
/// `decide`.)
#[inline(always)]
pub fn first_match<T: RuleTable>(
    table: &T,
    subject: u32,
    tiers: u8,
    class: u32,
    probe: &Probe,
) -> u32 {
    let mut key = RuleKey {
        subject,
        class,
        proto: probe.proto,
        port: probe.dport,
        port_bits: 16,
    };
    if probe.single_port && tiers & TIER_PORT != 0 {
        let rule = table.port_rule(probe.generation, &key).unwrap_or(NO_RULE);
        if rule != NO_RULE {
            return rule;
        }
    }
    let with_range = probe.has_ports && tiers & TIER_PORT_RANGE != 0;
    if !with_range && tiers & (TIER_ANY_PORT | TIER_ANY_PROTO) == 0 {
        return NO_RULE;
    }
    if !with_range {
        key.port = 0;
        key.port_bits = PORT_BITS_ANY;
    }
    table.rule(probe.generation, &key).unwrap_or(NO_RULE)
}
