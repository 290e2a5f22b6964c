//! Map names, sizes and the `#[repr(C)]` keys and values both sides read.
//!
//! # How a packet finds its rule (a bounded number of lookups, whatever the policy size)
//!
//! 1. `SIM_V4_V2` / `SIM_V6_V2` (exact-match hash): source IPv4 /32 or IPv6 /64 prefix →
//!    [`SimBinding`], the SIM index per generation; then `SIMS` (array) at that index →
//!    [`SimRecord`], whose word for the generation is the [`SimPolicy`] (segment, quarantine
//!    flag, which rule tiers the SIM has of its own). Together they make the [`SimEntry`] that `decide` reads. Never a trie over
//!    SIMs: a trie costs grow with the number of SIMs, a hash does not.
//! 2. `NET_V4` / `NET_V6` (LPM trie over the policy's distinct CIDRs and pools): destination →
//!    [`NetEntry`] (a destination class, or "inside a pool"). The same trie tells whether an
//!    unbound source lies in a pool (spoofed). A class stands for the set of rules whose CIDRs
//!    contain the address: the most specific policy CIDR decides it, as its ancestors' rules
//!    apply too. CIDRs with the same rules under the same parent share a class, so one rule
//!    towards 70,000 hosts is one class, not 70,000. The price of one lookup: a rule towards a
//!    CIDR that contains other policy CIDRs is entered under their classes as well, so a wide
//!    rule over n narrower destinations costs n times its entries (n + 1 classes, not n²).
//! 3. For a pool destination, `SIM_V*_V2` and `SIMS` again: destination SIM → its segment and SIM classes.
//! 4. `RULES_V2` (LPM trie, key [`RuleKey::lpm_data`]): (generation, subject, destination class,
//!    protocol, port) → rule id, in **one** lookup per subject and class. The key's bits run from
//!    the exact part (generation, subject, class) to the wildcards (protocol, then port), so the
//!    three kinds of rule are three prefix lengths: any protocol ([`RULE_BITS_ANY_PROTO`]), a
//!    protocol on any port ([`RULE_BITS_PROTO`]) and a protocol with a block of ports
//!    ([`RULE_BITS_PORTS`] plus 0 to 16 port bits). A port range becomes at most 30 aligned
//!    blocks (`1000-2000` is 1000-1023, 1024-2047 cut to 2000, ...), so a rule costs its
//!    destination classes × protocols × blocks entries, whatever the other rules are: no cross
//!    product of destination classes and port classes. The longest match is the most specific
//!    rule; a packet without ports (ICMP, non-first fragments) looks up with the prefix length
//!    of [`RULE_BITS_PROTO`], so it never sees port blocks (not even `0-65535`).
//!
//!    Blocks of a single port, the usual rule (`ports = [443]`), are the longest prefixes, so
//!    they are kept apart in `PORT_RULES`, an exact-match hash keyed like the old `RULES`
//!    ([`PortRuleKey`]): a trie lookup costs a few nanoseconds per level and its depth grows
//!    with the entries, a hash lookup does not. The packet asks `PORT_RULES` first and the trie
//!    only on a miss, which gives the same answer as one trie holding both. `PORTS_USED`, a bit
//!    per TCP and UDP port (an array the verifier inlines), says whether any single-port rule
//!    names the port at all, so a packet to a port no rule names skips `PORT_RULES`.
//!
//! Subjects are the SIM's segment and, if it has rules of its own, the SIM; destination
//! classes for a pool address are its segment's and, if a rule names it, its SIM's: at most
//! 2 × 2 × 2 rule lookups per packet (hash, then trie), usually one. See [`crate::rules`].
//!
//! # Sizes
//!
//! Every map that grows with the policy is sized to it at load time (`enforcer::capacity`, which
//! `enforcer run` and `enforcer policy check` share): the SIM maps, `NET_V4`/`NET_V6`,
//! `RULES_V2` and `PORT_RULES`. LPM tries allocate per entry, so their capacity is a limit, not
//! memory; hash maps allocate their buckets by capacity (16 bytes a slot) and entries as written;
//! arrays are allocated whole. Nothing sized by SIMs is per CPU: `SIMS` holds each SIM's
//! counters beside its policy (atomic adds; one device's traffic stays on one CPU by RSS, so
//! they rarely contend), so its memory is `40 B × SIM capacity` on 2 CPUs and on 64. Only the
//! small fixed tables (`VERDICTS_V2`, `RULE_STATS`) are per CPU. (`PORT_CLASS`, a 256K-entry array of the
//! port classes, is gone with the port classes.)
//!
//! # Generations
//!
//! Every policy table is keyed by a generation (0 or 1) and `CONFIG` names the active one; the
//! program reads `CONFIG.generation` once per packet and uses it for every lookup, so a packet
//! sees one generation's policy whole. `NET_*`, `SEGMENTS`, `RULES_V2`, `PORT_RULES` and
//! `PORTS_USED` hold the generation in their key or index. The SIM tables are split so that
//! 1M SIMs are not stored twice: an address's [`SimBinding`] (one hash entry) holds the SIM
//! index of each generation ([`SIM_NONE`] where the address is unbound), and each SIM's
//! [`SimRecord`] in `SIMS` holds its [`SimPolicy`] per generation, one aligned 32-bit word each
//! (written by the daemon through a memory mapping of the array, read by the program with one
//! load, so neither sees half a policy). A binding is replaced whole by one hash update, which
//! readers see atomically.
//!
//! A reload (`enforcer::loader`) writes only the inactive generation (binding slots, SIM
//! policies, nets, segments, rules), flips `CONFIG.generation` with one array write, waits for
//! the program runs that may still use the old generation, then deletes the bindings that only
//! the old generation had. Before the flip nothing the active generation reads has changed, and
//! after it nothing the old one held is read, so every packet is judged by the old policy or by
//! the new one, never by a mix (a SIM with another SIM's rules). The old generation keeps the
//! rest of its entries: they are what the next reload compares against, so it writes only what
//! differs.

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
/// Entries of `SEGMENTS`.
pub const SEGMENT_ENTRIES: u32 = GENERATIONS * MAX_SEGMENTS;
/// 64-bit words of one (generation, protocol) block of `PORTS_USED`: a bit per port.
pub const PORT_WORDS: u32 = 1024;
/// Entries of `PORTS_USED`: a block per generation for TCP and one for UDP.
pub const PORTS_USED_ENTRIES: u32 = GENERATIONS * 2 * PORT_WORDS;
/// Interfaces that can carry per-interface settings in `IFACES`.
pub const MAX_IFACES: u32 = 64;

