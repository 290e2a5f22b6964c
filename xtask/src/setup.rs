//! `cargo xtask setup`: everything a fresh Debian 12 machine needs to build and test enforcer,
//! installed idempotently: Debian packages, nightly's rust-src, bpf-linker built against the
//! nightly toolchain's own LLVM, and a bpffs mount. A second run only checks (seconds).
//!
//! Each command asks only for the Debian packages it uses ([`Purpose`]): the demo needs no QEMU.
//! Setup says which packages it will install and why before it does, and never removes one
//! (`apt-get install --no-remove` fails instead of resolving a conflict by removal).

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::util::{exec, output};

/// The nightly toolchain the eBPF crate is built with, pinned by its version string.
pub const NIGHTLY: &str = "nightly";
const NIGHTLY_RELEASE: &str = "1.97.0-nightly";
const NIGHTLY_COMMIT: &str = "e50aa6fba";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The command a setup is for: each installs only the Debian packages it uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Purpose {
    /// `cargo xtask demo`: namespaces, pings, the daemon.
    Demo,
    /// `cargo xtask bench`: namespaces and nftables to compare against.
    Bench,
    /// `cargo xtask vm-test`: QEMU and what goes into the guest's initramfs.
    VmTest,
    /// `cargo xtask test`: everything, since it runs vm-test and the quick benchmark too.
    Test,
    /// `cargo xtask package`: the Debian packaging tools.
    Package,
}

/// A Debian package, why it is needed and by which commands.
struct Package {
    name: &'static str,
    why: &'static str,
    for_: &'static [Purpose],
}

const ALL: &[Purpose] = &[
    Purpose::Demo,
    Purpose::Bench,
    Purpose::VmTest,
    Purpose::Test,
];

/// Debian packages and who uses them.
const APT_PACKAGES: &[Package] = &[
    Package {
        name: "iproute2",
        why: "`ip`: network namespaces, veth pairs, XDP status",
        for_: ALL,
    },
    Package {
        name: "util-linux",
        why: "`nsenter` into test namespaces, `setpriv` for the unprivileged-user test",
        for_: ALL,
    },
    Package {
        name: "iputils-ping",
        why: "`ping` for the ICMP flows of the demo and the end-to-end test",
        for_: &[Purpose::Demo, Purpose::VmTest, Purpose::Test],
    },
    Package {
        name: "ethtool",
        why: "turns GRO on at the far ends of the veths the `--forward xdp` test redirects to \
              (a veth takes redirected frames only then)",
        for_: &[Purpose::Test],
    },
    Package {
        name: "nftables",
        why: "the benchmark's nftables comparison",
        for_: &[Purpose::Bench, Purpose::Test],
    },
    Package {
        name: "qemu-system-x86",
        why: "boots the Debian kernels of the VM tests",
        for_: &[Purpose::VmTest, Purpose::Test],
    },
    Package {
        name: "busybox-static",
        why: "the VM tests' initramfs shell",
        for_: &[Purpose::VmTest, Purpose::Test],
    },
    Package {
        name: "xz-utils",
        why: "unpacks the guest kernel's veth.ko.xz",
        for_: &[Purpose::VmTest, Purpose::Test],
    },
    Package {
        name: "dpkg-dev",
        why: "`dpkg-shlibdeps` computes the Debian package's Depends",
        for_: &[Purpose::Package, Purpose::Test],
    },
    Package {
        name: "systemd",
        why: "`systemd-analyze verify` checks packaging/enforcer.service",
        for_: &[Purpose::Test],
    },
    Package {
        name: "gcc",
        why: "the C compiler and linker: rusqlite builds its bundled SQLite, rustc links with it",
        for_: &[
            Purpose::Demo,
            Purpose::Bench,
            Purpose::VmTest,
            Purpose::Test,
            Purpose::Package,
        ],
    },
    Package {
        name: "libc6-dev",
        why: "C headers and start files for the bundled SQLite and for linking",
        for_: &[
            Purpose::Demo,
            Purpose::Bench,
            Purpose::VmTest,
            Purpose::Test,
            Purpose::Package,
        ],
    },
    Package {
        name: "nfdump",
        why: "`nfcapd` and `nfdump`: the IPFIX collector the flow-export test sends to",
        for_: &[Purpose::Test],
    },
    Package {
        name: "pmacct",
        why: "`nfacctd`: the second IPFIX collector, reading IMSI and MSISDN as custom primitives",
        for_: &[Purpose::Test],
    },
    Package {
        name: "tshark",
        why: "decodes the exported IPFIX packets as Wireshark does",
        for_: &[Purpose::Test],
    },
    Package {
        name: "python3-venv",
        why: "a virtual environment for schemathesis (PyPI), which tests the REST API",
        for_: &[Purpose::Test],
    },
    Package {
        name: "curl",
        why: "the REST API tests' HTTP client (TLS included)",
        for_: &[Purpose::Test],
    },
    Package {
        name: "openssl",
        why: "a self-signed certificate for the REST API's TLS test",
        for_: &[Purpose::Test],
    },
    Package {
        name: "freeradius-utils",
        why: "`radclient`: the packet core's RADIUS accounting in the RADIUS tests",
        for_: &[Purpose::Test],
    },
    Package {
        name: "tmux",
        why: "drives `enforcer top`'s terminal view in the tests",
        for_: &[Purpose::Test],
    },
    Package {
        name: "prometheus",
        why: "`promtool check metrics` checks the /metrics exposition",
        for_: &[Purpose::Test],
    },
    Package {
        name: "binutils",
        why: "`strip` keeps the VM tests' initramfs small",
        for_: &[Purpose::VmTest, Purpose::Test],
    },
];

