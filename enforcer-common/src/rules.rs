//! The order in which the rule table is probed for one packet.
//!
//! Precedence, written out (the compiler in `enforcer::compile` produces entries to match):
//! 1. Subjects: the SIM's segment first, then the SIM itself if it has rules of its own. A rule
//!    of either allows the packet; there are no deny rules, so the order only decides which rule
//!    id is counted.
//! 2. Destination classes: for an address outside every pool, its one CIDR class; for a pool
//!    address with a SIM, the SIM's segment class, then its SIM class if a rule names that SIM.
//! 3. Tiers, most specific first: (protocol, port class), (protocol, any port), (any protocol).
//!    A packet without ports (ICMP, other protocols, non-first fragments) skips the first tier,
//!    so it is allowed only by a rule for its protocol on any port, or for any protocol.
//!
//! Probes per packet are at most 2 subjects × 2 classes × 3 tiers = 12 hash lookups whatever
//! the number of SIMs and rules; the `tiers` bits make the usual case one or two.

use crate::maps::{PORT_ANY, PROTO_ANY, RuleKey, TIER_ANY_PORT, TIER_ANY_PROTO, TIER_PORT};

/// Read access to the `RULES` table: the kernel map, or the reference model's copy.
pub trait RuleTable {
    /// The rule id stored under `key`, if any.
    fn rule(&self, key: &RuleKey) -> Option<u32>;
}

/// What the packet offers to the rule table besides subject and class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Active policy generation.
    pub generation: u8,
    /// IP protocol number of the transport header (after IPv6 extension headers).
    pub proto: u8,
    /// Port class of the destination port; `None` when the packet carries no ports, `Some(0)`
    /// when no port-specific rule covers the port.
    pub port_class: Option<u16>,
}

/// The first rule of `subject` (with tier bits `tiers`) that allows `probe` towards `class`.
#[inline(always)]
pub fn first_match<T: RuleTable>(
    table: &T,
    subject: u32,
    tiers: u8,
    class: u32,
    probe: &Probe,
) -> Option<u32> {
    let key = |proto, port_class| RuleKey {
        subject,
        class,
        port_class,
        proto,
        generation: probe.generation,
    };
    if tiers & TIER_PORT != 0
        && let Some(port_class) = probe.port_class
        && port_class != PORT_ANY
        && let Some(rule) = table.rule(&key(probe.proto, port_class))
    {
        return Some(rule);
    }
    if tiers & TIER_ANY_PORT != 0
        && let Some(rule) = table.rule(&key(probe.proto, PORT_ANY))
    {
        return Some(rule);
    }
    if tiers & TIER_ANY_PROTO != 0 {
        return table.rule(&key(PROTO_ANY, PORT_ANY));
    }
    None
}