/// Default capacities; the loader resizes these maps to the policy at load time.
pub mod defaults {
    /// Default `SIM_V4_V2`/`SIM_V6_V2`/`SIMS` capacity.
    pub const MAX_SIMS: u32 = 65_536;
    /// Default and least `RULES_V2` capacity.
    pub const MAX_RULE_ENTRIES: u32 = 65_536;
    /// Default and least `NET_V4`/`NET_V6` capacity (both generations).
    pub const MAX_NETS: u32 = 65_536;
    /// Default `RULE_STATS` capacity (rule ids).
    pub const MAX_RULES: u32 = 65_536;
    /// Default `SESSIONS` capacity: the 2,000,000 live sessions a 1M-SIM gateway is sized for
    /// (entries are allocated as sessions open, not up front).
    pub const MAX_SESSIONS: u32 = 2_000_000;
}

/// Map names, used by the `#[map]` statics and by the loader alike. At most 15 characters, as
/// the kernel keeps no more. A layout change gets a version suffix (`RULES_V2`).
pub mod names {
    /// `Array<Config>`, one entry: the active generation.
    pub const CONFIG: &str = "CONFIG";
    /// `HashMap<SimKeyV4, SimBinding>`. (`SIM_V4` held a [`super::SimEntry`], one generation.)
    pub const SIM_V4: &str = "SIM_V4_V2";
    /// `HashMap<SimKeyV6, SimBinding>`. (`SIM_V6` held a [`super::SimEntry`].)
    pub const SIM_V6: &str = "SIM_V6_V2";
    /// `Array<SimRecord>` indexed by SIM index, `BPF_F_MMAPABLE`: each SIM's policy per
    /// generation and its counters. (It replaced `SIM_POLICY`, the policies alone, and
    /// `SIM_STATS`, per-CPU counters whose memory grew with the CPUs.)
    pub const SIMS: &str = "SIMS";
    /// `LpmTrie<NetKeyV4, NetEntry>`.
    pub const NET_V4: &str = "NET_V4";
    /// `LpmTrie<NetKeyV6, NetEntry>`.
    pub const NET_V6: &str = "NET_V6";
    /// `Array<SegmentEntry>` indexed by [`super::segment_index`].
    pub const SEGMENTS: &str = "SEGMENTS";
    /// `LpmTrie<[u8; RULE_KEY_LEN], RuleEntry>`, keys from [`super::RuleKey::lpm_data`]: every
    /// rule entry except those for a single port. (`RULES` was a hash keyed by port class.)
    pub const RULES: &str = "RULES_V2";
    /// `HashMap<PortRuleKey, RuleEntry>`: the rule entries for a single port.
    pub const PORT_RULES: &str = "PORT_RULES";
    /// `Array<u64>` indexed by [`super::ports_used_index`]: the ports `PORT_RULES` names.
    pub const PORTS_USED: &str = "PORTS_USED";
    /// `HashMap<u32 ifindex, IfaceEntry>`.
    pub const IFACES: &str = "IFACES";
    /// `PerCpuArray<Counter>` indexed by [`super::verdict_stats_index`]. `_V2`: 32 slots per
    /// segment (the first layout, `VERDICT_STATS`, had 16).
    pub const VERDICT_STATS: &str = "VERDICTS_V2";
    /// `PerCpuArray<Counter>` indexed by rule id.
    pub const RULE_STATS: &str = "RULE_STATS";
    /// `HashMap<SessionKey, Session>` (`crate::session`), not preallocated.
    pub const SESSIONS: &str = "SESSIONS";
    /// Ring buffer of [`super::DenyEvent`]s, [`super::DENY_EVENTS_BYTES`] bytes.
    pub const DENY_EVENTS: &str = "DENY_EVENTS";
    /// `LruHashMap<u32 SIM index, DenyLimit>`: each SIM's deny-event budget (bit 31 set: its
    /// audit-mode budget; `DENY_NO_SIM` and `DENY_NO_SIM - 1` for senders of no SIM).
    pub const DENY_LIMITS: &str = "DENY_LIMITS";
    /// `Array<u32>`, one entry: non-zero turns deny events off (benchmarks). Not pinned.
    pub const EVENTS_OFF: &str = "EVENTS_OFF";
    /// `PerCpuArray<u64>` of [`super::FORWARD_STATS_ENTRIES`] packet counts by XDP
    /// forwarding outcome ([`super::FORWARD_OUTCOMES`]).
    pub const FORWARD_STATS: &str = "FORWARD_STATS";
    /// `DevMapHash`, ifindex → ifindex: the interfaces XDP forwarding may send to (the
    /// enforcer's own, with `--forward xdp`). Not pinned: each program has its own, filled by
    /// the daemon that loaded it before it attaches.
    pub const FORWARD_DEVS: &str = "FORWARD_DEVS";
    /// What the session scan is asked, and its count of entries visited (`ScanArgs`, one
    /// entry). Never pinned: each daemon's own iterator reads it.
    pub const SCAN_ARGS: &str = "SCAN_ARGS";
    /// `Array<[u64; 2]>` of [`super::CLOCK_ENTRIES`]: the program's clock calibration
    /// ([`super::CLOCK_CALIBRATION`]) and the loader's clock sample
    /// ([`super::CLOCK_SAMPLE`]). Never pinned: each loader calibrates its own program.
    pub const CLOCK: &str = "CLOCK";
    /// Maps of earlier layouts that no build reads any more: a pin directory holding one was
    /// made by an older enforcer, whose program still reads it, so it is not adopted in place.
    pub const RETIRED: [&str; 6] = [
        "SIM_POLICY",
        "SIM_STATS",
        "SIM_V4",
        "SIM_V6",
        "RULES",
        "VERDICT_STATS",
    ];
    /// Every map the program defines, for pinning and checks.
    pub const ALL: [&str; 17] = [
        CONFIG,
        SIM_V4,
        SIM_V6,
        SIMS,
        NET_V4,
        NET_V6,
        SEGMENTS,
        RULES,
        PORT_RULES,
        PORTS_USED,
        IFACES,
        VERDICT_STATS,
        RULE_STATS,
        SESSIONS,
        DENY_EVENTS,
        DENY_LIMITS,
        FORWARD_STATS,
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

/// `CLOCK[CLOCK_CALIBRATION]`: `[ns_per_jiffy, offset_ns]`, so that the program stamps
/// sessions and deny events with `jiffies × ns_per_jiffy + offset_ns` (wrapping), which is
/// `CLOCK_MONOTONIC` nanoseconds at the kernel's tick resolution (as
/// `CLOCK_MONOTONIC_COARSE`): `bpf_jiffies64` is inlined by the verifier, where
/// `bpf_ktime_get_coarse_ns` is a helper call. Written by the loader (which measures the
/// kernel's tick, `enforcer::clock`) before the program can be attached.
pub const CLOCK_CALIBRATION: u32 = 0;
/// `CLOCK[CLOCK_SAMPLE]`: `[jiffies, CLOCK_MONOTONIC_COARSE ns]`, read together by one run of
/// the `clock_sample` program, for the loader's calibration.
pub const CLOCK_SAMPLE: u32 = 1;
/// Entries of `CLOCK`.
pub const CLOCK_ENTRIES: u32 = 2;

/// `CONFIG[0]`: global switches the daemon flips at run time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The active policy generation, 0 or 1.
    pub generation: u32,
    /// The policy epoch: raised (wrapping) by the daemon after every change that may change
    /// a verdict (an apply, a quarantine or release, a bind or unbind). A session checked
    /// under another epoch is checked again on its next packet. (Was a zero pad: same layout.)
    pub epoch: u32,
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
/// The SIM's segment is in audit mode (`mode = "audit"`): what the policy would deny it (or,
/// from outside, toward it) passes, counted as `audit`.
pub const SIM_AUDIT: u8 = 4;

/// The device on the SIM's data session is not the one its IMEI lock names (3GPP-IMEISV of
/// RADIUS accounting): all its traffic is dropped, as for a quarantine, with reason
/// `imei_mismatch`. Set and cleared by the daemon at run time.
pub const SIM_IMEI_MISMATCH: u8 = 8;
/// Flags under which a SIM sends and receives nothing.
pub const SIM_BLOCKED: u8 = SIM_QUARANTINED | SIM_IMEI_MISMATCH;

/// Why a SIM with [`SIM_BLOCKED`] flags drops: a quarantine wins over an IMEI mismatch.
#[inline(always)]
#[must_use]
pub const fn blocked_reason(flags: u8) -> crate::DropReason {
    if flags & SIM_QUARANTINED != 0 {
        crate::DropReason::Quarantined
    } else {
        crate::DropReason::ImeiMismatch
    }
}

/// No SIM: the value of a [`SimBinding`] slot for a generation in which the address is unbound.
pub const SIM_NONE: u32 = u32::MAX;

/// Value of `SIM_V4_V2`/`SIM_V6_V2`: which SIM holds the address in each generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SimBinding {
    /// SIM index by generation, [`SIM_NONE`] if the address is unbound in that generation.
    pub sim: [u32; 2],
}

impl Default for SimBinding {
    fn default() -> Self {
        Self { sim: [SIM_NONE; 2] }
    }
}

impl SimBinding {
    /// The SIM index of `generation` (0 or 1; other values use their low bit).
    #[inline(always)]
    #[must_use]
    pub const fn of(&self, generation: u8) -> u32 {
        if generation & 1 == 0 {
            self.sim[0]
        } else {
            self.sim[1]
        }
    }

