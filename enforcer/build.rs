//! Builds the XDP object (`enforcer-ebpf`, binary `enforcer`) for the BPF target with the
//! nightly toolchain through aya-build; `include_bytes_aligned!` embeds it in the daemon.
//! Set `AYA_BUILD_SKIP=1` to skip it (the daemon then cannot load its program).

use std::path::PathBuf;

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.join("../enforcer-ebpf");
    let root = root.to_str().context("non-UTF-8 path to enforcer-ebpf")?;
    aya_build::build_ebpf(
        [Package {
            name: "enforcer-ebpf",
            root_dir: root,
            ..Package::default()
        }],
        Toolchain::Nightly,
    )
    .context(
        "building the XDP program failed; run `cargo xtask setup` (nightly rust-src, bpf-linker)",
    )
}
