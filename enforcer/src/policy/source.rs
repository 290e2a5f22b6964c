//! Reading policy and inventory files safely: where an inventory may be, which files are read at
//! all, and how much of them.
//!
//! Takes paths and [`LoadOptions`]; returns text (the policy) or a bounded reader (the inventory),
//! or a [`SourceError`] that never quotes the file's content. Only regular files are read: a
//! FIFO, a device such as `/dev/zero` or a directory is refused from its metadata, before any
//! byte is read, and every read goes through `take(limit + 1)` so a file that grows while it is
//! read still stops at the limit.

use std::{
    fs::File,
    io::{self, Read},
    os::unix::fs::OpenOptionsExt as _,
    path::{Component, Path, PathBuf},
};

/// Default for [`LoadOptions::max_file_bytes`]: 256 MiB, room for an inventory of about two
/// million SIMs with every column filled.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 << 20;

/// How policy files are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// The largest policy or inventory file read, in bytes.
    pub max_file_bytes: u64,
    /// Directories besides the policy file's own where an inventory may be (`--inventory-dir`).
    pub inventory_dirs: Vec<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            inventory_dirs: Vec::new(),
        }
    }
}

/// Why a policy or inventory file was not read. Messages name the path, never the content.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be opened or its metadata read.
    #[error("cannot read {}: {source}; check the path", path.display())]
    Open {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Not a regular file (a directory, FIFO, socket or device).
    #[error("{} is a {kind}, not a regular file; give the path of a file", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Larger than the limit.
    #[error(
        "{} is larger than {limit} bytes; raise the limit with --max-file-size if the file is \
         really that large",
        path.display()
    )]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// The limit in force.
        limit: u64,
    },
    /// The policy text is not UTF-8.
    #[error("{} is not UTF-8 text; a policy is a TOML file", path.display())]
    NotText {
        /// The path.
        path: PathBuf,
    },
    /// The inventory path is absolute or leaves the allowed directories.
    #[error(
        "inventory `{shown}` is outside the policy file's directory {}{}; move the inventory \
         next to the policy, or allow its directory with --inventory-dir",
        policy_dir.display(),
        if *extra_dirs == 0 { String::new() } else { format!(" and the {extra_dirs} --inventory-dir directories") }
    )]
    Outside {
        /// The inventory path as written (shortened).
        shown: String,
        /// The policy file's directory.
        policy_dir: PathBuf,
        /// How many `--inventory-dir` directories were allowed too.
        extra_dirs: usize,
    },
}

/// Open `path` for reading if it is a regular file no larger than `limit`, without blocking on
/// a FIFO.
pub fn open_regular(path: &Path, limit: u64) -> Result<(File, u64), SourceError> {
    let open_error = |source| SourceError::Open {
        path: path.to_owned(),
        source,
    };
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. It changes
    // nothing for regular files, the only ones read past the check below.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(open_error)?;
    let metadata = file.metadata().map_err(open_error)?;
    let file_type = metadata.file_type();
    if !file_type.is_file() {
        use std::os::unix::fs::FileTypeExt as _;
        let kind = if file_type.is_dir() {
            "directory"
        } else if file_type.is_fifo() {
            "FIFO (named pipe)"
        } else if file_type.is_socket() {
            "socket"
        } else if file_type.is_char_device() || file_type.is_block_device() {
            "device"
        } else {
            "special file"
        };
        return Err(SourceError::NotRegular {
            path: path.to_owned(),
            kind,
        });
    }
    if metadata.len() > limit {
        return Err(SourceError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok((file, metadata.len()))
}

/// Read a whole regular file of at most `limit` bytes as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> Result<String, SourceError> {
    let (file, len) = open_regular(path, limit)?;
    // `len` was checked against `limit`; the capacity is a hint only.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| SourceError::Open {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(SourceError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    String::from_utf8(bytes).map_err(|_| SourceError::NotText {
        path: path.to_owned(),
    })
}

/// A reader that stops after `limit + 1` bytes and remembers whether it went past `limit`.
pub struct Bounded<R> {
    inner: io::Take<R>,
    limit: u64,
    read: u64,
}

impl<R: Read> Bounded<R> {
    /// Wrap `inner`, reading at most `limit + 1` bytes from it.
    pub fn new(inner: R, limit: u64) -> Self {
        Self {
            inner: inner.take(limit.saturating_add(1)),
            limit,
            read: 0,
        }
    }

    /// True once more than `limit` bytes were read: the file grew past the limit.
    pub fn exceeded(&self) -> bool {
        self.read > self.limit
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Where inventory `name` (as written in the policy at `policy_path`) may be read from: inside
/// the policy file's directory or one of `options.inventory_dirs`, after following symlinks.
/// Absolute paths and `..` are allowed only when they end inside one of those.
pub fn resolve_inventory(
    policy_path: &Path,
    name: &str,
    options: &LoadOptions,
) -> Result<PathBuf, SourceError> {
    let policy_dir = match policy_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let outside = || SourceError::Outside {
        shown: super::error::clip(name),
        policy_dir: policy_dir.clone(),
        extra_dirs: options.inventory_dirs.len(),
    };
    let written = Path::new(name);
    let joined = policy_dir.join(written);
    let mut roots = vec![policy_dir.clone()];
    roots.extend(options.inventory_dirs.iter().cloned());
    match joined.canonicalize() {
        // Through symlinks: `sims.csv -> /etc/shadow` stays outside.
        Ok(real) => {
            let inside = roots.iter().any(|root| {
                root.canonicalize()
                    .is_ok_and(|root| real.starts_with(&root))
            });
            if inside { Ok(real) } else { Err(outside()) }
        }
        // Missing: judged lexically, and the open then reports it with the path as written.
        Err(_) => {
            let lexical = normalize(&joined);
            let inside = roots.iter().any(|root| {
                lexical
                    .as_ref()
                    .zip(normalize(root))
                    .is_some_and(|(path, root)| path.starts_with(root))
            });
            if inside { Ok(joined) } else { Err(outside()) }
        }
    }
}

/// `path` with `.` and `..` resolved lexically; `None` if `..` climbs above its start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            other => out.push(other),
        }
    }
    Some(out)
}