    /// This binding with `generation`'s slot set to `sim`.
    #[must_use]
    pub const fn with(mut self, generation: u8, sim: u32) -> Self {
        if generation & 1 == 0 {
            self.sim[0] = sim;
        } else {
            self.sim[1] = sim;
        }
        self
    }
}

/// What one generation's policy says about one SIM ([`SimRecord::policy`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SimPolicy {
    /// Segment id, `< MAX_SEGMENTS`.
    pub segment: u16,
    /// `SIM_*` flags.
    pub flags: u8,
    /// `TIER_*` bits of the SIM's own rules; 0 when it has none.
    pub tiers: u8,
}

impl SimPolicy {
    /// The policy as one little-endian 32-bit word (segment, flags, tiers from the low byte):
    /// the form [`SimRecord::policy`] stores, so that it is written and read in one access.
    #[inline(always)]
    #[must_use]
    pub const fn to_word(self) -> u32 {
        self.segment as u32 | (self.flags as u32) << 16 | (self.tiers as u32) << 24
    }

    /// The inverse of [`SimPolicy::to_word`].
    #[inline(always)]
    #[must_use]
    pub const fn from_word(word: u32) -> Self {
        Self {
            segment: word as u16,
            flags: (word >> 16) as u8,
            tiers: (word >> 24) as u8,
        }
    }
}

