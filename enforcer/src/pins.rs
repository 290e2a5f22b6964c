//! The pin directory of one daemon: claimed for the daemon's lifetime, and cleaned of what a
//! failed start created.
//!
//! One daemon per pin directory: two on the same maps would flip each other's policy. The claim
//! is an exclusive `flock(2)` on the directory itself (bpffs holds no regular files, so no lock
//! file beside the pins is needed); the kernel releases it when the process ends, however it
//! ends, so a crashed daemon never leaves a stale lock. A start that fails after it created the
//! directory or pins removes exactly those, and never a pin that was there before (a previous
//! daemon's maps and counters, which the next start reuses).

use std::{
    fs::{File, TryLockError},
    path::{Path, PathBuf},
};

use enforcer_common::maps::names;

/// Errors of claiming a pin directory.
#[derive(Debug, thiserror::Error)]
pub enum PinDirError {
    /// The directory could not be created or opened.
    #[error("creating pin directory {}; is /sys/fs/bpf mounted (bpffs)?", path.display())]
    Create {
        /// The pin directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Another daemon holds it.
    #[error(
        "another `enforcer run` is enforcing from pin directory {}; stop it first (its pins \
         and policy are left as they are), or give this one its own --pin-dir",
        path.display()
    )]
    Held {
        /// The pin directory.
        path: PathBuf,
    },
    /// Locking failed for another reason.
    #[error("locking pin directory {}", path.display())]
    Lock {
        /// The pin directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A claimed pin directory. Dropping it releases the claim and leaves every pin in place.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
    /// Holds the `flock` for as long as the daemon lives.
    _lock: File,
    created_dir: bool,
    existing: Vec<&'static str>,
    /// The program pin and the links directory were there before this claim.
    had_program: bool,
    had_links: bool,
}

impl PinDir {
    /// Create `path` if needed and claim it for this process.
    ///
    /// # Errors
    /// [`PinDirError::Held`] when another process holds it; the others when it cannot be
    /// created, opened or locked. Nothing is created when it is held.
    pub fn claim(path: &Path) -> Result<Self, PinDirError> {
        let created_dir = !path.exists();
        std::fs::create_dir_all(path).map_err(|source| PinDirError::Create {
            path: path.to_owned(),
            source,
        })?;
        let remove_if_created = || {
            if created_dir {
                let _ = std::fs::remove_dir(path);
            }
        };
        let lock = File::open(path).map_err(|source| {
            remove_if_created();
            PinDirError::Create {
                path: path.to_owned(),
                source,
            }
        })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(PinDirError::Held {
                    path: path.to_owned(),
                });
            }
            Err(TryLockError::Error(source)) => {
                remove_if_created();
                return Err(PinDirError::Lock {
                    path: path.to_owned(),
                    source,
                });
            }
        }
        let existing = names::ALL
            .into_iter()
            .filter(|name| path.join(name).exists())
            .collect();
        Ok(Self {
            path: path.to_owned(),
            _lock: lock,
            created_dir,
            existing,
            had_program: path.join(crate::links::PROGRAM_PIN).exists(),
            had_links: path.join(crate::links::LINKS_DIR).exists(),
        })
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// After a failed start: remove the pins this start created (and the directory, if it
    /// created that too), keeping every pin that was there before. Links the start created
    /// are the caller's to remove first (`crate::links::remove`).
    pub fn remove_created(&self) {
        for name in names::ALL {
            if !self.existing.contains(&name) {
                let _ = std::fs::remove_file(self.path.join(name));
            }
        }
        if !self.had_program {
            let _ = std::fs::remove_file(self.path.join(crate::links::PROGRAM_PIN));
        }
        if !self.had_links {
            let _ = std::fs::remove_dir(self.path.join(crate::links::LINKS_DIR));
        }
        if self.created_dir {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}
