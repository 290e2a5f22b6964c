//! XDP attachments that outlive the daemon: every interface is attached through a `bpf_link`
//! (Linux 5.9) pinned under the pin directory, and the program itself is pinned beside it.
//!
//! Layout under the pin directory (bpffs):
//!
//! ```text
//! <pin dir>/<MAP>            every map (see enforcer_common::maps::names)
//! <pin dir>/prog             the XDP program the links run
//! <pin dir>/links/<ifname>   one bpf_link per attached interface
//! ```
//!
//! A pinned link keeps the program attached when the process that made it ends, however it
//! ends (`kill -9` included), so a daemon restart or crash never leaves an interface without
//! enforcement. A new daemon does not detach anything: it loads its program (reusing the pinned
//! maps, so counters continue) and swaps it into each existing link with `BPF_LINK_UPDATE`, one
//! atomic pointer exchange in the kernel (`bpf_xdp_link_update`), so every packet is judged by
//! the old or the new program and none by nothing. Detaching and re-attaching instead opened a
//! window without policy in Cilium (GHSA-r5x6-w42p-jhpp). Only `enforcer detach` removes them.
//!
//! The link's mode (driver or generic) is fixed when it is created; changing `--xdp-mode`
//! needs `enforcer detach` first (the kernel keeps no record a link update could change).

use std::{
    io,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use aya::programs::{
    ProgramError, Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
};

/// Name of the program's pin in the pin directory.
pub const PROGRAM_PIN: &str = "prog";
/// Directory of the link pins in the pin directory, one per interface name.
pub const LINKS_DIR: &str = "links";

/// Errors of attaching through pinned links.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The kernel made a netlink attachment, which cannot be pinned.
    #[error(
        "attaching to `{iface}` gave a netlink XDP attachment, not a bpf_link; enforcement that \
         survives a daemon restart needs Linux 5.9 or later"
    )]
    NotALink {
        /// Interface.
        iface: String,
    },
    /// A pin operation failed.
    #[error("{what} {}", path.display())]
    Pin {
        /// What was being done.
        what: &'static str,
        /// The pin.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Swapping the program into an existing link failed.
    #[error("replacing the program of the link pinned at {} failed", path.display())]
    Update {
        /// The link pin.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// How an interface came to run this daemon's program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// A new link was created and pinned (the interface had none of ours).
    Created,
    /// A link pinned by an earlier daemon got this program in place (`BPF_LINK_UPDATE`).
    Replaced,
}

/// One interface attached through a pinned link.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Attachment {
    /// Interface name (the link's pin name).
    pub iface: String,
    /// Interface index the link is attached to; 0 when the interface is gone.
    pub ifindex: u32,
    /// Kernel link id (`bpftool link show id N`).
    pub link_id: u32,
    /// Kernel id of the program the link runs.
    pub program_id: u32,
}

/// The pin of the link for `iface`.
#[must_use]
pub fn link_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(LINKS_DIR).join(iface)
}

/// Attach `program` to `iface` (index `ifindex`) through a pinned link: the link already pinned
/// for `iface` gets the program in place if it is still attached to that interface; otherwise
/// (none, or its interface was deleted) a new link is created in `mode` and pinned, replacing
/// a stale pin. Returns how, and the attachment.
///
/// # Errors
/// [`AttachError::Attach`] when the kernel refuses a new attachment (the interface is held by
/// another program, or the mode is unsupported), for the caller to explain;
/// [`AttachError::Link`] when a pin or an in-place swap fails.
pub fn attach(
    program: &mut Xdp,
    pin_dir: &Path,
    iface: &str,
    ifindex: u32,
    mode: XdpMode,
) -> Result<(How, Attachment), AttachError> {
    let path = link_pin(pin_dir, iface);
    if path.exists() {
        if let Ok(pinned) = PinnedLink::from_pin(&path) {
            let fd_link = FdLink::from(pinned);
            if link_info(&path).is_ok_and(|info| info.ifindex == ifindex) {
                return replace(program, fd_link, &path, iface);
            }
            // Attached to nothing (the interface was deleted) or to another interface that
            // took the name: the pin is stale.
        }
        std::fs::remove_file(&path).map_err(|source| {
            AttachError::Link(LinkError::Pin {
                what: "removing the stale link pin",
                path: path.clone(),
                source,
            })
        })?;
    }
    let id = program
        .attach_to_if_index(ifindex, mode)
        .map_err(AttachError::Attach)?;
    let link = program.take_link(id).map_err(AttachError::Attach)?;
    let fd_link = FdLink::try_from(link).map_err(|_| {
        AttachError::Link(LinkError::NotALink {
            iface: iface.to_owned(),
        })
    })?;
    ensure_dir(&pin_dir.join(LINKS_DIR)).map_err(AttachError::Link)?;
    let pinned = fd_link.pin(&path).map_err(|e| {
        AttachError::Link(LinkError::Pin {
            what: "pinning the link at",
            path: path.clone(),
            source: io::Error::other(e),
        })
    })?;
    drop(pinned);
    Ok((How::Created, describe(iface, &path)))
}