/// Value of `SIMS`, one per SIM index: the SIM's policy in each generation and its counters.
/// The program reads `policy[generation]` (one 32-bit load) and adds to `counters` with atomic
/// adds, in the same 40 bytes; the daemon writes policies and reads counters through a memory
/// mapping of the array (`BPF_F_MMAPABLE`), without a syscall per SIM.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimRecord {
    /// [`SimPolicy::to_word`] of the SIM in generation 0 and 1; 0 (segment 0, no flags, no
    /// tiers) for a SIM that no generation binds.
    pub policy: [u32; 2],
    /// Packets and bytes the SIM sent, passed and dropped, since its index was first used.
    pub counters: SimCounters,
}

impl SimRecord {
    /// Byte offset of `policy[generation]` in a record.
    #[inline(always)]
    #[must_use]
    pub const fn policy_offset(generation: u8) -> usize {
        (generation & 1) as usize * 4
    }

    /// Byte offset of `counters` in a record.
    pub const COUNTERS_OFFSET: usize = 8;
}

/// A SIM as `decide` sees it: a binding's SIM index with that SIM's [`SimPolicy`]. It is also
/// the logical SIM table of a compiled image (address → `SimEntry`), which the loader splits
/// into bindings and policies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SimEntry {
    /// Stable SIM index: slot in `SIMS`, and the SIM's subject and class id.
    pub sim: u32,
    /// Segment id, `< MAX_SEGMENTS`.
    pub segment: u16,
    /// `SIM_*` flags.
    pub flags: u8,
    /// `TIER_*` bits of the SIM's own rules; 0 when it has none.
    pub tiers: u8,
}

