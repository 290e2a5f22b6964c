//! `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_LOOKUP_BATCH` (Linux 5.6, aa2e93b8e58e, cb4d03ab499d)
//! for hash and array maps: aya 0.14 has no batch operations, and one syscall per key makes a
//! million-SIM load or counter read take seconds.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

use aya::Pod;

/// `BPF_MAP_LOOKUP_BATCH` from `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// `BPF_MAP_UPDATE_BATCH` from `enum bpf_cmd`.
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
/// `BPF_MAP_DELETE_BATCH` from `enum bpf_cmd` (hash maps; Linux 5.6 too).
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// Keys per syscall: large enough to amortise the syscall, small enough to bound kernel work
/// per call (the kernel checks for signals between elements anyway).
const CHUNK: usize = 65_536;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `bpf(cmd, attr, size_of::<T>())`, the one place the daemon makes the syscall itself (for
/// what aya 0.14 lacks): the kernel's return value (a new descriptor for the commands that
/// make one, else 0), or the error it set.
///
/// # Safety
/// `attr` must be a valid member of `union bpf_attr` for `cmd` (the kernel reads
/// `size_of::<T>()` bytes of it and checks that bytes it does not know are zero), and every
/// pointer in it must point at memory of the sizes `cmd` reads or writes, alive for the call.
pub(crate) unsafe fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` and what it points at are valid for `cmd` by the caller's contract; the
    // kernel writes back only inside them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// One `bpf(cmd, attr)` batch call.
///
/// # Safety
/// `attr`'s pointers (keys, values, tokens) must point at memory of the sizes the command and
/// the map expect for `attr.count` elements, alive for the call.
unsafe fn batch_call(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid `bpf_attr.batch` by the caller's contract.
    unsafe { sys_bpf(cmd, attr) }.map(|_| ())
}

/// Delete `keys` from the hash map behind `fd` with as few syscalls as possible. Every key must
/// exist (the kernel stops at the first missing one with `ENOENT`).
pub fn delete<K: Pod>(fd: impl AsFd, keys: &[K]) -> io::Result<()> {
    let fd = fd.as_fd().as_raw_fd();
    for chunk in keys.chunks(CHUNK) {
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            count: u32::try_from(chunk.len()).unwrap_or(u32::MAX),
            map_fd: u32::try_from(fd).unwrap_or(u32::MAX),
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr.batch` whose `keys` points at `count` keys of the
        // map's key type, alive for the duration of the call; the kernel reads no values for a
        // delete and writes back only `count`, inside `attr`.
        unsafe { batch_call(BPF_MAP_DELETE_BATCH, &mut attr) }?;
    }
    Ok(())
}

/// Write `entries` (distinct keys) into the map behind `fd` with as few syscalls as possible.
/// Large writes are split into parts written on up to [`MAX_THREADS`] threads at once: the
/// kernel's insert (a hash map's bucket lock and element allocation, about a microsecond per
/// element) dominates, and its locks are per bucket, so parts run in parallel. The order in
/// which entries land does not matter (keys are distinct); on an error some parts may be
/// written and others not, which the callers treat as a failed write of them all.
pub fn update<K: Pod + Sync, V: Pod + Sync>(fd: impl AsFd, entries: &[(K, V)]) -> io::Result<()> {
    let fd = u32::try_from(fd.as_fd().as_raw_fd()).unwrap_or(u32::MAX);
    let threads = threads_for(entries.len());
    if threads == 1 {
        return update_part(fd, entries);
    }
    let per_thread = entries.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = entries
            .chunks(per_thread)
            .map(|part| scope.spawn(move || update_part(fd, part)))
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("a batch update thread panicked")))
        })
    })
}

