//! `cargo xtask test`: the whole suite. Setup when something is missing, `cargo fmt --check`,
//! clippy with `-D warnings` (userspace crates, and the eBPF crate for its BPF target with its
//! stricter lints), then every test: unit, compile snapshots, BPF_PROG_TEST_RUN fixtures, the
//! differential test and the end-to-end namespace test; then the kernel-level tests again inside
//! QEMU on Debian 12's 6.1 and 6.12 kernels (`vm-test`) and the benchmark's quick run. Ends with
//! one summary line.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{
    setup,
    util::{exec, root, show},
};

pub fn run() -> anyhow::Result<()> {
    if !setup::is_complete(setup::Purpose::Test) {
        setup::run(setup::Purpose::Test)?;
    }
    let cargo = || {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(root());
        cmd
    };
    exec(cargo().args(["fmt", "--all", "--", "--check"]))
        .context("formatting differs; run `cargo fmt --all`")?;
    exec(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    exec(
        cargo()
            .args([
                &format!("+{}", setup::NIGHTLY),
                "clippy",
                "-p",
                "enforcer-ebpf",
                "--release",
            ])
            .args([
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ]),
    )?;
    // The end-to-end test runs the daemon binary.
    exec(cargo().args(["build", "-p", "enforcer"]))?;
    let mut test = cargo();
    test.args(["test", "--", "--test-threads", "2"])
        .env("ENFORCER_BIN", root().join("target/debug/enforcer"));
    let (passed, failed) = run_counting(&mut test)?;
    if failed == 0 {
        // The kernel matrix: the same kernel-level tests inside Debian 12's 6.1 and 6.12.
        crate::vm_test::run(&[])?;
        // The benchmark's smoke run, so it cannot rot; its figures are not judged here.
        crate::bench::run(true, None)?;
    }
    println!("summary: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} test(s) failed");
    }
    Ok(())
}

/// Run `cargo test`, echoing its output, and add up its `test result:` lines.
fn run_counting(cmd: &mut Command) -> anyhow::Result<(u64, u64)> {
    eprintln!("xtask: $ {}", show(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", show(cmd)))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let number = |word: &str| {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(word).map(|n| n.trim().to_owned()))
                    .and_then(|n| {
                        n.split_whitespace()
                            .last()
                            .and_then(|n| n.parse::<u64>().ok())
                    })
                    .unwrap_or(0)
            };
            passed += number(" passed");
            failed += number(" failed");
        }
    }
    let status = child.wait()?;
    if !status.success() && failed == 0 {
        bail!(
            "`{}` failed ({status}) before reporting test results",
            show(cmd)
        );
    }
    Ok((passed, failed))
}
