//! `cargo xtask vm-test [--kernel 6.1|6.12|PATH-TO-VMLINUZ]...`: the kernel-level tests inside
//! QEMU (TCG) on Debian 12's distribution kernels, because gateways run those, not the newest.
//!
//! For each kernel: fetch the Debian cloud kernel package with apt (cached in `target/vm`),
//! build an initramfs (busybox, iproute2's `ip`, ping, nsenter, the shared libraries they and
//! the test binaries need, `veth.ko`, the test binaries), boot it, and inside run the
//! BPF_PROG_TEST_RUN fixtures (also the forwarding fixtures and their replay through
//! `enforcer policy replay`), the differential test (`GUEST_DIFF_FRAMES` frames) and the
//! end-to-end namespace test. The guest writes its exit status to a second serial port; a
//! failing test, a verifier rejection, a kernel panic or a hang (timeout) fails the run with the
//! guest's output shown. The verifier's processed-instruction count is printed per kernel.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    setup,
    util::{exec, output, root, show},
};

/// Frames of the differential test inside the guest: TCG emulates every instruction, so the
/// 200,000 of the host run would take many minutes; 20,000 still cover every verdict.
const GUEST_DIFF_FRAMES: u32 = 20_000;
/// Longest a guest may run before it counts as hung.
const GUEST_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// The test binaries run in the guest, by `cargo test --test` name.
/// `counters`: batch lookups of per-CPU arrays on each kernel (29 s under TCG on 6.1).
const GUEST_TESTS: &[&str] = &["kernel", "forwarded", "differential", "e2e", "counters"];

/// A kernel to boot.
struct Kernel {
    label: String,
    vmlinuz: PathBuf,
    /// `veth.ko`, decompressed; `None` if veth is built in.
    veth: Option<PathBuf>,
}

pub fn run(kernels: &[String]) -> anyhow::Result<()> {
    setup::prepare(
        "vm-test fetches kernel packages with apt and builds test binaries",
        setup::Purpose::VmTest,
        &["enforcer", "integration-tests"],
        false,
    )?;
    let kernels: Vec<String> = if kernels.is_empty() {
        vec!["6.1".into(), "6.12".into()]
    } else {
        kernels.to_vec()
    };
    let binaries = build_binaries()?;
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for spec in &kernels {
        let kernel = resolve(spec)?;
        let started = Instant::now();
        let outcome = boot(&kernel, &binaries);
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(insns) => results.push(format!(
                "{:<28} passed in {seconds:5.1} s; verifier processed {} instructions",
                kernel.label,
                insns.map_or("?".into(), |n| n.to_string())
            )),
            Err(err) => {
                results.push(format!(
                    "{:<28} FAILED after {seconds:5.1} s: {err:#}",
                    kernel.label
                ));
                failed.push(kernel.label.clone());
            }
        }
    }
    println!("\nvm-test results:");
    for line in &results {
        println!("  {line}");
    }
    if !failed.is_empty() {
        bail!("vm-test failed on {}", failed.join(", "));
    }
    Ok(())
}

/// Paths of what goes into the guest.
struct Binaries {
    tests: BTreeMap<String, PathBuf>,
    enforcer: PathBuf,
    netprobe: PathBuf,
    /// `enforcer-bench` (release), for [`memory`].
    bench: Option<PathBuf>,
}

