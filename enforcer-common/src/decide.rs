//! From a parsed packet to a verdict: [`identify`] asks the tables, [`decide`] judges.
//!
//! Both are generic over [`Tables`], so the XDP program (kernel maps) and the userspace
//! reference model (its own copy of the compiled image) run the same sequence of lookups and the
//! same judgement; what differs, and what the differential tests check, is how each side parses
//! frames and implements the lookups.
//!
//! The values that flow through the kernel pipeline are plain structs whose every field is
//! always written (a kind byte plus zeroed payloads, `NO_RULE` for "no rule"), never enums with
//! payloads or `Option`s of structs: LLVM may move the undefined payload of a `None` through a
//! register, and the verifier rejects any read of an uninitialised register (`R2 !read_ok`);
//! which code triggers that changes with every compiler and kernel version.
//!
//! Precedence in [`decide`], first match wins:
//! 1. source outside every pool: drop on a core interface, unless the source is in the
//!    policy's `core_sources`; else pass as `inbound` when an inbound rule of the destination
//!    SIM's segment allows it, as `audit` when that segment is in audit mode (and the SIM not
//!    quarantined), else as `non_pool` (sessions then drop such a packet toward a pool
//!    address, `crate::session`);
//! 2. source in a pool without a SIM, or a SIM's address arriving on a `service` interface:
//!    drop, spoofed;
//! 3. quarantined SIM: drop, whatever its rules;
//! 4. a rule allows the packet ([`crate::rules`]): pass;
//! 5. the SIM's segment is in audit mode: pass, `audit` (what 6-8 would drop);
//! 6. destination inside a pool: drop, lateral;
//! 7. a non-first fragment: drop, fragment (no ports, so only any-port rules could allow it);
//! 8. otherwise drop, no rule (default deny).

use crate::{
    maps::{
        CLASS_NONE, CLASS_SEGMENT, CLASS_SIM, IFACE_DROP_NON_POOL, IFACE_SERVICE, NET_CORE_SOURCE,
        NET_POOL, NetEntry, SIM_AUDIT, SIM_BLOCKED, SIM_DST_NAMED, SUBJECT_INBOUND, SUBJECT_SIM,
        SegmentEntry, SimEntry, blocked_reason,
    },
    rules::{AUDIT_RULE, NO_RULE, Probe, RuleTable, first_match},
    verdict::{DropReason, PassReason, Verdict},
};

/// What the parser extracts from an IP packet; nothing after this re-reads the frame.
///
/// `repr(C, align(8))` with the addresses first: each address is then two aligned 64-bit
/// words, which the BPF backend copies and compares with word loads. Unaligned, it split them
/// into single bytes and spilled each to the stack, past the program's 512 bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// Source address in network order; IPv4 uses the first four bytes, the rest are zero.
    pub src: [u8; 16],
    /// Destination address, laid out like `src`.
    pub dst: [u8; 16],
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Destination port in host order; meaningful only when `has_ports` is set. For an ICMP or
    /// ICMPv6 echo reply: its identifier (see `sport`).
    pub dport: u16,
    /// Source port in host order (TCP, UDP). For an ICMP or ICMPv6 echo request: its
    /// identifier (RFC 792, RFC 4443 §4.1), so that a request and its reply make one session.
    pub sport: u16,
    /// The TCP flags byte (RFC 9293 §3.1); for ICMP and ICMPv6 the type; 0 otherwise.
    pub l4_flags: u8,
    /// The packet carries a TCP or UDP header (not a non-first fragment).
    pub has_ports: bool,
    /// A fragment other than the first: it carries no transport header.
    pub later_fragment: bool,
    /// Interface the frame arrived on.
    pub ifindex: u32,
    /// Judge the packet as if sent the other way (source and destination, and their ports,
    /// swapped): how a reply's session is checked in the device's direction. A flag rather
    /// than a swap, which cost the program 64 bytes of its 512-byte stack.
    pub reversed: bool,
    /// The packet's session was already looked up for this packet and is absent (set by the
    /// kernel's established-session stage, which looks up the common frame shape first), so
    /// that `session::judge` does not look it up again; the kernel's identify stage then also
    /// takes the source's SIM binding that the stage looked up (its `SRC_SIM`), and a
    /// `no_rule` drop may be remembered in the deny cache ([`DenyKey::of`]). `false`
    /// everywhere else.
    pub session_absent: bool,
}

