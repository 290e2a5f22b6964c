//! `enforcer run`: check everything that can be checked before touching the kernel, claim the
//! pin directory, load (adopting pinned maps, links and program), attach, then serve until a
//! stop signal.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use aya::programs::XdpMode;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::daemon::{Daemon, Event, Iface, Loaded, compile_with};
use crate::{
    capacity::Limits,
    compile::{self, Compiled},
    control::unix,
    links::{self, How},
    loader::{Capacity, Enforcer},
    pins::PinDir,
    policy::{self, LoadOptions, ValidatedPolicy},
    privileges,
    store::Store,
};

/// How often the actor checks that every interface still runs its link, besides the check on
/// every rtnetlink link event: a safety net should the netlink socket overflow and drop events
/// (ENOBUFS) or fail to open.
const LINK_CHECK: Duration = Duration::from_secs(5);

/// How often idle and closed sessions are removed (on a blocking thread; the program never
/// waits for it): the shortest default timeout is 10 s, so a closed session goes within 20 s.
const SESSION_SWEEP: Duration = Duration::from_secs(10);

/// Everything `enforcer run` is told on its command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Policy file.
    pub policy: PathBuf,
    /// How policy files are read.
    pub load: LoadOptions,
    /// Interfaces to attach to, in order.
    pub ifaces: Vec<String>,
    /// Of those, the ones facing the packet core (`IFACE_DROP_NON_POOL`).
    pub core_facing: Vec<String>,
    /// Of those, the ones facing the services (`IFACE_SERVICE`).
    pub service_facing: Vec<String>,
    /// XDP mode for links this daemon creates.
    pub mode: XdpMode,
    /// Forward passed packets in XDP (`--forward xdp`: `bpf_fib_lookup` and a redirect)
    /// rather than through the kernel's stack.
    pub xdp_forward: bool,
    /// Pin directory on bpffs.
    pub pin_dir: PathBuf,
    /// Control socket.
    pub socket: PathBuf,
    /// The daemon's store (SQLite): stable ids and overrides.
    pub store: PathBuf,
    /// Map capacities.
    pub limits: Limits,
    /// Session idle timeouts.
    pub timeouts: enforcer_common::session::Timeouts,
    /// Flow export, if any collector is given.
    pub export: Option<Export>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// Where to write deny events (`-`: stdout), if anywhere.
    pub deny_events: Option<PathBuf>,
    /// Where to write alerts (`-`: stdout), if anywhere.
    pub alerts: Option<PathBuf>,
    /// Where to POST alerts, if anywhere.
    pub alert_webhook: Option<String>,
    /// RADIUS accounting, if clients are given.
    pub radius: Option<Radius>,
    /// The REST API, if an address is given.
    pub api: Option<Api>,
}

/// REST API settings (`--api-*`).
#[derive(Clone)]
pub struct Api {
    /// Where to listen (TCP).
    pub address: std::net::SocketAddr,
    /// The bearer token clients must send.
    pub token: String,
    /// TLS certificate chain and private key (PEM files), if TLS is on.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("address", &self.address)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// RADIUS accounting settings (`--radius-*`).
#[derive(Clone, Debug)]
pub struct Radius {
    /// Where to listen (UDP).
    pub listen: std::net::SocketAddr,
    /// Who may send, with their secrets.
    pub clients: crate::bindings::radius::Clients,
}

/// Flow export settings (`--ipfix-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// Collectors.
    pub collectors: Vec<std::net::SocketAddr>,
    /// Active timeout, seconds.
    pub active_timeout: u64,
    /// Idle timeout, seconds.
    pub idle_timeout: u64,
    /// Template refresh interval, seconds.
    pub template_refresh: u64,
    /// Observation domain id.
    pub domain: u32,
    /// Path MTU toward the collectors, bytes.
    pub mtu: usize,
    /// Records per second to each collector at most (0: no limit).
    pub max_rate: u64,
}