fn build_binaries() -> anyhow::Result<Binaries> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root()).args([
        "test",
        "--quiet",
        "-p",
        "integration-tests",
        "--no-run",
        "--message-format=json",
    ]);
    for test in GUEST_TESTS {
        cmd.args(["--test", test]);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running `{}`", show(&cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed", show(&cmd));
    }
    let mut tests = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = message["target"]["name"].as_str().unwrap_or_default();
        let is_test = message["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|v| v == "test"));
        if let Some(exe) = message["executable"].as_str()
            && is_test
            && GUEST_TESTS.contains(&name)
        {
            tests.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    if tests.len() != GUEST_TESTS.len() {
        bail!("cargo did not report every test binary ({tests:?})");
    }
    let target = root().join("target/debug");
    Ok(Binaries {
        tests,
        enforcer: target.join("enforcer"),
        netprobe: target.join("netprobe"),
        bench: None,
    })
}

/// Guest memory for [`memory`]: 1M SIMs' policy and the program's maps with 2M sessions (about
/// 0.5 GiB of kernel memory) beside the benchmark's own copies.
const MEMORY_GUEST_MIB: u32 = 4096;

/// `cargo xtask vm-memory [--cpus N]...`: the kernel memory of the maps at 1,000,000 SIMs and
/// 2,000,000 sessions (`enforcer-bench --only memory`), measured inside QEMU on Debian 12's
/// 6.12 kernel with each vCPU count (default 2 and 16), since per-CPU maps grow with the CPUs
/// the kernel sees. Prints each guest's report.
pub fn memory(cpus: &[u32]) -> anyhow::Result<()> {
    // Builds the release binaries, the benchmark among them.
    setup::prepare(
        "vm-memory fetches a kernel package with apt and builds the benchmark",
        setup::Purpose::VmTest,
        &["enforcer", "integration-tests"],
        true,
    )?;
    let cpus: Vec<u32> = if cpus.is_empty() {
        vec![2, 16]
    } else {
        cpus.to_vec()
    };
    let binaries = Binaries {
        tests: BTreeMap::new(),
        enforcer: root().join("target/release/enforcer"),
        netprobe: root().join("target/release/netprobe"),
        bench: Some(root().join("target/release/enforcer-bench")),
    };
    let kernel = resolve("6.12")?;
    let mut reports = Vec::new();
    for &n in &cpus {
        let started = Instant::now();
        let guest = boot_with(&kernel, &binaries, MEMORY_INIT, n, MEMORY_GUEST_MIB)
            .with_context(|| format!("the memory run with {n} vCPUs"))?;
        // The table once (the benchmark prints its report, and the guest shows the file).
        let mut report = String::new();
        for line in guest
            .lines()
            .skip_while(|l| !l.starts_with("## Kernel memory"))
        {
            report.push_str(line);
            report.push('\n');
            if line.starts_with("| **total**") {
                break;
            }
        }
        reports.push(format!(
            "### {} with {n} vCPUs ({:.0} s under TCG)\n\n{report}",
            kernel.label,
            started.elapsed().as_secs_f64()
        ));
    }
    println!("\nvm-memory results:\n");
    for report in &reports {
        println!("{report}");
    }
    Ok(())
}

const MEMORY_INIT: &str = r#"#!/bin/sh
export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs run /run
ip link set lo up
echo "guest: Linux $(uname -r), $(nproc) CPUs"
if /bin/enforcer-bench --only memory --out /root/bench; then
  cat /root/bench/report.md
  echo "guest: done"
  echo 0 > /dev/ttyS1
else
  echo 1 > /dev/ttyS1
fi
sync
poweroff -f
"#;

/// `6.1`, `6.12` (Debian 12 cloud kernels, fetched with apt) or a path to a vmlinuz.
fn resolve(spec: &str) -> anyhow::Result<Kernel> {
    let path = Path::new(spec);
    if path.exists() {
        let veth = path
            .parent()
            .and_then(Path::parent)
            .map(|tree| tree.join("lib/modules"))
            .and_then(|modules| find_veth(&modules).ok());
        return Ok(Kernel {
            label: spec.to_owned(),
            vmlinuz: path.to_owned(),
            veth,
        });
    }
    let lookup = || match spec {
        "6.1" => apt_dependency("linux-image-cloud-amd64"),
        "6.12" => newest_package("linux-image-6.12.", "+deb12-cloud-amd64"),
        other => bail!("unknown kernel `{other}`; use 6.1, 6.12 or a path to a vmlinuz"),
    };
    // A machine whose packages were all installed may still have no package lists: refresh
    // them once before giving up.
    let package = match lookup() {
        Ok(package) => package,
        Err(_) if matches!(spec, "6.1" | "6.12") => {
            exec(Command::new("apt-get").args(["update", "-q"]))?;
            lookup()?
        }
        Err(err) => return Err(err),
    };
    let dir = root().join("target/vm/kernels").join(&package);
    if !dir.join("boot").exists() {
        let download = root().join("target/vm/download");
        let _ = std::fs::remove_dir_all(&download);
        std::fs::create_dir_all(&download)?;
        exec(
            Command::new("apt-get")
                .current_dir(&download)
                .args(["download", &package]),
        )
        .with_context(|| {
            format!("downloading {package}; run `apt-get update` if apt does not know it")
        })?;
        let deb = std::fs::read_dir(&download)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download produced no .deb")?;
        let tmp = dir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        exec(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
        std::fs::rename(&tmp, &dir)?;
        let _ = std::fs::remove_dir_all(&download);
    }
    let vmlinuz = std::fs::read_dir(dir.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
        })
        .with_context(|| format!("no vmlinuz in {}", dir.display()))?;
    let veth = Some(find_veth(&dir.join("lib/modules"))?);
    Ok(Kernel {
        label: format!("{spec} ({package})"),
        vmlinuz,
        veth,
    })
}

fn apt_dependency(package: &str) -> anyhow::Result<String> {
    let deps = output(Command::new("apt-cache").args(["depends", package])).unwrap_or_default();
    deps.lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|d| d.trim().to_owned())
        .with_context(|| {
            format!("apt-cache knows no dependency of {package}; run `apt-get update`")
        })
}

