//! From a parsed packet to a verdict: [`identify`] asks the tables, [`decide`] judges.
//!
//! Both are generic over [`Tables`], so the XDP program (kernel maps) and the userspace
//! reference model (its own copy of the compiled image) run the same sequence of lookups and the
//! same judgement; what differs, and what the differential tests check, is how each side parses
//! frames and implements the lookups.
//!
//! Precedence in [`decide`], first match wins:
//! 1. source outside every pool: pass (or drop, on an interface set to drop non-pool traffic);
//! 2. source in a pool without a SIM: drop, spoofed;
//! 3. quarantined SIM: drop, whatever its rules;
//! 4. a rule allows the packet ([`crate::rules`]): pass;
//! 5. destination inside a pool: drop, lateral;
//! 6. a non-first fragment: drop, fragment (no ports, so only any-port rules could allow it);
//! 7. otherwise drop, no rule (default deny).

use crate::{
    maps::{
        CLASS_NONE, CLASS_SEGMENT, CLASS_SIM, IFACE_DROP_NON_POOL, NET_POOL, NetEntry,
        SIM_DST_NAMED, SIM_QUARANTINED, SUBJECT_SIM, SimEntry, port_slot,
    },
    rules::{Probe, RuleTable, first_match},
    verdict::{DropReason, PassReason, Verdict},
};

/// The addresses of a parsed IP packet, in network byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addrs {
    /// IPv4 source and destination.
    V4 {
        /// Source address.
        src: [u8; 4],
        /// Destination address.
        dst: [u8; 4],
    },
    /// IPv6 source and destination.
    V6 {
        /// Source address.
        src: [u8; 16],
        /// Destination address.
        dst: [u8; 16],
    },
}

/// What the parser extracts from an IP packet; nothing after this re-reads the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    /// Source and destination.
    pub addrs: Addrs,
    /// Transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Destination port in host order; meaningful only when `has_ports` is set.
    pub dport: u16,
    /// 1 when the packet carries a TCP or UDP header (not a non-first fragment).
    pub has_ports: bool,
    /// A fragment other than the first: it carries no transport header.
    pub later_fragment: bool,
    /// Interface the frame arrived on.
    pub ifindex: u32,
}

/// Read access to every policy table, implemented by the kernel maps and by the reference model.
pub trait Tables: RuleTable {
    /// The active generation (`CONFIG[0]`).
    fn generation(&self) -> u8;
    /// `SIM_V4[addr]`.
    fn sim_v4(&self, addr: [u8; 4]) -> Option<SimEntry>;
    /// `SIM_V6[prefix]` for the /64 prefix of an address.
    fn sim_v6(&self, prefix: [u8; 8]) -> Option<SimEntry>;
    /// Longest match of `addr` in `NET_V4` for `generation`.
    fn net_v4(&self, generation: u8, addr: [u8; 4]) -> Option<NetEntry>;
    /// Longest match of `addr` in `NET_V6` for `generation`.
    fn net_v6(&self, generation: u8, addr: [u8; 16]) -> Option<NetEntry>;
    /// Rule tier bits of a segment (`SEGMENTS`).
    fn segment_tiers(&self, generation: u8, segment: u16) -> u8;
    /// Port class of `port` for protocol slot `slot` (`PORT_CLASS`).
    fn port_class(&self, generation: u8, slot: u32, port: u16) -> u16;
    /// `IFACE_*` flags of an interface (`IFACES`), 0 if unknown.
    fn iface_flags(&self, ifindex: u32) -> u32;
}

/// Who sent the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrcIdentity {
    /// A bound SIM.
    Sim(SimEntry),
    /// An address inside a pool with no SIM bound to it.
    Spoofed,
    /// An address outside every pool.
    Outside,
}

/// Where the packet goes, as far as rules are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DstClass {
    /// Outside every pool: the class of the longest matching policy CIDR (`CLASS_NONE` if none).
    Net(u32),
    /// Inside a pool, to a bound SIM.
    Sim(SimEntry),
    /// Inside a pool, to an address with no SIM.
    PoolNoSim,
}

/// Everything [`decide`] needs, gathered by [`identify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inputs {
    /// The sender.
    pub src: SrcIdentity,
    /// The destination.
    pub dst: DstClass,
    /// The first rule that allows the packet, if one was looked for and found.
    pub rule: Option<u32>,
    /// The packet is a non-first fragment.
    pub later_fragment: bool,
    /// The arrival interface drops traffic from outside every pool.
    pub drop_non_pool: bool,
}