impl PacketMeta {
    /// (source, destination) as judged: swapped when [`PacketMeta::reversed`].
    #[inline(always)]
    #[must_use]
    pub fn endpoints(&self) -> (&[u8; 16], &[u8; 16]) {
        if self.reversed {
            (&self.dst, &self.src)
        } else {
            (&self.src, &self.dst)
        }
    }

    /// The destination port as judged (the source port when [`PacketMeta::reversed`]).
    #[inline(always)]
    #[must_use]
    pub fn destination_port(&self) -> u16 {
        if self.reversed {
            self.sport
        } else {
            self.dport
        }
    }
}

/// An IPv4 address in the 16-byte layout of [`PacketMeta`].
#[inline(always)]
#[must_use]
pub const fn v4_in_16(a: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// Read access to every policy table, implemented by the kernel maps and by the reference model.
pub trait Tables: RuleTable {
    /// The active generation (`CONFIG[0]`).
    fn generation(&self) -> u8;
    /// The SIM bound to `addr` in `generation`: `SIM_V4_V2[addr]`'s slot for `generation`, with
    /// that SIM's `SIMS` policy word of the same generation.
    fn sim_v4(&self, generation: u8, addr: [u8; 4]) -> Option<SimEntry>;
    /// As [`Tables::sim_v4`], for the /64 prefix of an IPv6 address (`SIM_V6_V2`).
    fn sim_v6(&self, generation: u8, prefix: [u8; 8]) -> Option<SimEntry>;
    /// Longest match of `addr` in `NET_V4` for `generation`.
    fn net_v4(&self, generation: u8, addr: [u8; 4]) -> Option<NetEntry>;
    /// Longest match of `addr` in `NET_V6` for `generation`.
    fn net_v6(&self, generation: u8, addr: [u8; 16]) -> Option<NetEntry>;
    /// Whether a single-port rule entry of `generation` names `port` of TCP or UDP `proto`
    /// (`PORTS_USED`).
    fn single_port_used(&self, generation: u8, proto: u8, port: u16) -> bool;
    /// A segment's rule tier bits, of its rules and of its inbound rules (`SEGMENTS`).
    fn segment(&self, generation: u8, segment: u16) -> SegmentEntry;
    /// `IFACE_*` flags of an interface (`IFACES`), 0 if unknown.
    fn iface_flags(&self, ifindex: u32) -> u32;
}

/// Who sent the packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SrcKind {
    /// A bound SIM (`Src::sim` holds it).
    Sim = 0,
    /// An address inside a pool with no SIM bound to it.
    Spoofed = 1,
    /// An address outside every pool (also: no IP packet at all).
    #[default]
    Outside = 2,
}

/// The sender: a kind, and the SIM when the kind is `Sim` (zeroed otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Src {
    /// Which kind of sender.
    pub kind: SrcKind,
    /// The SIM, for `SrcKind::Sim`.
    pub sim: SimEntry,
}

impl Src {
    /// The sending SIM, if any.
    #[inline(always)]
    #[must_use]
    pub fn sim(&self) -> Option<SimEntry> {
        (self.kind == SrcKind::Sim).then_some(self.sim)
    }
}

/// Where the packet goes, as far as rules are concerned.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DstKind {
    /// Outside every pool: `Dst::class` is the class of the longest matching policy CIDR
    /// (`CLASS_NONE` if none).
    #[default]
    Net = 0,
    /// Inside a pool, to a bound SIM (`Dst::sim`).
    Sim = 1,
    /// Inside a pool, to an address with no SIM.
    PoolNoSim = 2,
}

/// The destination: a kind, its class (for `Net`) and its SIM (for `Sim`); unused fields zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dst {
    /// Which kind of destination.
    pub kind: DstKind,
    /// Destination class, for `DstKind::Net`.
    pub class: u32,
    /// The SIM, for `DstKind::Sim`.
    pub sim: SimEntry,
}