fn newest_package(prefix: &str, suffix: &str) -> anyhow::Result<String> {
    let list = output(Command::new("apt-cache").args([
        "search",
        "--names-only",
        &format!("^{}.*{}$", regex_escape(prefix), regex_escape(suffix)),
    ]))
    .unwrap_or_default();
    let mut names: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix) && n.ends_with(suffix))
        .map(str::to_owned)
        .collect();
    names.sort_by_key(|n| version_key(&n[prefix.len()..]));
    names
        .pop()
        .with_context(|| format!("apt-cache knows no {prefix}*{suffix}; run `apt-get update`"))
}

fn regex_escape(text: &str) -> String {
    text.replace('.', "\\.").replace('+', "\\+")
}

fn version_key(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Find `veth.ko` (or `.ko.xz`) under `modules`, decompressed next to it.
fn find_veth(modules: &Path) -> anyhow::Result<PathBuf> {
    let version = std::fs::read_dir(modules)
        .with_context(|| format!("reading {}", modules.display()))?
        .flatten()
        .next()
        .context("no module directory")?
        .path();
    let dir = version.join("kernel/drivers/net");
    let plain = dir.join("veth.ko");
    if plain.exists() {
        return Ok(plain);
    }
    let xz = dir.join("veth.ko.xz");
    if xz.exists() {
        exec(Command::new("xz").args(["-d", "-k", "-f"]).arg(&xz))?;
        return Ok(plain);
    }
    bail!("no veth.ko in {}", dir.display())
}

/// Build the initramfs, boot, stream the guest's output; returns the verifier count.
fn boot(kernel: &Kernel, binaries: &Binaries) -> anyhow::Result<Option<u64>> {
    let init = INIT
        .replace("@TESTS@", &GUEST_TESTS.join(" "))
        .replace("@FRAMES@", &GUEST_DIFF_FRAMES.to_string());
    let guest = boot_with(kernel, binaries, &init, 2, 1024)?;
    Ok(guest
        .lines()
        .find_map(|l| l.split("verified instructions: ").nth(1))
        .and_then(|n| n.trim().parse().ok()))
}

/// Boot `kernel` with an initramfs of `binaries` and `init`, `cpus` vCPUs and `mib` of memory;
/// the guest's console output when its init reported status 0.
fn boot_with(
    kernel: &Kernel,
    binaries: &Binaries,
    init: &str,
    cpus: u32,
    mib: u32,
) -> anyhow::Result<String> {
    let work = root().join("target/vm/run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let initramfs = work.join("initramfs.cpio");
    build_initramfs(&initramfs, kernel, binaries, init)?;
    let result = work.join("result");
    let log = work.join("guest.log");
    eprintln!(
        "xtask: booting {} under QEMU (TCG), {cpus} vCPUs, {mib} MiB",
        kernel.label
    );
    let mut cmd = Command::new("timeout");
    cmd.args([
        "--kill-after=10",
        &GUEST_TIMEOUT.as_secs().to_string(),
        "qemu-system-x86_64",
    ])
    .args([
        "-accel",
        "tcg",
        "-m",
        &mib.to_string(),
        "-smp",
        &cpus.to_string(),
        "-display",
        "none",
        "-no-reboot",
        "-nodefaults",
    ])
    .arg("-kernel")
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(&initramfs)
    .args(["-append", "console=ttyS0 panic=-1 quiet"])
    .args(["-serial", &format!("file:{}", log.display())])
    .args(["-serial", &format!("file:{}", result.display())]);
    let status = cmd
        .status()
        .with_context(|| format!("starting `{}`", show(&cmd)))?;
    let guest = std::fs::read_to_string(&log).unwrap_or_default();
    print!("{}", indent(&guest));
    if status.code() == Some(124) || status.code() == Some(137) {
        bail!(
            "the guest hung (no exit within {} s)",
            GUEST_TIMEOUT.as_secs()
        );
    }
    let code = std::fs::read_to_string(&result).unwrap_or_default();
    match code.trim() {
        "0" => Ok(guest),
        "" => bail!(
            "the guest stopped without reporting a result (kernel panic or crash? see its output above)"
        ),
        other => bail!("tests failed inside the guest (status {other}; see its output above)"),
    }
}

fn indent(text: &str) -> String {
    text.lines().fold(String::new(), |mut out, line| {
        let _ = writeln!(out, "  guest| {line}");
        out
    })
}

const INIT: &str = r#"#!/bin/sh
export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/root RUST_BACKTRACE=1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t bpf bpf /sys/fs/bpf
# No tmpfs on /tmp: the initramfs root is writable RAM already, and the test binaries may live
# under /tmp at their compiled-in paths (a CI checkout in /tmp).
mount -t tmpfs run /run
[ -f /veth.ko ] && insmod /veth.ko
ip link set lo up
echo "guest: Linux $(uname -r), $(nproc) CPUs"
status=0
for t in @TESTS@; do
  echo "guest: running $t"
  if ! ENFORCER_BIN=/bin/enforcer ENFORCER_SCAN_ITER=required DIFF_FRAMES=@FRAMES@ "/tests/$t" --test-threads 1 --nocapture; then
    echo "guest: $t FAILED"
    status=1
  fi
done
echo "$status" > /dev/ttyS1
sync
poweroff -f
"#;

fn build_initramfs(
    path: &Path,
    kernel: &Kernel,
    binaries: &Binaries,
    init: &str,
) -> anyhow::Result<()> {
    let mut archive = Cpio::default();
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "lib", "lib64", "proc", "sys", "dev", "tmp", "run",
        "root", "tests", "etc",
    ] {
        archive.dir(dir);
    }
    archive.symlink("var/run", "/run");
    let busybox = which("busybox")?;
    archive.file("bin/busybox", &std::fs::read(&busybox)?, 0o755);
    // Everything else comes from Debian's packages: iproute2's ip has netns support, busybox's not.
    for applet in [
        "sh", "mount", "umount", "mkdir", "cat", "echo", "insmod", "poweroff", "sysctl", "sleep",
        "ls", "uname", "nproc", "sync", "rm", "mkdir", "dmesg", "true", "false", "env", "grep",
    ] {
        archive.symlink(&format!("bin/{applet}"), "/bin/busybox");
    }
    let mut elf_files: Vec<(String, PathBuf)> = vec![
        ("sbin/ip".into(), which("ip")?),
        ("bin/ping".into(), which("ping")?),
        ("usr/bin/nsenter".into(), which("nsenter")?),
        ("bin/enforcer".into(), binaries.enforcer.clone()),
    ];
    // Compiled-in paths (CARGO_MANIFEST_DIR, CARGO_BIN_EXE_netprobe) must exist in the guest too.
    let netprobe_at = binaries
        .netprobe
        .to_string_lossy()
        .trim_start_matches('/')
        .to_owned();
    elf_files.push((netprobe_at, binaries.netprobe.clone()));
    for (name, exe) in &binaries.tests {
        elf_files.push((format!("tests/{name}"), exe.clone()));
    }
    if let Some(bench) = &binaries.bench {
        elf_files.push(("bin/enforcer-bench".into(), bench.clone()));
    }
    let mut libraries = BTreeMap::new();
    for (at, file) in &elf_files {
        archive.parents(at);
        archive.file(at, &strip(file)?, 0o755);
        for lib in shared_libraries(file)? {
            libraries.insert(
                lib.to_string_lossy().trim_start_matches('/').to_owned(),
                lib,
            );
        }
    }
    for (at, lib) in &libraries {
        archive.parents(at);
        archive.file(
            at,
            &std::fs::read(lib).with_context(|| format!("reading {}", lib.display()))?,
            0o755,
        );
    }
    // The tests name files as CARGO_MANIFEST_DIR/../examples/..., so that directory must exist.
    archive.dir(
        root()
            .join("tests")
            .to_string_lossy()
            .trim_start_matches('/'),
    );
    let policy = root().join("examples/policy.toml");
    let policy_at = policy.to_string_lossy().trim_start_matches('/').to_owned();
    archive.parents(&policy_at);
    archive.file(&policy_at, &std::fs::read(&policy)?, 0o644);
    if let Some(veth) = &kernel.veth {
        archive.file("veth.ko", &std::fs::read(veth)?, 0o644);
    }
    archive.file("init", init.as_bytes(), 0o755);
    std::fs::write(path, archive.finish()).with_context(|| format!("writing {}", path.display()))
}

fn which(tool: &str) -> anyhow::Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let path = Path::new(dir).join(tool);
        if path.exists() {
            return Ok(path.canonicalize().unwrap_or(path));
        }
    }
    bail!("`{tool}` is not installed; run `cargo xtask setup`")
}