/// The packages `purpose` needs.
fn packages_for(purpose: Purpose) -> impl Iterator<Item = &'static Package> {
    APT_PACKAGES
        .iter()
        .filter(move |package| package.for_.contains(&purpose))
}

/// The apt command that installs `names`, from `release` (`-t`) when given: never removes a
/// package, no recommends.
fn install_command(names: &[&str], release: Option<&str>) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args([
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "--no-remove",
    ]);
    if let Some(release) = release {
        cmd.args(["-t", release]);
    }
    cmd.args(names).env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// Debian 12's backports suite.
const BACKPORTS: &str = "bookworm-backports";
/// Where setup declares the backports suite when no apt source names it.
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/enforcer-bookworm-backports.sources";

/// Whether `name` must come from bookworm-backports: QEMU's system emulator when the machine
/// already has qemu-utils from there (some images ship qemu-img 10 from backports, and
/// bookworm's qemu-system-common 7.2 breaks it, so installing that would remove qemu-utils).
fn needs_backports(name: &str) -> bool {
    name == "qemu-system-x86"
        && output(Command::new("dpkg-query").args(["-W", "-f=${Version}", "qemu-utils"]))
            .is_some_and(|version| version.contains("bpo12"))
}

/// Declare bookworm-backports as an apt source unless one already does. Backports are never
/// preferred over the release (priority 100): only packages asked for with `-t` come from there.
fn ensure_backports_source() -> anyhow::Result<()> {
    let declared = std::fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .chain([PathBuf::from("/etc/apt/sources.list")])
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "list" || ext == "sources")
        })
        .any(|path| {
            std::fs::read_to_string(path).is_ok_and(|text| {
                text.lines()
                    .any(|line| !line.trim_start().starts_with('#') && line.contains(BACKPORTS))
            })
        });
    if declared {
        return Ok(());
    }
    eprintln!(
        "xtask: adding {BACKPORTS} as an apt source ({BACKPORTS_SOURCE}) for qemu-system-x86"
    );
    std::fs::write(
        BACKPORTS_SOURCE,
        format!(
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {BACKPORTS}\n\
             Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ),
    )
    .with_context(|| format!("writing {BACKPORTS_SOURCE}"))
}

/// Check what `purpose` needs; install what is missing.
pub fn run(purpose: Purpose) -> anyhow::Result<()> {
    let missing = missing_packages(purpose);
    if !missing.is_empty() {
        eprintln!(
            "xtask: {} needs these Debian packages, which are not installed:",
            command_name(purpose)
        );
        for package in &missing {
            eprintln!("xtask:   {:<16} {}", package.name, package.why);
        }
        require_root("install Debian packages")?;
        let (backported, plain): (Vec<&str>, Vec<&str>) = missing
            .iter()
            .map(|p| p.name)
            .partition(|name| needs_backports(name));
        if !backported.is_empty() {
            ensure_backports_source()?;
        }
        exec(Command::new("apt-get").args(["update", "-q"]))?;
        for (names, release) in [(plain, None), (backported, Some(BACKPORTS))] {
            if names.is_empty() {
                continue;
            }
            exec(&mut install_command(&names, release)).context(
                "apt-get could not install without removing a package (setup never removes one); \
                 resolve the conflict by hand",
            )?;
        }
    }
    let llvm_major = check_nightly()?;
    if !has_rust_src() {
        exec(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            NIGHTLY,
        ]))?;
    }
    if !bpf_linker_ok() {
        install_bpf_linker(llvm_major)?;
    }
    if purpose == Purpose::Test && !schemathesis_ok() {
        install_schemathesis()?;
    }
    mount_bpffs()?;
    eprintln!(
        "xtask: setup complete (nightly {NIGHTLY_RELEASE}, LLVM {llvm_major}, bpf-linker {BPF_LINKER_VERSION})"
    );
    Ok(())
}