/// Everything [`decide`] needs, gathered by [`identify`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// The sender.
    pub src: Src,
    /// The destination.
    pub dst: Dst,
    /// The first rule that allows the packet, or [`NO_RULE`]: for a SIM's packet one of its
    /// rules; for a packet from outside every pool to a SIM an inbound rule of its segment.
    pub rule: u32,
    /// The packet is a non-first fragment.
    pub later_fragment: bool,
    /// The arrival interface drops traffic from outside every pool.
    pub drop_non_pool: bool,
}

/// `(true, value)` or `(false, zeroed)`: a lookup result with every byte defined.
#[inline(always)]
fn found<T: Default>(value: Option<T>) -> (bool, T) {
    match value {
        Some(value) => (true, value),
        None => (false, T::default()),
    }
}

#[inline(always)]
fn sim_of<T: Tables>(tables: &T, generation: u8, v6: bool, addr: &[u8; 16]) -> (bool, SimEntry) {
    if v6 {
        found(tables.sim_v6(generation, prefix64(addr)))
    } else {
        found(tables.sim_v4(generation, [addr[0], addr[1], addr[2], addr[3]]))
    }
}

#[inline(always)]
fn net_of<T: Tables>(tables: &T, generation: u8, v6: bool, addr: &[u8; 16]) -> (bool, NetEntry) {
    if v6 {
        found(tables.net_v6(generation, *addr))
    } else {
        found(tables.net_v4(generation, [addr[0], addr[1], addr[2], addr[3]]))
    }
}

/// Look the packet up in the tables: its sender, its destination and the first allowing rule.
#[inline(always)]
pub fn identify<T: Tables>(tables: &T, meta: &PacketMeta) -> Inputs {
    let generation = tables.generation();
    let (src, dst) = meta.endpoints();
    let dport = meta.destination_port();
    let (src_is_sim, src_sim) = sim_of(tables, generation, meta.v6, src);
    let (src_in_net, src_net) = if src_is_sim {
        (false, NetEntry::default())
    } else {
        net_of(tables, generation, meta.v6, src)
    };
    let (dst_in_net, dst_net) = net_of(tables, generation, meta.v6, dst);
    let dst_in_pool = dst_in_net && dst_net.flags & NET_POOL != 0;
    let (dst_is_sim, dst_sim) = if dst_in_pool {
        sim_of(tables, generation, meta.v6, dst)
    } else {
        (false, SimEntry::default())
    };

    let src = if src_is_sim {
        Src {
            kind: SrcKind::Sim,
            sim: src_sim,
        }
    } else if src_in_net && src_net.flags & NET_POOL != 0 {
        Src {
            kind: SrcKind::Spoofed,
            sim: SimEntry::default(),
        }
    } else {
        Src {
            kind: SrcKind::Outside,
            sim: SimEntry::default(),
        }
    };
    let dst = if dst_is_sim {
        Dst {
            kind: DstKind::Sim,
            class: CLASS_NONE,
            sim: dst_sim,
        }
    } else if dst_in_pool {
        Dst {
            kind: DstKind::PoolNoSim,
            class: CLASS_NONE,
            sim: SimEntry::default(),
        }
    } else {
        let class = if dst_in_net {
            dst_net.class
        } else {
            CLASS_NONE
        };
        Dst {
            kind: DstKind::Net,
            class,
            sim: SimEntry::default(),
        }
    };

    // A SIM's packet asks its rules; a packet from outside every pool (within a policy CIDR)
    // to a SIM asks the inbound rules of the SIM's segment. One lookup sequence serves both.
    let outbound = src.kind == SrcKind::Sim && src.sim.flags & SIM_BLOCKED == 0;
    let inbound = src.kind == SrcKind::Outside
        && src_in_net
        && src_net.class != CLASS_NONE
        && dst.kind == DstKind::Sim
        && dst.sim.flags & SIM_BLOCKED == 0;
    let rule = if outbound || inbound {
        let probe = Probe {
            generation,
            proto: meta.proto,
            dport,
            has_ports: meta.has_ports,
            single_port: meta.has_ports && tables.single_port_used(generation, meta.proto, dport),
        };
        let asked = if outbound {
            Asked::rules_of(&src.sim, &dst)
        } else {
            Asked::inbound_to(&dst.sim, src_net.class)
        };
        match_subjects(tables, &asked, &probe)
    } else {
        NO_RULE
    };
    // A core interface takes non-pool sources only from the policy's `core_sources`. (Not
    // for a packet judged the other way round: its arrival interface is the other side's.)
    let core_source = src_in_net && src_net.flags & NET_CORE_SOURCE != 0;
    let iface = tables.iface_flags(meta.ifindex);
    let drop_non_pool = src.kind == SrcKind::Outside
        && !core_source
        && !meta.reversed
        && iface & IFACE_DROP_NON_POOL != 0;
    // A device's address arriving from the services' side is forged: the sender is `spoofed`
    // and no rule applies (not when a reply is judged in its device's direction, `reversed`:
    // the device did not send it).
    if src.kind == SrcKind::Sim && iface & IFACE_SERVICE != 0 && !meta.reversed {
        return Inputs {
            src: Src {
                kind: SrcKind::Spoofed,
                sim: SimEntry::default(),
            },
            dst,
            rule: NO_RULE,
            later_fragment: meta.later_fragment,
            drop_non_pool,
        };
    }
    Inputs {
        src,
        dst,
        rule,
        later_fragment: meta.later_fragment,
        drop_non_pool,
    }
}