/// The file without debug info (test binaries are mostly DWARF).
fn strip(file: &Path) -> anyhow::Result<Vec<u8>> {
    let tmp = std::env::temp_dir().join(format!("xtask-strip-{}", std::process::id()));
    exec(
        Command::new("strip")
            .args(["--strip-debug", "-o"])
            .arg(&tmp)
            .arg(file),
    )?;
    let bytes = std::fs::read(&tmp)?;
    let _ = std::fs::remove_file(&tmp);
    Ok(bytes)
}

/// Shared libraries (and the dynamic loader) `ldd` lists for an executable.
fn shared_libraries(file: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(file)
        .output()
        .with_context(|| format!("ldd {}", file.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|line| line.split_whitespace().find(|w| w.starts_with('/')))
        .map(PathBuf::from)
        .collect())
}

/// A `newc` cpio archive, the format the kernel unpacks as its initramfs.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
    dirs: std::collections::BTreeSet<String>,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.inode += 1;
        let name_len = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name_len,
            0
        );
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    /// A directory, after its parents (the kernel's unpacker does not create them).
    fn dir(&mut self, name: &str) {
        self.parents(name);
        if self.dirs.insert(name.to_owned()) {
            self.entry(name, 0o040_755, &[]);
        }
    }

    /// Every parent directory of `path`.
    fn parents(&mut self, path: &str) {
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..parts.len() {
            let parent = parts[..i].join("/");
            if self.dirs.insert(parent.clone()) {
                self.entry(&parent, 0o040_755, &[]);
            }
        }
    }

    fn file(&mut self, name: &str, data: &[u8], mode: u32) {
        self.entry(name, 0o100_000 | mode, data);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.parents(name);
        self.entry(name, 0o120_777, target.as_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }
}
