//! Heap held by a loaded large policy, counted by a global allocator of this test binary only.
//!
//! Ignored by default: it needs a large policy. Run it with
//! `ENFORCER_BIG_POLICY=/tmp/p1m/policy.toml cargo test --release -p enforcer --test
//! policy_memory -- --ignored --nocapture`; it prints the heap held and the load time, and
//! fails if a SIM costs more than 40 bytes.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` with the caller's arguments; only counters are
// added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
#[ignore = "needs a large policy in ENFORCER_BIG_POLICY"]
fn a_loaded_sim_costs_at_most_40_bytes_of_heap() {
    let path = std::env::var("ENFORCER_BIG_POLICY").expect("set ENFORCER_BIG_POLICY");
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let policy = enforcer::policy::load(Path::new(&path)).expect("a valid policy");
    let elapsed = started.elapsed();
    let held = LIVE.load(Ordering::Relaxed) - before;
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let sims = policy.sims.len();
    println!(
        "{sims} SIMs: {held} bytes held ({:.1} MiB, {:.1} B/SIM), peak {:.1} MiB during the \
         load, loaded in {:.3} s",
        held as f64 / f64::from(1 << 20),
        held as f64 / sims.max(1) as f64,
        peak as f64 / f64::from(1 << 20),
        elapsed.as_secs_f64()
    );
    assert!(
        held <= 40 * sims.max(1) + (1 << 20),
        "{held} bytes for {sims} SIMs"
    );
    drop(policy);
}
