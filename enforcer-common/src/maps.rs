//! Map names, sizes and the `#[repr(C)]` keys and values both sides read.
//!
//! # How a packet finds its rule (a bounded number of lookups, whatever the policy size)
//!
//! 1. `SIM_V4` / `SIM_V6` (exact-match hash): source IPv4 /32 or IPv6 /64 prefix → [`SimEntry`]
//!    (SIM index, segment, quarantine flag, which rule tiers the SIM has of its own).
//!    Never a trie over SIMs: a trie costs grow with the number of SIMs, a hash does not.
//! 2. `NET_V4` / `NET_V6` (LPM trie over the policy's *distinct* CIDRs, pools included, a few
//!    dozen entries): destination → [`NetEntry`] (a destination class, or "inside a pool").
//!    A class stands for the set of policy CIDRs that contain the address, so the longest match
//!    is enough. The same trie tells whether an unbound source lies in a pool (spoofed).
//! 3. For a pool destination, `SIM_V*` again: destination SIM → its segment and SIM classes.
//! 4. `PORT_CLASS` (array, inlined by the verifier): (protocol, port) → port class, an
//!    elementary interval of the policy's port-range boundaries.
//! 5. `RULES` (exact-match hash): (generation, subject, destination class, protocol, port
//!    class) → rule id. Subjects are the SIM's segment and, if it has rules of its own, the SIM.
//!    Each subject is probed in at most three tiers (specific ports, any port, any protocol); a
//!    subject's `tiers` bits skip the tiers it has no rules in. See [`crate::rules`].
//!
//! # Generations
//!
//! Every policy table (`NET_*`, `PORT_CLASS`, `SEGMENTS`, `RULES`) is keyed by a generation
//! (0 or 1) and `CONFIG` names the active one. A reload fills the inactive generation, flips
//! `CONFIG.generation` with one array write, then clears the old one (make before break). The
//! SIM tables are not doubled (1M SIMs would cost twice the memory): SIM indices and segment ids
//! are stable across generations and a SIM entry is replaced in place with one atomic update.

/// Number of policy generations kept side by side for make-before-break reloads.
pub const GENERATIONS: u32 = 2;
/// Segment ids are `0..MAX_SEGMENTS`.
pub const MAX_SEGMENTS: u32 = 1024;
/// Counter block for packets that belong to no segment (malformed, spoofed, non-pool, non-IP).
pub const SEGMENT_NONE: u32 = MAX_SEGMENTS;
/// Verdict slots per segment in `VERDICT_STATS` (see [`crate::Verdict::stats_slot`]): 7 pass
/// and 24 drop reasons fit. Was 16 in the first layout (map `VERDICT_STATS`), now `VERDICTS_V2`.
pub const VERDICT_SLOTS: u32 = 32;
/// First slot of the drop reasons within a segment's block.
pub const DROP_SLOT_BASE: u32 = 8;
/// Entries of `VERDICT_STATS`: a block per segment plus one for [`SEGMENT_NONE`].
pub const VERDICT_STATS_ENTRIES: u32 = (MAX_SEGMENTS + 1) * VERDICT_SLOTS;
/// Largest SIM index + 1 that fits the subject and class encodings.
pub const MAX_SIMS_LIMIT: u32 = 1 << 30;
/// Port classes per (generation, protocol slot).
pub const PORTS: u32 = 1 << 16;
/// Protocols with ports, each with its own `PORT_CLASS` block: TCP is slot 0, UDP slot 1.
pub const PORT_SLOTS: u32 = 2;
/// Entries of `PORT_CLASS`.
pub const PORT_CLASS_ENTRIES: u32 = GENERATIONS * PORT_SLOTS * PORTS;
/// Entries of `SEGMENTS`.
pub const SEGMENT_ENTRIES: u32 = GENERATIONS * MAX_SEGMENTS;
/// Interfaces that can carry per-interface settings in `IFACES`.
pub const MAX_IFACES: u32 = 64;
/// Distinct CIDRs (pools included) per family and generation in `NET_V4`/`NET_V6`.
pub const MAX_NETS: u32 = 65_536;

/// Default capacities; the loader resizes these maps to the policy at load time.
pub mod defaults {
    /// Default `SIM_V4`/`SIM_V6`/`SIM_STATS` capacity.
    pub const MAX_SIMS: u32 = 65_536;
    /// Default `RULES` capacity.
    pub const MAX_RULE_ENTRIES: u32 = 65_536;
    /// Default `RULE_STATS` capacity (rule ids).
    pub const MAX_RULES: u32 = 65_536;
}