impl Export {
    /// How often the meter reads the session table: half the shorter timeout, between 1 and
    /// 10 seconds (the session sweep's own period), so a record is late by at most that.
    #[must_use]
    pub fn round(&self) -> Duration {
        let half = self
            .active_timeout
            .min(self.idle_timeout)
            .saturating_mul(500);
        Duration::from_millis(half.clamp(1_000, SESSION_SWEEP.as_millis() as u64))
    }
}

/// Read, validate and compile `path` with positional ids, for the offline tools (`policy
/// check`, `replay`, `explain FILE`); the daemon compiles with the stable ids of its store.
///
/// # Errors
/// The policy's own errors, with the file named.
pub fn load_policy(
    path: &Path,
    options: &LoadOptions,
) -> anyhow::Result<(ValidatedPolicy, Compiled)> {
    let policy = policy::load_with(path, options)?;
    let compiled = compile::compile_fresh(&policy)
        .with_context(|| format!("compiling {} failed", path.display()))?;
    Ok((policy, compiled))
}

/// Run the daemon until SIGTERM or SIGINT. Enforcement stays pinned when it returns.
///
/// # Errors
/// A start that fails changes nothing that was there before it: it removes the links and pins
/// it created, and leaves an earlier daemon's (adopted) ones enforcing.
pub fn run(mut settings: Settings) -> anyhow::Result<()> {
    // One spelling of the file in force, whatever the working directory of later clients.
    if let Ok(path) = std::fs::canonicalize(&settings.policy) {
        settings.policy = path;
    }
    let (policy, compiled) = load_policy(&settings.policy, &settings.load)?;
    privileges::require_bpf("enforcer run").map_err(anyhow::Error::msg)?;
    if let Some(iface) = settings
        .core_facing
        .iter()
        .find(|i| !settings.ifaces.contains(i))
    {
        bail!(
            "--drop-non-pool {iface} names an interface that is not given with --iface; give it \
             as `--iface core:{iface}`"
        );
    }
    if let Some((i, iface)) = settings
        .ifaces
        .iter()
        .enumerate()
        .find(|(i, iface)| settings.ifaces[..*i].contains(iface))
    {
        bail!(
            "--iface {iface} is given twice (the {} time); give each interface once",
            i + 1
        );
    }
    let mut ifaces = Vec::new();
    for name in &settings.ifaces {
        let index = if_index(name)
            .with_context(|| format!("no network interface named `{name}`; check `ip link`"))?;
        ifaces.push(Iface {
            name: name.clone(),
            ifindex: index,
            core_facing: settings.core_facing.contains(name),
            service_facing: settings.service_facing.contains(name),
            xdp_forward: settings.xdp_forward,
            redirect_target: false,
            reattached: 0,
        });
    }
    // A first check with positional ids, before anything is claimed or written.
    Capacity::for_policy(&compiled.image, compiled.rules.len(), &settings.limits)
        .check(&compiled.image, compiled.rules.len())
        .with_context(|| format!("{} does not fit the maps", settings.policy.display()))?;
    drop(compiled);

    let pins = PinDir::claim(&settings.pin_dir)?;
    // The socket next (a live daemon's is never taken over), then the store: a second daemon
    // must not touch the first one's ids. From here on a failure undoes what this start made.
    let listener = match unix::bind(&settings.socket) {
        Ok(listener) => listener,
        Err(err) => {
            pins.remove_created();
            return Err(err.into());
        }
    };
    let fail = |err: anyhow::Error| {
        pins.remove_created();
        let _ = std::fs::remove_file(&settings.socket);
        err
    };
    let metrics_listener = match settings.metrics {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .with_context(|| {
                    format!(
                        "cannot serve metrics on --metrics-address {addr}; give a free local \
                         address and port"
                    )
                })
                .map_err(fail)?,
        ),
        None => None,
    };
    let radius_socket = match &settings.radius {
        Some(radius) => {
            let socket = std::net::UdpSocket::bind(radius.listen)
                .with_context(|| {
                    format!(
                        "cannot receive RADIUS accounting on --radius-listen {}; give a free \
                         local address and port",
                        radius.listen
                    )
                })
                .map_err(fail)?;
            crate::bindings::radius::enlarge_receive_buffer(&socket);
            Some(socket)
        }
        None => None,
    };
    let api_listener = match &settings.api {
        Some(api) => {
            let tls = match &api.tls {
                Some((cert, key)) => Some(
                    crate::control::rest::tls_acceptor(cert, key)
                        .context("--api-tls-cert/--api-tls-key")
                        .map_err(fail)?,
                ),
                None => None,
            };
            let listener = std::net::TcpListener::bind(api.address)
                .with_context(|| {
                    format!(
                        "cannot serve the REST API on --api-address {}; give a free local \
                         address and port",
                        api.address
                    )
                })
                .map_err(fail)?;
            let (stream, _) = tokio::sync::broadcast::channel(crate::control::rest::STREAM_BUFFER);
            Some((listener, tls, stream))
        }
        None => None,
    };
    let event_stats = std::sync::Arc::new(crate::telemetry::events::EventStats::default());
    let deny_writer = match &settings.deny_events {
        Some(path) => Some(
            crate::telemetry::events::Writer::open(path, std::sync::Arc::clone(&event_stats))
                .with_context(|| {
                    format!(
                        "cannot write deny events to --deny-events {}; give a writable file, \
                         or - for stdout",
                        path.display()
                    )
                })
                .map_err(fail)?,
        ),
        None => None,
    };
    let mut store = Store::open(&settings.store)
        .with_context(|| {
            format!(
                "opening the store {}; give another with --store",
                settings.store.display()
            )
        })
        .map_err(fail)?;
    let mut policy = policy;
    let prepared = compile_with(&mut store, &mut policy)
        .with_context(|| format!("compiling {} failed", settings.policy.display()))
        .map_err(fail)?;
    let compiled = &prepared.compiled;
    let capacity = Capacity::for_policy(&compiled.image, compiled.rules.len(), &settings.limits);
    if let Err(err) = capacity.check(&compiled.image, compiled.rules.len()) {
        return Err(fail(anyhow::Error::new(err).context(format!(
            "{} does not fit the maps (with the ids of retired SIMs kept in {})",
            settings.policy.display(),
            settings.store.display()
        ))));
    }
    let loaded = Loaded { policy, prepared };
    // Validation's and compilation's temporaries, before the maps and the daemon's own tables.
    super::daemon::release_free_memory();
    let alert_stats = std::sync::Arc::new(crate::telemetry::alerts::AlertStats::default());
    // With the REST API on, alerts are raised for its `/events` stream even without a file or
    // webhook.
    let alert_sink = if settings.alerts.is_some()
        || settings.alert_webhook.is_some()
        || settings.api.is_some()
    {
        Some(
            crate::telemetry::alerts::Sink::open(
                settings.alerts.as_deref(),
                settings.alert_webhook.as_deref(),
                std::sync::Arc::clone(&alert_stats),
            )
            .with_context(|| {
                format!(
                    "cannot write alerts to --alerts {}; give a writable file, or - for stdout",
                    settings
                        .alerts
                        .as_deref()
                        .map_or_else(String::new, |p| p.display().to_string())
                )
            })
            .map_err(fail)?,
        )
    } else {
        None
    };
    let alert_sink = match (alert_sink, &api_listener) {
        (Some(sink), Some((_, _, stream))) => Some(sink.with_stream(stream.clone())),
        (sink, _) => sink,
    };
    let mut daemon = start(&settings, &pins, capacity, store, loaded, ifaces).map_err(fail)?;
    daemon.set_deny_events(deny_writer, event_stats);
    daemon.set_alerts(alert_sink, alert_stats);
    let transports = Transports {
        control: listener,
        metrics: metrics_listener,
        radius: radius_socket,
        api: api_listener,
    };
    serve(daemon, transports, &settings)?;
    drop(pins);
    Ok(())
}

