//! Rebuild the eBPF object when bpf-linker changes (it is the linker of the BPF target), and
//! link without `--bpf-expand-memcpy-in-order`.
//!
//! bpf-linker passes that LLVM option by default. It keeps copies in order for JITs that
//! pattern-match `memcpy` (offload), but it also sets LLVM's store limits for `memset` and
//! `memmove` to zero, and the BPF backend has no expansion of its own for those: every zeroed
//! struct (`PacketMeta::default()`: 41 bytes) became a call to a byte-at-a-time loop in the
//! linked `memset`. That loop was the costliest function of the packet path after the program
//! itself (7% of the cycles of an established session's packet under `perf`); without the
//! option LLVM writes the stores inline.
use which::which;

fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    // Only bpf-linker knows the option: a host build of this crate (its tests) links with cc.
    if std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|arch| arch == "bpf") {
        println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
    }
}
