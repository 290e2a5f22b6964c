//! The session scan (`enforcer_common::scan`): a BPF iterator over `SESSIONS`
//! (`iter/bpf_map_elem`, Linux 5.9) that copies out, as key and value back to back, only the
//! entries `enforcer_common::scan::wanted` picks under the arguments in `SCAN_ARGS`. The
//! daemon reads the output from the iterator's file descriptor. The kernel walks the map's
//! buckets under RCU without taking their locks, so the XDP program never waits on the scan;
//! between two reads of the output it keeps its place as a bucket and a position in it, so an
//! entry the program adds or removes there meanwhile can make it skip a neighbour or show one
//! twice (the loader reads full scans in batches instead, see `Enforcer::scan_sessions`).

use aya_ebpf::{bindings::seq_file, helpers::bpf_seq_write};
use enforcer_common::{
    scan::wanted,
    session::{Session, SessionKey},
};

use crate::maps::SCAN_ARGS;

/// `struct bpf_iter_meta` (include/linux/bpf.h): the iterator's output and position.
#[repr(C)]
pub struct IterMeta {
    seq: *mut seq_file,
    session_id: u64,
    seq_num: u64,
}

/// `struct bpf_iter__bpf_map_elem` (kernel/bpf/map_iter.c): the context of a map element
/// iterator; `key` and `value` are null in the last call, after the last element.
#[repr(C)]
pub struct MapElemCtx {
    meta: *mut IterMeta,
    map: *const core::ffi::c_void,
    key: *const SessionKey,
    value: *const Session,
}

/// Called once per entry of `SESSIONS`, then once more with no entry.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/bpf_map_elem")]
pub fn session_scan(ctx: *mut MapElemCtx) -> i32 {
    let Some(args) = SCAN_ARGS.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the kernel passes a valid `bpf_iter__bpf_map_elem` for the call; its `meta` is
    // never null.
    let (meta, key, value) = unsafe { ((*ctx).meta, (*ctx).key, (*ctx).value) };
    if key.is_null() || value.is_null() {
        return 0;
    }
    // SAFETY: `args` comes from a successful array lookup; `meta` is the kernel's; `key` and
    // `value` are the entry's, of the map's key and value sizes, which the kernel checks
    // against these types' sizes when the iterator is attached to the map.
    unsafe {
        // `seq_num` numbers the entries from 0, the same for an entry shown again because its
        // output did not fit before a flush: after the last one, this is how many there were.
        (*args).visited = (*meta).seq_num.wrapping_add(1);
        if !wanted(&*args, (*key).proto, &*value) {
            return 0;
        }
        let seq = (*meta).seq;
        bpf_seq_write(seq, key.cast(), size_of::<SessionKey>() as u32);
        bpf_seq_write(seq, value.cast(), size_of::<Session>() as u32);
    }
    0
}
