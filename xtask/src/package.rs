//! `cargo xtask package [--binary PATH] [--out-dir DIR] [--compression TYPE]`: a Debian package
//! of the daemon.
//!
//! Builds `enforcer` in release mode (or takes a built binary), lays out a package root
//! (`/usr/bin/enforcer`, the systemd unit, `/etc/default/enforcer` and `/etc/enforcer/policy.toml`
//! as conffiles, README and copyright under `/usr/share/doc/enforcer`), computes `Depends` with
//! `dpkg-shlibdeps` from the binary's own shared-library needs, and builds
//! `target/debian/enforcer_<version>_<arch>.deb` with `dpkg-deb --build --root-owner-group`.
//!
//! Plain dpkg tools rather than cargo-deb: they come with every Debian machine (`dpkg-dev` via
//! setup), need no extra crate installed from source in CI, and a package this small (one
//! binary, four files) needs no manifest of its own.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{
    setup,
    util::{exec, root, show},
};

/// A file of the package: source (relative to the workspace root), destination, mode.
const FILES: &[(&str, &str, u32)] = &[
    (
        "packaging/enforcer.service",
        "lib/systemd/system/enforcer.service",
        0o644,
    ),
    ("packaging/enforcer.default", "etc/default/enforcer", 0o644),
    ("packaging/policy.toml", "etc/enforcer/policy.toml", 0o644),
    ("README.md", "usr/share/doc/enforcer/README.md", 0o644),
];

/// Files an operator edits: dpkg keeps their changes on upgrade.
const CONFFILES: &[&str] = &["/etc/default/enforcer", "/etc/enforcer/policy.toml"];

/// How dpkg-deb compresses the package's data (`dpkg-deb -Z`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Compression {
    /// Smallest; Debian's default.
    Xz,
    /// Faster to build.
    Gzip,
    /// Fastest: for tests that only inspect the package.
    None,
}

impl Compression {
    fn flag(self) -> &'static str {
        match self {
            Compression::Xz => "-Zxz",
            Compression::Gzip => "-Zgzip",
            Compression::None => "-Znone",
        }
    }
}

/// Build (unless `binary` is given) and package; returns the `.deb`'s path.
pub fn run(
    binary: Option<&Path>,
    out_dir: Option<&Path>,
    compression: Compression,
) -> anyhow::Result<PathBuf> {
    if !setup::is_complete(setup::Purpose::Package) {
        setup::run(setup::Purpose::Package)?;
    }
    let root = root();
    let binary = match binary {
        Some(path) => path
            .canonicalize()
            .with_context(|| format!("--binary {}: no such file", path.display()))?,
        None => {
            exec(Command::new("cargo").current_dir(&root).args([
                "build",
                "--release",
                "-p",
                "enforcer",
            ]))?;
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| root.join("target"), PathBuf::from)
                .join("release/enforcer")
        }
    };
    let version = version(&binary)?;
    let arch = captured(Command::new("dpkg").arg("--print-architecture"))?;
    let out_dir = out_dir.map_or_else(|| root.join("target/debian"), Path::to_path_buf);
    let name = format!("enforcer_{version}_{arch}");
    let stage = out_dir.join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    install(&binary, &stage.join("usr/bin/enforcer"), 0o755)?;
    for (from, to, mode) in FILES {
        install(&root.join(from), &stage.join(to), *mode)?;
    }
    write(
        &stage.join("usr/share/doc/enforcer/copyright"),
        &copyright(),
        0o644,
    )?;
    let depends = depends(&stage, &stage.join("usr/bin/enforcer"))?;
    write(
        &stage.join("DEBIAN/control"),
        &control(&version, &arch, &depends, installed_kib(&stage)?),
        0o644,
    )?;
    write(
        &stage.join("DEBIAN/conffiles"),
        &(CONFFILES.join("\n") + "\n"),
        0o644,
    )?;
    let deb = out_dir.join(format!("{name}.deb"));
    exec(
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group", compression.flag()])
            .arg(&stage)
            .arg(&deb),
    )?;
    fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    eprintln!("xtask: built {}", deb.display());
    Ok(deb)
}

