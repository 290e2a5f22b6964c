//! `cargo xtask`: project tasks. One subcommand per module.

mod bench;
mod demo;
mod package;
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
    /// Measure the maps' kernel memory at 1M SIMs and 2M sessions inside QEMU (Debian 12's
    /// 6.12) with each vCPU count.
    VmMemory {
        /// vCPUs; repeatable (default: 2 and 16).
        #[arg(long = "cpus")]
        cpus: Vec<u32>,
    },
    /// Measure per-packet cost, load time and memory; a full run rewrites BENCHMARKS.md.
    Bench {
        /// A few seconds' smoke run (part of `test`); writes only target/bench.
        #[arg(long)]
        quick: bool,
        /// Run only these sections (comma-separated: per-packet, load, memory, scale, e2e, daemon,
        /// export, deny, identity);
        /// BENCHMARKS.md keeps the other sections of its previous run, marked as such.
        #[arg(long, value_name = "SECTIONS")]
        only: Option<String>,
    },
    /// Build target/debian/enforcer_<version>_<arch>.deb (release build, systemd unit,
    /// conffiles in /etc).
    Package {
        /// Package this binary instead of building a release one (tests use a debug build).
        #[arg(long, value_name = "PATH")]
        binary: Option<std::path::PathBuf>,
        /// Where to write the .deb (default target/debian).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<std::path::PathBuf>,
        /// dpkg-deb's compressor: xz (default, smallest), gzip or none (fastest, for tests).
        #[arg(long, value_name = "TYPE", default_value = "xz")]
        compression: package::Compression,
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
        Command::VmMemory { cpus } => vm_test::memory(&cpus),
        Command::Package {
            binary,
            out_dir,
            compression,
        } => package::run(binary.as_deref(), out_dir.as_deref(), compression).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