/// Load, fill and attach: every step that touches the kernel. On error, the links this start
/// created are removed (the caller removes the pins); links adopted from an earlier daemon keep
/// enforcing.
fn start(
    settings: &Settings,
    pins: &PinDir,
    capacity: Capacity,
    store: Store,
    loaded: Loaded,
    ifaces: Vec<Iface>,
) -> anyhow::Result<Daemon> {
    let enforcer = Enforcer::load(capacity, Some(pins.path()))?;
    let mut daemon = Daemon::new(settings.clone(), enforcer, store, loaded, ifaces);
    daemon
        .apply_loaded()
        .context("writing the policy into the maps")?;
    let mut created = Vec::new();
    let result = daemon.attach_all(&mut created);
    if let Err(err) = result {
        for iface in created {
            let _ = links::remove(pins.path(), &iface);
        }
        return Err(err);
    }
    // Links pinned by an earlier daemon for interfaces no longer given: the operator took
    // them out of the configuration, so they stop being enforced, and the log says so.
    for stale in links::pinned(pins.path())
        .into_iter()
        .filter(|a| !settings.ifaces.contains(&a.iface))
    {
        match links::remove(pins.path(), &stale.iface) {
            Ok(_) => warn!(iface = %stale.iface, "Detached: no longer given with --iface."),
            Err(err) => warn!(iface = %stale.iface, error = %err, "Could not detach."),
        }
    }
    let pin = links::clear_program_pin(pins.path())?;
    daemon.enforcer.pin_program(&pin)?;
    daemon.start_export()?;
    super::daemon::release_free_memory();
    Ok(daemon)
}

