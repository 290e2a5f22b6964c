//! `enforcer`: the daemon (`run`) and its CLI (`policy check`, `policy replay`, `stats`).

mod cli;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use aya::programs::XdpMode;
use clap::{Parser, Subcommand, ValueEnum};
use enforcer::{
    capacity::{self, Limits},
    compile::{self, Compiled},
    counters::Totals,
    loader::{Capacity, Enforcer},
    pins::PinDir,
    policy::{self, SimState, ValidatedPolicy},
    privileges,
    report::{Report, State},
};
use enforcer_common::maps::IFACE_DROP_NON_POOL;
use tracing::{error, info, warn};

const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/enforcer";
const DEFAULT_STATE_FILE: &str = "/run/enforcer/state.json";

/// Zero Trust packet enforcement for cellular IoT fleets, in XDP.
#[derive(Parser)]
#[command(name = "enforcer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a policy, attach to interfaces and enforce until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show per-SIM, per-segment and per-rule counters of a running enforcer.
    Stats(StatsArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Policy file (TOML).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    #[command(flatten)]
    input: InputArgs,
    /// Interface to attach to; repeat for each gateway interface.
    #[arg(long = "iface", value_name = "IF", required = true)]
    ifaces: Vec<String>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = Mode::Native)]
    xdp_mode: Mode,
    /// Drop traffic from outside every pool arriving on this interface (a dedicated
    /// core-facing link); repeatable.
    #[arg(long = "drop-non-pool", value_name = "IF")]
    drop_non_pool: Vec<String>,
    /// Where the maps are pinned (on bpffs) for `enforcer stats`.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Where the names behind map indices are written for `enforcer stats`.
    #[arg(long, default_value = DEFAULT_STATE_FILE)]
    state_file: PathBuf,
    #[command(flatten)]
    limits: Limits,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Driver (native) XDP.
    Native,
    /// Generic XDP in the kernel stack; works on any interface.
    Skb,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file and print what it would load.
    Check {
        /// Policy file (TOML).
        file: PathBuf,
        /// Also print every map entry it compiles to.
        #[arg(long)]
        dump: bool,
        #[command(flatten)]
        input: InputArgs,
        /// The capacities `run` would be given.
        #[command(flatten)]
        limits: Limits,
    },
    /// Judge every packet of a pcap or pcapng capture with the real XDP program loaded with a
    /// policy (nothing attached, nothing pinned; needs CAP_BPF and CAP_NET_ADMIN).
    Replay {
        /// Policy file (TOML).
        policy: PathBuf,
        /// Capture file (pcap or pcapng; Ethernet, raw IP or Linux cooked link type).
        capture: PathBuf,
        /// Print one JSON object per packet, then one with the summary.
        #[arg(long)]
        json: bool,
        /// Judge the packets as if they arrived on a core-facing interface (`--drop-non-pool`).
        #[arg(long)]
        core_facing: bool,
        #[command(flatten)]
        input: InputArgs,
    },
}

/// How policy files are read (`policy::LoadOptions`).
#[derive(clap::Args)]
struct InputArgs {
    /// Also allow an inventory in DIR (by default only inside the policy file's directory);
    /// repeatable.
    #[arg(long = "inventory-dir", value_name = "DIR")]
    inventory_dirs: Vec<PathBuf>,
    /// Largest policy or inventory file read, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = policy::source::DEFAULT_MAX_FILE_BYTES)]
    max_file_size: u64,
}

impl InputArgs {
    fn options(&self) -> policy::LoadOptions {
        policy::LoadOptions {
            max_file_bytes: self.max_file_size,
            inventory_dirs: self.inventory_dirs.clone(),
        }
    }
}

