//! Stage 2, identify: implements `enforcer_common::decide::Tables` over the kernel maps and runs
//! the shared lookup sequence (`enforcer_common::decide::identify`) on a `PacketMeta`.
//!
//! Reads `CONFIG`, `SRC_SIM` (the source's binding when the established stage looked it up),
//! `SIM_V4_V2`, `SIM_V6_V2`, `SIMS`, `NET_V4`, `NET_V6`, `SEGMENTS`, `PORTS_USED`, `PORT_RULES`,
//! `RULES_V2` and `IFACES` through this CPU's `IFACE_CACHE`; writes `IFACE_CACHE` on a miss
//! (and, through `crate::track::identify_into`, `DENY_CACHE`).

use aya_ebpf::maps::lpm_trie::Key;
use enforcer_common::{
    Inputs,
    decide::{self, PacketMeta, Tables},
    maps::{
        IFACE_XDP_FORWARD, IPPROTO_UDP, NET_POOL, NetEntry, PortRuleKey, RuleKey, SIM_NONE,
        SegmentEntry, SimBinding, SimEntry, SimPolicy, ports_used_index, segment_index,
    },
    rules::RuleTable,
};

use crate::maps::{
    CONFIG, IFACE_CACHE, IFACES, NET_V4, NET_V6, PORT_RULES, PORTS_USED, RULES_V2, SEGMENTS,
    SIM_V4_V2, SIM_V6_V2, SIMS, SRC_SIM,
};

/// LPM prefix of a full address behind the generation byte: 8 + 32 and 8 + 128 bits.
const NET_V4_BITS: u32 = 40;
const NET_V6_BITS: u32 = 136;

/// The kernel's tables; `src_looked_up`: the established stage looked the frame's IPv4 source
/// up in `SIM_V4_V2` in this run and left the binding in `SRC_SIM`.
struct KernelMaps {
    src_looked_up: bool,
}

impl RuleTable for KernelMaps {
    #[inline(always)]
    fn port_rule(&self, generation: u8, key: &RuleKey) -> Option<u32> {
        let key = PortRuleKey::of(key, generation);
        // SAFETY: the pointer comes from a successful lookup and is valid for this program run;
        // `PORT_RULES` is not preallocated, so a concurrent delete frees it only after RCU.
        PORT_RULES
            .get_ptr(key)
            .map(|entry| unsafe { (*entry).rule })
    }

    #[inline(always)]
    fn rule(&self, generation: u8, key: &RuleKey) -> Option<u32> {
        RULES_V2
            .get(Key::new(key.prefix_len(), key.lpm_data(generation)))
            .map(|entry| entry.rule)
    }
}

impl Tables for KernelMaps {
    #[inline(always)]
    fn generation(&self) -> u8 {
        CONFIG
            .get(0)
            .map_or(0, |config| (config.generation & 1) as u8)
    }

    #[inline(always)]
    fn sim_v4(&self, generation: u8, addr: [u8; 4]) -> Option<SimEntry> {
        if self.src_looked_up
            && let Some(binding) = src_binding(addr, crate::track::epoch())
        {
            return sim_policy(generation, binding.of(generation));
        }
        // SAFETY: the pointer comes from a successful lookup and is valid for this program run;
        // `SIM_V4_V2` is not preallocated, so a concurrent delete frees it only after RCU, and
        // an update replaces the whole entry (a reader sees the old or the new binding).
        let binding: SimBinding = SIM_V4_V2.get_ptr(addr).map(|entry| unsafe { *entry })?;
        sim_policy(generation, binding.of(generation))
    }

    #[inline(always)]
    fn sim_v6(&self, generation: u8, prefix: [u8; 8]) -> Option<SimEntry> {
        // SAFETY: as in `sim_v4`: a valid, not preallocated entry, read once.
        let binding: SimBinding = SIM_V6_V2.get_ptr(prefix).map(|entry| unsafe { *entry })?;
        sim_policy(generation, binding.of(generation))
    }

    #[inline(always)]
    fn net_v4(&self, generation: u8, addr: [u8; 4]) -> Option<NetEntry> {
        let data = [generation, addr[0], addr[1], addr[2], addr[3]];
        NET_V4.get(Key::new(NET_V4_BITS, data)).copied()
    }

    #[inline(always)]
    fn net_v6(&self, generation: u8, addr: [u8; 16]) -> Option<NetEntry> {
        // One array literal: LLVM turned an element-wise copy loop into code that stores an
        // undefined register, which the verifier rejects (`R3 !read_ok`).
        let a = addr;
        let data = [
            generation, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11],
            a[12], a[13], a[14], a[15],
        ];
        NET_V6.get(Key::new(NET_V6_BITS, data)).copied()
    }

    #[inline(always)]
    fn single_port_used(&self, generation: u8, proto: u8, port: u16) -> bool {
        let index = ports_used_index(generation, proto == IPPROTO_UDP, port);
        PORTS_USED
            .get(index)
            .is_some_and(|word| word.wrapping_shr(u32::from(port & 63)) & 1 != 0)
    }

    #[inline(always)]
    fn segment(&self, generation: u8, segment: u16) -> SegmentEntry {
        SEGMENTS
            .get(segment_index(generation, segment))
            .copied()
            .unwrap_or_default()
    }

    #[inline(always)]
    fn iface_flags(&self, ifindex: u32) -> u32 {
        iface_flags_in_identify(ifindex)
    }
}

