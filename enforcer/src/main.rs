//! `enforcer`: the daemon (`run`) and its CLI: offline policy tools (`policy
//! check|replay|diff|explain`) and clients of the running daemon (`status`, `stats`, `policy
//! apply`, `sim`), plus `detach`.

mod cli;

use enforcer_common::session::Timeouts;
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use aya::programs::XdpMode;
use clap::{Parser, Subcommand, ValueEnum};
use enforcer::{
    capacity::{self, Limits},
    compile::Compiled,
    control,
    loader::Capacity,
    policy::{self, SimState, ValidatedPolicy},
    runtime,
};

const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/enforcer";
const DEFAULT_STORE_DIR: &str = "/var/lib/enforcer";

/// Zero Trust packet enforcement for cellular IoT fleets, in XDP.
#[derive(Parser)]
#[command(name = "enforcer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon: load a policy, attach to interfaces and enforce; reload on SIGHUP; stop on
    /// SIGTERM/SIGINT, leaving enforcement pinned (see `detach`).
    Run(Box<RunArgs>),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show per-SIM, per-segment and per-rule counters of the running daemon.
    Stats(StatsArgs),
    /// Show the running daemon's live sessions: addresses, ports, protocol, state, age, packets
    /// and bytes each way, and the rule that allowed each.
    Flows(StatsArgs),
    /// A live view of the running daemon, refreshed every second: the busiest SIMs, the most
    /// denied ones with their drop reasons, each segment's totals. Keys: `s` sort, `/` filter
    /// by IMSI prefix or segment, `q` quit. `--once` prints one snapshot instead.
    Top(TopArgs),
    /// Show what the running daemon has loaded and attached.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Look at or act on one SIM of the running daemon.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Remove the enforcement a stopped daemon left pinned: detach every interface and remove
    /// the program and maps (counters are lost).
    Detach {
        /// Pin directory of the daemon.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
}

/// Where the running daemon listens.
#[derive(clap::Args)]
struct SocketArg {
    /// Control socket of the running daemon.
    #[arg(long, env = "ENFORCER_SOCKET", default_value = control::DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,
}

#[derive(Subcommand)]
enum SimCommand {
    /// A SIM's segment, state, addresses and counters.
    Show(SimArgs),
    /// Drop every packet of the SIM from the next one on, until `sim release`; survives policy
    /// reloads.
    Quarantine(SimArgs),
    /// Lift a quarantine set with `sim quarantine` (one the policy file sets stays).
    Release(SimArgs),
    /// Bind an address to the SIM in place of its policy file's address of that family (an
    /// IPv4 address, or an IPv6 address or /64 prefix); survives reloads and restarts.
    Bind {
        #[command(flatten)]
        sim: SimArgs,
        /// The address.
        address: String,
    },
    /// Remove the SIM's run-time bindings (only ADDRESS's, if given): its policy file's
    /// addresses apply again.
    Unbind {
        #[command(flatten)]
        sim: SimArgs,
        /// The binding to remove.
        address: Option<String>,
    },
    /// IMEI lock: forget the device a `learn` lock learned and lift an `imei_mismatch`
    /// state; the next data session's device is learned (a device replaced on purpose).
    ImeiReset(SimArgs),
    /// IMEI lock: set the SIM's lock in place of the policy's (an IMEI, `tac:NNNNNNNN`,
    /// `learn` or `off`), or with no LOCK go back to the policy's; the device of its last
    /// session is judged against it at once.
    ImeiLock {
        #[command(flatten)]
        sim: SimArgs,
        /// The lock.
        lock: Option<String>,
    },
}