/// A denial that may be remembered and given again without the lookups: the key of the
/// kernel's deny cache (`enforcer-ebpf/src/deny_cache.rs`), under the policy epoch and
/// generation it was decided in. 20 bytes, `repr(C)`, no padding.
///
/// Why these fields are enough ([`DenyKey::of`] says when a verdict may be kept): for an IPv4
/// packet with ports (TCP or UDP, not a later fragment) judged in its sender's direction,
/// sent by a SIM with no `SIM_*` flag and no rules of its own (`tiers` 0), [`identify`] and
/// [`decide`] read the sender only through its segment, the destination through its
/// `NET_V4` entry (the address), the rules through the segment, protocol and destination
/// port, and the arrival interface's flags. Every one of those tables, in the generation
/// active under an epoch, stays as it is for the whole epoch: the daemon writes the inactive
/// generation, flips generation and epoch in one write, and raises the epoch after every
/// change in place (`CONFIG.epoch`). The key holds the generation too: the daemon's write of
/// `CONFIG` is a copy the program may catch halfway, and an entry must never pair one
/// generation's decision with the other's tables. A `no_rule` drop of such a packet is therefore the
/// verdict of every packet with the same key under the same epoch from any SIM that also has
/// no flags and no own rules. The SIM's own flags, rules and segment are read anew for every
/// packet, so a quarantine or a move to another segment takes effect at once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenyKey {
    /// `CONFIG.epoch` read before the sender's binding was looked up.
    pub epoch: u32,
    /// Arrival interface.
    pub ifindex: u32,
    /// Destination IPv4 address, network order.
    pub dst: [u8; 4],
    /// The sender's segment.
    pub segment: u16,
    /// Destination port, host order.
    pub dport: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    /// 1 in a filled entry (an all-zero entry is empty).
    pub filled: u8,
    /// The policy generation (0 or 1) the verdict was decided in.
    pub generation: u8,
    /// Zero.
    pub pad: u8,
}

impl DenyKey {
    /// Number of entries of the (per-CPU, direct-mapped) deny cache: a power of two.
    pub const SLOTS: u32 = 256;

    /// The key of a packet (`meta`, after [`crate::session::judge`]) sent by `src` and
    /// judged `verdict` under `epoch` in `generation`, when the verdict may be remembered: a `no_rule` drop of
    /// an IPv4 TCP or UDP packet (not a later fragment) judged in its sender's direction, sent
    /// by a SIM with no flags and no rules of its own (see the type's comment). `None`
    /// otherwise: such a verdict depends on more than the key.
    #[inline(always)]
    #[must_use]
    pub fn of(
        meta: &PacketMeta,
        src: &Src,
        verdict: Verdict,
        epoch: u32,
        generation: u8,
    ) -> Option<Self> {
        let cacheable = matches!(verdict, Verdict::Drop(DropReason::NoRule))
            && src.kind == SrcKind::Sim
            && src.sim.flags == 0
            && src.sim.tiers == 0
            && !meta.v6
            && meta.has_ports
            && !meta.later_fragment
            && !meta.reversed;
        cacheable.then(|| {
            Self::new(
                epoch,
                generation,
                meta.ifindex,
                [meta.dst[0], meta.dst[1], meta.dst[2], meta.dst[3]],
                src.sim.segment,
                meta.proto,
                meta.dport,
            )
        })
    }

