//! `SIMS`, the per-SIM array (policy word per generation and counters, [`SimRecord`]), mapped
//! into this process's memory (`BPF_F_MMAPABLE`, Linux 5.5+).
//!
//! Through the mapping the daemon writes a million SIM policies as plain stores and reads a
//! million SIMs' counters as plain loads, instead of a syscall (or a batch slot) per SIM. Every
//! access is atomic at the width the program uses: a policy word is one aligned 32-bit store,
//! which the program reads with one 32-bit load; a counter is one aligned 64-bit load of a value
//! the program adds to with BPF atomic adds. A record is 40 bytes, so the array holds
//! `max_entries × 40` bytes, rounded up to a page.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use aya::maps::MapData;
use enforcer_common::maps::{SimCounters, SimPolicy, SimRecord};

/// Bytes between consecutive records: the array's element size, the value size rounded up to
/// 8 bytes (40).
const STRIDE: usize = size_of::<SimRecord>().next_multiple_of(8);

/// The `SIMS` array, memory-mapped read-write.
pub struct SimTable {
    base: NonNull<u8>,
    bytes: usize,
    entries: u32,
}

// SAFETY: the mapping is shared memory that the kernel program also writes; this type only
// accesses it through atomics (`AtomicU32`/`AtomicU64` views), so sharing it between threads
// adds no data race the program does not already tolerate.
unsafe impl Send for SimTable {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for SimTable {}

impl std::fmt::Debug for SimTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTable")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl SimTable {
    /// Map the `SIMS` array `map` (created with `BPF_F_MMAPABLE`), all of its entries.
    ///
    /// # Errors
    /// The map's info cannot be read, or `mmap` fails (e.g. a map created without
    /// `BPF_F_MMAPABLE`, `EINVAL`).
    pub fn map(map: &MapData) -> io::Result<Self> {
        let info = map.info().map_err(io::Error::other)?;
        if info.value_size() as usize != size_of::<SimRecord>() {
            return Err(io::Error::other(format!(
                "SIMS holds {}-byte values, this build reads {}",
                info.value_size(),
                size_of::<SimRecord>()
            )));
        }
        let entries = info.max_entries();
        let bytes = (entries as usize * STRIDE).max(1);
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a new shared mapping of the map's file descriptor at offset 0 (the array's
        // values), as long as the array; the kernel checks the length and the flags. Nothing
        // else in this process refers to the range until `base` is handed out below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(base.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Self {
            base,
            bytes,
            entries,
        })
    }

    /// Records the array holds (its `max_entries`).
    #[must_use]
    pub fn entries(&self) -> u32 {
        self.entries
    }

    fn word(&self, sim: u32, offset: usize) -> Option<&AtomicU32> {
        if sim >= self.entries {
            return None;
        }
        let at = sim as usize * STRIDE + offset;
        // SAFETY: `at + 4 <= bytes` (sim < entries, offset < 40) and 4-byte aligned (the
        // mapping is page-aligned, the stride and offsets are multiples of 4); the memory
        // lives as long as `self` and is only accessed atomically.
        Some(unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(at).cast::<u32>()) })
    }

    fn counter(&self, sim: u32, field: usize) -> Option<&AtomicU64> {
        if sim >= self.entries || field >= 4 {
            return None;
        }
        let at = sim as usize * STRIDE + SimRecord::COUNTERS_OFFSET + field * 8;
        // SAFETY: in bounds as in `word`, 8-byte aligned (stride and offsets are multiples of
        // 8); the program only adds to it atomically.
        Some(unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(at).cast::<u64>()) })
    }

    /// SIM `sim`'s policy in `generation`; `None` past the array.
    #[must_use]
    pub fn policy(&self, generation: u8, sim: u32) -> Option<SimPolicy> {
        self.word(sim, SimRecord::policy_offset(generation))
            .map(|w| SimPolicy::from_word(w.load(Ordering::Acquire)))
    }

    /// Set SIM `sim`'s policy in `generation`: one 32-bit store, which the next packet that
    /// reads it sees whole. Returns `false` (and writes nothing) past the array.
    pub fn set_policy(&self, generation: u8, sim: u32, policy: SimPolicy) -> bool {
        self.word(sim, SimRecord::policy_offset(generation))
            .map(|w| w.store(policy.to_word(), Ordering::Release))
            .is_some()
    }

    /// SIM `sim`'s counters (each field read atomically; the four are not one snapshot, as
    /// packets keep counting). Zero past the array.
    #[must_use]
    pub fn counters(&self, sim: u32) -> SimCounters {
        let read = |field| {
            self.counter(sim, field)
                .map_or(0, |c| c.load(Ordering::Relaxed))
        };
        SimCounters {
            pass_packets: read(0),
            pass_bytes: read(1),
            drop_packets: read(2),
            drop_bytes: read(3),
        }
    }
}

impl Drop for SimTable {
    fn drop(&mut self) {
        // SAFETY: the range mapped in `map`, unmapped once; no reference into it outlives
        // `self` (every accessor borrows `self`).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.bytes);
        }
    }
}