#[derive(clap::Args)]
struct StatsArgs {
    /// Show only this SIM; repeatable.
    #[arg(long)]
    imsi: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Pin directory of the running enforcer.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// State file of the running enforcer.
    #[arg(long, default_value = DEFAULT_STATE_FILE)]
    state_file: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // No colour codes in journald or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Policy(PolicyCommand::Check {
            file,
            dump,
            input,
            limits,
        }) => check(&file, dump, &input.options(), &limits),
        Command::Policy(PolicyCommand::Replay {
            policy,
            capture,
            json,
            core_facing,
            input,
        }) => load_policy(&policy, &input.options()).and_then(|(validated, compiled)| {
            cli::replay::run(
                &policy,
                validated.sims.len(),
                &compiled,
                &capture,
                json,
                core_facing,
            )
        }),
        Command::Stats(args) => stats(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn load_policy(
    path: &Path,
    options: &policy::LoadOptions,
) -> anyhow::Result<(ValidatedPolicy, Compiled)> {
    let policy = policy::load_with(path, options)?;
    let compiled = compile::compile_fresh(&policy)
        .with_context(|| format!("compiling {} failed", path.display()))?;
    Ok((policy, compiled))
}

fn check(
    path: &Path,
    dump: bool,
    options: &policy::LoadOptions,
    limits: &Limits,
) -> anyhow::Result<()> {
    let (policy, compiled) = load_policy(path, options)?;
    let image = &compiled.image;
    let v4_pools = policy.pools.iter().filter(|p| p.is_ipv4()).count();
    let quarantined = policy
        .sims
        .iter()
        .filter(|s| s.state == SimState::Quarantined)
        .count();
    let segment_rules: usize = policy.segments.iter().map(|s| s.rules.len()).sum();
    let mut out = std::io::stdout().lock();
    let rules = compiled.rules.len();
    let capacity = Capacity::for_policy(image, rules, limits);
    let fits = capacity.check(image, rules);
    let status = if fits.is_ok() {
        "OK"
    } else {
        "valid, but too large for the maps"
    };
    writeln!(out, "{}: {status}", path.display())?;
    writeln!(
        out,
        "  pools:       {} ({v4_pools} IPv4, {} IPv6)",
        policy.pools.len(),
        policy.pools.len() - v4_pools
    )?;
    writeln!(out, "  segments:    {}", policy.segments.len())?;
    writeln!(
        out,
        "  SIMs:        {} ({} active, {quarantined} quarantined)",
        policy.sims.len(),
        policy.sims.len() - quarantined
    )?;
    writeln!(
        out,
        "  rules:       {} ({segment_rules} segment, {} SIM)",
        compiled.rules.len(),
        compiled.rules.len() - segment_rules
    )?;
    writeln!(
        out,
        "  map entries: SIM_V4_V2 {}, SIM_V6_V2 {}, NET_V4 {}, NET_V6 {}, SEGMENTS {}, PORT_RULES {}, \
         RULES_V2 {} ({} total)",
        image.sims_v4.len(),
        image.sims_v6.len(),
        image.nets_v4.len(),
        image.nets_v6.len(),
        image.segments.len(),
        image.single_port_rules(true).count(),
        image.single_port_rules(false).count(),
        image.entry_count()
    )?;
    let cpus = capacity::possible_cpus();
    write!(out, "{}", capacity::table(&capacity, image, rules, cpus))?;
    if dump {
        write!(out, "{}", image.dump())?;
    }
    fits.with_context(|| format!("`enforcer run` could not load {}", path.display()))?;
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let (policy, compiled) = load_policy(&args.policy, &args.input.options())?;
    privileges::require_bpf("enforcer run").map_err(anyhow::Error::msg)?;
    if let Some(iface) = args.drop_non_pool.iter().find(|i| !args.ifaces.contains(i)) {
        bail!("--drop-non-pool {iface} names an interface that is not given with --iface");
    }
    if let Some((i, iface)) = args
        .ifaces
        .iter()
        .enumerate()
        .find(|(i, iface)| args.ifaces[..*i].contains(iface))
    {
        bail!(
            "--iface {iface} is given twice (the {} time); give each interface once",
            i + 1
        );
    }
    let mut ifindexes = Vec::new();
    for iface in &args.ifaces {
        let index = nix_if_nametoindex(iface)
            .with_context(|| format!("no network interface named `{iface}`; check `ip link`"))?;
        ifindexes.push(index);
    }

    let capacity = Capacity::for_policy(&compiled.image, compiled.rules.len(), &args.limits);
    capacity
        .check(&compiled.image, compiled.rules.len())
        .with_context(|| format!("{} does not fit the maps", args.policy.display()))?;
    let pins = PinDir::claim(&args.pin_dir)?;
    let started = start(&args, &policy, &compiled, capacity, &ifindexes);
    let (mut enforcer, state) = match started {
        Ok(started) => started,
        Err(err) => {
            // Leave nothing behind that this start created; a previous run's pins stay.
            pins.remove_created();
            return Err(err);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    let (policy, compiled, state) = runtime.block_on(enforce_until_stopped(
        &args,
        &mut enforcer,
        (policy, compiled, state),
    ))?;

    let totals = Totals::read(
        enforcer
            .map(enforcer_common::maps::names::SIM_STATS)
            .context("SIM_STATS missing")?,
        enforcer
            .map(enforcer_common::maps::names::VERDICT_STATS)
            .context("VERDICT_STATS missing")?,
        enforcer
            .map(enforcer_common::maps::names::RULE_STATS)
            .context("RULE_STATS missing")?,
        policy.sims.len(),
        compiled.rules.len(),
    )
    .context("reading counters")?;
    print!("{}", Report::new(&state, &totals, &[]).to_table());
    enforcer.detach_all()?;
    info!("Detached XDP program.");
    if let Err(err) = enforcer.unpin() {
        warn!(error = %err, pin_dir = %args.pin_dir.display(), "Could not remove pins.");
    }
    if let Err(err) = std::fs::remove_file(&args.state_file) {
        warn!(error = %err, "Could not remove the state file.");
    }
    Ok(())
}

/// Load, fill, attach and write the state file: every step of `run` that can fail after the
/// pin directory is claimed.
fn start(
    args: &RunArgs,
    policy: &ValidatedPolicy,
    compiled: &Compiled,
    capacity: Capacity,
    ifindexes: &[u32],
) -> anyhow::Result<(Enforcer, State)> {
    let mut enforcer = Enforcer::load(capacity, Some(&args.pin_dir))?;
    let report = enforcer.apply(&compiled.image)?;
    info!(
        policy = %args.policy.display(),
        sims = policy.sims.len(),
        rules = compiled.rules.len(),
        generation = report.generation,
        entries_written = report.entries_written,
        write_ms = report.write_time.as_millis(),
        verified_insns = enforcer.verified_instructions().unwrap_or(0),
        "Loaded policy."
    );
    for (iface, index) in args.ifaces.iter().zip(ifindexes) {
        let flags = if args.drop_non_pool.contains(iface) {
            IFACE_DROP_NON_POOL
        } else {
            0
        };
        enforcer.set_iface(*index, flags)?;
    }
    let mode = match args.xdp_mode {
        Mode::Native => XdpMode::Driver,
        Mode::Skb => XdpMode::Skb,
    };
    for iface in &args.ifaces {
        if let Err(err) = enforcer.attach(iface, mode) {
            // Detach what did attach: a failed start enforces nothing half-way.
            let _ = enforcer.detach_all();
            return Err(err.into());
        }
        info!(iface = %iface, mode = ?mode, "Attached XDP program.");
    }
    let state = State::new(policy, compiled, &args.pin_dir);
    if let Err(err) = state.write(&args.state_file) {
        let _ = enforcer.detach_all();
        return Err(anyhow::Error::new(err)
            .context(format!("writing state file {}", args.state_file.display())));
    }
    Ok((enforcer, state))
}

/// The policy being enforced, its compilation and the names written for `stats`.
type Loaded = (ValidatedPolicy, Compiled, State);

/// Enforce until SIGINT or SIGTERM; on SIGHUP read the policy file again and apply it (see
/// [`reload`]). Returns the policy in force at the end.
async fn enforce_until_stopped(
    args: &RunArgs,
    enforcer: &mut Enforcer,
    mut loaded: Loaded,
) -> anyhow::Result<Loaded> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    info!("Enforcing; reload the policy with SIGHUP, stop with SIGINT or SIGTERM.");
    loop {
        tokio::select! {
            _ = term.recv() => {
                info!("SIGTERM received, shutting down.");
                return Ok(loaded);
            }
            _ = int.recv() => {
                info!("SIGINT received, shutting down.");
                return Ok(loaded);
            }
            _ = hup.recv() => match reload(args, enforcer) {
                Ok(new) => loaded = new,
                Err(err) => error!(
                    policy = %args.policy.display(),
                    error = format!("{err:#}"),
                    "Reload failed; still enforcing the previous policy."
                ),
            },
        }
    }
}

/// Read, validate and compile the policy file again, check it fits the loaded maps, and apply
/// it to the running program: the new generation is filled, then one write switches to it (the
/// program stays attached, so there is no moment without enforcement). A policy that fails
/// validation, compilation or the capacity check changes nothing.
fn reload(args: &RunArgs, enforcer: &mut Enforcer) -> anyhow::Result<Loaded> {
    let (policy, compiled) = load_policy(&args.policy, &args.input.options())?;
    enforcer
        .capacity()
        .check(&compiled.image, compiled.rules.len())
        .with_context(|| {
            format!(
                "{} does not fit the maps loaded at start; restart with larger capacities",
                args.policy.display()
            )
        })?;
    let report = enforcer.apply(&compiled.image)?;
    // The new policy is in force from here on; a state file that cannot be written only leaves
    // `stats` with the old names, which is worth a warning, not a failed reload.
    let state = State::new(&policy, &compiled, &args.pin_dir);
    if let Err(err) = state.write(&args.state_file) {
        warn!(
            error = %err,
            state_file = %args.state_file.display(),
            "Policy reloaded, but the state file for `enforcer stats` could not be written."
        );
    }
    info!(
        policy = %args.policy.display(),
        sims = policy.sims.len(),
        rules = compiled.rules.len(),
        generation = report.generation,
        sims_added = report.sims_added,
        sims_removed = report.sims_removed,
        sims_changed = report.sims_changed,
        rule_entries_changed = report.rule_entries_changed,
        entries_written = report.entries_written,
        bindings_deleted = report.bindings_deleted,
        write_ms = report.write_time.as_millis(),
        "Reloaded policy."
    );
    Ok((policy, compiled, state))
}

fn nix_if_nametoindex(name: &str) -> anyhow::Result<u32> {
    let name = std::ffi::CString::new(name).context("interface name contains a NUL byte")?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(index)
}

fn stats(args: &StatsArgs) -> anyhow::Result<()> {
    let state = State::read(&args.state_file).with_context(|| {
        format!(
            "reading {}; is `enforcer run` running (with the same --state-file)?",
            args.state_file.display()
        )
    })?;
    for imsi in &args.imsi {
        if !state.has_imsi(imsi) {
            bail!(
                "IMSI {imsi} is not in the loaded policy ({})",
                state.policy.display()
            );
        }
    }
    let totals = Totals::read_pinned(&args.pin_dir, state.sims.len(), state.rules.len())
        .with_context(|| {
            format!(
                "reading counters pinned in {}; is `enforcer run` running?",
                args.pin_dir.display()
            )
        })?;
    let report = Report::new(&state, &totals, &args.imsi);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.to_table())?;
    }
    Ok(())
}