    /// A filled key.
    #[inline(always)]
    #[must_use]
    pub const fn new(
        epoch: u32,
        generation: u8,
        ifindex: u32,
        dst: [u8; 4],
        segment: u16,
        proto: u8,
        dport: u16,
    ) -> Self {
        Self {
            epoch,
            ifindex,
            dst,
            segment,
            dport,
            proto,
            filled: 1,
            generation: generation & 1,
            pad: 0,
        }
    }

    /// Its slot in the cache, `< SLOTS`: a multiplicative hash (Knuth's 2^32 / phi) of the
    /// destination, port, protocol and segment.
    #[inline(always)]
    #[must_use]
    pub const fn slot(&self) -> u32 {
        let mixed = u32::from_ne_bytes(self.dst)
            ^ (self.dport as u32) << 16
            ^ (self.segment as u32) << 3
            ^ self.proto as u32;
        mixed.wrapping_mul(0x9e37_79b1) >> (32 - Self::SLOTS.trailing_zeros())
    }
}

const _: () = assert!(DenyKey::SLOTS.is_power_of_two() && size_of::<DenyKey>() == 20);

/// Whose rules a packet asks, and toward which classes: for a SIM's packet its segment's
/// rules then its own, toward the destination's class (a CIDR's; or a SIM's segment, then the
/// SIM itself when a rule names it); for a packet toward a SIM from outside, the SIM's
/// segment's inbound rules toward the sender's CIDR class. Unused fields are zero.
#[derive(Clone, Copy)]
struct Asked {
    /// The segment whose rules (or inbound rules) are asked first.
    segment: u16,
    /// Ask the segment's inbound rules (subject `SUBJECT_INBOUND | segment`).
    inbound: bool,
    /// Second subject, `SUBJECT_SIM | sim`, asked when the segment has no rule; with
    /// `own_tiers` zero it is not asked.
    own: u32,
    /// Its tier bits.
    own_tiers: u8,
    /// First class; `CLASS_NONE`: nothing can match.
    first: u32,
    /// Second class, asked when the first gave no rule and `has_second`.
    second: u32,
    has_second: bool,
}

impl Asked {
    #[inline(always)]
    fn rules_of(sim: &SimEntry, dst: &Dst) -> Self {
        let (first, has_second, second) = match dst.kind {
            DstKind::Net => (dst.class, false, 0),
            DstKind::Sim => (
                CLASS_SEGMENT | u32::from(dst.sim.segment),
                dst.sim.flags & SIM_DST_NAMED != 0,
                CLASS_SIM | dst.sim.sim,
            ),
            DstKind::PoolNoSim => (CLASS_NONE, false, 0),
        };
        Self {
            segment: sim.segment,
            inbound: false,
            own: SUBJECT_SIM | sim.sim,
            own_tiers: sim.tiers,
            first,
            second,
            has_second,
        }
    }

    #[inline(always)]
    fn inbound_to(device: &SimEntry, class: u32) -> Self {
        Self {
            segment: device.segment,
            inbound: true,
            own: 0,
            own_tiers: 0,
            first: class,
            second: 0,
            has_second: false,
        }
    }
}

/// Probe the segment's rules (or inbound rules), then the SIM's own, for each class in turn.
#[inline(always)]
fn match_subjects<T: Tables>(tables: &T, asked: &Asked, probe: &Probe) -> u32 {
    if asked.first == CLASS_NONE {
        return NO_RULE;
    }
    let entry = tables.segment(probe.generation, asked.segment);
    let (subject, tiers) = if asked.inbound {
        (
            SUBJECT_INBOUND | u32::from(asked.segment),
            entry.inbound_tiers(),
        )
    } else {
        (u32::from(asked.segment), entry.rule_tiers())
    };
    let rule = towards(tables, asked, subject, tiers, asked.first, probe);
    if rule != NO_RULE || !asked.has_second {
        rule
    } else {
        towards(tables, asked, subject, tiers, asked.second, probe)
    }
}