/// Swap `program` into the live link `fd_link` pinned at `path`.
fn replace(
    program: &mut Xdp,
    fd_link: FdLink,
    path: &Path,
    iface: &str,
) -> Result<(How, Attachment), AttachError> {
    let update = |source: io::Error| {
        AttachError::Link(LinkError::Update {
            path: path.to_owned(),
            source,
        })
    };
    let link = XdpLink::try_from(fd_link).map_err(|e| update(io::Error::other(e)))?;
    let id = program
        .attach_to_link(link)
        .map_err(|e| update(io::Error::other(e)))?;
    // The pin holds the link: this process's descriptor goes (dropping it closes it).
    drop(
        program
            .take_link(id)
            .map_err(|e| update(io::Error::other(e)))?,
    );
    Ok((How::Replaced, describe(iface, path)))
}

/// [`attach`]'s errors: the kernel refused the attachment (for the caller to explain with
/// hints), or a pin or link operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// `bpf_link_create` (or its netlink fallback) failed.
    #[error("attaching failed")]
    Attach(#[source] ProgramError),
    /// A pin or link operation failed.
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Make room for this daemon's program pin at `<pin_dir>/prog`: remove an earlier program's
/// pin (that program lives on only as long as a link still runs it). Returns the pin's path,
/// for `Enforcer::pin_program`.
///
/// # Errors
/// [`LinkError::Pin`] when the old pin cannot be removed.
pub fn clear_program_pin(pin_dir: &Path) -> Result<PathBuf, LinkError> {
    let path = pin_dir.join(PROGRAM_PIN);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(LinkError::Pin {
            what: "removing the old program pin",
            path,
            source: e,
        }),
        _ => Ok(path),
    }
}

/// Every link pinned under `pin_dir`, with what it is attached to now.
#[must_use]
pub fn pinned(pin_dir: &Path) -> Vec<Attachment> {
    let Ok(entries) = std::fs::read_dir(pin_dir.join(LINKS_DIR)) else {
        return Vec::new();
    };
    let mut found: Vec<Attachment> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let iface = entry.file_name().to_string_lossy().into_owned();
            link_info(&entry.path()).ok()?;
            Some(describe(&iface, &entry.path()))
        })
        .collect();
    found.sort_by(|a, b| a.iface.cmp(&b.iface));
    found
}

/// Unpin (and so detach, once no process holds it) the link of `iface`.
///
/// # Errors
/// [`LinkError::Pin`] when the pin exists but cannot be removed.
pub fn remove(pin_dir: &Path, iface: &str) -> Result<bool, LinkError> {
    let path = link_pin(pin_dir, iface);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(LinkError::Pin {
            what: "removing the link pin",
            path,
            source,
        }),
    }
}