impl SimEntry {
    /// SIM `sim` with its policy.
    #[inline(always)]
    #[must_use]
    pub const fn new(sim: u32, policy: SimPolicy) -> Self {
        Self {
            sim,
            segment: policy.segment,
            flags: policy.flags,
            tiers: policy.tiers,
        }
    }

    /// The SIM's [`SimPolicy`] part.
    #[must_use]
    pub const fn policy(&self) -> SimPolicy {
        SimPolicy {
            segment: self.segment,
            flags: self.flags,
            tiers: self.tiers,
        }
    }
}

/// LPM data for `NET_V4`: generation byte, then the address. Prefix length = 8 + CIDR length.
pub type NetKeyV4 = [u8; 5];
/// LPM data for `NET_V6`: generation byte, then the address. Prefix length = 8 + CIDR length.
pub type NetKeyV6 = [u8; 17];

/// The network is (inside) a declared pool.
pub const NET_POOL: u32 = 1;
/// The network is (inside) one of the policy's `core_sources`: non-pool sources accepted on a
/// core interface ([`IFACE_DROP_NON_POOL`]), e.g. the PGW's own management addresses.
pub const NET_CORE_SOURCE: u32 = 2;

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
    /// `TIER_*` bits of the segment's rules (bits 0-7) and of its inbound rules (bits 8-15,
    /// see [`SegmentEntry::inbound_tiers`]).
    pub tiers: u32,
    /// Reserved, zero.
    pub _pad: u32,
}

impl SegmentEntry {
    /// `TIER_*` bits of the segment's own rules (subject: the segment id).
    #[inline(always)]
    #[must_use]
    pub const fn rule_tiers(&self) -> u8 {
        (self.tiers & 0xff) as u8
    }

    /// `TIER_*` bits of the segment's inbound rules (subject: `SUBJECT_INBOUND | segment`).
    #[inline(always)]
    #[must_use]
    pub const fn inbound_tiers(&self) -> u8 {
        ((self.tiers >> 8) & 0xff) as u8
    }

    /// The entry for a segment whose rules have `rules` tier bits and whose inbound rules
    /// have `inbound`.
    #[must_use]
    pub const fn new(rules: u8, inbound: u8) -> Self {
        Self {
            tiers: rules as u32 | (inbound as u32) << 8,
            _pad: 0,
        }
    }
}

/// The subject has rules for single ports (`PORT_RULES`, looked up with the packet's port).
pub const TIER_PORT: u8 = 1;
/// The subject has rules for a protocol on any port (also ICMP, and non-first fragments).
pub const TIER_ANY_PORT: u8 = 2;
/// The subject has rules for any protocol.
pub const TIER_ANY_PROTO: u8 = 4;
/// The subject has rules for blocks of more than one port (`RULES_V2`, with the packet's port).
pub const TIER_PORT_RANGE: u8 = 8;