#[derive(clap::Args)]
struct SimArgs {
    /// IMSI (15 digits).
    imsi: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    socket: SocketArg,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Settings file (TOML): each key a flag of `run` without its dashes (`policy`, `iface`,
    /// `pin-dir`, `udp-timeout`, ...), an array for a repeatable flag; flags given on the
    /// command line win. See README.md, "Running as a service".
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Policy file (TOML).
    #[arg(long, value_name = "FILE", required_unless_present = "config")]
    policy: Option<PathBuf>,
    #[command(flatten)]
    input: InputArgs,
    /// Interface to attach to, with its role: `core:IF` faces the packet core (device traffic
    /// enters here: sources outside every pool and `core_sources`, and frames that are not IP,
    /// are dropped; a packet toward a device is never a reply here), `service:IF` faces the
    /// services (a pool source arriving here is spoofed). A plain `IF` has no role and is
    /// judged by addresses alone. Repeat for each gateway interface.
    #[arg(
        long = "iface",
        value_name = "[ROLE:]IF",
        required_unless_present = "config",
        value_parser = parse_iface
    )]
    ifaces: Vec<IfaceArg>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = Mode::Native)]
    xdp_mode: Mode,
    /// How packets that pass reach their next hop: `stack` (the kernel's IP forwarding, with
    /// netfilter and qdiscs) or `xdp` (routed by the kernel's FIB with `bpf_fib_lookup` and
    /// redirected to the egress interface in XDP, skipping the stack: faster, but the
    /// gateway's own netfilter FORWARD rules, conntrack, NAT and egress qdiscs never see
    /// those packets). With `xdp`, a packet the FIB cannot finish (neighbour not resolved
    /// yet, local destination, TTL expiring, too big for the egress MTU, an egress interface
    /// not given with `--iface`) goes to the stack as with `stack`.
    #[arg(long, value_enum, default_value_t = Forward::Stack)]
    forward: Forward,
    /// The older spelling of `--iface core:IF` for an interface given with `--iface IF`;
    /// repeatable.
    #[arg(long = "drop-non-pool", value_name = "IF")]
    drop_non_pool: Vec<String>,
    #[command(flatten)]
    timeouts: TimeoutArgs,
    /// Where the program, its links and maps are pinned (on bpffs); one daemon per directory.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Control socket the CLI talks to (created mode 0600).
    #[arg(long, env = "ENFORCER_SOCKET", default_value = control::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The daemon's store (SQLite, created 0600): stable ids and quarantines by command.
    /// Default: /var/lib/enforcer/<name of the pin directory>.db, one per pin directory, as the
    /// ids number the pinned maps' slots.
    #[arg(long, value_name = "FILE")]
    store: Option<PathBuf>,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    ipfix: IpfixArgs,
    /// Serve Prometheus metrics at `http://ADDR:PORT/metrics` (e.g. 127.0.0.1:9464); off when
    /// not given. No per-SIM series: per-SIM data goes through IPFIX and `enforcer stats`.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_address: Option<std::net::SocketAddr>,
    /// Write deny events (one JSON object per line: time, IMSI, MSISDN, segment, addresses,
    /// ports, protocol, reason, interface, suppressed count) to FILE, appended to, or to
    /// stdout with `-`. At most 10 events per SIM and second; the rest are counted and the
    /// count carried in the SIM's next event.
    #[arg(long, value_name = "FILE")]
    deny_events: Option<PathBuf>,
    /// Write alerts (deny rate, spoofed sources, new destinations, bursts, with thresholds per
    /// segment in the policy's `alerts`; IMEI mismatches) as JSON lines to FILE, appended to,
    /// or to stdout with `-`.
    #[arg(long, value_name = "FILE")]
    alerts: Option<PathBuf>,
    /// POST each alert as JSON to this `http://` or `https://` URL (retried 4 times over
    /// about 4 s; a queue of 1,024 alerts, the rest dropped and counted).
    #[arg(long, value_name = "URL", value_parser = parse_webhook)]
    alert_webhook: Option<String>,
    /// Take RADIUS accounting (RFC 2866) from the PGW/SMFs listed in FILE, a TOML file of
    /// `[[clients]]` with `name`, `address` (an IP address or prefix) and `secret` (keep it
    /// mode 0600): Start and Interim-Update bind the device's address to the SIM of the
    /// 3GPP-IMSI, Stop unbinds it. Off when not given.
    #[arg(long, value_name = "FILE")]
    radius_clients: Option<PathBuf>,
    /// Where to receive RADIUS accounting (UDP). Give the address the PGW/SMF sends to, so
    /// that responses leave from it on a host with several.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:1813")]
    radius_listen: std::net::SocketAddr,
    /// Serve the REST API for connectivity-management platforms at `http(s)://ADDR:PORT`
    /// (OpenAPI document at /openapi.json); off when not given. Needs --api-token-file.
    #[arg(long, value_name = "ADDR:PORT", requires = "api_token_file")]
    api_address: Option<std::net::SocketAddr>,
    /// File holding the REST API's bearer token (its first line, at least 16 characters;
    /// keep the file mode 0600). Every request but /openapi.json must send
    /// `Authorization: Bearer TOKEN`.
    #[arg(long, value_name = "FILE", requires = "api_address")]
    api_token_file: Option<PathBuf>,
    /// Serve the REST API over TLS with this PEM certificate chain (with --api-tls-key).
    #[arg(long, value_name = "FILE", requires_all = ["api_address", "api_tls_key"])]
    api_tls_cert: Option<PathBuf>,
    /// The PEM private key of --api-tls-cert.
    #[arg(long, value_name = "FILE", requires_all = ["api_address", "api_tls_cert"])]
    api_tls_key: Option<PathBuf>,
}

