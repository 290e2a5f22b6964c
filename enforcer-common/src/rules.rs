//! The order in which the rule table is probed for one packet.
//!
//! Precedence, written out (the compiler in `enforcer::compile` produces entries to match):
//! 1. Subjects: the SIM's segment first, then the SIM itself if it has rules of its own. A rule
//!    of either allows the packet; there are no deny rules, so the order only decides which rule
//!    id is counted.
//! 2. Destination classes: for an address outside every pool, its one CIDR class; for a pool
//!    address with a SIM, the SIM's segment class, then its SIM class if a rule names that SIM.
//! 3. Tiers, most specific first: (protocol, port class), (protocol, any port), (any protocol).
//!    A packet without ports (ICMP, other protocols, non-first fragments), or whose port no
//!    port-specific rule covers (port class 0), skips the first tier,
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

/// "No rule allows it": the rule id that is never assigned.
pub const NO_RULE: u32 = u32::MAX;

/// What the packet offers to the rule table besides subject and class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Active policy generation.
    pub generation: u8,
    /// IP protocol number of the transport header (after IPv6 extension headers).
    pub proto: u8,
    /// Port class of the destination port; `PORT_ANY` (0) when the packet carries no ports or
    /// no port-specific rule covers its port, so the port tier is skipped.
    pub port_class: u16,
}

/// The first rule of `subject` (with tier bits `tiers`) that allows `probe` towards `class`, or
/// [`NO_RULE`]. (A sentinel, not an `Option`: see the note on undefined values in `decide`.)
#[inline(always)]
pub fn first_match<T: RuleTable>(
    table: &T,
    subject: u32,
    tiers: u8,
    class: u32,
    probe: &Probe,
) -> u32 {
    let key = |proto, port_class| RuleKey {
        subject,
        class,
        port_class,
        proto,
        generation: probe.generation,
    };
    let probe_one = |proto, port_class| table.rule(&key(proto, port_class)).unwrap_or(NO_RULE);
    if tiers & TIER_PORT != 0 && probe.port_class != PORT_ANY {
        let rule = probe_one(probe.proto, probe.port_class);
        if rule != NO_RULE {
            return rule;
        }
    }
    if tiers & TIER_ANY_PORT != 0 {
        let rule = probe_one(probe.proto, PORT_ANY);
        if rule != NO_RULE {
            return rule;
        }
    }
    if tiers & TIER_ANY_PROTO != 0 {
        return probe_one(PROTO_ANY, PORT_ANY);
    }
    NO_RULE
}
