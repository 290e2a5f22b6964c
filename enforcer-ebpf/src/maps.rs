//! Every map of the program. Layouts, names and the lookup design are documented once, in
//! `enforcer_common::maps`; the loader resizes the SIM-, network- and rule-sized maps to the
//! policy.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use enforcer_common::decide::DenyKey;
use enforcer_common::maps::{
    CLOCK_ENTRIES, Config, Counter, DENY_EVENTS_BYTES, DENY_LIMIT_ENTRIES, DenyLimit,
    FORWARD_STATS_ENTRIES, IfaceEntry, MAX_IFACES, NetEntry, NetKeyV4, NetKeyV6,
    PORTS_USED_ENTRIES, PortRuleKey, RULE_KEY_LEN, RuleEntry, SEGMENT_ENTRIES, SegmentEntry,
    SimBinding, SimKeyV4, SimKeyV6, SimRecord, VERDICT_STATS_ENTRIES, defaults,
};
use enforcer_common::session::{Session, SessionKey};

/// The active policy generation.
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// IPv4 /32 → SIM index per generation. Not preallocated: entries are RCU-freed, so a reader
/// never sees a reused one.
#[map]
pub static SIM_V4_V2: HashMap<SimKeyV4, SimBinding> =
    HashMap::with_max_entries(defaults::MAX_SIMS, BPF_F_NO_PREALLOC);

/// IPv6 /64 prefix → SIM index per generation.
#[map]
pub static SIM_V6_V2: HashMap<SimKeyV6, SimBinding> =
    HashMap::with_max_entries(defaults::MAX_SIMS, BPF_F_NO_PREALLOC);

/// SIM index → the SIM's policy per generation and its counters (atomic adds). Memory-mapped
/// by the daemon, which writes policies and reads counters without a syscall per SIM.
#[map]
pub static SIMS: Array<SimRecord> = Array::with_max_entries(defaults::MAX_SIMS, BPF_F_MMAPABLE);

/// (generation, IPv4 CIDR) → destination class or pool.
#[map]
pub static NET_V4: LpmTrie<NetKeyV4, NetEntry> = LpmTrie::with_max_entries(defaults::MAX_NETS, 0);

/// (generation, IPv6 CIDR) → destination class or pool.
#[map]
pub static NET_V6: LpmTrie<NetKeyV6, NetEntry> = LpmTrie::with_max_entries(defaults::MAX_NETS, 0);

/// (generation, segment) → rule tiers.
#[map]
pub static SEGMENTS: Array<SegmentEntry> = Array::with_max_entries(SEGMENT_ENTRIES, 0);

/// (generation, subject, class, protocol, port block) → rule id, longest prefix first.
#[map]
pub static RULES_V2: LpmTrie<[u8; RULE_KEY_LEN], RuleEntry> =
    LpmTrie::with_max_entries(defaults::MAX_RULE_ENTRIES, 0);

/// (generation, subject, class, protocol, one port) → rule id, exact.
#[map]
pub static PORT_RULES: HashMap<PortRuleKey, RuleEntry> =
    HashMap::with_max_entries(defaults::MAX_RULE_ENTRIES, BPF_F_NO_PREALLOC);

/// (generation, TCP or UDP, port / 64) → a bit per port that some single-port rule names.
#[map]
pub static PORTS_USED: Array<u64> = Array::with_max_entries(PORTS_USED_ENTRIES, 0);

/// ifindex → per-interface settings.
#[map]
pub static IFACES: HashMap<u32, IfaceEntry> = HashMap::with_max_entries(MAX_IFACES, 0);

/// Per-segment (and no-segment) packets and bytes by verdict slot, per CPU (`_V2`: 32 slots).
#[map]
pub static VERDICTS_V2: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(VERDICT_STATS_ENTRIES, 0);

/// Live sessions (`enforcer_common::session`). Not preallocated: memory follows the sessions
/// open, and a full table refuses new ones (`E2BIG`) without evicting any.
#[map]
pub static SESSIONS: HashMap<SessionKey, Session> =
    HashMap::with_max_entries(defaults::MAX_SESSIONS, BPF_F_NO_PREALLOC);

/// Per-rule packets and bytes passed, per CPU.
#[map]
pub static RULE_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(defaults::MAX_RULES, 0);

/// One `Session` per CPU, where a new session is assembled before it is inserted: a 64-byte
/// value on the program's stack did not fit its 512 bytes, and assembling it in a BPF function
/// of its own quadrupled the verifier's work (every path that opens a session verified the
/// function again). Not pinned: each loaded program has its own, and nothing is kept in it
/// between packets.
#[map]
pub static SCRATCH: PerCpuArray<Session> = PerCpuArray::with_max_entries(1, 0);

