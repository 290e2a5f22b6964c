//! `cargo xtask bench [--quick]`: builds the benchmark driver in release mode and runs it
//! (`tests/src/bin/enforcer-bench.rs`). The report goes to `target/bench/report.{md,json}`; a
//! full run also runs the differential test with 1,000,000 frames, the frame fuzzers with
//! 200,000 cases per property and the policy fuzzers with 6,000, and rewrites BENCHMARKS.md
//! with the machine it ran on and the command that made it. `--quick` takes seconds and is part
//! of `cargo xtask test`, so the benchmark cannot rot. `--only SECTIONS` runs some sections (and
//! no differential run); BENCHMARKS.md then keeps the other sections of its previous run, each
//! marked with the commit it came from.

use std::{fmt::Write as _, process::Command};

use anyhow::Context as _;

use crate::{
    setup,
    util::{exec, output, root},
};

pub fn run(quick: bool, only: Option<&str>) -> anyhow::Result<()> {
    setup::prepare(
        "the benchmark loads XDP programs",
        setup::Purpose::Bench,
        &["integration-tests", "enforcer"],
        true,
    )?;
    let out = root().join("target/bench");
    let mut bench = Command::new(root().join("target/release/enforcer-bench"));
    bench.arg("--out").arg(&out);
    if quick {
        bench.arg("--quick");
    }
    if let Some(only) = only {
        bench.args(["--only", only]);
    }
    exec(&mut bench)?;
    if quick {
        return Ok(());
    }
    if only.is_none() {
        exec(release_test("differential").env("DIFF_FRAMES", "1000000"))
            .context("the 1,000,000-frame differential run failed")?;
        // The long fuzzing runs: 200,000 cases per property instead of the test command's
        // 2,000; the policy fuzzers' cases are whole policies, so fewer.
        exec(release_test("fuzz_frames").env("FUZZ_CASES", "200000"))
            .context("the long frame fuzzing run failed")?;
        exec(release_test("fuzz").env("FUZZ_CASES", "6000"))
            .context("the long policy fuzzing run failed")?;
    }

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
    let command = only.map_or_else(
        || "sudo cargo xtask bench".to_owned(),
        |only| format!("sudo cargo xtask bench --only {only}"),
    );
    let _ = writeln!(
        doc,
        "Made by `{command}` (commit {}) on: {cpu}, {cores} cores, Linux {}.",
        commit.trim(),
        kernel.trim()
    );
    let _ = writeln!(
        doc,
        "Every comparison is measured in the same run; medians with min and max.\n"
    );
    doc.push_str(&report);
    if only.is_some() {
        let previous = std::fs::read_to_string(root().join("BENCHMARKS.md")).unwrap_or_default();
        doc.push_str(&kept_sections(&previous, &report));
    }
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

/// The mark on a section kept from an earlier run.
const NOT_RE_RUN: &str = "_Not re-run by this command:";

/// The sections of the previous BENCHMARKS.md that `report` does not replace (same first two
/// words of the heading), each marked with the commit of the run that made it.
fn kept_sections(previous: &str, report: &str) -> String {
    let key = |heading: &str| {
        heading
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let fresh: Vec<String> = report
        .split("\n## ")
        .filter_map(|s| s.trim_start_matches("## ").lines().next())
        .map(key)
        .collect();
    let commit = previous
        .split("(commit ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or("unknown");
    let mut out = String::new();
    for section in previous.split("\n## ").skip(1) {
        let heading = section.lines().next().unwrap_or_default();
        if fresh.contains(&key(heading)) {
            continue;
        }
        let body = section.split_once('\n').map_or("", |(_, body)| body);
        if body.trim_start().starts_with(NOT_RE_RUN) {
            // Kept from an older run already, and marked with its commit.
            let _ = write!(out, "\n## {heading}\n{body}");
        } else {
            let _ = write!(
                out,
                "\n## {heading}\n\n{NOT_RE_RUN} from the previous run (commit {commit})._\n{body}"
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn kept_sections_keep_the_commit_they_came_from() {
        let previous = "# Benchmarks\n\nMade by `x` (commit new1) on: m.\n\n\
                        ## Per-packet cost (a)\n\nold rows\n\n\
                        ## Load: validate\n\n_Not re-run by this command: from the previous run \
                        (commit old0)._\nload rows\n\n\
                        ## End to end\n\ne2e rows\n";
        let report = "## Per-packet cost (b)\n\nnew rows\n";
        let kept = super::kept_sections(previous, report);
        assert!(!kept.contains("old rows"), "{kept}");
        assert!(
            kept.contains("load rows") && kept.contains("e2e rows"),
            "{kept}"
        );
        assert_eq!(kept.matches("_Not re-run").count(), 2, "{kept}");
        assert!(
            kept.contains("(commit old0)._\nload rows") && kept.contains("(commit new1)._\n\ne2e"),
            "{kept}"
        );
    }
}