/// The REST API's settings: the token read from its file.
fn api_settings(args: &RunArgs) -> anyhow::Result<Option<runtime::Api>> {
    let (Some(address), Some(token_file)) = (args.api_address, &args.api_token_file) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(token_file).with_context(|| {
        format!(
            "cannot read the REST API token from --api-token-file {}",
            token_file.display()
        )
    })?;
    let token = text.lines().next().unwrap_or_default().trim().to_owned();
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!(
            "--api-token-file {}: the token (its first line) must be at least 16 characters \
             without spaces; generate one with `openssl rand -hex 32`",
            token_file.display()
        );
    }
    Ok(Some(runtime::Api {
        address,
        token,
        tls: args.api_tls_cert.clone().zip(args.api_tls_key.clone()),
    }))
}

/// An alert webhook: an `http://` or `https://` URL.
fn parse_webhook(text: &str) -> Result<String, String> {
    if (text.starts_with("http://") || text.starts_with("https://"))
        && text.len() > "https://".len()
        && !text.chars().any(char::is_whitespace)
    {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is no http:// or https:// URL; give one, e.g. https://alerts.example/hook"
        ))
    }
}

/// Flow export over IPFIX (RFC 7011, UDP).
#[derive(clap::Args)]
struct IpfixArgs {
    /// IPFIX collector to send per-device flow records to, `HOST[:PORT]` (port 4739, IANA's
    /// IPFIX port, when not given); repeat for several collectors, each sent every record.
    #[arg(long = "ipfix-collector", value_name = "HOST[:PORT]", value_parser = parse_collector)]
    ipfix_collectors: Vec<std::net::SocketAddr>,
    /// Export a flow still going on after this long (flowEndReason 2, active timeout).
    #[arg(long, value_name = "S", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    ipfix_active_timeout: u64,
    /// Export a flow idle this long (flowEndReason 1, idle timeout).
    #[arg(long, value_name = "S", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    ipfix_idle_timeout: u64,
    /// Send the templates again this often (RFC 7011 §8.4: over UDP they are re-sent, never
    /// withdrawn), so that a collector started late can decode the records.
    #[arg(long, value_name = "S", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    ipfix_template_refresh: u64,
    /// Observation domain id in every IPFIX message header.
    #[arg(long, value_name = "ID", default_value_t = 1)]
    ipfix_domain_id: u32,
    /// Records per second sent to each collector at most (0: no limit): the records due at a
    /// round are spread out rather than sent in one burst that overruns the collector's
    /// socket buffer; what waits stays counted in the kernel until the next round.
    #[arg(long, value_name = "RECORDS", default_value_t = 250_000)]
    ipfix_max_rate: u64,
    /// Path MTU toward the collectors, bytes: every message fits in one datagram.
    #[arg(long, value_name = "BYTES", default_value_t = 1500, value_parser = clap::value_parser!(u64).range(576..=65_535))]
    ipfix_mtu: u64,
}