/// Subject ids below [`SUBJECT_INBOUND`] are segments; a SIM subject is `SUBJECT_SIM | sim`.
pub const SUBJECT_SIM: u32 = 1 << 31;
/// The subject of a segment's inbound rules (what may open a session toward its SIMs):
/// `SUBJECT_INBOUND | segment`; their class is the sender's CIDR class.
pub const SUBJECT_INBOUND: u32 = 1 << 30;
/// No destination class: nothing in the policy covers the address, so no rule can match.
pub const CLASS_NONE: u32 = 0;
/// Destination class of a segment: `CLASS_SEGMENT | segment`. CIDR classes are below it.
pub const CLASS_SEGMENT: u32 = 1 << 30;
/// Destination class of a SIM named by a rule: `CLASS_SIM | sim`.
pub const CLASS_SIM: u32 = 2 << 30;
/// Protocol wildcard in [`RuleKey::proto`] (IP protocol 0 never reaches the rule lookup: it is
/// the hop-by-hop header, which the parser skips).
pub const PROTO_ANY: u8 = 0;
/// [`RuleKey::port_bits`] of an entry without a port part (any port, or any protocol), and of
/// a lookup for a packet without ports.
pub const PORT_BITS_ANY: u8 = u8::MAX;
/// Bytes of a `RULES_V2` key's data: generation, subject, class, protocol, port flag, port.
pub const RULE_KEY_LEN: usize = 13;
/// Prefix length of an any-protocol entry: generation, subject and class.
pub const RULE_BITS_ANY_PROTO: u32 = 72;
/// Prefix length of a protocol-on-any-port entry, and of the lookup of a packet without ports.
pub const RULE_BITS_PROTO: u32 = 80;
/// Prefix length of a port block of 65,536 ports (the port flag byte set); a block of
/// `2^(16 - n)` ports has `RULE_BITS_PORTS + n`, a packet's lookup `RULE_BITS_PORTS + 16`.
pub const RULE_BITS_PORTS: u32 = 88;

/// A `RULES_V2` entry or lookup before it becomes LPM data. Entries: `proto == PROTO_ANY` is
/// any protocol (port fields zero, [`PORT_BITS_ANY`]); `port_bits == PORT_BITS_ANY` any port;
/// otherwise the block of `2^(16 - port_bits)` ports starting at `port`. Lookups: `port_bits`
/// 16 and the destination port for a packet with ports, else `PORT_BITS_ANY`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleKey {
    /// Segment id, or `SUBJECT_SIM | sim`.
    pub subject: u32,
    /// Destination class.
    pub class: u32,
    /// IP protocol number, or `PROTO_ANY`.
    pub proto: u8,
    /// First port of the block (host order), zero without a port part.
    pub port: u16,
    /// Port prefix bits, 0 to 16, or [`PORT_BITS_ANY`].
    pub port_bits: u8,
}

impl RuleKey {
    /// LPM prefix length in bits (see the `RULE_BITS_*` constants).
    #[inline(always)]
    #[must_use]
    pub const fn prefix_len(&self) -> u32 {
        if self.proto == PROTO_ANY {
            RULE_BITS_ANY_PROTO
        } else if self.port_bits == PORT_BITS_ANY {
            RULE_BITS_PROTO
        } else {
            RULE_BITS_PORTS + (self.port_bits & 31) as u32
        }
    }

    /// LPM data for `generation`: every field big-endian, most significant first, so that the
    /// trie's bit order is generation, subject, class, protocol, port flag, port.
    #[inline(always)]
    #[must_use]
    pub const fn lpm_data(&self, generation: u8) -> [u8; RULE_KEY_LEN] {
        let s = self.subject.to_be_bytes();
        let c = self.class.to_be_bytes();
        let p = self.port.to_be_bytes();
        let has_port = (self.port_bits != PORT_BITS_ANY) as u8;
        [
            generation, s[0], s[1], s[2], s[3], c[0], c[1], c[2], c[3], self.proto, has_port, p[0],
            p[1],
        ]
    }
}

/// Key of `PORT_RULES`: a [`RuleKey`] for a single port (`port_bits` 16), exactly. Zero-initialise
/// it: the kernel hashes every byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRuleKey {
    /// Segment id, or `SUBJECT_SIM | sim`.
    pub subject: u32,
    /// Destination class.
    pub class: u32,
    /// Destination port, host order.
    pub port: u16,
    /// IP protocol number (TCP or UDP).
    pub proto: u8,
    /// Policy generation.
    pub generation: u8,
}

impl PortRuleKey {
    /// The exact key of a lookup or entry `key` for `generation`.
    #[inline(always)]
    #[must_use]
    pub const fn of(key: &RuleKey, generation: u8) -> Self {
        Self {
            subject: key.subject,
            class: key.class,
            port: key.port,
            proto: key.proto,
            generation,
        }
    }
}

/// Value of `RULES_V2` and `PORT_RULES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleEntry {
    /// Rule id: slot in `RULE_STATS`, and the index into the compiled rule list.
    pub rule: u32,
}