/// Map names, used by the `#[map]` statics and by the loader alike. At most 15 characters, as
/// the kernel keeps no more. A layout change gets a version suffix (`RULES_V2`).
pub mod names {
    /// `Array<Config>`, one entry: the active generation.
    pub const CONFIG: &str = "CONFIG";
    /// `HashMap<SimKeyV4, SimEntry>`.
    pub const SIM_V4: &str = "SIM_V4";
    /// `HashMap<SimKeyV6, SimEntry>`.
    pub const SIM_V6: &str = "SIM_V6";
    /// `LpmTrie<NetKeyV4, NetEntry>`.
    pub const NET_V4: &str = "NET_V4";
    /// `LpmTrie<NetKeyV6, NetEntry>`.
    pub const NET_V6: &str = "NET_V6";
    /// `Array<u16>` indexed by [`super::port_class_index`].
    pub const PORT_CLASS: &str = "PORT_CLASS";
    /// `Array<SegmentEntry>` indexed by [`super::segment_index`].
    pub const SEGMENTS: &str = "SEGMENTS";
    /// `HashMap<RuleKey, RuleEntry>`.
    pub const RULES: &str = "RULES";
    /// `HashMap<u32 ifindex, IfaceEntry>`.
    pub const IFACES: &str = "IFACES";
    /// `PerCpuArray<SimCounters>` indexed by SIM index.
    pub const SIM_STATS: &str = "SIM_STATS";
    /// `PerCpuArray<Counter>` indexed by [`super::verdict_stats_index`]. `_V2`: 32 slots per
    /// segment (the first layout, `VERDICT_STATS`, had 16).
    pub const VERDICT_STATS: &str = "VERDICTS_V2";
    /// `PerCpuArray<Counter>` indexed by rule id.
    pub const RULE_STATS: &str = "RULE_STATS";
    /// Every map the program defines, for pinning and checks.
    pub const ALL: [&str; 12] = [
        CONFIG,
        SIM_V4,
        SIM_V6,
        NET_V4,
        NET_V6,
        PORT_CLASS,
        SEGMENTS,
        RULES,
        IFACES,
        SIM_STATS,
        VERDICT_STATS,
        RULE_STATS,
    ];
}

macro_rules! pod {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: the type is `#[repr(C)]`, `Copy`, has no padding (checked by the size
        // assertions below) and every bit pattern is a valid value.
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $t {}
    )*};
}

/// `CONFIG[0]`: global switches the daemon flips at run time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The active policy generation, 0 or 1.
    pub generation: u32,
    /// Reserved, zero.
    pub _pad: u32,
}

/// Source or destination IPv4 address, in network byte order.
pub type SimKeyV4 = [u8; 4];
/// The /64 prefix of an IPv6 address, in network byte order.
pub type SimKeyV6 = [u8; 8];

/// A SIM is quarantined: all its traffic is dropped whatever its rules.
pub const SIM_QUARANTINED: u8 = 1;
/// Some rule names this SIM as a destination (`to = ["imsi:…"]`), so lateral traffic towards it
/// probes its SIM class as well as its segment class.
pub const SIM_DST_NAMED: u8 = 2;

/// Value of `SIM_V4`/`SIM_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SimEntry {
    /// Stable SIM index: slot in `SIM_STATS`, and the SIM's subject and class id.
    pub sim: u32,
    /// Segment id, `< MAX_SEGMENTS`.
    pub segment: u16,
    /// `SIM_*` flags.
    pub flags: u8,
    /// `TIER_*` bits of the SIM's own rules; 0 when it has none.
    pub tiers: u8,
}

/// LPM data for `NET_V4`: generation byte, then the address. Prefix length = 8 + CIDR length.
pub type NetKeyV4 = [u8; 5];
/// LPM data for `NET_V6`: generation byte, then the address. Prefix length = 8 + CIDR length.
pub type NetKeyV6 = [u8; 17];

/// The network is (inside) a declared pool.
pub const NET_POOL: u32 = 1;

/// Value of `NET_V4`/`NET_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetEntry {
    /// Destination class for rule lookups (`CLASS_NONE` for pools).
    pub class: u32,
    /// `NET_*` flags.
    pub flags: u32,
}

/// Value of `SEGMENTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentEntry {
    /// `TIER_*` bits of the segment's rules.
    pub tiers: u32,
    /// Reserved, zero.
    pub _pad: u32,
}