/// The first rule toward `class`: the segment's, else the SIM's own. A function that is always
/// inlined rather than a closure, which LLVM called as a BPF function whose stack frame, added
/// to the lookups', passed the verifier's 512 bytes.
#[inline(always)]
fn towards<T: Tables>(
    tables: &T,
    asked: &Asked,
    subject: u32,
    tiers: u8,
    class: u32,
    probe: &Probe,
) -> u32 {
    let rule = first_match(tables, subject, tiers, class, probe);
    if rule != NO_RULE || asked.own_tiers == 0 {
        rule
    } else {
        first_match(tables, asked.own, asked.own_tiers, class, probe)
    }
}

/// The /64 prefix of an IPv6 address: the SIM key, as cellular networks assign a /64 per UE.
#[inline(always)]
#[must_use]
pub fn prefix64(addr: &[u8; 16]) -> [u8; 8] {
    [
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]
}

/// Judge a frame that is neither IPv4, IPv6 nor ARP (after at most two VLAN tags), arriving on
/// an interface with `IFACE_*` flags `iface_flags`: on a core-facing interface
/// ([`IFACE_DROP_NON_POOL`]) only device IP traffic is expected, so it is dropped (`not_ip`);
/// elsewhere it is not the enforcer's business and passes (`not_ip`).
#[inline(always)]
#[must_use]
pub const fn not_ip(iface_flags: u32) -> Verdict {
    if iface_flags & IFACE_DROP_NON_POOL != 0 {
        Verdict::Drop(DropReason::NotIp)
    } else {
        Verdict::Pass(PassReason::NotIp, 0)
    }
}

/// Judge a packet. Pure: the same inputs always give the same verdict. See the module comment.
#[inline(always)]
#[must_use]
pub fn decide(inputs: &Inputs) -> Verdict {
    match inputs.src.kind {
        SrcKind::Outside if inputs.drop_non_pool => Verdict::Drop(DropReason::NonPool),
        SrcKind::Outside if inputs.rule != NO_RULE => {
            Verdict::Pass(PassReason::Inbound, inputs.rule)
        }
        // Toward a device of an audit segment: what would be dropped as inbound passes.
        SrcKind::Outside
            if inputs.dst.kind == DstKind::Sim
                && inputs.dst.sim.flags & SIM_AUDIT != 0
                && inputs.dst.sim.flags & SIM_BLOCKED == 0 =>
        {
            Verdict::Pass(PassReason::Audit, AUDIT_RULE)
        }
        SrcKind::Outside => Verdict::Pass(PassReason::NonPool, 0),
        SrcKind::Spoofed => Verdict::Drop(DropReason::Spoofed),
        SrcKind::Sim if inputs.src.sim.flags & SIM_BLOCKED != 0 => {
            Verdict::Drop(blocked_reason(inputs.src.sim.flags))
        }
        SrcKind::Sim if inputs.rule != NO_RULE => Verdict::Pass(PassReason::Rule, inputs.rule),
        // Audit mode: what the policy would drop (no rule, lateral, fragment) passes; never
        // toward a quarantined SIM, which receives nothing.
        SrcKind::Sim
            if inputs.src.sim.flags & SIM_AUDIT != 0
                && !(inputs.dst.kind == DstKind::Sim
                    && inputs.dst.sim.flags & SIM_BLOCKED != 0) =>
        {
            Verdict::Pass(PassReason::Audit, AUDIT_RULE)
        }
        SrcKind::Sim => match inputs.dst.kind {
            DstKind::Sim | DstKind::PoolNoSim => Verdict::Drop(DropReason::Lateral),
            DstKind::Net if inputs.later_fragment => Verdict::Drop(DropReason::Fragment),
            DstKind::Net => Verdict::Drop(DropReason::NoRule),
        },
    }
}