/// The interface has the `core` role (`--iface core:IF`): only device traffic is expected on
/// it, so traffic whose source is outside every pool (and outside the policy's
/// `core_sources`, [`NET_CORE_SOURCE`]) is dropped (`non_pool`), and so are frames that are
/// neither IPv4, IPv6 nor ARP (`not_ip`).
pub const IFACE_DROP_NON_POOL: u32 = 1;
/// The interface has the `service` role (`--iface service:IF`): it faces the services, so a
/// packet arriving there with a pool source is a forged device address (`spoofed`), and only
/// replies and inbound traffic are expected. An interface given without a role has neither
/// flag and is judged by addresses alone.
pub const IFACE_SERVICE: u32 = 2;
/// Forward in XDP (`--forward xdp`): an IP packet that passes on this interface is routed by
/// the kernel's FIB (`bpf_fib_lookup`) and sent out of its egress interface with
/// `XDP_REDIRECT` through `FORWARD_DEVS`, skipping the kernel's stack, when the FIB resolves
/// it and the egress interface is one of the enforcer's; anything else goes to the stack
/// (`XDP_PASS`) as without the flag. The verdict is made before: this only picks the path.
pub const IFACE_XDP_FORWARD: u32 = 4;

/// Slots of `FORWARD_STATS` (packets, per CPU), one per outcome of XDP forwarding. Slots
/// `0..=9` are `bpf_fib_lookup`'s return codes (`BPF_FIB_LKUP_RET_*`, Linux
/// `include/uapi/linux/bpf.h`): [`FORWARD_REDIRECTED`] is its success, every other code sent
/// the packet to the stack (e.g. 7, `NO_NEIGH`: the next hop's MAC address is not resolved
/// yet, which the stack then resolves).
pub const FORWARD_REDIRECTED: u32 = 0;
/// `FORWARD_STATS` slot: `bpf_fib_lookup` returned a code this build does not name, or an
/// error; sent to the stack.
pub const FORWARD_OTHER: u32 = 11;
/// `FORWARD_STATS` slot: the FIB's egress interface is not one of the enforcer's (not in
/// `FORWARD_DEVS`); sent to the stack.
pub const FORWARD_FOREIGN_EGRESS: u32 = 12;
/// `FORWARD_STATS` slot: the TTL or hop limit would expire; sent to the stack, which answers
/// with ICMP time exceeded.
pub const FORWARD_TTL: u32 = 13;
/// `FORWARD_STATS` slot: not an untagged IPv4 or IPv6 frame to a unicast MAC address (a VLAN
/// tag, say, or a broadcast or multicast destination MAC); sent to the stack.
pub const FORWARD_NOT_PLAIN_IP: u32 = 14;
/// Entries of `FORWARD_STATS`.
pub const FORWARD_STATS_ENTRIES: u32 = 16;
/// The name of each `FORWARD_STATS` slot that is ever written, for metrics and `status`
/// (`bpf_fib_lookup` codes by their `BPF_FIB_LKUP_RET_*` names, lower case).
pub const FORWARD_OUTCOMES: [(u32, &str); 14] = [
    (FORWARD_REDIRECTED, "redirected"),
    (1, "blackhole"),
    (2, "unreachable"),
    (3, "prohibit"),
    (4, "not_forwarded"),
    (5, "forwarding_disabled"),
    (6, "unsupported_lwt"),
    (7, "no_neighbour"),
    (8, "fragmentation_needed"),
    (9, "no_source_address"),
    (FORWARD_OTHER, "other"),
    (FORWARD_FOREIGN_EGRESS, "foreign_egress"),
    (FORWARD_TTL, "ttl_expiring"),
    (FORWARD_NOT_PLAIN_IP, "not_plain_ip"),
];

/// Value of `IFACES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceEntry {
    /// `IFACE_*` flags.
    pub flags: u32,
}

/// Per-SIM counters, in [`SimRecord::counters`]. Each field is added to atomically.
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
    SimBinding,
    SimPolicy,
    SimRecord,
    NetEntry,
    SegmentEntry,
    PortRuleKey,
    RuleEntry,
    IfaceEntry,
    SimCounters,
    Counter,
    crate::session::SessionKey,
    crate::session::Session,
    crate::scan::ScanArgs
);

