//! `cargo xtask test`: the whole suite. Setup when something is missing, `cargo fmt --check`,
//! clippy with `-D warnings` (userspace crates, and the eBPF crate for its BPF target with its
//! stricter lints), then every test: unit, compile snapshots, BPF_PROG_TEST_RUN fixtures, the
//! differential test and the end-to-end namespace test; then the kernel-level tests again inside
//! QEMU on Debian 12's 6.1 and 6.12 kernels (`vm-test`) and the benchmark's quick run. Ends with
//! one summary line.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
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

/// How long the whole `cargo test` may take before it is stopped: CI allows 90 minutes for
/// everything and the suite takes about 6 here, so a hang is cut well before CI's own limit.
const TEST_LIMIT: Duration = Duration::from_secs(30 * 60);

/// How long output may keep flowing after `cargo test` exits: only a process a test started
/// and leaked (a daemon that inherited the pipe) keeps it open longer.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Run `cargo test`, echoing its output, and add up its `test result:` lines.
///
/// It runs in a process group of its own, so that neither a hung test nor a process a test
/// leaked can hold this command forever: past [`TEST_LIMIT`] the group is killed and the run
/// fails; once `cargo test` has exited, whatever is left of its group is killed after
/// [`DRAIN_LIMIT`], named, and counted as a failure (tests must clean up after themselves).
/// A group of its own no longer gets the terminal's Ctrl-C, so SIGINT and SIGTERM sent to this
/// command are passed on to it, and the run stops.
fn run_counting(cmd: &mut Command) -> anyhow::Result<(u64, u64)> {
    eprintln!("xtask: $ {}", show(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start `{}`", show(cmd)))?;
    let group = libc::pid_t::try_from(child.id()).context("pid")?;
    let _interrupts = PassInterrupts::install();
    let stdout = child.stdout.take().context("no stdout")?;
    let reader = std::thread::spawn(move || count_results(stdout));
    let started = Instant::now();
    let mut interrupted = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if !interrupted && INTERRUPTED.load(Ordering::SeqCst) {
            interrupted = true;
            // SAFETY: kill(2) has no memory preconditions; the negative pid names the group
            // this command created for `cargo test`.
            unsafe { libc::kill(-group, libc::SIGINT) };
        }
        if started.elapsed() > TEST_LIMIT {
            kill_group(group);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if interrupted {
        std::thread::sleep(DRAIN_LIMIT);
        kill_group(group);
        bail!("interrupted");
    }
    let exited = Instant::now();
    while !reader.is_finished() && exited.elapsed() < DRAIN_LIMIT {
        std::thread::sleep(Duration::from_millis(50));
    }
    let leaked = if reader.is_finished() {
        Vec::new()
    } else {
        let leaked = group_members(group);
        kill_group(group);
        leaked
    };
    let (passed, mut failed) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the output reader panicked"))??;
    let Some(status) = status else {
        bail!(
            "`{}` ran longer than {} minutes and was stopped: a test hangs",
            show(cmd),
            TEST_LIMIT.as_secs() / 60
        );
    };
    if !leaked.is_empty() {
        eprintln!(
            "xtask: processes started by the tests outlived them and were killed: {}",
            leaked.join("; ")
        );
        failed += 1;
    }
    if !status.success() && failed == 0 {
        bail!(
            "`{}` failed ({status}) before reporting test results",
            show(cmd)
        );
    }
    Ok((passed, failed))
}

/// Echo `cargo test`'s output and add up its `test result:` lines: (passed, failed).
fn count_results(stdout: impl std::io::Read) -> anyhow::Result<(u64, u64)> {
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
    Ok((passed, failed))
}

/// Set by SIGINT or SIGTERM while `cargo test` runs ([`PassInterrupts`]).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM only set [`INTERRUPTED`] while this lives (the run loop passes them on);
/// dropping it restores the default actions.
struct PassInterrupts;

impl PassInterrupts {
    fn install() -> Self {
        INTERRUPTED.store(false, Ordering::SeqCst);
        set_interrupt_action(on_interrupt as *const () as libc::sighandler_t);
        Self
    }
}

impl Drop for PassInterrupts {
    fn drop(&mut self) {
        set_interrupt_action(libc::SIG_DFL);
    }
}

/// Set the action of SIGINT and SIGTERM: [`on_interrupt`] or `SIG_DFL`.
fn set_interrupt_action(action: libc::sighandler_t) {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the only handler set here stores to an atomic, which is async-signal-safe;
        // `SIG_DFL` restores the default.
        unsafe { libc::signal(signal, action) };
    }
}

fn kill_group(group: libc::pid_t) {
    // SAFETY: kill(2) has no memory preconditions; a negative pid names the process group that
    // this command created for `cargo test`.
    unsafe { libc::kill(-group, libc::SIGKILL) };
}

/// "PID COMMAND" of every process still in `group`, from /proc.
fn group_members(group: libc::pid_t) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: libc::pid_t = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // Fields after the parenthesised name: state ppid pgrp ...
            let after = &stat[stat.rfind(')')? + 1..];
            let pgrp: libc::pid_t = after.split_whitespace().nth(2)?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (pgrp == group).then(|| format!("{pid} {}", cmdline.trim()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `run_counting` installs process-wide signal handlers: one test at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Ctrl-C (SIGINT) while the tests run reaches their process group, which no longer
    /// shares the terminal's: the run stops at once with "interrupted", its processes gone.
    #[test]
    fn an_interrupt_stops_the_tests_and_their_group() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let started = Instant::now();
        let run = std::thread::spawn(|| {
            run_counting(Command::new("sh").args(["-c", "sleep 60 & sleep 60"]))
        });
        // Interrupt only once the handler is in place (SIGINT in SigCgt, the caught signals),
        // or the default action would end this test process.
        let caught = || {
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|status| {
                    status.lines().find_map(|l| {
                        l.strip_prefix("SigCgt:")
                            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                    })
                })
                .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
        };
        while !caught() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no handler installed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: kill(2) on this process; the handler only sets a flag.
        unsafe { libc::kill(libc::getpid(), libc::SIGINT) };
        let result = run.join().expect("the run did not panic");
        assert!(
            result
                .as_ref()
                .is_err_and(|e| e.to_string().contains("interrupted")),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the interrupted run took {:?}",
            started.elapsed()
        );
    }

    /// A process that outlives the command and holds its output (here a `sleep` in the
    /// background) is killed and counted as a failure, instead of holding the run forever.
    #[test]
    fn a_leaked_process_neither_holds_the_run_nor_passes() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let started = Instant::now();
        let (passed, failed) = run_counting(Command::new("sh").args([
            "-c",
            "echo 'test result: ok. 3 passed; 0 failed; 0 ignored'; sleep 600 &",
        ]))
        .expect("runs");
        assert_eq!((passed, failed), (3, 1));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the leaked sleep held the run for {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_clean_run_counts_its_results() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (passed, failed) = run_counting(Command::new("sh").args([
            "-c",
            "echo 'test result: FAILED. 2 passed; 1 failed; 0 ignored'; echo 'test result: ok. 4 passed; 0 failed'",
        ]))
        .expect("runs");
        assert_eq!((passed, failed), (6, 1));
    }
}