/// The subject has rules for specific ports (probe with the packet's port class).
pub const TIER_PORT: u8 = 1;
/// The subject has rules for a protocol on any port (also ICMP, and non-first fragments).
pub const TIER_ANY_PORT: u8 = 2;
/// The subject has rules for any protocol.
pub const TIER_ANY_PROTO: u8 = 4;

/// Subject ids below this are segments; a SIM subject is `SUBJECT_SIM | sim`.
pub const SUBJECT_SIM: u32 = 1 << 31;
/// No destination class: nothing in the policy covers the address, so no rule can match.
pub const CLASS_NONE: u32 = 0;
/// Destination class of a segment: `CLASS_SEGMENT | segment`.
pub const CLASS_SEGMENT: u32 = 1 << 30;
/// Destination class of a SIM named by a rule: `CLASS_SIM | sim`.
pub const CLASS_SIM: u32 = 2 << 30;
/// Protocol wildcard in [`RuleKey::proto`] (IP protocol 0 never reaches the rule lookup: it is
/// the hop-by-hop header, which the parser skips).
pub const PROTO_ANY: u8 = 0;
/// Port-class wildcard in [`RuleKey::port_class`]; real port classes start at 1.
pub const PORT_ANY: u16 = 0;

/// Key of `RULES`. Zero-initialise it: the kernel hashes every byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleKey {
    /// Segment id, or `SUBJECT_SIM | sim`.
    pub subject: u32,
    /// Destination class.
    pub class: u32,
    /// Port class, or `PORT_ANY`.
    pub port_class: u16,
    /// IP protocol number, or `PROTO_ANY`.
    pub proto: u8,
    /// Policy generation.
    pub generation: u8,
}

/// Value of `RULES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleEntry {
    /// Rule id: slot in `RULE_STATS`, and the index into the compiled rule list.
    pub rule: u32,
}

/// The interface is core-facing (`--drop-non-pool`): only device traffic is expected on it, so
/// traffic whose source is outside every pool is dropped (`non_pool`), and so are frames that
/// are neither IPv4, IPv6 nor ARP (`not_ip`).
pub const IFACE_DROP_NON_POOL: u32 = 1;

/// Value of `IFACES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceEntry {
    /// `IFACE_*` flags.
    pub flags: u32,
}

/// Value of `SIM_STATS` (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimCounters {
    /// Packets passed.
    pub pass_packets: u64,
    /// Bytes passed (whole frames).
    pub pass_bytes: u64,
    /// Packets dropped.
    pub drop_packets: u64,
    /// Bytes dropped (whole frames).
    pub drop_bytes: u64,
}

/// Value of `VERDICT_STATS` and `RULE_STATS` (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes (whole frames).
    pub bytes: u64,
}

pod!(
    Config,
    SimEntry,
    NetEntry,
    SegmentEntry,
    RuleKey,
    RuleEntry,
    IfaceEntry,
    SimCounters,
    Counter
);

const _: () = {
    assert!(size_of::<Config>() == 8);
    assert!(size_of::<SimEntry>() == 8);
    assert!(size_of::<NetEntry>() == 8);
    assert!(size_of::<SegmentEntry>() == 8);
    assert!(size_of::<RuleKey>() == 12);
    assert!(size_of::<RuleEntry>() == 4);
    assert!(size_of::<IfaceEntry>() == 4);
    assert!(size_of::<SimCounters>() == 32);
    assert!(size_of::<Counter>() == 16);
};

/// Port-class protocol slot of an IP protocol, if it has ports.
#[must_use]
pub const fn port_slot(proto: u8) -> Option<u32> {
    match proto {
        IPPROTO_TCP => Some(0),
        IPPROTO_UDP => Some(1),
        _ => None,
    }
}

/// Index of (generation, slot, port) in `PORT_CLASS`.
#[must_use]
pub const fn port_class_index(generation: u8, slot: u32, port: u16) -> u32 {
    ((generation as u32 & 1) * PORT_SLOTS + slot) * PORTS + port as u32
}

/// Index of (generation, segment) in `SEGMENTS`.
#[must_use]
pub const fn segment_index(generation: u8, segment: u16) -> u32 {
    (generation as u32 & 1) * MAX_SEGMENTS + segment as u32
}

/// Index of (segment block, verdict slot) in `VERDICT_STATS`; `segment` is a segment id or
/// [`SEGMENT_NONE`].
#[must_use]
pub const fn verdict_stats_index(segment: u32, slot: u32) -> u32 {
    segment * VERDICT_SLOTS + slot
}

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