/// The version the binary reports (`enforcer 0.1.0` → `0.1.0`), so the package is named for
/// what it holds.
fn version(binary: &Path) -> anyhow::Result<String> {
    let said = captured(Command::new(binary).arg("--version"))?;
    let version = said
        .strip_prefix("enforcer ")
        .with_context(|| format!("`{} --version` said `{said}`", binary.display()))?;
    if version.is_empty() || !version.starts_with(|c: char| c.is_ascii_digit()) {
        bail!(
            "`{} --version` gave no usable version: `{said}`",
            binary.display()
        );
    }
    Ok(version.to_owned())
}

/// `Depends` from dpkg-shlibdeps: the packages of the libraries the binary links and the
/// lowest versions its symbols need (e.g. `libc6 (>= 2.34), libgcc-s1 (>= 4.2)`).
fn depends(stage: &Path, binary: &Path) -> anyhow::Result<String> {
    // dpkg-shlibdeps wants a source package's debian/control in its working directory.
    let scratch = stage.with_extension("shlibdeps");
    fs::create_dir_all(scratch.join("debian"))?;
    fs::write(
        scratch.join("debian/control"),
        "Source: enforcer\n\nPackage: enforcer\nArchitecture: any\n",
    )?;
    let mut cmd = Command::new("dpkg-shlibdeps");
    cmd.current_dir(&scratch)
        .arg("-O")
        .arg(format!("-e{}", binary.display()));
    let said = captured(&mut cmd);
    fs::remove_dir_all(&scratch)?;
    let said = said?;
    let depends = said
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .with_context(|| format!("`{}` printed no shlibs:Depends: {said}", show(&cmd)))?;
    Ok(depends.to_owned())
}

fn control(version: &str, arch: &str, depends: &str, installed_kib: u64) -> String {
    format!(
        "Package: enforcer\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: enforcer developers <enforcer@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Section: net\n\
         Priority: optional\n\
         Description: Zero Trust XDP policy enforcement for cellular IoT fleets\n \
         enforcer passes or drops every packet of SIM-connected devices on a Linux\n \
         gateway in an XDP program, from per-segment and per-SIM allowlists: default\n \
         deny, no spoofing, no lateral movement, quarantine, per-SIM counters.\n \
         .\n \
         Edit /etc/enforcer/policy.toml and /etc/default/enforcer, then\n \
         `systemctl enable --now enforcer`.\n"
    )
}

fn copyright() -> String {
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
     Upstream-Name: enforcer\n\n\
     Files: *\n\
     License: MIT or Apache-2.0\n \
     At your option, the MIT license or the Apache License 2.0; see\n \
     /usr/share/common-licenses/Apache-2.0 for the latter.\n"
        .to_owned()
}

/// Copy `from` to `to` with `mode`, creating directories (0755) on the way.
fn install(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    let text = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write_bytes(to, &text, mode)
}

fn write(to: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    write_bytes(to, text.as_bytes(), mode)
}

fn write_bytes(to: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = to.parent().context("a file has a parent directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Directories made under a restrictive umask would be packaged as they are.
    let mut ancestor = Some(dir);
    while let Some(d) = ancestor {
        if d.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("enforcer_"))
        {
            break;
        }
        fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
        ancestor = d.parent();
    }
    fs::write(to, bytes).with_context(|| format!("writing {}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", to.display()))
}

/// Installed-Size: the files' sizes in KiB, rounded up per file as dpkg-gencontrol does.
fn installed_kib(stage: &Path) -> anyhow::Result<u64> {
    fn walk(dir: &Path, total: &mut u64) -> anyhow::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                if entry.file_name() != "DEBIAN" {
                    walk(&entry.path(), total)?;
                }
            } else {
                *total += meta.len().div_ceil(1024);
            }
        }
        Ok(())
    }
    let mut total = 0;
    walk(stage, &mut total)?;
    Ok(total)
}

/// Run quietly; the trimmed stdout, or an error with the command line and stderr.
fn captured(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start `{}`", show(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