const _: () = {
    assert!(size_of::<Config>() == 8);
    assert!(size_of::<SimEntry>() == 8);
    assert!(size_of::<SimBinding>() == 8);
    assert!(size_of::<SimPolicy>() == 4);
    assert!(size_of::<SimRecord>() == 40);
    assert!(core::mem::offset_of!(SimRecord, counters) == SimRecord::COUNTERS_OFFSET);
    assert!(size_of::<NetEntry>() == 8);
    assert!(size_of::<SegmentEntry>() == 8);
    assert!(size_of::<PortRuleKey>() == 12);
    assert!(size_of::<RuleEntry>() == 4);
    assert!(size_of::<IfaceEntry>() == 4);
    assert!(size_of::<SimCounters>() == 32);
    assert!(size_of::<Counter>() == 16);
    assert!(size_of::<crate::session::SessionKey>() == 40);
    assert!(size_of::<crate::session::Session>() == 64);
};

/// Index in `PORTS_USED` of the word that holds `port`'s bit for TCP (`udp` false) or UDP.
#[must_use]
pub const fn ports_used_index(generation: u8, udp: bool, port: u16) -> u32 {
    ((generation as u32 & 1) * 2 + udp as u32) * PORT_WORDS + (port as u32 >> 6)
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

/// Whether rules of IP protocol `proto` can name ports (TCP and UDP).
#[must_use]
pub const fn has_ports(proto: u8) -> bool {
    matches!(proto, IPPROTO_TCP | IPPROTO_UDP)
}

/// [`DenyEvent::reason`] of a packet audit mode passed that the policy would have denied.
pub const DENY_EVENT_AUDIT: u8 = 100;

/// Bytes of the `DENY_EVENTS` ring buffer (a power of two times the page size): 16,384 events.
pub const DENY_EVENTS_BYTES: u32 = 1 << 20;
/// Deny events a SIM may raise per second; the rest are counted and the count carried in its
/// next event ([`DenyEvent::suppressed`]), so a flood cannot starve the reader.
pub const DENY_EVENTS_PER_SECOND: u32 = 10;
/// Entries of `DENY_LIMITS` (least recently used evicted): SIMs denied recently.
pub const DENY_LIMIT_ENTRIES: u32 = 65_536;
/// The `DENY_LIMITS` key and [`DenyEvent::sim`] of packets from no SIM (outside every pool,
/// or a pool address bound to none): one budget for them all.
pub const DENY_NO_SIM: u32 = u32::MAX;

/// `DENY_LIMITS` value: one SIM's event budget in its current one-second window. Updated
/// without atomics: two CPUs denying the same SIM at once may miscount by one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenyLimit {
    /// Start of the window, `CLOCK_MONOTONIC` nanoseconds at tick resolution (the program's
    /// clock, see [`CLOCK_CALIBRATION`]).
    pub window_ns: u64,
    /// Events raised in the window.
    pub count: u32,
    /// Denied packets without an event since the last event.
    pub suppressed: u32,
    /// Their bytes (whole frames).
    pub suppressed_bytes: u64,
}

/// One denied packet, as the program reports it on `DENY_EVENTS`. 72 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenyEvent {
    /// When, `CLOCK_MONOTONIC` nanoseconds at tick resolution (a few milliseconds, as
    /// `CLOCK_MONOTONIC_COARSE`): the clock sessions are stamped with ([`CLOCK_CALIBRATION`]),
    /// cheaper than the precise one on the flood path.
    pub time_ns: u64,
    /// The sender's SIM index, [`DENY_NO_SIM`] for none.
    pub sim: u32,
    /// The sender's denied packets that raised no event since its previous event.
    pub suppressed: u32,
    /// Their bytes (whole frames).
    pub suppressed_bytes: u64,
    /// Source address as on the wire (IPv4 in the first four bytes).
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Source port (TCP, UDP; an echo's identifier for ICMP), host order.
    pub sport: u16,
    /// Destination port, host order.
    pub dport: u16,
    /// Interface it arrived on.
    pub ifindex: u32,
    /// The sender's segment id ([`SEGMENT_NONE`] as `u16::MAX` for none).
    pub segment: u16,
    /// IP protocol.
    pub proto: u8,
    /// 1 for IPv6.
    pub v6: u8,
    /// [`crate::DropReason`] as a number.
    pub reason: u8,
    /// Zero.
    pub _pad: u8,
    /// The frame's length in bytes.
    pub bytes: u16,
}

const _: () = assert!(size_of::<DenyEvent>() == 72);
const _: () = assert!(size_of::<crate::scan::ScanArgs>() == 72);
const _: () = assert!(size_of::<DenyLimit>() == 24);

pod!(DenyEvent, DenyLimit);