/// schemathesis, from PyPI, the version the REST API tests were written against.
pub const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// Where schemathesis lives: a virtual environment in the target directory, since Debian's
/// Python refuses `pip install` into the system (PEP 668). The REST API test runs
/// `<this>/bin/schemathesis`.
#[must_use]
pub fn schemathesis_venv() -> PathBuf {
    crate::util::root().join("target").join("schemathesis-venv")
}

fn schemathesis_ok() -> bool {
    output(Command::new(schemathesis_venv().join("bin").join("schemathesis")).arg("--version"))
        .is_some_and(|v| {
            v.trim()
                .ends_with(&format!("version {SCHEMATHESIS_VERSION}"))
        })
}

fn install_schemathesis() -> anyhow::Result<()> {
    let venv = schemathesis_venv();
    eprintln!(
        "xtask: installing schemathesis {SCHEMATHESIS_VERSION} from PyPI into {}",
        venv.display()
    );
    exec(
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )?;
    exec(
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("schemathesis=={SCHEMATHESIS_VERSION}")),
    )
    .context("installing schemathesis from PyPI (needs network access to pypi.org)")
}

/// The preamble of every command that loads BPF or builds namespaces: root, then setup for
/// `purpose` if anything is missing, then build `packages`' binaries (`--release` if asked).
pub fn prepare(
    why: &str,
    purpose: Purpose,
    packages: &[&str],
    release: bool,
) -> anyhow::Result<()> {
    if !crate::util::is_root() {
        bail!("{why}: run it as root (e.g. sudo)");
    }
    if !is_complete(purpose) {
        run(purpose)?;
    }
    let mut build = Command::new("cargo");
    build
        .current_dir(crate::util::root())
        .args(["build", "--quiet"]);
    if release {
        build.arg("--release");
    }
    for package in packages {
        build.args(["-p", package]);
    }
    exec(build.arg("--bins"))
}

/// True when nothing `purpose` needs is missing (commands skip setup then).
pub fn is_complete(purpose: Purpose) -> bool {
    missing_packages(purpose).is_empty()
        && check_nightly().is_ok()
        && has_rust_src()
        && bpf_linker_ok()
        && bpffs_mounted()
        && (purpose != Purpose::Test || schemathesis_ok())
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !crate::util::is_root() {
        bail!("setup must {what}; run `cargo xtask setup` as root (e.g. with sudo)");
    }
    Ok(())
}

fn missing_packages(purpose: Purpose) -> Vec<&'static Package> {
    packages_for(purpose)
        .filter(|package| {
            let status =
                output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package.name]));
            !status.is_some_and(|s| s.contains("install ok installed"))
        })
        .collect()
}

fn command_name(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Demo => "`cargo xtask demo`",
        Purpose::Bench => "`cargo xtask bench`",
        Purpose::VmTest => "`cargo xtask vm-test`",
        Purpose::Test => "`cargo xtask test`",
        Purpose::Package => "`cargo xtask package`",
    }
}

/// Check the pinned nightly and return its LLVM major version.
fn check_nightly() -> anyhow::Result<u32> {
    let version = output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "-vV"])).context(
        "the nightly toolchain is missing; install it with `rustup toolchain install nightly` \
         (this project pins rustc 1.97.0-nightly e50aa6fba, 2026-05-19)",
    )?;
    let field = |name: &str| {
        version
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    let (release, commit, llvm) = (
        field("release:"),
        field("commit-hash:"),
        field("LLVM version:"),
    );
    if release != NIGHTLY_RELEASE || !commit.starts_with(NIGHTLY_COMMIT) {
        bail!(
            "`nightly` is rustc {release} ({commit}), but enforcer-ebpf is pinned to \
             {NIGHTLY_RELEASE} ({NIGHTLY_COMMIT}); install that build as `nightly`"
        );
    }
    llvm.split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .with_context(|| {
            format!("cannot read the LLVM version from `rustc +nightly -vV`: {llvm:?}")
        })
}

