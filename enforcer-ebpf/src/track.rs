//! Stage 3, track: sessions (`enforcer_common::session`) over the kernel's `SESSIONS` map.
//!
//! Reads `CONFIG` (the epoch), `CLOCK` and `IFACE_CACHE` (and `IFACES` on a miss of it);
//! reads and writes `SESSIONS`, assembling a new session in this CPU's `SCRATCH` slot. The
//! decision is `enforcer_common::session::judge`; this module only implements its table.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::bindings::BPF_NOEXIST;
use enforcer_common::{
    Inputs,
    decide::PacketMeta,
    maps::SimEntry,
    session::{
        Found, Opening, SESSION_INBOUND, Session, SessionKey, SessionState, SessionTable, advance,
    },
};

use crate::maps::{CONFIG, SCRATCH, SESSIONS};

/// `-EEXIST`: another CPU created the same session first.
const EEXIST: i32 = -17;

/// `SESSIONS` for one packet: the entry found last, so that counting a packet or bringing
/// its session up to date needs no second lookup.
pub struct KernelSessions {
    found: *mut Session,
}

impl KernelSessions {
    #[inline(always)]
    pub fn new() -> Self {
        Self {
            found: core::ptr::null_mut(),
        }
    }
}

impl SessionTable for KernelSessions {
    #[inline(always)]
    fn epoch(&self) -> u32 {
        epoch()
    }

    #[inline(always)]
    fn now_ns(&self) -> u64 {
        crate::clock::now_ns()
    }

    #[inline(always)]
    fn find(&mut self, key: &SessionKey) -> Option<Found> {
        let entry = SESSIONS.get_ptr_mut(key)?;
        // SAFETY: `entry` comes from a successful lookup and stays valid for this program run
        // (the map is not preallocated: a concurrent delete frees it only after RCU).
        let session = unsafe { Found::of(&*entry) };
        self.found = entry;
        Some(session)
    }

    #[inline(always)]
    fn create(&mut self, key: &SessionKey, opening: &Opening) -> bool {
        create_session(key, opening)
    }

    #[inline(always)]
    fn touch(&mut self, _key: &SessionKey, from_device: bool, bytes: u64, proto: u8, flags: u8) {
        let entry = self.found;
        if !entry.is_null() {
            touch(entry, from_device, bytes, proto, flags);
        }
    }

    #[inline(always)]
    fn refresh(&mut self, _key: &SessionKey, sim: &SimEntry, rule: u32, epoch: u32) {
        let entry = self.found;
        if entry.is_null() {
            return;
        }
        // SAFETY: as in `touch`.
        unsafe {
            (*entry).sim = sim.sim;
            (*entry).segment = sim.segment;
            (*entry).rule = rule;
            (*entry).epoch = epoch;
        }
    }

    #[inline(always)]
    fn identify(&self, meta: &PacketMeta) -> Inputs {
        let mut inputs = Inputs::default();
        // Used, so that LLVM keeps the return value (see `identify_into`).
        inputs.rule = identify_into(meta, &raw mut inputs);
        inputs
    }

    #[inline(always)]
    fn iface_flags(&self, ifindex: u32) -> u32 {
        crate::identify::iface_flags_cached(ifindex, self.epoch())
    }

    #[inline(always)]
    fn outside_pools(&self, v6: bool, addr: &[u8; 16]) -> bool {
        crate::identify::outside_pools(v6, addr)
    }

    #[inline(always)]
    fn remove(&mut self, key: &SessionKey) {
        let _ = SESSIONS.remove(key);
        self.found = core::ptr::null_mut();
    }
}

/// The policy epoch in force (`CONFIG.epoch`).
#[inline(always)]
pub fn epoch() -> u32 {
    CONFIG.get(0).map_or(0, |config| config.epoch)
}