/// Serve commands, signals and link checks until a stop signal, on this thread: a tokio
/// current-thread runtime whose main task is the actor.
///
/// The actor handles quick commands ([`Event::is_quick`]: one SIM's bind, quarantine, show…)
/// in place, so a change costs no hand-over between threads: at 10,000 changes a second each
/// hand-over (a futex wake there, an eventfd wake back, two context switches) was a third of
/// the daemon's CPU time, and on a small gateway the queueing it caused was the latency tail.
/// Everything slow (validation, compilation, a reload's map writes, link checks, listings)
/// runs on a blocking thread that the actor hands the whole [`Daemon`] to and gets it back
/// from, so the event loop keeps accepting, reading and answering signals meanwhile, and
/// still only one thread at a time owns the datapath.
/// The sockets the daemon serves, bound before anything was loaded.
struct Transports {
    /// The control socket.
    control: std::os::unix::net::UnixListener,
    /// `/metrics`.
    metrics: Option<std::net::TcpListener>,
    /// RADIUS accounting.
    radius: Option<std::net::UdpSocket>,
    /// The REST API, its TLS, and its `/events` stream (deny events, alerts).
    api: Option<(
        std::net::TcpListener,
        Option<tokio_rustls::TlsAcceptor>,
        tokio::sync::broadcast::Sender<std::sync::Arc<crate::control::rest::StreamEvent>>,
    )>,
}

fn serve(daemon: Daemon, transports: Transports, settings: &Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("enforcer-worker")
        .build()
        .context("starting the I/O runtime")?;
    runtime.block_on(actor(daemon, transports, settings))
}

/// The actor; however it ends (a stop signal, a failure to set up), the flow export is
/// flushed and its state saved, and the socket removed.
async fn actor(daemon: Daemon, transports: Transports, settings: &Settings) -> anyhow::Result<()> {
    let mut slot = Some(daemon);
    let result = act(&mut slot, transports, settings).await;
    // `None` only if a worker thread panicked with the daemon: nothing to flush then.
    if let Some(mut daemon) = slot {
        daemon.stop_export();
    }
    let _ = std::fs::remove_file(&settings.socket);
    result
}