/// Look the packet up in the tables: its sender, its destination and the first allowing rule.
#[inline(always)]
pub fn identify<T: Tables>(tables: &T, meta: &PacketMeta) -> Inputs {
    let generation = tables.generation();
    let (src_sim, src_net, dst_net, dst_sim) = match meta.addrs {
        Addrs::V4 { src, dst } => {
            let src_sim = tables.sim_v4(src);
            let src_net = match src_sim {
                Some(_) => None,
                None => tables.net_v4(generation, src),
            };
            let dst_net = tables.net_v4(generation, dst);
            let dst_sim = match dst_net {
                Some(net) if net.flags & NET_POOL != 0 => tables.sim_v4(dst),
                _ => None,
            };
            (src_sim, src_net, dst_net, dst_sim)
        }
        Addrs::V6 { src, dst } => {
            let src_sim = tables.sim_v6(prefix64(&src));
            let src_net = match src_sim {
                Some(_) => None,
                None => tables.net_v6(generation, src),
            };
            let dst_net = tables.net_v6(generation, dst);
            let dst_sim = match dst_net {
                Some(net) if net.flags & NET_POOL != 0 => tables.sim_v6(prefix64(&dst)),
                _ => None,
            };
            (src_sim, src_net, dst_net, dst_sim)
        }
    };

    let src = match (src_sim, src_net) {
        (Some(sim), _) => SrcIdentity::Sim(sim),
        (None, Some(net)) if net.flags & NET_POOL != 0 => SrcIdentity::Spoofed,
        _ => SrcIdentity::Outside,
    };
    let dst = match (dst_net, dst_sim) {
        (_, Some(sim)) => DstClass::Sim(sim),
        (Some(net), None) if net.flags & NET_POOL != 0 => DstClass::PoolNoSim,
        (Some(net), None) => DstClass::Net(net.class),
        (None, None) => DstClass::Net(CLASS_NONE),
    };

    let rule = match src {
        SrcIdentity::Sim(sim) if sim.flags & SIM_QUARANTINED == 0 => {
            let port_class = match port_slot(meta.proto) {
                Some(slot) if meta.has_ports => {
                    Some(tables.port_class(generation, slot, meta.dport))
                }
                _ => None,
            };
            let probe = Probe {
                generation,
                proto: meta.proto,
                port_class,
            };
            match_subjects(tables, &sim, dst, &probe)
        }
        _ => None,
    };
    let drop_non_pool = match src {
        SrcIdentity::Outside => tables.iface_flags(meta.ifindex) & IFACE_DROP_NON_POOL != 0,
        _ => false,
    };
    Inputs {
        src,
        dst,
        rule,
        later_fragment: meta.later_fragment,
        drop_non_pool,
    }
}

/// Probe the segment's rules, then the SIM's own, for each destination class.
#[inline(always)]
fn match_subjects<T: Tables>(
    tables: &T,
    sim: &SimEntry,
    dst: DstClass,
    probe: &Probe,
) -> Option<u32> {
    let (first, second) = match dst {
        DstClass::Net(CLASS_NONE) | DstClass::PoolNoSim => return None,
        DstClass::Net(class) => (class, None),
        DstClass::Sim(to) => (
            CLASS_SEGMENT | u32::from(to.segment),
            (to.flags & SIM_DST_NAMED != 0).then_some(CLASS_SIM | to.sim),
        ),
    };
    let segment_tiers = tables.segment_tiers(probe.generation, sim.segment);
    let segment = u32::from(sim.segment);
    let own = SUBJECT_SIM | sim.sim;
    let towards = |class| {
        first_match(tables, segment, segment_tiers, class, probe).or_else(|| {
            if sim.tiers == 0 {
                None
            } else {
                first_match(tables, own, sim.tiers, class, probe)
            }
        })
    };
    towards(first).or_else(|| second.and_then(towards))
}

/// The /64 prefix of an IPv6 address: the SIM key, as cellular networks assign a /64 per UE.
#[inline(always)]
#[must_use]
pub fn prefix64(addr: &[u8; 16]) -> [u8; 8] {
    [
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]
}

/// Judge a packet. Pure: the same inputs always give the same verdict. See the module comment.
#[inline(always)]
#[must_use]
pub fn decide(inputs: &Inputs) -> Verdict {
    match inputs.src {
        SrcIdentity::Outside if inputs.drop_non_pool => Verdict::Drop(DropReason::NonPool),
        SrcIdentity::Outside => Verdict::Pass(PassReason::NonPool, 0),
        SrcIdentity::Spoofed => Verdict::Drop(DropReason::Spoofed),
        SrcIdentity::Sim(sim) if sim.flags & SIM_QUARANTINED != 0 => {
            Verdict::Drop(DropReason::Quarantined)
        }
        SrcIdentity::Sim(_) => match (inputs.rule, inputs.dst) {
            (Some(rule), _) => Verdict::Pass(PassReason::Rule, rule),
            (None, DstClass::Sim(_) | DstClass::PoolNoSim) => Verdict::Drop(DropReason::Lateral),
            (None, DstClass::Net(_)) if inputs.later_fragment => {
                Verdict::Drop(DropReason::Fragment)
            }
            (None, DstClass::Net(_)) => Verdict::Drop(DropReason::NoRule),
        },
    }
}
