//! `cargo xtask bench [--quick]`: builds the benchmark driver in release mode and runs it
//! (`tests/src/bin/enforcer-bench.rs`). The report goes to `target/bench/report.{md,json}`; a
//! full run also runs the differential test with 1,000,000 frames, the frame fuzzers with
//! 200,000 cases per property and the policy fuzzers with 6,000, and rewrites BENCHMARKS.md
//! with the machine it ran on and the command that made it. `--quick` takes seconds and is part
//! of `cargo xtask test`, so the benchmark cannot rot.

use std::{fmt::Write as _, process::Command};

use anyhow::Context as _;

use crate::{
    setup,
    util::{exec, output, root},
};

pub fn run(quick: bool) -> anyhow::Result<()> {
    setup::prepare(
        "the benchmark loads XDP programs",
        setup::Purpose::Bench,
        &["integration-tests"],
        true,
    )?;
    let out = root().join("target/bench");
    let mut bench = Command::new(root().join("target/release/enforcer-bench"));
    bench.arg("--out").arg(&out);
    if quick {
        bench.arg("--quick");
    }
    exec(&mut bench)?;
    if quick {
        return Ok(());
    }
    exec(release_test("differential").env("DIFF_FRAMES", "1000000"))
        .context("the 1,000,000-frame differential run failed")?;
    // The long fuzzing run: 200,000 cases per property instead of the test command's 2,000.
    exec(release_test("fuzz_frames").env("FUZZ_CASES", "200000"))
        .context("the long frame fuzzing run failed")?;
    // The policy front end's fuzzers: each case is a whole policy, so fewer cases.
    exec(release_test("fuzz").env("FUZZ_CASES", "6000"))
        .context("the long policy fuzzing run failed")?;

    let report = std::fs::read_to_string(out.join("report.md")).context("reading the report")?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = output(Command::new("uname").arg("-r")).unwrap_or_default();
    let commit =
        output(
            Command::new("git")
                .current_dir(root())
                .args(["rev-parse", "--short", "HEAD"]),
        )
        .unwrap_or_default();
    let mut doc = String::from("# Benchmarks\n\n");
    let _ = writeln!(
        doc,
        "Made by `sudo cargo xtask bench` (commit {}) on: {cpu}, {cores} cores, Linux {}.",
        commit.trim(),
        kernel.trim()
    );
    let _ = writeln!(
        doc,
        "Every comparison is measured in the same run; medians with min and max.\n"
    );
    doc.push_str(&report);
    std::fs::write(root().join("BENCHMARKS.md"), doc).context("writing BENCHMARKS.md")?;
    eprintln!("xtask: wrote BENCHMARKS.md");
    Ok(())
}

/// `cargo test --release -p integration-tests --test NAME -- --nocapture`.
fn release_test(name: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root()).args([
        "test",
        "--release",
        "-p",
        "integration-tests",
        "--test",
        name,
        "--",
        "--nocapture",
    ]);
    cmd
}