/// Deny events (`enforcer_common::maps::DenyEvent`) for the daemon to read.
#[map]
pub static DENY_EVENTS: RingBuf = RingBuf::with_byte_size(DENY_EVENTS_BYTES, 0);

/// SIM index → its deny-event budget (the SIMs denied least recently are evicted).
#[map]
pub static DENY_LIMITS: LruHashMap<u32, DenyLimit> =
    LruHashMap::with_max_entries(DENY_LIMIT_ENTRIES, 0);

/// This CPU's last `IFACES` answer, valid while `CONFIG.epoch` is the one it was read under:
/// the daemon raises the epoch after every `IFACES` write, so a stale entry is never used.
/// Spares every stage that needs the arrival interface's flags (the established stage,
/// sessions, identify, forwarding, a frame that is not IP) a hash lookup per packet. Not pinned: each loaded
/// program has its own.
#[map]
pub static IFACE_CACHE: PerCpuArray<IfaceCache> = PerCpuArray::with_max_entries(1, 0);

/// An [`IFACE_CACHE`] entry. `ifindex` 0 (never an arrival interface) marks it empty.
#[repr(C)]
pub struct IfaceCache {
    /// The interface looked up.
    pub ifindex: u32,
    /// `CONFIG.epoch` read before the lookup.
    pub epoch: u32,
    /// Its `IFACE_*` flags (0 for an interface `IFACES` does not hold).
    pub flags: u32,
}

/// The source's `SIM_V4_V2` binding that the established stage looked up for a new flow, for
/// the deny cache and the pipeline's identify stage of the same run to take instead of
/// looking it up again (`crate::established`). Only read when the stage tells the pipeline it looked (the frame's
/// session absent), only for that address and only under the same policy epoch. Not pinned: each loaded program has its own,
/// and nothing in it outlives a run.
#[map]
pub static SRC_SIM: PerCpuArray<SrcSim> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's deny cache (`crate::deny_cache`): `DenyKey::SLOTS` keys of recent `no_rule`
/// drops, direct-mapped by `DenyKey::slot`, each valid while the policy epoch it holds is in
/// force. 20 bytes an entry, 24 as the kernel stores it (values rounded up to 8 bytes): 6 KiB
/// per CPU. Not pinned: each loaded program has its own.
#[map]
pub static DENY_CACHE: PerCpuArray<DenyKey> = PerCpuArray::with_max_entries(DenyKey::SLOTS, 0);

/// A [`SRC_SIM`] entry: an IPv4 address and its binding ([`SimBinding::default`], unbound in
/// both generations, when `SIM_V4_V2` has none), as read under a policy epoch.
#[repr(C)]
pub struct SrcSim {
    /// The address looked up (the frame's source).
    pub addr: SimKeyV4,
    /// `CONFIG.epoch`, read before the lookup: the daemon raises it after every change to the
    /// bindings or the generation, so a binding read under the epoch still in force is the
    /// one a lookup would find now.
    pub epoch: u32,
    /// What `SIM_V4_V2` held for it.
    pub binding: SimBinding,
}

/// This CPU's tick (`jiffies`) in which it last found `DENY_EVENTS` full (`crate::events`): for
/// the rest of that tick it reports no denial and looks up no budget. Not pinned: each loaded
/// program has its own, and an entry of a past tick means nothing.
#[map]
pub static RING_FULL_TICK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `[0] != 0`: raise no deny events (the benchmark's program "without them"). Not pinned:
/// each loaded program starts with events on.
#[map]
pub static EVENTS_OFF: Array<u32> = Array::with_max_entries(1, 0);

/// `[0]`: the session scan's arguments and its count of entries visited (`crate::scan`). Not
/// pinned: each daemon's own iterator reads it.
#[map]
pub static SCAN_ARGS: Array<enforcer_common::scan::ScanArgs> = Array::with_max_entries(1, 0);

/// ifindex → the same ifindex: the interfaces XDP forwarding may redirect to (`crate::forward`).
/// Not pinned: each loaded program has its own, which the daemon fills before attaching it.
#[map]
pub static FORWARD_DEVS: DevMapHash = DevMapHash::with_max_entries(MAX_IFACES, 0);

/// The clock's calibration and the loader's sample (`crate::clock`). Not pinned: each loader
/// calibrates the program it loaded.
#[map]
pub static CLOCK: Array<[u64; 2]> = Array::with_max_entries(CLOCK_ENTRIES, 0);

/// Packets by XDP forwarding outcome (`enforcer_common::maps::FORWARD_OUTCOMES`), per CPU.
#[map]
pub static FORWARD_STATS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(FORWARD_STATS_ENTRIES, 0);