/// Remove every link pin, the program pin and the links directory: the interfaces are detached
/// as soon as no process holds the links. Returns the interfaces that were attached.
///
/// # Errors
/// [`LinkError::Pin`] for a pin that cannot be removed.
pub fn remove_all(pin_dir: &Path) -> Result<Vec<String>, LinkError> {
    let mut removed = Vec::new();
    let mut ids = Vec::new();
    for attachment in pinned(pin_dir) {
        if remove(pin_dir, &attachment.iface)? {
            ids.push(attachment.link_id);
            removed.push(attachment.iface);
        }
    }
    // The kernel frees a link whose last reference goes in deferred work: wait until every
    // one is gone, so that the caller's "detached" is true when it is said.
    let deadline = std::time::Instant::now() + DETACH_WAIT;
    while ids.iter().any(|&id| link_exists(id)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Pins that no longer open as links (should not happen) go too.
    if let Ok(entries) = std::fs::read_dir(pin_dir.join(LINKS_DIR)) {
        for entry in entries.filter_map(Result::ok) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for (path, what) in [
        (pin_dir.join(LINKS_DIR), "removing the links directory"),
        (pin_dir.join(PROGRAM_PIN), "removing the program pin"),
    ] {
        let result = if path.is_dir() {
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match result {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(LinkError::Pin {
                    what,
                    path,
                    source: e,
                });
            }
            _ => {}
        }
    }
    Ok(removed)
}

/// Longest [`remove_all`] waits for the kernel to release unpinned links.
const DETACH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a BPF link with kernel id `id` still exists (`BPF_LINK_GET_FD_BY_ID`).
fn link_exists(id: u32) -> bool {
    /// `BPF_LINK_GET_FD_BY_ID` from `enum bpf_cmd`.
    const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
    /// The `*_GET_FD_BY_ID` member of `union bpf_attr`.
    #[repr(C)]
    struct Attr {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }
    if id == 0 {
        return false;
    }
    let mut attr = Attr {
        id,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix for this command, alive for the call.
    match unsafe { crate::batch::sys_bpf(BPF_LINK_GET_FD_BY_ID, &mut attr) } {
        Err(err) => err.raw_os_error() != Some(libc::ENOENT),
        Ok(fd) => {
            // SAFETY: the kernel just returned this descriptor; closing it is all we do with it.
            unsafe { libc::close(i32::try_from(fd).unwrap_or(-1)) };
            true
        }
    }
}

fn ensure_dir(path: &Path) -> Result<(), LinkError> {
    std::fs::create_dir_all(path).map_err(|source| LinkError::Pin {
        what: "creating",
        path: path.to_owned(),
        source,
    })
}

fn describe(iface: &str, path: &Path) -> Attachment {
    let info = link_info(path).unwrap_or_default();
    Attachment {
        iface: iface.to_owned(),
        ifindex: info.ifindex,
        link_id: info.link_id,
        program_id: info.program_id,
    }
}

/// What the kernel says of a pinned XDP link (`struct bpf_link_info`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkInfo {
    /// Link id.
    pub link_id: u32,
    /// Id of the program the link runs.
    pub program_id: u32,
    /// `xdp.ifindex`: the interface it is attached to, 0 once the interface is gone (the kernel
    /// detaches a link whose device is unregistered).
    pub ifindex: u32,
}

/// Open the pinned link at `path` and read its `bpf_link_info` with `BPF_OBJ_GET` and
/// `BPF_OBJ_GET_INFO_BY_FD`: aya 0.14's `LinkInfo` has no XDP interface index and its `FdLink`
/// does not lend its descriptor.
///
/// # Errors
/// The syscalls' errors (no such pin, not a link).
pub fn link_info(path: &Path) -> io::Result<LinkInfo> {
    use std::os::unix::ffi::OsStrExt as _;
    /// `BPF_OBJ_GET` and `BPF_OBJ_GET_INFO_BY_FD` from `enum bpf_cmd`.
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// `struct bpf_link_info`: type, id, prog_id (u32 each), then an 8-aligned union whose
    /// `xdp` member starts with `__u32 ifindex` (offset 16). 64 bytes covers what the kernel
    /// fills for XDP.
    #[repr(C, align(8))]
    struct Info([u8; 64]);
    /// The `BPF_OBJ_*` member of `union bpf_attr`.
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    /// The `info` member of `union bpf_attr`.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = ObjAttr {
        pathname: name.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix for BPF_OBJ_GET and `name` a NUL-terminated
    // string, both alive for the call.
    let fd = unsafe { crate::batch::sys_bpf(BPF_OBJ_GET, &mut attr) }?;
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut info = Info([0; 64]);
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd()).map_err(io::Error::other)?,
        info_len: 64,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    // SAFETY: `attr` is a valid `bpf_attr.info` that lives for the call; `info` points at 64
    // writable bytes and `info_len` says so; the kernel writes no more than `info_len`.
    unsafe { crate::batch::sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    let word = |at: usize| {
        u32::from_ne_bytes([info.0[at], info.0[at + 1], info.0[at + 2], info.0[at + 3]])
    };
    Ok(LinkInfo {
        link_id: word(4),
        program_id: word(8),
        ifindex: word(16),
    })
}