impl IpfixArgs {
    fn export(&self) -> Option<runtime::Export> {
        (!self.ipfix_collectors.is_empty()).then(|| runtime::Export {
            collectors: self.ipfix_collectors.clone(),
            active_timeout: self.ipfix_active_timeout,
            idle_timeout: self.ipfix_idle_timeout,
            template_refresh: self.ipfix_template_refresh,
            domain: self.ipfix_domain_id,
            mtu: usize::try_from(self.ipfix_mtu).unwrap_or(1500),
            max_rate: self.ipfix_max_rate,
        })
    }
}

/// `HOST[:PORT]` of an IPFIX collector, resolved now (port 4739 when not given).
fn parse_collector(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    const IPFIX_PORT: u16 = 4739;
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return Ok((ip, IPFIX_PORT).into());
    }
    let with_port = if text
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        text.to_owned()
    } else {
        format!("{text}:{IPFIX_PORT}")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| {
            format!("cannot resolve `{text}` ({e}); give HOST[:PORT], e.g. 192.0.2.9:4739")
        })?
        .next()
        .ok_or_else(|| {
            format!("`{text}` resolves to no address; give HOST[:PORT], e.g. 192.0.2.9:4739")
        })
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
        /// Judge the packets as if they arrived on a `core` interface (`run --iface core:IF`).
        #[arg(long)]
        core_facing: bool,
        #[command(flatten)]
        input: InputArgs,
    },
    /// Validate a policy file and make it the running daemon's policy (what SIGHUP does for the
    /// file in force); an invalid one changes nothing.
    Apply {
        /// Policy file (TOML).
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show what changes between two policy files: SIMs, segments, rules, pools (exit status
    /// 0 same, 1 different, 2 error).
    Diff(cli::diff::DiffArgs),
    /// Explain the verdict on a packet (--from/--to) or what a SIM may reach (--imsi), under a
    /// policy file or, without FILE, under the running daemon's policy and overrides.
    Explain(cli::explain::ExplainArgs),
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
struct TopArgs {
    /// Print one snapshot (rates over `--interval`) and exit, without a terminal view.
    #[arg(long)]
    once: bool,
    /// With `--once`: print JSON.
    #[arg(long, requires = "once")]
    json: bool,
    /// Sort the busiest SIMs by this.
    #[arg(long, value_enum, default_value_t = cli::top::Sort::Packets)]
    sort: cli::top::Sort,
    /// Show only SIMs whose IMSI starts with this, or of this segment.
    #[arg(long, value_name = "IMSI-PREFIX|SEGMENT")]
    filter: Option<String>,
    /// Rows per table (`--once`; the view fits the terminal).
    #[arg(long, default_value_t = 20)]
    rows: usize,
    /// Seconds between readings.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    interval: f64,
    #[command(flatten)]
    socket: SocketArg,
}

#[derive(clap::Args)]
struct StatsArgs {
    /// Show only this SIM; repeatable.
    #[arg(long)]
    imsi: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    socket: SocketArg,
}

fn main() -> ExitCode {
    let given: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let argv = match cli::config::merged_args::<Cli>(given.clone()) {
        Ok(argv) => argv,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let from_file = argv.len() != given.len();
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(error) => {
            if from_file && error.use_stderr() {
                eprintln!(
                    "{}note: the value may come from the --config file (its keys are flags)",
                    error.render()
                );
                return ExitCode::from(2);
            }
            error.exit()
        }
    };
    // Log lines go to stderr from a thread of their own: a reader that stalls (a paused pipe,
    // a slow terminal) must not stall the daemon's actor, and with it every command. Up to
    // LOG_BACKLOG lines wait; past that they are dropped, never blocking. The guard flushes
    // what is queued when main returns.
    let (writer, _log_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_BACKLOG)
        .lossy(true)
        .thread_name("enforcer-log")
        .finish(LossyStderr);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(writer)
        // No colour codes in journald or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Run(args) => run(*args),
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
        Command::Policy(PolicyCommand::Apply { file, json, socket }) => {
            cli::daemon::apply(&socket.socket, &file, json)
        }
        Command::Stats(args) => cli::daemon::stats(&args.socket.socket, &args.imsi, args.json),
        Command::Status { json, socket } => cli::daemon::status(&socket.socket, json),
        Command::Flows(args) => cli::daemon::flows(&args.socket.socket, &args.imsi, args.json),
        Command::Top(args) => {
            let interval = Duration::from_secs_f64(args.interval.clamp(0.1, 3600.0));
            let view = cli::top::view(args.sort, args.filter, args.rows.max(1));
            if args.once {
                cli::top::once(&args.socket.socket, &view, interval, args.json)
            } else {
                cli::top::interactive(&args.socket.socket, view, interval)
            }
        }
        Command::Sim(command) => {
            use cli::daemon::SimAction;
            let (action, args) = match command {
                SimCommand::Show(args) => (SimAction::Show, args),
                SimCommand::Quarantine(args) => (SimAction::Quarantine, args),
                SimCommand::Release(args) => (SimAction::Release, args),
                SimCommand::Bind { sim, address } => (SimAction::Bind(address), sim),
                SimCommand::Unbind { sim, address } => (SimAction::Unbind(address), sim),
                SimCommand::ImeiReset(args) => (SimAction::ImeiReset, args),
                SimCommand::ImeiLock { sim, lock } => (SimAction::ImeiLock(lock), sim),
            };
            cli::daemon::sim(&args.socket.socket, &action, &args.imsi, args.json)
        }
        Command::Detach { pin_dir } => cli::detach::run(&pin_dir),
        Command::Policy(PolicyCommand::Diff(args)) => return cli::diff::run(&args),
        Command::Policy(PolicyCommand::Explain(args)) => cli::explain::run(&args),
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

/// Log lines that may wait for a stalled stderr before new ones are dropped (about 2 MB).
const LOG_BACKLOG: usize = 10_000;

/// Standard error that drops what cannot be written: a daemon must not die because whoever
/// read its log went away (tracing-subscriber reports a failed write with `eprintln!`, which
/// panics when stderr is a closed pipe).
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
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
    runtime::load_policy(path, options)
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
    let inbound_rules: usize = policy.segments.iter().map(|s| s.inbound.len()).sum();
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
        "  rules:       {} ({segment_rules} segment, {} SIM, {inbound_rules} inbound)",
        compiled.rules.len(),
        compiled.rules.len() - segment_rules - inbound_rules
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

/// Session idle timeouts, seconds (a session idle longer is removed by the daemon's sweep,
/// every 10 s).
#[derive(clap::Args)]
struct TimeoutArgs {
    /// A TCP session whose SYN got no answer.
    #[arg(long, value_name = "S", default_value_t = Timeouts::default().tcp_syn)]
    tcp_syn_timeout: u64,
    /// An answered TCP session (RFC 5382 REQ-5: at least 7,440 s).
    #[arg(long, value_name = "S", default_value_t = Timeouts::default().tcp_established)]
    tcp_established_timeout: u64,
    /// A TCP session after a FIN or an RST.
    #[arg(long, value_name = "S", default_value_t = Timeouts::default().tcp_closed)]
    tcp_closed_timeout: u64,
    /// A UDP session (RFC 4787 REQ-5: at least 120 s).
    #[arg(long, value_name = "S", default_value_t = Timeouts::default().udp)]
    udp_timeout: u64,
    /// An ICMP/ICMPv6 echo session.
    #[arg(long, value_name = "S", default_value_t = Timeouts::default().icmp)]
    icmp_timeout: u64,
}

impl TimeoutArgs {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            tcp_syn: self.tcp_syn_timeout,
            tcp_established: self.tcp_established_timeout,
            tcp_closed: self.tcp_closed_timeout,
            udp: self.udp_timeout,
            icmp: self.icmp_timeout,
        }
    }
}

/// `--forward`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Forward {
    /// The kernel's IP forwarding.
    Stack,
    /// `bpf_fib_lookup` and `XDP_REDIRECT`.
    Xdp,
}

