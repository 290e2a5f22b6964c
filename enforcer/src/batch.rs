//! `BPF_MAP_UPDATE_BATCH` (Linux 5.6, aa2e93b8e58e) for hash and array maps: aya 0.14 has no
//! batch operations, and one syscall per key makes a million-SIM load take seconds.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

use aya::Pod;

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
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_DELETE_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>() as libc::c_uint,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Write `entries` into the map behind `fd` with as few syscalls as possible.
pub fn update<K: Pod, V: Pod>(fd: impl AsFd, entries: &[(K, V)]) -> io::Result<()> {
    let fd = fd.as_fd().as_raw_fd();
    for chunk in entries.chunks(CHUNK) {
        let keys: Vec<K> = chunk.iter().map(|(k, _)| *k).collect();
        let values: Vec<V> = chunk.iter().map(|(_, v)| *v).collect();
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: u32::try_from(chunk.len()).unwrap_or(u32::MAX),
            map_fd: u32::try_from(fd).unwrap_or(u32::MAX),
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr.batch` whose `keys` and `values` point at `count`
        // elements of the map's key and value types, alive for the duration of the call; the
        // kernel writes back only `count`, inside `attr`.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>() as libc::c_uint,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
