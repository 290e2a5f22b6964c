//! A BPF iterator over one map's elements (`iter/bpf_map_elem`, Linux 5.9): the link that
//! ties the iterator program to the map (`BPF_LINK_CREATE` with `iter_info.map.map_fd`), and
//! one pass of it (`BPF_ITER_CREATE`, then `read(2)` to the end). aya 0.14's `Iter::attach`
//! creates the link without a map, which only task-style iterators accept, hence these two
//! calls of our own.

use std::{
    fs::File,
    io::{self, Read as _},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd},
};

/// `BPF_LINK_CREATE` from `enum bpf_cmd`.
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_ITER_CREATE` from `enum bpf_cmd`.
const BPF_ITER_CREATE: libc::c_long = 33;
/// `BPF_TRACE_ITER` from `enum bpf_attach_type`.
const BPF_TRACE_ITER: u32 = 28;

/// The `link_create` member of `union bpf_attr` as an iterator uses it, padded with zeroes to
/// the size of the union's larger members (the kernel checks that unknown bytes are zero).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    iter_info: u64,
    iter_info_len: u32,
    _pad: [u32; 9],
}

/// `union bpf_iter_link_info`'s `map` member.
#[repr(C)]
struct IterLinkInfo {
    map_fd: u32,
}

/// The `iter_create` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct IterCreateAttr {
    link_fd: u32,
    flags: u32,
}

/// `bpf(cmd, attr)` for a command that returns a new file descriptor.
///
/// # Safety
/// As `crate::batch::sys_bpf`.
unsafe fn bpf_fd<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: the caller's contract is `sys_bpf`'s.
    let ret = unsafe { crate::batch::sys_bpf(cmd, attr) }?;
    let fd = i32::try_from(ret).map_err(|_| io::Error::other("bpf() returned no fd"))?;
    // SAFETY: the kernel just returned `fd`, a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An iterator program attached to one map.
#[derive(Debug)]
pub struct MapIter {
    link: OwnedFd,
}

impl MapIter {
    /// Attach the loaded `iter/bpf_map_elem` program `program` to `map`.
    ///
    /// # Errors
    /// The kernel's refusal: `EACCES` when the program reads more of a key or value than the
    /// map's elements hold, `EINVAL` for a program that is no map element iterator.
    pub fn attach(program: BorrowedFd<'_>, map: BorrowedFd<'_>) -> io::Result<Self> {
        let info = IterLinkInfo {
            map_fd: u32::try_from(map.as_raw_fd()).unwrap_or(u32::MAX),
        };
        let mut attr = LinkCreateAttr {
            prog_fd: u32::try_from(program.as_raw_fd()).unwrap_or(u32::MAX),
            attach_type: BPF_TRACE_ITER,
            iter_info: std::ptr::from_ref(&info) as u64,
            iter_info_len: size_of::<IterLinkInfo>() as u32,
            ..LinkCreateAttr::default()
        };
        // SAFETY: `attr` is a valid `link_create` whose `iter_info` points at `info`, alive
        // for the call.
        let link = unsafe { bpf_fd(BPF_LINK_CREATE, &mut attr) }?;
        Ok(Self { link })
    }

    /// One pass over the map: the program's output, `record` bytes at a time, to `each`, in
    /// the order it wrote it. Output that is not a whole number of records is an error.
    ///
    /// # Errors
    /// Creating the iterator or reading it failed.
    pub fn for_each(&self, record: usize, mut each: impl FnMut(&[u8])) -> io::Result<()> {
        let mut attr = IterCreateAttr {
            link_fd: u32::try_from(self.link.as_fd().as_raw_fd()).unwrap_or(u32::MAX),
            ..IterCreateAttr::default()
        };
        // SAFETY: `attr` is a valid `iter_create`.
        let mut file = File::from(unsafe { bpf_fd(BPF_ITER_CREATE, &mut attr) }?);
        // The kernel hands out at most its seq_file buffer (8 pages) per read; a larger buffer
        // only saves the copy of the records that straddle two reads.
        let mut buf = vec![0u8; 256 * 1024];
        let mut held = 0usize;
        loop {
            let n = match file.read(&mut buf[held..]) {
                Ok(n) => n,
                // EAGAIN: one read visited its limit of entries (a million) and the program
                // wrote none of them; the next read goes on from there.
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) =>
                {
                    continue;
                }
                Err(err) => return Err(err),
            };
            if n == 0 {
                break;
            }
            held += n;
            let whole = held - held % record.max(1);
            for chunk in buf[..whole].chunks_exact(record.max(1)) {
                each(chunk);
            }
            buf.copy_within(whole..held, 0);
            held -= whole;
        }
        if held != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the iterator's output ended with {held} bytes of a {record}-byte record"),
            ));
        }
        Ok(())
    }
}