/// Write `entries` with one `BPF_MAP_UPDATE_BATCH` per [`CHUNK`].
fn update_part<K: Pod, V: Pod>(fd: u32, entries: &[(K, V)]) -> io::Result<()> {
    for chunk in entries.chunks(CHUNK) {
        let keys: Vec<K> = chunk.iter().map(|(k, _)| *k).collect();
        let values: Vec<V> = chunk.iter().map(|(_, v)| *v).collect();
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: u32::try_from(chunk.len()).unwrap_or(u32::MAX),
            map_fd: fd,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr.batch` whose `keys` and `values` point at `count`
        // elements of the map's key and value types, alive for the duration of the call; the
        // kernel writes back only `count`, inside `attr`.
        unsafe { batch_call(BPF_MAP_UPDATE_BATCH, &mut attr) }?;
    }
    Ok(())
}

/// Threads to split `elements` over: one per core up to [`MAX_THREADS`], none below
/// [`MIN_PER_THREAD`] elements each.
fn threads_for(elements: usize) -> usize {
    // Read once: `available_parallelism` reads cgroup files on every call (tens of
    // microseconds), which a one-entry write (a run-time bind) must not pay.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if elements < 2 * MIN_PER_THREAD {
        return 1;
    }
    (*CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get)))
        .min(MAX_THREADS)
        .min(elements / MIN_PER_THREAD)
        .max(1)
}

/// Elements per thread below which a read is not split: a thread costs more than it saves.
const MIN_PER_THREAD: usize = 2 * CHUNK;
/// Threads at most: the kernel's batch lookup costs a few hundred nanoseconds per element
/// (copy per CPU, then copy to user per element), so a million SIMs are split across cores.
const MAX_THREADS: usize = 4;

/// Read elements `0..count` of the per-CPU array behind `fd`, `cpus` values of `T` each
/// (`cpus` = possible CPUs, as the kernel lays per-CPU values out): element-major, so element
/// `i` on CPU `c` is at `i * cpus + c`. Elements the map does not have are left out (the result
/// is shorter). Large reads are split into key ranges read on up to [`MAX_THREADS`] threads.
pub fn lookup_percpu_array<T: Pod + Default + Send>(
    fd: impl AsFd,
    count: u32,
    cpus: usize,
) -> io::Result<Vec<T>> {
    let fd = u32::try_from(fd.as_fd().as_raw_fd()).unwrap_or(u32::MAX);
    let total = count as usize;
    let mut out = vec![T::default(); total * cpus];
    let threads = threads_for(total);
    let per_thread = total.div_ceil(threads).max(1);
    let results: Vec<(usize, usize, io::Result<usize>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = out
            .chunks_mut(per_thread * cpus)
            .enumerate()
            .map(|(i, part)| {
                let start = i * per_thread;
                let len = part.len() / cpus.max(1);
                scope.spawn(move || (start, len, lookup_range(fd, start, part, cpus)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    (
                        0,
                        1,
                        Err(io::Error::other("a batch lookup thread panicked")),
                    )
                })
            })
            .collect()
    });
    for (start, len, result) in results {
        let read = result?;
        if read < len {
            // The map ended early: keep what precedes the gap.
            out.truncate((start + read) * cpus);
            break;
        }
    }
    Ok(out)
}

/// Read elements `start..start + count` of the per-CPU array behind `fd` (laid out as
/// [`lookup_percpu_array`] lays them out), on this thread; elements past the map are left out.
pub fn lookup_percpu_range<T: Pod + Default>(
    fd: impl AsFd,
    start: u32,
    count: u32,
    cpus: usize,
) -> io::Result<Vec<T>> {
    let fd = u32::try_from(fd.as_fd().as_raw_fd()).unwrap_or(u32::MAX);
    let mut out = vec![T::default(); count as usize * cpus];
    let read = lookup_range(fd, start as usize, &mut out, cpus)?;
    out.truncate(read * cpus);
    Ok(out)
}

/// Read elements `start..start + out.len() / cpus` into `out`; returns how many were read.
/// A chunk of keys per syscall, as libbpf's `bpf_map_lookup_batch`: the kernel fills `keys`
/// and, per key, `cpus` values each `size_of::<T>()` rounded up to 8 bytes, and returns the
/// last key read as the token for the next call (`in_batch`: the key before the first one
/// wanted); ENOENT marks the end of the map.
fn lookup_range<T: Pod>(fd: u32, start: usize, out: &mut [T], cpus: usize) -> io::Result<usize> {
    let stride = size_of::<T>().next_multiple_of(8);
    let total = out.len() / cpus.max(1);
    let chunk = CHUNK.min(total.max(1));
    let mut keys = vec![0u32; chunk];
    let mut values = vec![0u8; chunk * cpus * stride];
    let mut token_in = u32::try_from(start).unwrap_or(u32::MAX).wrapping_sub(1);
    let mut token_out = 0u32;
    let mut read = 0usize;
    let mut first = start == 0;
    while read < total {
        let want = chunk.min(total - read);
        // SAFETY: `keys` holds `want` u32 keys and `values` `want` elements of `cpus` values of
        // `stride` bytes (what the kernel writes per key of a per-CPU array of `T`); both tokens
        // are u32 like the array's key.
        let (done, got) = unsafe {
            lookup_chunk(
                fd,
                (!first).then_some(&token_in),
                &mut token_out,
                keys.as_mut_ptr().cast(),
                values.as_mut_ptr(),
                want,
            )
        }?;
        for (i, key) in keys[..got].iter().enumerate() {
            let Some(slot) = (*key as usize).checked_sub(start).filter(|k| *k < total) else {
                continue;
            };
            for cpu in 0..cpus {
                let offset = (i * cpus + cpu) * stride;
                // SAFETY: `offset + size_of::<T>()` lies inside `values` (i < got <= want,
                // cpu < cpus); `T: Pod` may hold any bytes; the read is unaligned-safe.
                out[slot * cpus + cpu] =
                    unsafe { values.as_ptr().add(offset).cast::<T>().read_unaligned() };
            }
        }
        read += got;
        if done || got == 0 {
            break;
        }
        token_in = token_out;
        first = false;
    }
    Ok(read)
}

/// Every entry of the (not per-CPU) hash map behind `fd`, a chunk of entries per syscall
/// (`BPF_MAP_LOOKUP_BATCH`): a hash map's batch token is a bucket index (`u32`), the kernel
/// returns whole buckets, ENOENT marks the end, and ENOSPC a bucket larger than the chunk (then
/// the chunk doubles). Entries the program adds or deletes meanwhile may or may not be seen,
/// as with any walk of a live hash map.
pub fn lookup_hash<K: Pod + Default, V: Pod + Default>(fd: impl AsFd) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    lookup_hash_each(fd, |k: &K, v: &V| out.push((*k, *v)))?;
    Ok(out)
}

/// [`lookup_hash`] handing each entry to `each` as it is read, in chunks of 16,384 entries,
/// so that a caller that keeps few of them never holds the whole map.
pub fn lookup_hash_each<K: Pod + Default, V: Pod + Default>(
    fd: impl AsFd,
    mut each: impl FnMut(&K, &V),
) -> io::Result<()> {
    let fd = u32::try_from(fd.as_fd().as_raw_fd()).unwrap_or(u32::MAX);
    let mut chunk = 16_384usize;
    let mut keys = vec![K::default(); chunk];
    let mut values = vec![V::default(); chunk];
    let mut token_in = 0u32;
    let mut token_out = 0u32;
    let mut first = true;
    loop {
        // SAFETY: `keys` and `values` hold `chunk` keys and values of the map's key and value
        // types (`K`, `V`: Pod, the map's sizes), and both tokens are the u32 bucket index a
        // hash map uses.
        let (done, got) = match unsafe {
            lookup_chunk(
                fd,
                (!first).then_some(&token_in),
                &mut token_out,
                keys.as_mut_ptr().cast(),
                values.as_mut_ptr().cast(),
                chunk,
            )
        } {
            Err(err) if err.raw_os_error() == Some(libc::ENOSPC) && chunk < (1 << 24) => {
                chunk *= 2;
                keys.resize(chunk, K::default());
                values.resize(chunk, V::default());
                continue;
            }
            other => other?,
        };
        for (k, v) in keys.iter().zip(&values).take(got) {
            each(k, v);
        }
        if done {
            return Ok(());
        }
        token_in = token_out;
        first = false;
    }
}

/// One `BPF_MAP_LOOKUP_BATCH` call of up to `count` elements into `keys` and `values`, resuming
/// after `token_in` (from the start without), the next token written to `token_out`. Returns
/// whether the map ended (ENOENT) and how many elements were written.
///
/// # Safety
/// `keys` and `values` must point at room for `count` keys and `count` values as the map lays
/// them out (per-CPU maps: a value per possible CPU, each rounded up to 8 bytes), and the tokens
/// must be of the map's batch token type (`u32` for arrays and hash maps), all alive for the call.
unsafe fn lookup_chunk(
    fd: u32,
    token_in: Option<&u32>,
    token_out: &mut u32,
    keys: *mut u8,
    values: *mut u8,
    count: usize,
) -> io::Result<(bool, usize)> {
    let mut attr = BatchAttr {
        in_batch: token_in.map_or(0, |t| std::ptr::from_ref(t) as u64),
        out_batch: std::ptr::from_mut(token_out) as u64,
        keys: keys as u64,
        values: values as u64,
        count: u32::try_from(count).unwrap_or(u32::MAX),
        map_fd: fd,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr.batch` whose pointers the caller vouches for.
    let done = match unsafe { batch_call(BPF_MAP_LOOKUP_BATCH, &mut attr) } {
        Ok(()) => false,
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => true,
        Err(err) => return Err(err),
    };
    Ok((done, (attr.count as usize).min(count)))
}

/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` from `enum bpf_cmd` (hash maps since Linux 5.14).
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

/// The element member of `union bpf_attr` (`map_fd`, `key`, `value`, `flags`).
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Remove `key` from the hash map behind `fd` and return the value it held at that instant
/// (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`): counters the program added up to the removal are in
/// it, none after. `Ok(None)` when the key is not there.
///
/// # Errors
/// The kernel's error other than `ENOENT`.
///
/// # Safety
/// The map behind `fd` must be a hash map (not per CPU) whose keys are `size_of::<K>()` and
/// values `size_of::<V>()` bytes: the kernel reads and writes that many.
pub unsafe fn lookup_and_delete<K: Pod, V: Pod + Default>(
    fd: impl AsFd,
    key: &K,
) -> io::Result<Option<V>> {
    let mut value = V::default();
    let mut attr = ElemAttr {
        map_fd: u32::try_from(fd.as_fd().as_raw_fd()).unwrap_or(u32::MAX),
        key: std::ptr::from_ref(key) as u64,
        value: std::ptr::from_mut(&mut value) as u64,
        ..ElemAttr::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` element member: `key` points at a key and `value` at
    // a value of the map's sizes (the caller's contract), both alive for the call; the kernel
    // writes only `value`.
    match unsafe { sys_bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) } {
        Ok(_) => Ok(Some(value)),
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(err) => Err(err),
    }
}