/// Count a packet of `bytes` bytes in the live session `entry` (from the device, or to it),
/// advance its TCP state by the packet's `flags` (`proto`'s) and mark it seen now.
#[inline(always)]
pub fn touch(entry: *mut Session, from_device: bool, bytes: u64, proto: u8, flags: u8) {
    let now = crate::clock::now_ns();
    let slot = usize::from(!from_device);
    // SAFETY: `entry` comes from a successful `SESSIONS` lookup in this run and stays valid
    // for it (the map is not preallocated: a concurrent delete frees it only after RCU). Both
    // directions of a session may run on two CPUs at once: the counters are added atomically;
    // the state and time are single aligned stores (a racing packet may win, both are current).
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            (&raw mut (*entry).packets).cast::<u64>().add(slot),
            1,
        );
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            (&raw mut (*entry).bytes).cast::<u64>().add(slot),
            bytes,
        );
        let from_opener = from_device == ((*entry).flags & SESSION_INBOUND == 0);
        let state = advance(
            SessionState::from_u8((*entry).state),
            proto,
            from_opener,
            flags,
        );
        (*entry).state = state as u8;
        (*entry).seen_ns = now;
    }
}

/// Stage 2, identify, as a *global* BPF function: its lookup keys live in its own stack frame
/// while the session's key and state wait in the caller's (the verifier allows 512 bytes for
/// the deepest chain of calls, which everything inlined into one function passed), and the
/// verifier checks it once, on its own, instead of again for every state the caller reaches
/// the call in (a static function was verified anew for each: 352,707 instructions processed
/// against 73,588 as a global one, with a load a third of a second faster). A global function
/// takes its pointers as possibly null memory of the pointee's size (BTF), hence raw pointers
/// and the null check. Returns the rule found, which the caller uses: a BPF function that
/// returns nothing (or a value no caller reads, which LLVM then drops) leaves the pointer to
/// `out` in its return register, and the verifier refuses a stack pointer returned to the
/// caller. A `no_rule` denial of a frame whose session was absent is remembered here, in the
/// deny cache (`crate::deny_cache::remember`), whose key fits this frame and not the caller's.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn identify_into(meta: *const PacketMeta, out: *mut Inputs) -> u32 {
    if meta.is_null() || out.is_null() {
        return enforcer_common::rules::NO_RULE;
    }
    // SAFETY: checked non-null; the verifier checks the sizes.
    unsafe {
        *out = crate::identify::lookup(&*meta);
        crate::deny_cache::remember(&*meta, &*out);
        (*out).rule
    }
}

/// Add the session `opening` starts under `key` at the clock's now: `false` when the table is
/// full (`EEXIST`, another CPU's insert of the same session, counts as created). A BPF
/// function of its own, off the established path: inlined, the clock's value and the scratch
/// slot's pointer, both live across lookups, cost the program's frame a spill slot past the
/// 256 bytes Linux 6.1's combined stack limit leaves it.
#[inline(never)]
fn create_session(key: &SessionKey, opening: &Opening) -> bool {
    let now = crate::clock::now_ns();
    // No scratch slot (never: it is this CPU's entry 0) creates nothing: the packet is
    // dropped as if the table were full (fail closed).
    let Some(slot) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: `slot` is this CPU's entry of a per-CPU array, valid for this run and used
    // by nothing else while the program runs on this CPU. Written field by field, so that
    // no 64-byte copy of it is built on the stack.
    let session = unsafe {
        (*slot).sim = opening.sim;
        (*slot).rule = opening.rule;
        (*slot).epoch = opening.epoch;
        (*slot).segment = opening.segment;
        (*slot).state = opening.state;
        (*slot).flags = opening.flags;
        (*slot).created_ns = now;
        (*slot).seen_ns = now;
        // The opener's direction counts the packet: slot 1 for an inbound session.
        let inbound = opening.flags & SESSION_INBOUND != 0;
        (*slot).packets = if inbound { [0, 1] } else { [1, 0] };
        (*slot).bytes = if inbound {
            [0, opening.bytes]
        } else {
            [opening.bytes, 0]
        };
        &*slot
    };
    match SESSIONS.insert(key, session, u64::from(BPF_NOEXIST)) {
        Ok(()) => true,
        Err(err) => err == EEXIST,
    }
}