/// One `--iface [ROLE:]IF`.
#[derive(Clone, Debug)]
struct IfaceArg {
    name: String,
    core: bool,
    service: bool,
}

/// `core:IF`, `service:IF` or `IF` (no role: judged by addresses alone). Linux interface
/// names never hold a `:`.
fn parse_iface(text: &str) -> Result<IfaceArg, String> {
    let (core, service, name) = match text.split_once(':') {
        None => (false, false, text),
        Some(("core", name)) => (true, false, name),
        Some(("service", name)) => (false, true, name),
        Some((role, _)) => {
            return Err(format!(
                "unknown interface role `{role}`; give `core:IF` for the interface facing the \
                 packet core, `service:IF` for one facing the services"
            ));
        }
    };
    if name.is_empty() || name.contains(':') {
        return Err(format!(
            "`{text}` names no interface; give `[ROLE:]IF`, e.g. `core:eth0`"
        ));
    }
    Ok(IfaceArg {
        name: name.to_owned(),
        core,
        service,
    })
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let api = api_settings(&args)?;
    let radius = match &args.radius_clients {
        Some(path) => Some(runtime::Radius {
            listen: args.radius_listen,
            clients: enforcer::bindings::radius::Clients::load(path).context("--radius-clients")?,
        }),
        None => None,
    };
    let config = args
        .config
        .as_ref()
        .map_or_else(String::new, |c| format!(", or set it in {}", c.display()));
    let Some(policy) = args.policy else {
        anyhow::bail!("no policy file: give --policy FILE{config}");
    };
    if args.ifaces.is_empty() {
        anyhow::bail!("no interface to attach to: give --iface [ROLE:]IF{config}");
    }
    let mut core_facing = args.drop_non_pool;
    core_facing.extend(
        args.ifaces
            .iter()
            .filter(|i| i.core)
            .map(|i| i.name.clone()),
    );
    let service_facing = args
        .ifaces
        .iter()
        .filter(|i| i.service)
        .map(|i| i.name.clone())
        .collect();
    runtime::run(runtime::Settings {
        service_facing,
        timeouts: args.timeouts.timeouts(),
        load: args.input.options(),
        policy,
        ifaces: args.ifaces.into_iter().map(|i| i.name).collect(),
        core_facing,
        xdp_forward: args.forward == Forward::Xdp,
        mode: match args.xdp_mode {
            Mode::Native => XdpMode::Driver,
            Mode::Skb => XdpMode::Skb,
        },
        store: args.store.unwrap_or_else(|| {
            let name = args
                .pin_dir
                .file_name()
                .map_or_else(|| "enforcer".into(), |n| n.to_string_lossy().into_owned());
            PathBuf::from(DEFAULT_STORE_DIR).join(format!("{name}.db"))
        }),
        pin_dir: args.pin_dir,
        socket: args.socket,
        limits: args.limits,
        export: args.ipfix.export(),
        metrics: args.metrics_address,
        deny_events: args.deny_events,
        alerts: args.alerts,
        alert_webhook: args.alert_webhook,
        radius,
        api,
    })
}