async fn act(
    slot: &mut Option<Daemon>,
    transports: Transports,
    settings: &Settings,
) -> anyhow::Result<()> {
    let Transports {
        control: listener,
        metrics,
        radius,
        api,
    } = transports;
    use tokio::signal::unix::{SignalKind, signal};
    let gone = || anyhow::anyhow!("the daemon is gone");
    let (requests, mut incoming) = mpsc::channel::<unix::Request>(256);
    listener
        .set_nonblocking(true)
        .context("serving the control socket")?;
    let listener =
        tokio::net::UnixListener::from_std(listener).context("serving the control socket")?;
    // Ready only once the signal handlers are in place: a SIGHUP before that would kill the
    // daemon (the default action) instead of reloading.
    let install = |kind| signal(kind).context("installing the signal handlers");
    let mut term = install(SignalKind::terminate())?;
    let mut int = install(SignalKind::interrupt())?;
    let mut hup = install(SignalKind::hangup())?;
    // The REST API: the same commands to the same actor, over HTTP.
    if let (Some((listener, tls, stream)), Some(config)) = (api, settings.api.as_ref()) {
        listener
            .set_nonblocking(true)
            .context("serving the REST API")?;
        let listener =
            tokio::net::TcpListener::from_std(listener).context("serving the REST API")?;
        slot.as_mut()
            .ok_or_else(gone)?
            .set_event_stream(stream.clone());
        info!(
            address = %config.address,
            tls = tls.is_some(),
            "Serving the REST API (OpenAPI document at /openapi.json)."
        );
        tokio::spawn(crate::control::rest::serve(
            listener,
            crate::control::rest::router(requests.clone(), &config.token, stream),
            tls,
        ));
    }
    tokio::spawn(unix::serve(listener, requests));
    // Deny events: a thread reads the ring buffer and hands batches to the actor, which names
    // them for `--deny-events`, sums them for the flow export and counts them for `top`.
    let (deny_batches, mut deny_incoming) =
        mpsc::channel::<Vec<enforcer_common::maps::DenyEvent>>(64);
    let pin = settings
        .pin_dir
        .join(enforcer_common::maps::names::DENY_EVENTS);
    if let Err(err) = crate::telemetry::events::spawn_reader(
        &pin,
        deny_batches.clone(),
        slot.as_ref().ok_or_else(gone)?.event_stats(),
    ) {
        // Enforcement and the rest of the daemon do not depend on them.
        warn!(error = %err, "Cannot read the deny events; none are reported.");
    }
    if let Some(listener) = metrics {
        listener
            .set_nonblocking(true)
            .context("serving the metrics")?;
        let listener =
            tokio::net::TcpListener::from_std(listener).context("serving the metrics")?;
        let addr = listener.local_addr().ok();
        tokio::spawn(crate::telemetry::metrics::serve(
            listener,
            slot.as_mut().ok_or_else(gone)?.start_metrics(),
        ));
        info!(address = ?addr, "Serving Prometheus metrics at /metrics.");
    }
    // RADIUS accounting: a task reads the socket and hands batches to the actor.
    let (radius_batches, mut radius_incoming) = mpsc::channel::<crate::bindings::radius::Batch>(16);
    if let (Some(socket), Some(config)) = (radius, settings.radius.as_ref()) {
        socket
            .set_nonblocking(true)
            .context("receiving RADIUS accounting")?;
        let socket =
            tokio::net::UdpSocket::from_std(socket).context("receiving RADIUS accounting")?;
        info!(
            address = %config.listen,
            clients = config.clients.all().len(),
            "Receiving RADIUS accounting."
        );
        tokio::spawn(crate::bindings::radius::serve(
            socket,
            config.clients.clone(),
            radius_batches.clone(),
            slot.as_ref().ok_or_else(gone)?.radius_stats(),
        ));
    }
    drop(radius_batches);
    // Interfaces deleted and re-created: every RTM_NEWLINK/RTM_DELLINK makes the actor check
    // its links at once.
    let mut watcher = match crate::netlink_watch::watch_links().await {
        Ok(watcher) => Some(watcher),
        Err(err) => {
            warn!(
                error = %err,
                "Cannot watch links over rtnetlink; checking every {} s instead.",
                LINK_CHECK.as_secs()
            );
            None
        }
    };
    info!(
        socket = %settings.socket.display(),
        pin_dir = %settings.pin_dir.display(),
        "Enforcing; reload with SIGHUP or `enforcer policy apply`, stop with SIGTERM (enforcement \
         stays pinned; `enforcer detach` removes it)."
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut checks = tokio::time::interval(LINK_CHECK);
    let mut sweeps = tokio::time::interval(
        settings
            .export
            .as_ref()
            .map_or(SESSION_SWEEP, Export::round),
    );
    loop {
        let link_event = async {
            match watcher.as_mut() {
                Some(watcher) => watcher.next().await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            _ = term.recv() => Event::Stop("SIGTERM"),
            _ = int.recv() => Event::Stop("SIGINT"),
            _ = hup.recv() => Event::Hangup,
            Some((command, reply)) = incoming.recv() => Event::Command(command, reply),
            Some(events) = deny_incoming.recv() => Event::Deny(events),
            Some(batch) = radius_incoming.recv() => Event::Radius(batch),
            Some(link) = link_event => {
                tracing::debug!(iface = %link.name, ifindex = link.ifindex, kind = ?link.kind, "Link event.");
                Event::CheckLinks
            }
            _ = checks.tick() => Event::CheckLinks,
            _ = sweeps.tick() => Event::SweepSessions,
        };
        match event {
            Event::Stop(signal) => {
                info!(
                    signal,
                    pin_dir = %settings.pin_dir.display(),
                    "Stopping; the program, its links and maps stay pinned and enforcing the \
                     policy in force. `enforcer detach` removes them."
                );
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
                break;
            }
            event if event.is_quick() => {
                let daemon = slot.as_mut().ok_or_else(gone)?;
                daemon.handle(event);
                // RADIUS accounting admitted SIMs: add them with a reload, off the loop.
                if daemon.admissions_due() {
                    handle_blocking(slot, Event::Admit).await?;
                }
            }
            event => handle_blocking(slot, event).await?,
        }
    }
    drop(deny_batches);
    Ok(())
}

/// Hand the daemon to a blocking thread for `event` and take it back.
async fn handle_blocking(slot: &mut Option<Daemon>, event: Event) -> anyhow::Result<()> {
    let mut daemon = slot
        .take()
        .ok_or_else(|| anyhow::anyhow!("the daemon is gone"))?;
    let daemon = tokio::task::spawn_blocking(move || {
        daemon.handle(event);
        daemon
    })
    .await
    .context("the actor's worker thread failed; enforcement stays pinned")?;
    *slot = Some(daemon);
    Ok(())
}

/// The index of interface `name`.
///
/// # Errors
/// The OS error when there is no such interface.
pub fn if_index(name: &str) -> anyhow::Result<u32> {
    let name = std::ffi::CString::new(name).context("interface name contains a NUL byte")?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(index)
}

impl Iface {
    /// Attach (or re-attach) this interface through its pinned link.
    pub(super) fn attach(
        &self,
        enforcer: &mut Enforcer,
        pin_dir: &Path,
        mode: XdpMode,
    ) -> anyhow::Result<How> {
        let program = enforcer.program()?;
        let (how, link) = links::attach(program, pin_dir, &self.name, self.ifindex, mode).map_err(
            |err| match err {
                links::AttachError::Attach(source) => {
                    anyhow::Error::new(crate::loader::LoadError::Attach {
                        iface: self.name.clone(),
                        mode,
                        hint: crate::xdp_holder::attach_hint(&self.name, mode),
                        source: Box::new(source),
                    })
                }
                links::AttachError::Link(err) => anyhow::Error::new(err),
            },
        )?;
        info!(
            iface = %self.name,
            ifindex = self.ifindex,
            link_id = link.link_id,
            program_id = link.program_id,
            how = ?how,
            "Attached XDP program through a pinned link."
        );
        Ok(how)
    }
}