/// The binding the established stage of this run left in `SRC_SIM` for `addr`, if it was read
/// under `epoch` (`CONFIG.epoch` in force): under another epoch the daemon may have flipped
/// the generation or rebound the address since, and the copy could hold a slot two policies
/// old. Only for a frame whose session that stage found absent (it wrote the slot).
#[inline(always)]
pub fn src_binding(addr: [u8; 4], epoch: u32) -> Option<SimBinding> {
    let slot = SRC_SIM.get_ptr(0)?;
    // SAFETY: this CPU's entry of a per-CPU array, valid for this run and written by nothing
    // else while the program runs on this CPU.
    let (looked_up, read_under, binding) =
        unsafe { ((*slot).addr, (*slot).epoch, (*slot).binding) };
    (looked_up == addr && read_under == epoch).then_some(binding)
}

/// SIM `sim` of `generation` with its policy word from `SIMS`; `None` for [`SIM_NONE`] (the
/// address is unbound in this generation) and for an index past the map.
#[inline(always)]
pub fn sim_policy(generation: u8, sim: u32) -> Option<SimEntry> {
    if sim == SIM_NONE {
        return None;
    }
    let record = SIMS.get_ptr(sim)?;
    // SAFETY: `record` comes from a successful array lookup, valid for this run. The daemon
    // rewrites a policy word through its memory mapping while packets run: one aligned 32-bit
    // volatile load sees the old word or the new one, never half of each.
    let word = unsafe {
        core::ptr::read_volatile(
            (&raw const (*record).policy)
                .cast::<u32>()
                .add(usize::from(generation & 1)),
        )
    };
    Some(SimEntry::new(sim, SimPolicy::from_word(word)))
}

/// Gather the decision inputs for one parsed packet.
#[inline(always)]
pub fn lookup(meta: &PacketMeta) -> Inputs {
    // The established stage looks a frame's source up exactly when it finds the frame's
    // session absent (`crate::established`).
    let maps = KernelMaps {
        src_looked_up: meta.session_absent && !meta.v6,
    };
    decide::identify(&maps, meta)
}

/// Whether `addr` lies outside every pool of the active generation (`NET_*`).
#[inline(always)]
pub fn outside_pools(v6: bool, addr: &[u8; 16]) -> bool {
    let maps = KernelMaps {
        src_looked_up: false,
    };
    let generation = maps.generation();
    let net = if v6 {
        maps.net_v6(generation, *addr)
    } else {
        maps.net_v4(generation, [addr[0], addr[1], addr[2], addr[3]])
    };
    net.is_none_or(|net| net.flags & NET_POOL == 0)
}

/// `IFACE_*` flags of the arrival interface `ifindex`, through this CPU's `IFACE_CACHE`.
#[inline(always)]
pub fn iface_flags(ifindex: u32) -> u32 {
    iface_flags_cached(ifindex, crate::track::epoch())
}

/// Whether packets that pass on `ifindex` are forwarded in XDP (`IFACE_XDP_FORWARD`).
#[inline(always)]
pub fn forwards(ifindex: u32) -> bool {
    iface_flags(ifindex) & IFACE_XDP_FORWARD != 0
}

/// The `IFACES` flags of `ifindex` through this CPU's `IFACE_CACHE`, under `epoch`
/// (`CONFIG.epoch`, read by the caller before this call: the daemon writes `IFACES` first and
/// raises the epoch after, so flags cached under the current epoch are current). A miss is
/// looked up in a BPF function of its own ([`iface_flags_refill`]).
#[inline(always)]
pub fn iface_flags_cached(ifindex: u32, epoch: u32) -> u32 {
    cached_flags(ifindex, epoch).unwrap_or_else(|| iface_flags_refill(ifindex, epoch))
}

/// [`iface_flags_cached`] for the identify stage, whose frame is a BPF function of its own
/// (`crate::track::identify_into`): a miss is looked up in place, as a call from there would
/// be a third frame, past the combined stack Linux 6.1 allows (each frame rounded up to 32
/// bytes: 256 + 256 + 32 = 544 of 512).
#[inline(always)]
fn iface_flags_in_identify(ifindex: u32) -> u32 {
    let epoch = crate::track::epoch();
    cached_flags(ifindex, epoch).unwrap_or_else(|| refill(ifindex, epoch))
}

/// This CPU's cached flags of `ifindex` if they were cached under `epoch`.
#[inline(always)]
fn cached_flags(ifindex: u32, epoch: u32) -> Option<u32> {
    let cache = IFACE_CACHE.get_ptr(0)?;
    // SAFETY: this CPU's entry of a per-CPU array, valid for this run and written by nothing
    // else while the program runs on this CPU.
    unsafe { ((*cache).ifindex == ifindex && (*cache).epoch == epoch).then(|| (*cache).flags) }
}

/// The miss of [`iface_flags_cached`], as a BPF function of its own, so that what the hash
/// lookup's call keeps live stays in this frame, not in the program's (Linux 6.1 refused the
/// program 16 bytes over its stack limit).
#[inline(never)]
fn iface_flags_refill(ifindex: u32, epoch: u32) -> u32 {
    refill(ifindex, epoch)
}

/// Look `ifindex` up in `IFACES` and cache its flags under `epoch`.
#[inline(always)]
fn refill(ifindex: u32, epoch: u32) -> u32 {
    // SAFETY: as in `sim_v4`; `IFACES` entries are only ever replaced whole by the daemon.
    let flags = IFACES
        .get_ptr(ifindex)
        .map_or(0, |entry| unsafe { (*entry).flags });
    if let Some(cache) = IFACE_CACHE.get_ptr_mut(0) {
        // SAFETY: as in `cached_flags`.
        unsafe {
            (*cache).ifindex = ifindex;
            (*cache).epoch = epoch;
            (*cache).flags = flags;
        }
    }
    flags
}