fn has_rust_src() -> bool {
    output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))
    .is_some_and(|list| list.lines().any(|l| l.starts_with("rust-src")))
}

fn bpf_linker_ok() -> bool {
    output(Command::new("bpf-linker").arg("--version"))
        .is_some_and(|v| v.trim() == format!("bpf-linker {BPF_LINKER_VERSION}"))
}

/// Build bpf-linker against the nightly sysroot's libLLVM: its default feature wants LLVM 23
/// and Debian's llvm-config is LLVM 14, so point LLVM_PREFIX at a directory whose `lib/` links
/// to nightly's own `libLLVM.so.<major>.*-rust-*`.
fn install_bpf_linker(llvm_major: u32) -> anyhow::Result<()> {
    let sysroot =
        output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))
            .context("cannot find the nightly sysroot")?;
    let lib_dir = PathBuf::from(sysroot.trim()).join("lib");
    let prefix = format!("libLLVM.so.{llvm_major}.");
    let libllvm = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.contains("-rust-"))
        })
        .with_context(|| {
            format!(
                "no {prefix}*-rust-* in {}; is the nightly toolchain complete?",
                lib_dir.display()
            )
        })?;
    // bpf-linker keeps this directory as its RUNPATH, so it must outlive `cargo clean` and the
    // checkout: keep it beside the installed binary, under CARGO_HOME.
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let llvm_prefix = cargo_home.join(format!("bpf-linker-llvm-{llvm_major}"));
    let llvm_lib = llvm_prefix.join("lib");
    std::fs::create_dir_all(&llvm_lib)
        .with_context(|| format!("creating {}", llvm_lib.display()))?;
    let soname = libllvm
        .file_name()
        .context("libLLVM path has no file name")?;
    for name in [soname, "libLLVM.so".as_ref()] {
        let link = llvm_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {} to {}", link.display(), libllvm.display()))?;
    }
    exec(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{llvm_major}"),
            ])
            .env("LLVM_PREFIX", &llvm_prefix),
    )
    .context("building bpf-linker failed")
}

fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts").is_ok_and(|mounts| {
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    })
}

fn mount_bpffs() -> anyhow::Result<()> {
    if bpffs_mounted() {
        return Ok(());
    }
    require_root("mount bpffs on /sys/fs/bpf")?;
    exec(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(purpose: Purpose) -> Vec<&'static str> {
        packages_for(purpose).map(|p| p.name).collect()
    }

    #[test]
    fn the_demo_installs_no_qemu_nor_nftables() {
        let demo = names(Purpose::Demo);
        assert!(
            demo.contains(&"iproute2") && demo.contains(&"iputils-ping"),
            "{demo:?}"
        );
        for heavy in ["qemu-system-x86", "busybox-static", "nftables"] {
            assert!(!demo.contains(&heavy), "demo installs {heavy}");
        }
    }

    #[test]
    fn vm_test_and_test_install_qemu_bench_installs_nftables() {
        assert!(names(Purpose::VmTest).contains(&"qemu-system-x86"));
        assert!(!names(Purpose::VmTest).contains(&"nftables"));
        assert!(names(Purpose::Bench).contains(&"nftables"));
        assert!(!names(Purpose::Bench).contains(&"qemu-system-x86"));
        assert_eq!(
            names(Purpose::Test).len(),
            APT_PACKAGES.len(),
            "test runs everything"
        );
    }

    #[test]
    fn install_never_removes_a_package() {
        let cmd = install_command(&["nftables"], None);
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[0], "install");
        assert!(args.contains(&"--no-remove".to_owned()), "{args:?}");
        assert_eq!(args.last().map(String::as_str), Some("nftables"));
        let from = install_command(&["qemu-system-x86"], Some(BACKPORTS));
        let args: Vec<_> = from
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.windows(2).any(|w| w == ["-t", BACKPORTS]), "{args:?}");
        assert!(args.contains(&"--no-remove".to_owned()), "{args:?}");
    }

    #[test]
    fn every_package_says_why() {
        for package in APT_PACKAGES {
            assert!(
                !package.why.is_empty() && !package.for_.is_empty(),
                "{}",
                package.name
            );
        }
    }
}
