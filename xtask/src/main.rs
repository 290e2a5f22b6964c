//! `cargo xtask`: project tasks. One subcommand per module.

mod bench;
mod demo;
mod setup;
mod test;
mod util;
mod vm_test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Project tasks for enforcer.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the build and a command need (idempotent; run as root).
    Setup {
        /// Install only what this command needs (default: everything `test` needs).
        #[arg(long = "for", value_enum, default_value = "test")]
        purpose: setup::Purpose,
    },
    /// Setup if needed, then fmt, clippy and every test.
    Test,
    /// Show the enforcer on network namespaces with examples/policy.toml.
    Demo,
    /// Run the kernel-level tests inside QEMU on Debian 12's 6.1 and 6.12 kernels.
    VmTest {
        /// `6.1`, `6.12` or a path to a vmlinuz; repeatable (default: 6.1 and 6.12).
        #[arg(long = "kernel")]
        kernels: Vec<String>,
    },
    /// Measure per-packet cost, load time and memory; a full run rewrites BENCHMARKS.md.
    Bench {
        /// A few seconds' smoke run (part of `test`); writes only target/bench.
        #[arg(long)]
        quick: bool,
        /// Run only these sections (comma-separated: per-packet, load, memory, scale, e2e);
        /// BENCHMARKS.md keeps the other sections of its previous run, marked as such.
        #[arg(long, value_name = "SECTIONS")]
        only: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup { purpose } => setup::run(purpose),
        Command::Test => test::run(),
        Command::Demo => demo::run(),
        Command::Bench { quick, only } => bench::run(quick, only.as_deref()),
        Command::VmTest { kernels } => vm_test::run(&kernels),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
