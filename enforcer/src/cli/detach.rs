//! `enforcer detach`: remove what a stopped daemon left enforcing (links, program, maps).

use std::path::Path;

use anyhow::Context as _;
use enforcer::{
    links,
    pins::{PinDir, PinDirError},
};
use enforcer_common::maps::names;

/// Detach every pinned link under `pin_dir` and remove the program, map pins and directory.
/// Refused while a daemon holds the directory: it would re-attach.
pub fn run(pin_dir: &Path) -> anyhow::Result<()> {
    if !pin_dir.exists() {
        println!("nothing to detach: {} does not exist", pin_dir.display());
        return Ok(());
    }
    // Only ever unlink BPF objects: a mistyped --pin-dir on an ordinary filesystem must not
    // lose files that happen to share a map's name.
    if !is_bpffs(pin_dir) {
        anyhow::bail!(
            "{} is not on a BPF filesystem (bpffs), so it holds no pins; give the --pin-dir of \
             the daemon (default /sys/fs/bpf/enforcer). Nothing was removed",
            pin_dir.display()
        );
    }
    let pins = match PinDir::claim(pin_dir) {
        Ok(pins) => pins,
        Err(PinDirError::Held { path }) => anyhow::bail!(
            "a running `enforcer run` holds {}; stop it first (`systemctl stop enforcer` or \
             SIGTERM: its enforcement stays pinned), then run `enforcer detach` again",
            path.display()
        ),
        Err(err) => return Err(err.into()),
    };
    let detached = links::remove_all(pins.path()).context("removing the link pins")?;
    for name in names::ALL {
        let path = pins.path().join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", path.display()));
            }
            _ => {}
        }
    }
    drop(pins);
    std::fs::remove_dir(pin_dir).with_context(|| {
        format!(
            "removing {}; it holds pins this build does not know (another program's?): look \
             with `ls {}`",
            pin_dir.display(),
            pin_dir.display()
        )
    })?;
    if detached.is_empty() {
        println!(
            "no interface was attached; removed the pins in {}",
            pin_dir.display()
        );
    } else {
        println!(
            "detached from {}; removed the program and maps pinned in {}",
            detached.join(", "),
            pin_dir.display()
        );
    }
    Ok(())
}

/// Whether `path` lies on a bpffs mount (`statfs` type `BPF_FS_MAGIC`).
fn is_bpffs(path: &Path) -> bool {
    /// `BPF_FS_MAGIC` from `include/uapi/linux/magic.h`.
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(name) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero `statfs` is a valid value for the kernel to overwrite.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated and `stat` is a writable `statfs`, both alive for the call.
    let rc = unsafe { libc::statfs(name.as_ptr(), &raw mut stat) };
    // `f_type` is `__fsword_t`: i64 on x86_64 and aarch64, narrower on some other targets.
    #[allow(clippy::useless_conversion)]
    let kind = i64::from(stat.f_type);
    rc == 0 && kind == BPF_FS_MAGIC
}
